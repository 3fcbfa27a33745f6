"""``accelnet.evaluation.evaluate``: the confusion matrix counts (true class, predicted class),
per-class accuracy, and the report's table."""

import re

import numpy as np
import pytest

from accelnet import Linear, Sequential
from accelnet.evaluation import evaluate


def _identity_model():
    """Scores equal to the input: the predicted class is the argmax of each sample."""
    model = Sequential([Linear(3)], (3,), dtype="float64")
    model.params["linear1.W"][...] = np.eye(3)
    return model


def test_the_confusion_matrix_counts_true_against_predicted_classes():
    x = np.eye(3)[[0, 0, 1, 2, 2, 2]]
    t = np.array([0, 1, 1, 2, 2, 0])
    result = evaluate(_identity_model(), x, t)
    np.testing.assert_array_equal(result.matrix, [[1, 0, 1], [1, 1, 0], [0, 0, 2]])
    assert result.accuracy == pytest.approx(4 / 6) and result.correct == 4 and result.count == 6
    np.testing.assert_allclose(result.per_class, [0.5, 0.5, 1.0])


def test_a_class_without_samples_has_no_accuracy_rather_than_a_division_error():
    result = evaluate(_identity_model(), np.eye(3)[[0, 1]], np.array([0, 1]))
    assert np.isnan(result.per_class[2])


def test_the_report_names_classes_and_prints_the_matrix():
    result = evaluate(_identity_model(), np.eye(3)[[0, 1, 2]], np.array([0, 1, 1]),
                      class_names=("T-shirt/top", "Trouser", "Bag"))
    text = result.report()
    assert "test accuracy: 0.6667 (2 of 3)" in text
    assert re.search(r"^Trouser +0\.5000 +1 / 2$", text, re.M) and re.search(r"^Bag +- +0 / 0$", text, re.M)
    assert text.splitlines()[-1] == "columns: 0 T-shirt/top, 1 Trouser, 2 Bag"


def test_class_names_must_match_the_models_classes():
    with pytest.raises(ValueError, match="2 class names for a model with 3 classes"):
        evaluate(_identity_model(), np.eye(3), np.arange(3), class_names=("a", "b"))

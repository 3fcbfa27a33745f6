import numpy as np
import pytest

from accelnet.losses import MeanSquaredError, SoftmaxCrossEntropy, get_loss


def test_cross_entropy_of_uniform_scores_is_log_classes():
    loss = SoftmaxCrossEntropy().forward(np.zeros((4, 10), np.float32), np.array([0, 1, 2, 3]))
    assert float(loss) == pytest.approx(np.log(10), rel=1e-6)


def test_cross_entropy_is_stable_for_huge_scores():
    y = np.array([[1000.0, 0.0], [0.0, -1000.0]], np.float32)
    ce = SoftmaxCrossEntropy()
    loss = ce.forward(y, np.array([1, 1]))
    assert np.isfinite(loss) and float(loss) == pytest.approx(1000 / 2 + 1000 / 2, rel=1e-6)
    assert np.isfinite(ce.backward()).all()


def test_cross_entropy_keeps_float32():
    ce = SoftmaxCrossEntropy()
    assert ce.forward(np.ones((2, 3), np.float32), np.array([0, 1])).dtype == np.float32
    assert ce.backward().dtype == np.float32


def test_one_hot_and_index_labels_give_the_same_loss_and_gradient():
    y = np.random.default_rng(0).standard_normal((5, 4))
    t = np.array([0, 3, 1, 1, 2])
    a, b = SoftmaxCrossEntropy(), SoftmaxCrossEntropy()
    assert float(a.forward(y, t)) == pytest.approx(float(b.forward(y, np.eye(4)[t])))
    np.testing.assert_allclose(a.backward(), b.backward())


@pytest.mark.parametrize("t, match", [
    (np.array([0, 5]), r"class indices must be in \[0, 3\)"),
    (np.array([0, 1, 2]), r"received shape \(3,\)"),
    (np.array([0.0, 1.0]), "integer dtype"),
])
def test_bad_labels_are_named(t, match):
    with pytest.raises(ValueError, match=match):
        SoftmaxCrossEntropy().forward(np.zeros((2, 3), np.float32), t)


def test_mse_is_half_the_summed_square_per_sample():
    y = np.array([[1.0, 2.0], [0.0, 0.0]])
    t = np.array([[0.0, 0.0], [0.0, 2.0]])
    assert float(MeanSquaredError().forward(y, t)) == pytest.approx(0.5 * (1 + 4 + 4) / 2)


def test_mse_one_hot_encodes_class_indices():
    y = np.array([[1.0, 0.0], [0.0, 1.0]])
    assert float(MeanSquaredError().forward(y, np.array([0, 1]))) == 0.0


def test_unknown_loss_name_is_rejected():
    with pytest.raises(ValueError, match="unknown loss 'hinge'"):
        get_loss("hinge")

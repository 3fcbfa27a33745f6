"""The Python API refuses what it cannot do right, with a ValueError naming the argument, instead of
a silently wrong number or a traceback from deep inside (issue 14's cases, as a user met them)."""

import gzip
import struct

import numpy as np
import pytest

from accelnet import Linear, ReLU, Sequential
from accelnet.data import DataError, read_idx, synthetic
from accelnet.optim import SGD, Adam
from accelnet.train import Trainer


def _model(**kw):
    return Sequential([Linear(8), ReLU(), Linear(4)], (5,), seed=0, **kw)


def _x(n=6):
    return np.random.default_rng(0).random((n, 5))


# -- labels ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("labels, why", [
    (np.zeros((6, 1), np.int64), "an (N, 1) column is neither indices nor one-hot"),
    (np.zeros(6), "float class indices"),
    (np.array([0, 1, 2, 3, 4, 5]), "indices past the last class"),
    (np.array([0, -1, 0, 0, 0, 0]), "negative indices"),
    (np.eye(6)[:, :3], "one-hot of the wrong width"),
    (np.full((6, 4), 0.25), "scores, not one-hot"),
    (np.array([0, 1, 2]), "fewer labels than samples"),
])
def test_accuracy_refuses_labels_it_would_misread(labels, why):
    with pytest.raises(ValueError, match=r"accuracy: (labels must be|class indices must be)"):
        _model().accuracy(_x(), labels)


def test_accuracy_takes_indices_and_one_hot_alike():
    m = _model()
    pred = np.asarray(m.predict(_x())).argmax(axis=1)
    assert m.accuracy(_x(), pred) == m.accuracy(_x(), np.eye(4, dtype=np.int64)[pred]) == 1.0


# -- inputs ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("x, match", [
    ((np.random.default_rng(0).random((6, 5)) * 255).astype(np.uint8), "must hold floats"),
    (np.ones((6, 5), np.int64), "must hold floats"),
    (np.ones((6, 5), bool), "must hold floats"),
    ([[0.0] * 5] * 6, "must be an array"),
    (np.ones((6, 7)), r"must have shape \(N >= 1, 5\)"),
    (np.ones((0, 5)), r"must have shape \(N >= 1, 5\)"),
])
@pytest.mark.parametrize("call", ["predict", "accuracy"])
def test_predict_and_accuracy_refuse_inputs_forward_refuses(x, match, call):
    m = _model()
    with pytest.raises(ValueError, match=f"{call}: x {match}"):
        m.predict(x) if call == "predict" else m.accuracy(x, np.zeros(len(x), np.int64))


@pytest.mark.parametrize("batch_size", [0, -1, 2.5, True])
def test_predict_names_a_bad_batch_size(batch_size):
    with pytest.raises(ValueError, match="predict: batch_size must be a positive int"):
        _model().predict(_x(), batch_size=batch_size)


def test_backward_before_any_loss_says_to_compute_the_loss_first():
    with pytest.raises(ValueError, match=r"no loss to differentiate yet.*model.loss\(x, t\)"):
        _model().backward()


# -- Trainer -----------------------------------------------------------------------------------------

def _data():
    return synthetic(64, 16, (5,), classes=4, seed=0)


def test_an_optimizer_of_another_model_is_refused():
    m, other = _model(), _model()
    with pytest.raises(ValueError, match="updates another model's parameters"):
        Trainer(m, Adam(other), _data(), progress=False)


def test_an_optimizer_without_a_model_is_refused():
    with pytest.raises(ValueError, match="updates another model's parameters"):
        Trainer(_model(), Adam(0.01), _data(), progress=False)


@pytest.mark.parametrize("max_steps", [0, -3, 1.5])
def test_max_steps_must_be_positive(max_steps):
    m = _model()
    with pytest.raises(ValueError, match="max_steps must be a positive int or None"):
        Trainer(m, SGD(m, lr=0.1), _data(), max_steps=max_steps, progress=False)


def test_a_state_that_does_not_fit_changes_nothing():
    m = _model()
    t = Trainer(m, Adam(m), _data(), batch_size=16, epochs=1, progress=False)
    t.fit()
    state = t.state()
    before = m.state_dict()
    bigger = Sequential([Linear(9), ReLU(), Linear(4)], (5,), seed=1)
    state["optimizer"] = Adam(bigger).state_dict()  # the model part fits, the optimizer's does not
    state["optimizer"]["flat_state"] = {"m": np.zeros(bigger.num_params), "v": np.zeros(bigger.num_params)}
    state["model"] = {k: v + 1 for k, v in state["model"].items()}
    with pytest.raises(ValueError, match="state 'm' has shape"):
        t.load_state(state)
    for k, v in m.state_dict().items():
        np.testing.assert_array_equal(v, before[k])


def test_a_state_lacking_keys_is_named():
    m = _model()
    t = Trainer(m, Adam(m), _data(), progress=False)
    state = t.state()
    del state["epoch"]
    with pytest.raises(ValueError, match=r"lacks \['epoch'\]"):
        t.load_state(state)


# -- IDX files -----------------------------------------------------------------------------------------

def test_a_gzip_with_a_corrupt_body_is_a_data_error(tmp_path):
    good = gzip.compress(struct.pack(">BBBB", 0, 0, 8, 1) + struct.pack(">I", 1000) + bytes(1000))
    bad = good[:20] + bytes(b ^ 0x5A for b in good[20:-8]) + good[-8:]  # header intact, deflate body garbled
    path = tmp_path / "bad.gz"
    path.write_bytes(bad)
    with pytest.raises(DataError, match="bad.gz"):
        read_idx(path)


def test_absurd_dimensions_are_a_data_error(tmp_path):
    path = tmp_path / "huge.idx"
    path.write_bytes(struct.pack(">BBBB", 0, 0, 8, 3) + struct.pack(">III", 2**32 - 1, 2**32 - 1, 2**32 - 1) + bytes(8))
    with pytest.raises(DataError, match="IDX header says"):
        read_idx(path)

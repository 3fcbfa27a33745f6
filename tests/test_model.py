"""Sequential: seeding, modes, state_dict, repr, dtype discipline, book-style API; the behaviour
tests on every backend (conftest.py's ``backend_name``)."""

import numpy as np
import pytest

from accelnet import BatchNorm, Conv2d, Dropout, Linear, ReLU, Sequential, get_backend, simple_convnet, two_layer_net
from accelnet.losses import SoftmaxCrossEntropy


def _mlp(**kw):
    return Sequential([Linear(8), BatchNorm(), ReLU(), Dropout(0.2), Linear(3)], (5,), **kw)


_host = get_backend("cpu").to_numpy  # any array (NumPy or CuPy) as a host NumPy array


def test_same_seed_gives_the_same_initial_weights_on_every_backend(backend_name):
    a, b = _mlp(seed=3), _mlp(seed=3, backend=backend_name)
    for k in a.params:
        np.testing.assert_array_equal(_host(a.params[k]), _host(b.params[k]))


def test_different_seeds_give_different_weights():
    a, b = _mlp(seed=3), _mlp(seed=4)
    assert not np.array_equal(a.params["linear1.W"], b.params["linear1.W"])


def test_float32_and_float64_models_start_from_the_same_draw():
    a, b = _mlp(seed=3), _mlp(seed=3, dtype="float64")
    np.testing.assert_allclose(a.params["linear1.W"], b.params["linear1.W"], rtol=1e-7)


def test_parameters_are_views_of_one_flat_arena_in_layer_order():
    m = _mlp()
    offset = 0
    for name, p in m.params.items():
        assert np.shares_memory(p, m.arena.data)
        assert p.ctypes.data == m.arena.data.ctypes.data + offset * p.itemsize
        offset += p.size
    assert offset == m.arena.data.size == m.num_params
    assert list(m.params) == ["linear1.W", "linear1.b", "batchnorm1.gamma", "batchnorm1.beta", "linear2.W", "linear2.b"]


def test_backward_writes_gradients_into_the_grad_arena(backend_name):
    m = _mlp(backend=backend_name)
    x = np.random.default_rng(0).standard_normal((4, 5)).astype(np.float32)
    m.loss(m.to_device(x), np.array([0, 1, 2, 0]))
    m.backward()
    assert np.abs(_host(m.arena.grad)).sum() > 0
    for name, g in m.grads.items():
        assert m.backend.xp.shares_memory(g, m.arena.grad), name


def test_book_style_gradient_returns_named_grads():
    m = _mlp()
    grads = m.gradient(m.to_device(np.ones((4, 5))), np.array([0, 1, 2, 0]))
    assert set(grads) == set(m.params)


def test_state_dict_round_trips_parameters_and_buffers(backend_name):
    a, b = _mlp(seed=1, backend=backend_name), _mlp(seed=2, backend=backend_name)
    a.forward(a.to_device(np.ones((4, 5))))  # moves BatchNorm's running statistics
    b.load_state_dict(a.state_dict())
    for k, v in a.state_dict().items():
        np.testing.assert_array_equal(b.state_dict()[k], v)
    assert "batchnorm1.running_mean" in a.state_dict()


def test_state_dict_is_a_copy_not_a_view(backend_name):
    m = _mlp(backend=backend_name)
    sd = m.state_dict()
    sd["linear1.W"][...] = 0
    assert np.abs(_host(m.params["linear1.W"])).sum() > 0


def test_a_state_dict_of_device_arrays_loads_as_its_host_copy(device_array):
    a, b = _mlp(seed=1), _mlp(seed=2)
    b.load_state_dict({k: device_array(v) for k, v in a.state_dict().items()})  # a GPU model's arrays, say
    for k, v in a.state_dict().items():
        np.testing.assert_array_equal(b.state_dict()[k], v)


def test_load_state_dict_rejects_missing_and_mismatched_entries():
    m = _mlp()
    sd = m.state_dict()
    del sd["linear1.b"]
    with pytest.raises(ValueError, match=r"missing keys \['linear1.b'\]"):
        m.load_state_dict(sd)
    sd = m.state_dict()
    sd["linear1.W"] = np.zeros((2, 2))
    with pytest.raises(ValueError, match=r"linear1.W has shape \(2, 2\), the model expects \(5, 8\)"):
        m.load_state_dict(sd)


def test_predict_runs_in_eval_mode_and_restores_train_mode(backend_name):
    m = _mlp(backend=backend_name)
    x = np.random.default_rng(0).standard_normal((6, 5))
    np.testing.assert_array_equal(_host(m.predict(x)), _host(m.predict(x)))
    assert m.training


def test_predict_batches_match_one_pass(backend_name):
    m = simple_convnet(input_shape=(1, 8, 8), filters=3, kernel_size=3, hidden_size=5, backend=backend_name)
    x = np.random.default_rng(0).random((7, 1, 8, 8))
    np.testing.assert_allclose(_host(m.predict(x, batch_size=3)), _host(m.predict(x)), rtol=1e-5)


def test_accuracy_accepts_indices_and_one_hot(backend_name):
    m = _mlp(backend=backend_name)
    x = np.random.default_rng(0).standard_normal((10, 5))
    pred = _host(m.predict(x)).argmax(axis=1)
    assert m.accuracy(x, pred) == 1.0
    assert m.accuracy(x, np.eye(3)[pred]) == 1.0


def test_layer_names_are_unique_and_stable():
    m = Sequential([Linear(4, name="hidden"), ReLU(), Linear(2)], (3,))
    assert [l.name for l in m.layers] == ["hidden", "relu1", "linear1"]
    with pytest.raises(ValueError, match="unique"):
        Sequential([Linear(4, name="a"), Linear(2, name="a")], (3,))


def test_a_layer_cannot_join_two_models():
    layer = Linear(2)
    Sequential([layer], (3,))
    with pytest.raises(ValueError, match="already belongs"):
        Sequential([layer], (3,))


def test_repr_lists_layers_output_shapes_and_parameter_counts():
    text = repr(simple_convnet())
    assert "Conv2d(30, kernel_size=5x5, stride=1, pad=0, activation='relu', pool=2)" in text
    assert "(30, 12, 12)" in text and "432,100" in text and "params=433,890" in text


def test_bad_input_shape_is_rejected():
    with pytest.raises(ValueError, match="input_shape"):
        Sequential([Linear(2)], (0, 3))


def test_two_layer_net_default_loss_is_softmax_cross_entropy():
    assert isinstance(two_layer_net().loss_fn, SoftmaxCrossEntropy)


def test_conv_bias_gradient_has_the_bias_shape():
    m = Sequential([Conv2d(4, 3), Linear(2)], (2, 5, 5))
    m.gradient(m.to_device(np.ones((3, 2, 5, 5))), np.array([0, 1, 0]))
    assert m.grads["conv2d1.b"].shape == (4,)


def test_backward_returns_no_input_gradient_unless_asked():
    m = simple_convnet(filters=3, hidden_size=8, dtype="float64")
    x = np.random.default_rng(0).random((2, 1, 28, 28))
    t = np.array([1, 2])
    m.loss(x, t)
    assert m.backward() is None
    grads = {k: v.copy() for k, v in m.grads.items()}
    m.loss(x, t)
    dx = m.backward(input_grad=True)
    assert dx.shape == x.shape
    for k, v in m.grads.items():
        np.testing.assert_array_equal(v, grads[k])

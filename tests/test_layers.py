"""Each layer: backprop equals central differences (float64), bad input is named, modes differ;
on every backend (conftest.py's ``backend_name``)."""

import numpy as np
import pytest

from accelnet import (AvgPool2d, BatchNorm, Conv2d, Dropout, Flatten, Linear, MaxPool2d, ReLU, Sequential, Sigmoid,
                      Tanh, check_gradients, get_backend)

TOL = 1e-6


_host = get_backend("cpu").to_numpy  # any array (NumPy or CuPy) as a host NumPy array

# name -> (layers, one sample's shape). A Linear head makes every case end in class scores.
GRADCHECK_CASES = {
    "linear": (lambda: [Linear(4)], (3,)),
    "linear_flattens_images": (lambda: [Linear(4)], (2, 3, 3)),
    "relu": (lambda: [Linear(6), ReLU(), Linear(3)], (4,)),
    "linear_fused_relu": (lambda: [Linear(6, activation="relu"), Linear(3)], (4,)),
    "linear_fused_relu_flattens_images": (lambda: [Linear(6, activation="relu"), Linear(3)], (2, 3, 3)),
    "sigmoid": (lambda: [Linear(6), Sigmoid(), Linear(3)], (4,)),
    "tanh": (lambda: [Linear(6), Tanh(), Linear(3)], (4,)),
    "dropout_train": (lambda: [Linear(8), Dropout(0.3), Linear(3)], (4,)),
    "batchnorm_features_train": (lambda: [Linear(6), BatchNorm(), Linear(3)], (4,)),
    "batchnorm_channels_train": (lambda: [Conv2d(3, 3, pad=1), BatchNorm(), Linear(3)], (2, 5, 5)),
    "conv2d": (lambda: [Conv2d(3, 3), Linear(3)], (2, 6, 6)),
    "conv2d_stride2_pad1": (lambda: [Conv2d(3, 3, stride=2, pad=1), Linear(3)], (2, 7, 7)),
    "conv2d_rectangular_kernel": (lambda: [Conv2d(2, (2, 3), pad=1), Linear(3)], (2, 5, 6)),
    "conv2d_fused_relu": (lambda: [Conv2d(3, 3, pad=1, activation="relu"), Linear(3)], (2, 5, 5)),
    "conv2d_fused_relu_stride2": (lambda: [Conv2d(3, 3, stride=2, pad=1, activation="relu"), Linear(3)], (2, 7, 7)),
    "conv2d_fused_relu_pool": (lambda: [Conv2d(3, 3, pad=1, activation="relu", pool=2), Linear(3)], (2, 6, 6)),
    "conv2d_fused_pool_odd_size": (lambda: [Conv2d(3, 3, pad=1, pool=2), Linear(3)], (2, 5, 5)),
    "conv2d_fused_relu_pool_stride2": (lambda: [Conv2d(3, 3, stride=2, pad=1, activation="relu", pool=2), Linear(3)],
                                       (2, 7, 7)),
    "maxpool2d": (lambda: [Conv2d(2, 3, pad=1), MaxPool2d(2), Linear(3)], (1, 6, 6)),
    "maxpool2d_overlapping": (lambda: [Conv2d(2, 3, pad=1), MaxPool2d(3, stride=2), Linear(3)], (1, 7, 7)),
    "avgpool2d": (lambda: [Conv2d(2, 3, pad=1), AvgPool2d(2), Linear(3)], (1, 6, 6)),
    "avgpool2d_overlapping": (lambda: [Conv2d(2, 3, pad=1), AvgPool2d(3, stride=2), Linear(3)], (1, 7, 7)),
    "flatten": (lambda: [Conv2d(2, 3), Flatten(), Linear(3)], (1, 5, 5)),
}


def _batch(shape, n=4, classes=3, seed=0):
    r = np.random.default_rng(seed)
    return r.standard_normal((n, *shape)), r.integers(0, classes, n)


@pytest.mark.parametrize("case", sorted(GRADCHECK_CASES))
def test_backprop_matches_central_differences_in_float64(case, backend_name):
    layers, shape = GRADCHECK_CASES[case]
    model = Sequential(layers(), shape, backend=backend_name, dtype="float64", seed=1, init=0.5)
    x, t = _batch(shape)
    errors = check_gradients(model, x=x, t=t)
    assert errors.keys() == {*model.params, "input"}
    assert max(errors.values()) < TOL, errors


def test_batchnorm_backprop_in_eval_mode_matches_central_differences(backend_name):
    model = Sequential([Linear(6), BatchNorm(), Linear(3)], (4,), backend=backend_name, dtype="float64", seed=1)
    x, t = _batch((4,))
    model.train().forward(model.to_device(x))  # move the running statistics off their defaults
    model.eval()
    assert max(check_gradients(model, x=x, t=t).values()) < TOL


def test_mse_loss_backprop_matches_central_differences(backend_name):
    model = Sequential([Linear(5), Tanh(), Linear(3)], (4,), backend=backend_name, dtype="float64", loss="mse")
    x, _ = _batch((4,))
    t = np.random.default_rng(3).standard_normal((4, 3))
    assert max(check_gradients(model, x=x, t=t).values()) < TOL


def test_gradient_check_fails_on_a_wrong_backward():
    """The check must be able to fail: a ReLU that passes every gradient through is caught."""

    class LeakyBug(ReLU):
        def _backward(self, dout):
            return dout

    model = Sequential([Linear(6), LeakyBug(), Linear(3)], (4,), dtype="float64", seed=1)
    x, t = _batch((4,))
    assert check_gradients(model, x=x, t=t)["linear1.W"] > 1e-3


# -- bad input -----------------------------------------------------------------------------

# name -> (layer, one sample's shape it is built for, a wrong-shape sample)
VALIDATION_CASES = {
    "Linear": (lambda: Linear(4), (3,), (5,)),
    "ReLU": (ReLU, (3,), (4,)),
    "Sigmoid": (Sigmoid, (3,), (4,)),
    "Tanh": (Tanh, (3,), (4,)),
    "Dropout": (Dropout, (3,), (4,)),
    "BatchNorm": (BatchNorm, (3,), (4,)),
    "Conv2d": (lambda: Conv2d(2, 3), (1, 5, 5), (2, 5, 5)),
    "MaxPool2d": (MaxPool2d, (1, 4, 4), (1, 6, 6)),
    "AvgPool2d": (AvgPool2d, (1, 4, 4), (1, 4, 6)),
    "Flatten": (Flatten, (1, 4, 4), (1, 4, 5)),
}


def _built(case, backend_name="cpu"):
    make, shape, wrong = VALIDATION_CASES[case]
    layer = make()
    Sequential([layer], shape, backend=backend_name, seed=0)
    return layer, shape, wrong


@pytest.mark.parametrize("case", sorted(VALIDATION_CASES))
def test_wrong_shape_is_rejected_naming_layer_expected_and_received(case, backend_name):
    layer, shape, wrong = _built(case, backend_name)
    with pytest.raises(ValueError) as err:
        layer.forward(layer.xp.zeros((2, *wrong), np.float32))
    msg = str(err.value)
    assert case in msg and layer.name in msg
    assert "(N, " + ", ".join(map(str, shape)) + ")" in msg
    assert str((2, *wrong)) in msg


@pytest.mark.parametrize("case", sorted(VALIDATION_CASES))
def test_wrong_rank_is_rejected_naming_the_layer(case, backend_name):
    layer, shape, _ = _built(case, backend_name)
    with pytest.raises(ValueError, match=case) as err:
        layer.forward(layer.xp.zeros(shape, np.float32))  # the batch axis is missing
    assert str(shape) in str(err.value)


@pytest.mark.parametrize("case", sorted(VALIDATION_CASES))
def test_wrong_dtype_is_rejected_naming_both_dtypes(case, backend_name):
    layer, shape, _ = _built(case, backend_name)
    with pytest.raises(ValueError, match=f"{case}.*float32.*float64"):
        layer.forward(layer.xp.zeros((2, *shape), np.float64))


def test_backward_with_wrong_dout_shape_is_rejected():
    layer, shape, _ = _built("Linear")
    layer.forward(np.zeros((2, *shape), np.float32))
    with pytest.raises(ValueError, match=r"Linear 'linear1': backward expected dout of shape \(2, 4\)"):
        layer.backward(np.zeros((3, 4), np.float32))


def test_layer_used_outside_a_model_says_how_to_build_it():
    with pytest.raises(RuntimeError, match="put it in a Sequential"):
        ReLU().forward(np.zeros((2, 3), np.float32))


def test_conv_on_flat_input_names_the_expected_layout():
    with pytest.raises(ValueError, match=r"Conv2d.*expects \(N, C, H, W\) input.*\(N, 10\)"):
        Sequential([Linear(10), Conv2d(2, 3)], (4,))


def test_kernel_larger_than_input_is_rejected_at_build():
    with pytest.raises(ValueError, match="does not fit"):
        Sequential([Conv2d(2, 5)], (1, 3, 3))


@pytest.mark.parametrize("make", [lambda: Linear(0), lambda: Conv2d(2, 3, stride=0), lambda: Dropout(1.0),
                                  lambda: Conv2d(2, 3, pad=-1), lambda: MaxPool2d(0), lambda: Conv2d(2, 3, pool=0),
                                  lambda: Conv2d(2, 3, pool=2.0)])
def test_bad_layer_arguments_are_rejected(make):
    with pytest.raises(ValueError):
        make()


def test_unknown_conv_activation_is_named():
    with pytest.raises(ValueError, match="activation must be one of .* got 'gelu'"):
        Conv2d(2, 3, activation="gelu")


def _assert_same_outputs_loss_and_gradients(fused, split, x, t):
    """Two models of the same parameters (same seed) agree on outputs, loss, dL/dx and every grad."""
    np.testing.assert_allclose(*(_host(m.forward(m.to_device(x))) for m in (fused, split)), rtol=1e-5, atol=1e-6)
    losses = [float(m.loss(m.to_device(x), fused.backend.to_device(t))) for m in (fused, split)]
    assert losses[0] == pytest.approx(losses[1], rel=1e-6)
    dx_fused, dx_split = fused.backward(input_grad=True), split.backward(input_grad=True)
    np.testing.assert_allclose(_host(dx_fused), _host(dx_split), rtol=1e-5, atol=1e-6)
    for name in fused.params:
        np.testing.assert_allclose(_host(fused.grads[name]), _host(split.grads[name]), rtol=1e-5, atol=1e-6)


def test_linear_with_relu_activation_equals_linear_then_relu(backend_name):
    fused = Sequential([Linear(7, activation="relu"), Linear(3)], (2, 4, 4), backend=backend_name, seed=5)
    split = Sequential([Linear(7), ReLU(), Linear(3)], (2, 4, 4), backend=backend_name, seed=5)
    _assert_same_outputs_loss_and_gradients(fused, split, *_batch((2, 4, 4), n=6))


def test_unknown_linear_activation_is_named():
    with pytest.raises(ValueError, match="Linear activation must be one of .* got 'sigmoid'"):
        Linear(2, activation="sigmoid")


def test_linear_repr_shows_activation():
    assert repr(Linear(4, 3, activation="relu")).endswith("(3, 4, activation='relu')")


@pytest.mark.parametrize("stride", [1, 2])
def test_conv2d_with_relu_activation_equals_conv2d_then_relu(stride, backend_name):
    fused = Sequential([Conv2d(4, 3, stride=stride, pad=1, activation="relu"), Linear(3)], (2, 9, 9),
                       backend=backend_name, seed=5)
    split = Sequential([Conv2d(4, 3, stride=stride, pad=1), ReLU(), Linear(3)], (2, 9, 9), backend=backend_name,
                       seed=5)
    _assert_same_outputs_loss_and_gradients(fused, split, *_batch((2, 9, 9), n=6))


@pytest.mark.parametrize("stride, relu, pool", [(1, True, 2), (1, False, 2), (1, True, 3), (2, True, 2)])
def test_conv2d_with_pool_equals_conv2d_then_maxpool(stride, relu, pool, backend_name):
    act = "relu" if relu else None
    fused = Sequential([Conv2d(4, 3, stride=stride, pad=1, activation=act, pool=pool), Linear(3)], (2, 11, 11),
                       backend=backend_name, seed=5)
    split = Sequential([Conv2d(4, 3, stride=stride, pad=1), *([ReLU()] if relu else []), MaxPool2d(pool), Linear(3)],
                       (2, 11, 11), backend=backend_name, seed=5)
    _assert_same_outputs_loss_and_gradients(fused, split, *_batch((2, 11, 11), n=6))


def test_conv2d_pool_larger_than_its_output_is_rejected_at_build():
    with pytest.raises(ValueError, match="3x3 pool does not fit its 2x2 output"):
        Sequential([Conv2d(2, 3, pool=3)], (1, 4, 4))


def test_conv2d_repr_shows_activation_and_pool():
    assert "activation='relu', pool=2" in repr(Conv2d(4, 3, activation="relu", pool=2))


# -- train / eval ---------------------------------------------------------------------------

def _mode_model(layer, backend_name, shape=(8,)):
    model = Sequential([layer], shape, backend=backend_name, seed=0)
    return model, model.to_device(np.random.default_rng(0).standard_normal((16, *shape)) + 3)


def test_dropout_zeroes_and_rescales_in_train_and_is_identity_in_eval(backend_name):
    model, x = _mode_model(Dropout(0.5), backend_name)
    y, xh = _host(model.train().forward(x)), _host(x)
    kept = y != 0
    assert 0.2 < kept.mean() < 0.8
    np.testing.assert_allclose(y[kept], 2 * xh[kept], rtol=1e-6)
    np.testing.assert_array_equal(_host(model.eval().forward(x)), xh)


def test_dropout_draws_a_new_mask_each_training_step(backend_name):
    model, x = _mode_model(Dropout(0.5), backend_name)
    assert not np.array_equal(_host(model.forward(x)), _host(model.forward(x)))


def test_batchnorm_train_normalizes_with_batch_statistics(backend_name):
    model, x = _mode_model(BatchNorm(), backend_name)
    y = _host(model.train().forward(x))
    np.testing.assert_allclose(y.mean(axis=0), 0, atol=1e-5)
    np.testing.assert_allclose(y.std(axis=0), 1, atol=1e-3)


def test_batchnorm_eval_uses_running_statistics_and_differs_from_train(backend_name):
    model, x = _mode_model(BatchNorm(), backend_name)
    y_train = _host(model.train().forward(x))
    bn = model.layers[0]
    assert not np.allclose(_host(bn.buffers["running_mean"]), 0)
    y_eval = _host(model.eval().forward(x))
    assert not np.allclose(y_train, y_eval, atol=1e-3)


def test_batchnorm_over_channels_keeps_one_statistic_per_channel(backend_name):
    model, x = _mode_model(BatchNorm(), backend_name, shape=(3, 4, 4))
    y = _host(model.train().forward(x))
    assert model.layers[0].buffers["running_mean"].shape == (3,)
    np.testing.assert_allclose(y.mean(axis=(0, 2, 3)), 0, atol=1e-5)


@pytest.mark.parametrize("make", [lambda: Dropout(0.5), BatchNorm])
def test_eval_mode_is_deterministic_and_leaves_state_alone(make, backend_name):
    model, x = _mode_model(make(), backend_name)
    model.train().forward(x)
    before = model.state_dict()
    model.eval()
    a, b = _host(model.forward(x)), _host(model.forward(x))
    np.testing.assert_array_equal(a, b)
    for k, v in model.state_dict().items():
        np.testing.assert_array_equal(v, before[k])

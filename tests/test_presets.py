"""The book's networks: gradients at reduced size, float32 end to end, full-size shapes."""

import numpy as np
import pytest

from accelnet import check_gradients
from accelnet.layers import Layer
from accelnet.presets import PRESETS, deep_convnet, get_preset, multi_layer_net, simple_convnet, two_layer_net

# Reduced sizes keep central differences (two forwards per parameter) fast.
REDUCED = {
    "two_layer_net": lambda **kw: two_layer_net(input_size=6, hidden_size=5, output_size=3, **kw),
    "multi_layer_net": lambda **kw: multi_layer_net(hidden_sizes=(5, 4), input_size=6, output_size=3, **kw),
    "multi_layer_net_bn_dropout": lambda **kw: multi_layer_net(hidden_sizes=(5, 4), input_size=6, output_size=3,
                                                               batchnorm=True, dropout=0.2, **kw),
    "multi_layer_net_sigmoid": lambda **kw: multi_layer_net(hidden_sizes=(5,), activation="sigmoid", input_size=6,
                                                            output_size=3, **kw),
    "simple_convnet": lambda **kw: simple_convnet(input_shape=(1, 8, 8), filters=3, kernel_size=3, hidden_size=5,
                                                  output_size=3, **kw),
    "deep_convnet": lambda **kw: deep_convnet(input_shape=(1, 8, 8), channels=(2, 2, 3, 3, 2, 2), hidden_size=4,
                                              output_size=3, **kw),
}


def _batch(model, n=3, seed=0):
    r = np.random.default_rng(seed)
    return r.standard_normal((n, *model.input_shape)), r.integers(0, model.output_shape[0], n)


@pytest.mark.parametrize("name", sorted(REDUCED))
def test_preset_backprop_matches_central_differences_in_float64(name):
    # init=0.5 keeps signals alive through the reduced nets (0.01 would make gradients ~1e-8)
    model = REDUCED[name](dtype="float64", seed=2, init=0.5)
    # Zero biases put a conv output whose window sees only padding exactly on ReLU's kink, where
    # central differences average the two one-sided slopes; move them off it.
    r = np.random.default_rng(9)
    for k, p in model.params.items():
        if k.endswith(".b"):
            p += 0.1 * r.standard_normal(p.shape)
    x, t = _batch(model)
    errors = check_gradients(model, x=x, t=t)
    assert max(errors.values()) < 1e-6, errors


def _arrays_of(layer: Layer):
    return {k: v for k, v in vars(layer).items() if isinstance(v, np.ndarray)}


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_preset_runs_forward_and_backward_in_float32_without_any_float64(name):
    model = get_preset(name)(seed=0)
    x, t = _batch(model, n=4)
    out = model.to_device(x)
    for layer in model.layers:
        out = layer.forward(out)
        assert out.dtype == np.float32, f"{layer.name} forward gave {out.dtype}"
    loss = model.loss_fn.forward(out, t)
    assert loss.dtype == np.float32
    dout = model.loss_fn.backward()
    for layer in reversed(model.layers):
        assert dout.dtype == np.float32
        dout = layer.backward(dout)
    assert dout.dtype == np.float32
    assert model.arena.data.dtype == model.arena.grad.dtype == np.float32
    for layer in model.layers:
        for attr, a in _arrays_of(layer).items():
            assert a.dtype != np.float64, f"{layer.name}.{attr} is float64"


def test_deep_convnet_has_the_books_shapes():
    model = deep_convnet()
    convs = [l for l in model.layers if type(l).__name__ == "Conv2d"]
    assert [c.out_channels for c in convs] == [16, 16, 32, 32, 64, 64]
    assert [c.pad for c in convs] == [1, 1, 1, 2, 1, 1]
    assert all(c.activation == "relu" for c in convs)
    assert [c.pool for c in convs] == [None, 2, None, 2, None, 2]  # a max-pool after each pair
    hidden = next(l for l in model.layers if type(l).__name__ == "Linear")
    assert hidden.in_features == 64 * 4 * 4 and hidden.activation == "relu"
    assert model.output_shape == (10,)


def test_simple_convnet_has_the_books_shapes():
    model = simple_convnet()
    assert model.layers[0].activation == "relu" and model.layers[0].pool == 2
    assert model.layers[1].in_features == 30 * 12 * 12 and model.num_params == 433_890


def test_multi_layer_net_picks_he_for_relu_and_xavier_for_sigmoid():
    relu = multi_layer_net(hidden_sizes=(400,), seed=0)
    sig = multi_layer_net(hidden_sizes=(400,), activation="sigmoid", seed=0)
    assert relu.params["linear1.W"].std() == pytest.approx(np.sqrt(2 / 784), rel=0.02)
    assert sig.params["linear1.W"].std() == pytest.approx(np.sqrt(1 / 784), rel=0.02)


def test_two_layer_net_uses_the_books_small_init():
    assert two_layer_net(seed=0).params["linear1.W"].std() == pytest.approx(0.01, rel=0.02)


def test_unknown_preset_is_named():
    with pytest.raises(ValueError, match="unknown model 'resnet'"):
        get_preset("resnet")


def test_unknown_activation_is_named():
    with pytest.raises(ValueError, match="unknown activation 'gelu'"):
        multi_layer_net(activation="gelu")


@pytest.mark.parametrize("name", ["multi_layer_net", "multi_layer_net_bn_dropout", "simple_convnet", "deep_convnet"])
def test_preset_with_fused_layers_equals_the_same_net_with_separate_relu_and_pool(name):
    fused, split = (REDUCED[name](fused=f, dtype="float64", seed=3) for f in (True, False))
    if name != "multi_layer_net_bn_dropout":  # a BatchNorm between Linear and ReLU: nothing to fuse
        assert len(split.layers) > len(fused.layers)
    x = np.random.default_rng(0).random((4, *fused.input_shape))
    t = np.array([0, 1, 2, 3]) % fused.output_shape[0]
    for m in (fused, split):
        m.eval()  # deep_convnet's dropout draws differ between the two layer lists
    assert float(fused.loss(x, t)) == pytest.approx(float(split.loss(x, t)), rel=1e-12)
    fused.backward()
    split.backward()
    for pname in fused.params:
        np.testing.assert_allclose(fused.grads[pname], split.grads[pname], rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_the_pytorch_benchmark_peer_is_the_same_network(name):
    torch = pytest.importorskip("torch", reason="PyTorch is not installed (pip install 'accelnet[peer]')")
    from accelnet.workloads import peer_network

    net, shape = peer_network(name)
    model = get_preset(name)(seed=0)
    assert shape == model.input_shape
    assert sum(p.numel() for p in net.parameters()) == model.num_params
    assert net(torch.zeros(2, *shape)).shape[1:] == model.output_shape

"""Layers and losses against torch.nn.functional (the oracle users would reach for)."""

import numpy as np
import pytest

from accelnet import AvgPool2d, BatchNorm, Conv2d, Linear, MaxPool2d, Sequential
from accelnet.losses import SoftmaxCrossEntropy

torch = pytest.importorskip("torch", reason="PyTorch is not installed (pip install 'accelnet[peer]')")
F = torch.nn.functional


def _run(layer, shape, n=3, seed=0):
    """Forward and backward of one float64 layer on a random batch; returns (x, y, dout, dx)."""
    Sequential([layer], shape, dtype="float64", seed=seed, init=0.3)  # builds the layer
    r = np.random.default_rng(seed)
    x = r.standard_normal((n, *shape))
    y = layer.forward(x)
    dout = r.standard_normal(y.shape)
    return x, y, dout, layer.backward(dout)


def _torch_grads(fn, x, dout, *params):
    tx = torch.tensor(x, requires_grad=True)
    tp = [torch.tensor(p, requires_grad=True) for p in params]
    ty = fn(tx, *tp)
    ty.backward(torch.tensor(dout))
    return ty.detach().numpy(), tx.grad.numpy(), [p.grad.numpy() for p in tp]


@pytest.mark.parametrize("stride, pad", [(1, 0), (2, 1), (1, 2)])
def test_conv2d_matches_torch(stride, pad):
    conv = Conv2d(4, 3, stride=stride, pad=pad)
    x, y, dout, dx = _run(conv, (2, 7, 7))
    W, b = conv.params["W"], conv.params["b"]
    ty, tdx, (tdW, tdb) = _torch_grads(lambda x, W, b: F.conv2d(x, W, b, stride=stride, padding=pad), x, dout, W, b)
    np.testing.assert_allclose(y, ty, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(dx, tdx, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(conv.grads["W"], tdW, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(conv.grads["b"], tdb, rtol=1e-10, atol=1e-12)


def test_linear_matches_torch():
    lin = Linear(4)
    x, y, dout, dx = _run(lin, (5,))
    W, b = lin.params["W"], lin.params["b"]
    ty, tdx, (tdW, tdb) = _torch_grads(lambda x, W, b: F.linear(x, W.T, b), x, dout, W, b)
    np.testing.assert_allclose(y, ty, rtol=1e-12)
    np.testing.assert_allclose(dx, tdx, rtol=1e-12)
    np.testing.assert_allclose(lin.grads["W"], tdW, rtol=1e-12)


@pytest.mark.parametrize("layer, fn", [
    (lambda: MaxPool2d(2), lambda x: F.max_pool2d(x, 2)),
    (lambda: MaxPool2d(3, stride=2), lambda x: F.max_pool2d(x, 3, stride=2)),
    (lambda: AvgPool2d(2), lambda x: F.avg_pool2d(x, 2)),
    (lambda: AvgPool2d(3, stride=2), lambda x: F.avg_pool2d(x, 3, stride=2)),
], ids=["max2", "max3s2", "avg2", "avg3s2"])
def test_pooling_matches_torch(layer, fn):
    x, y, dout, dx = _run(layer(), (3, 7, 7))
    ty, tdx, _ = _torch_grads(fn, x, dout)
    np.testing.assert_allclose(y, ty, rtol=1e-12)
    np.testing.assert_allclose(dx, tdx, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("shape", [(6,), (3, 4, 4)], ids=["features", "channels"])
def test_batchnorm_training_matches_torch(shape):
    bn = BatchNorm(eps=1e-5)
    x, y, dout, dx = _run(bn, shape, n=5)
    g, b = bn.params["gamma"], bn.params["beta"]
    fn = lambda x, g, b: F.batch_norm(x, None, None, g, b, training=True, eps=1e-5)  # noqa: E731
    ty, tdx, (tdg, tdb) = _torch_grads(fn, x, dout, g, b)
    np.testing.assert_allclose(y, ty, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(dx, tdx, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(bn.grads["gamma"], tdg, rtol=1e-10)
    np.testing.assert_allclose(bn.grads["beta"], tdb, rtol=1e-10)


def test_softmax_cross_entropy_matches_torch():
    r = np.random.default_rng(0)
    y, t = r.standard_normal((6, 5)) * 3, r.integers(0, 5, 6)
    ce = SoftmaxCrossEntropy()
    loss = float(ce.forward(y, t))
    ty = torch.tensor(y, requires_grad=True)
    tl = F.cross_entropy(ty, torch.tensor(t))
    tl.backward()
    assert loss == pytest.approx(tl.item(), rel=1e-12)
    np.testing.assert_allclose(ce.backward(), ty.grad.numpy(), rtol=1e-12)

"""Winograd F(2x2, 3x3) stays as accurate as the direct sum (issue 18): its float32 error against
the float64 direct convolution is at most 4x the direct float32 kernels' error, on every
deep_convnet convolution it runs, forward, weight gradient and input gradient
(``bench/winograd_error.py`` prints the figures)."""

import numpy as np
import pytest

from accelnet import workloads
from accelnet.kernels import cpu_conv

MAX_RATIO = 4.0


def _assert_within(rows):
    assert rows, "no convolution ran by Winograd"
    over = [r for r in rows if not r["ratio"] <= MAX_RATIO]
    assert not over, f"Winograd's error over {MAX_RATIO}x the direct kernels': {over}"


def test_winograd_error_on_random_data_is_within_4x_the_direct_convolutions():
    _assert_within(workloads.conv_errors("random", batch=16))


def test_winograd_error_on_mnist_activations_is_within_4x_the_direct_convolutions(data_dir):
    _assert_within(workloads.conv_errors("mnist", batch=16, data_dir=data_dir))


def test_deep_convnet_runs_its_convolutions_with_16_or_more_input_channels_by_winograd_at_batch_100():
    for conv in workloads.deep_convnet_convs():
        c, h, w = conv.in_shape
        oh, ow = h + 2 * conv.pad - 2, w + 2 * conv.pad - 2
        assert cpu_conv.winograd_runs(100, c, oh, ow, pool=conv.pool) == (c >= 16), conv.in_shape


def test_winograd_waits_for_enough_tiles_to_repay_the_weights_transform():
    assert not cpu_conv.winograd_pays(16, 64, 8, 8)
    assert cpu_conv.winograd_pays(32, 64, 8, 8)


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("n, c, h, w, f, pad, pool", [
    (1, 3, 4, 6, 5, 1, None),  # few channels, one image: Winograd runs when asked
    (5, 16, 6, 4, 9, 1, 2),  # several images per task, the pool on the tiles, channels off the 8-blocks
    (3, 8, 4, 6, 16, 2, None),  # pad 2: the input gradient correlates the unpadded gradient
])
def test_winograd_and_the_direct_kernels_agree(n, c, h, w, f, pad, pool, dtype):
    r = np.random.default_rng(1)
    x = r.standard_normal((n, c, h, w)).astype(dtype)
    wt, b = r.standard_normal((f, c, 3, 3)).astype(dtype), r.standard_normal(f).astype(dtype)
    oh, ow = h + 2 * pad - 2, w + 2 * pad - 2
    shape = (n, f, oh // (pool or 1), ow // (pool or 1))
    got, want = {}, {}
    for algo, res in ((True, got), (False, want)):
        y, am = np.empty(shape, dtype), np.empty(shape, np.uint8) if pool else None
        cpu_conv.conv2d(x, wt, b, pad, y, relu=True, pool=pool, argmax=am, winograd=algo)
        dout = np.random.default_rng(2).standard_normal(shape).astype(dtype)
        dw, db, dx = np.empty_like(wt), np.empty_like(b), np.empty_like(x)
        cpu_conv.conv2d_backward(dout, x, wt, pad, dw, db, dx, relu_out=y, pool=pool, argmax=am,
                                 winograd=algo and cpu_conv.winograd_fits(h, w, 3, 3))
        res.update(y=y, am=am, dx=dx, dw=dw, db=db)
    tol = 1e-5 if dtype == np.float32 else 1e-12
    for key in ("y", "dx", "dw", "db"):
        np.testing.assert_allclose(got[key], want[key], rtol=tol, atol=tol, err_msg=key)
    if pool:
        np.testing.assert_array_equal(got["am"], want["am"])


def test_winograd_refuses_what_it_cannot_tile():
    x = np.zeros((1, 16, 5, 5), np.float32)
    w = np.zeros((4, 16, 3, 3), np.float32)
    with pytest.raises(ValueError, match="even output"):
        cpu_conv.conv2d(x, w, np.zeros(4, np.float32), 1, np.empty((1, 4, 5, 5), np.float32), winograd=True)

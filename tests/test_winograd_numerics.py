"""Winograd F(2x2, 3x3) stays as accurate as the direct sum (issue 18): its float32 error against
the float64 direct convolution is at most 4x the direct float32 kernels' error, on every
deep_convnet convolution it runs, forward and input gradient (``bench/winograd_error.py`` prints
the figures)."""

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
    _assert_within(workloads.conv_errors("random", batch=8))


def test_winograd_error_on_mnist_activations_is_within_4x_the_direct_convolutions(data_dir):
    _assert_within(workloads.conv_errors("mnist", batch=8, data_dir=data_dir))


def test_deep_convnet_runs_its_convolutions_with_16_or_more_input_channels_by_winograd():
    for conv in workloads.deep_convnet_convs():
        c, h, w = conv.in_shape
        runs = cpu_conv.winograd_fits(c, h + 2 * conv.pad - 2, w + 2 * conv.pad - 2, 3, 3, conv.pool)
        assert runs == (c >= 16), conv.in_shape


def test_winograd_refuses_what_it_cannot_tile():
    x = np.zeros((1, 16, 5, 5), np.float32)
    w = np.zeros((4, 16, 3, 3), np.float32)
    with pytest.raises(ValueError, match="even output"):
        cpu_conv.conv2d(x, w, np.zeros(4, np.float32), 1, np.empty((1, 4, 5, 5), np.float32), winograd=True)

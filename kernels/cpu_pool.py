"""2x2 max-pool windows on SIMD vectors, LANES windows at a time: the one place their rule (the
first maximum, or the first NaN, wins, as NumPy's argmax) and their gradient routing are written,
for the MaxPool2d kernels (``cpu.py``) and the pool fused into a conv (``cpu_conv.py``).

A row of windows is two rows of pixels; ``vload_pairs`` splits each into the windows' left and
right columns, so a window's four pixels sit in the same lane of four vectors.
"""

from __future__ import annotations

from numba import njit

from .simd import vadd, vgate, vload_pairs, vmax_arg, vpick, vsplat, vstore_first, vstore_pairs


@njit(inline="always")
def biased(v, vb, relu):
    """v + vb, then x * (x > 0) if ``relu`` (the ReLU layer's formula: NaN stays NaN)."""
    v = vadd(v, vb)
    return vgate(v, v) if relu else v


@njit(inline="always")
def max_windows(src, top, wp, vb, relu, n, dst, am, o):
    """The n (<= LANES) 2x2 windows whose top-left pixels are src[top + 2k], their rows wp apart:
    each window's max into dst[o + k] and its window-local index (0-3, row by row) into am[o + k].
    With ``vb`` (the bias in every lane) not None, each pixel first gets the bias and, if ``relu``,
    the ReLU (a conv's epilogue). Reads 2*LANES elements of each row."""
    left, right = vload_pairs(src, top)
    low_left, low_right = vload_pairs(src, top + wp)
    window_max(left, right, low_left, low_right, vb, relu, n, dst, am, o)


@njit(inline="always")
def window_max(left, right, low_left, low_right, vb, relu, n, dst, am, o):
    """``max_windows`` of windows already in registers: lane k of the four vectors is window k's
    top-left, top-right, bottom-left and bottom-right pixel."""
    if vb is not None:
        left, right = biased(left, vb, relu), biased(right, vb, relu)
        low_left, low_right = biased(low_left, vb, relu), biased(low_right, vb, relu)
    m, arg = vmax_arg(left, vsplat(dst.dtype.type(0)), right, 1)
    m, arg = vmax_arg(m, arg, low_left, 2)
    m, arg = vmax_arg(m, arg, low_right, 3)
    vstore_first(dst, o, m, n)
    vstore_first(am, o, arg, n)


@njit(inline="always")
def scatter_windows(g, a, top, wp, n, dst):
    """The gradients g of n (<= LANES) 2x2 windows, each to its argmax a (window-local, as a
    float vector) and zero to the window's other pixels: dst[top + 2k], rows wp apart."""
    vstore_pairs(dst, top, vpick(a, 0, g), vpick(a, 1, g), n)
    vstore_pairs(dst, top + wp, vpick(a, 2, g), vpick(a, 3, g), n)

"""CPU kernels: Numba ``@njit(parallel=True, cache=True)`` loops with the reference signatures."""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from .reference import conv_output_size

_JIT = dict(parallel=True, cache=True, error_model="numpy")


@njit(**_JIT)
def _im2col(x, fh, fw, stride, pad, oh, ow, col):
    n, c, h, w = x.shape
    zero = x.dtype.type(0)
    for r in prange(n * oh):
        i = r // oh
        oy = r - i * oh
        for ox in range(ow):
            row = r * ow + ox
            for ch in range(c):
                for ky in range(fh):
                    iy = oy * stride + ky - pad
                    base = (ch * fh + ky) * fw
                    if iy < 0 or iy >= h:
                        for kx in range(fw):
                            col[row, base + kx] = zero
                        continue
                    for kx in range(fw):
                        ix = ox * stride + kx - pad
                        if ix < 0 or ix >= w:
                            col[row, base + kx] = zero
                        else:
                            col[row, base + kx] = x[i, ch, iy, ix]


@njit(**_JIT)
def _col2im(col, fh, fw, stride, pad, oh, ow, out):
    # A gather: each input pixel sums the column entries that copied it, so no two
    # threads write the same element and the summation order is fixed.
    n, c, h, w = out.shape
    for p in prange(n * c):
        i = p // c
        ch = p - i * c
        for y in range(h):
            for x in range(w):
                s = col.dtype.type(0)
                for ky in range(fh):
                    ty = y + pad - ky
                    if ty < 0 or ty % stride != 0:
                        continue
                    oy = ty // stride
                    if oy >= oh:
                        continue
                    for kx in range(fw):
                        tx = x + pad - kx
                        if tx < 0 or tx % stride != 0:
                            continue
                        ox = tx // stride
                        if ox >= ow:
                            continue
                        s += col[(i * oh + oy) * ow + ox, (ch * fh + ky) * fw + kx]
                out[i, ch, y, x] = s


def _checked_out(out, shape, dtype):
    if out is None:
        return np.empty(shape, dtype=dtype)
    if out.shape != tuple(shape) or out.dtype != dtype or not out.flags.c_contiguous:
        raise ValueError(f"out must be C-contiguous with shape {tuple(shape)} and dtype {dtype}, got {out.shape} {out.dtype}")
    return out


def im2col(x, fh: int, fw: int, stride: int = 1, pad: int = 0, out=None):
    """(N, C, H, W) -> (N*OH*OW, C*FH*FW): one row per output position (the book's layout)."""
    x = np.ascontiguousarray(x)
    n, c, h, w = x.shape
    oh, ow = conv_output_size(h, fh, stride, pad), conv_output_size(w, fw, stride, pad)
    col = _checked_out(out, (n * oh * ow, c * fh * fw), x.dtype)
    _im2col(x, fh, fw, stride, pad, oh, ow, col)
    return col


def col2im(col, x_shape, fh: int, fw: int, stride: int = 1, pad: int = 0, out=None):
    """The adjoint of :func:`im2col`, as a race-free, deterministic gather."""
    n, c, h, w = x_shape
    oh, ow = conv_output_size(h, fh, stride, pad), conv_output_size(w, fw, stride, pad)
    if col.shape != (n * oh * ow, c * fh * fw):
        raise ValueError(f"col2im: col must have shape {(n * oh * ow, c * fh * fw)}, got {col.shape}")
    col = np.ascontiguousarray(col)
    img = _checked_out(out, (n, c, h, w), col.dtype)
    _col2im(col, fh, fw, stride, pad, oh, ow, img)
    return img

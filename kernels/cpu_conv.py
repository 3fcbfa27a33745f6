"""Direct stride-1 convolution on the CPU: no im2col matrix, every image worked on in cache.

The trick (a "padded-width grid"): each image is zero-padded to rows of width ``wp = W + 2*pad``
and the output is computed on the same grid, ``oh`` rows of ``wp`` columns, of which the last
``wp - ow`` per row are discarded. A filter tap (ky, kx) then reads the padded image at a fixed
offset ``ky*wp + kx`` from the output position, so every tap is one contiguous multiply-add over
the whole output plane, which LLVM vectorizes, with the plane (a few KB) staying in L1. Output
channels go four at a time so each input load feeds four accumulators.

The im2col + GEMM form materializes C*FH*FW values per output position (45 MB for
deep_convnet's second conv at batch 100) and streams them through memory twice; here only the
images themselves do. Strided convolutions keep the im2col + GEMM form (``cpu.conv2d``).
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange, uint64

_FLAGS = dict(cache=True, error_model="numpy", parallel=True)
# fused multiply-adds; the weight-gradient sums may also be reordered so they vectorize
_FWD = dict(fastmath={"contract"}, **_FLAGS)
_RED = dict(fastmath={"contract", "reassoc", "nsz"}, **_FLAGS)

CO_BLOCK = 4  # output channels per pass; weights are zero-padded to a multiple of it
CHUNKS = 8  # images are split into this many chunks for the weight gradient's partial sums


def grid_shape(h: int, w: int, fh: int, pad: int) -> tuple[int, int, int]:
    """(wp, plane, psz): padded row width, output-plane length on the grid, padded-image length
    (one row of slack, so the last tap's reads past the garbage columns stay inside)."""
    hp, wp = h + 2 * pad, w + 2 * pad
    oh = hp - fh + 1
    return wp, oh * wp, (hp + 1) * wp


@njit(inline="always")
def _pad_image(src, pad, wp, dst):
    """(C, H, W) image -> zero-padded (C, psz) rows of width wp."""
    c, h, w = src.shape
    dst[:] = 0
    for ch in range(c):
        for y in range(h):
            row = (y + pad) * wp + pad
            for x in range(w):
                dst[ch, row + x] = src[ch, y, x]


@njit(**_FWD)
def _conv2d(x, w4, b, pad, out):
    n, c, h, wd = x.shape
    fb, _, fh, fw = w4.shape  # fb = output channels rounded up to CO_BLOCK
    _, f, oh, ow = out.shape
    hp, wp = h + 2 * pad, wd + 2 * pad
    plane = oh * wp
    psz = (hp + 1) * wp
    for i in prange(n):
        xp = np.empty((c, psz), x.dtype)
        _pad_image(x[i], pad, wp, xp)
        acc = np.empty((CO_BLOCK, plane), x.dtype)
        for f0 in range(0, fb, CO_BLOCK):
            a0, a1, a2, a3 = acc[0], acc[1], acc[2], acc[3]
            a0[:] = 0
            a1[:] = 0
            a2[:] = 0
            a3[:] = 0
            for ch in range(c):
                src = xp[ch]
                for ky in range(fh):
                    for kx in range(fw):
                        w0, w1 = w4[f0, ch, ky, kx], w4[f0 + 1, ch, ky, kx]
                        w2, w3 = w4[f0 + 2, ch, ky, kx], w4[f0 + 3, ch, ky, kx]
                        o = uint64(ky * wp + kx)
                        for j in range(uint64(plane)):
                            s = src[o + j]
                            a0[j] += w0 * s
                            a1[j] += w1 * s
                            a2[j] += w2 * s
                            a3[j] += w3 * s
            for q in range(min(CO_BLOCK, f - f0)):
                bias = b[f0 + q]
                aq = acc[q]
                dst = out[i, f0 + q]
                for y in range(oh):
                    for xx in range(ow):
                        dst[y, xx] = aq[y * wp + xx] + bias


@njit(**_RED)
def _conv2d_backward(dout, x, w4, pad, need_dx, dw_part, db_part, dx):
    n, c, h, wd = x.shape
    fb, _, fh, fw = w4.shape
    _, f, oh, ow = dout.shape
    hp, wp = h + 2 * pad, wd + 2 * pad
    plane = oh * wp
    psz = (hp + 1) * wp
    chunks = dw_part.shape[0]
    for k in prange(chunks):  # a fixed split, so the sums' order does not depend on the thread count
        lo, hi = k * n // chunks, (k + 1) * n // chunks
        dwk, dbk = dw_part[k], db_part[k]
        dwk[:] = 0
        dbk[:] = 0
        xp = np.empty((c, psz), x.dtype)
        dxp = np.empty((c, psz), x.dtype)
        g = np.zeros((fb, plane), x.dtype)  # dout on the grid; garbage columns and padded channels stay 0
        for i in range(lo, hi):
            _pad_image(x[i], pad, wp, xp)
            for q in range(f):
                gq, dq = g[q], dout[i, q]
                sb = dbk[q]
                for y in range(oh):
                    for xx in range(ow):
                        v = dq[y, xx]
                        gq[y * wp + xx] = v
                        sb += v
                dbk[q] = sb
            # dW[f, ch, ky, kx] += sum_j g[f, j] * xp[ch, ky*wp + kx + j]
            for f0 in range(0, fb, CO_BLOCK):
                g0, g1, g2, g3 = g[f0], g[f0 + 1], g[f0 + 2], g[f0 + 3]
                for ch in range(c):
                    src = xp[ch]
                    for ky in range(fh):
                        for kx in range(fw):
                            o = uint64(ky * wp + kx)
                            t0 = t1 = t2 = t3 = x.dtype.type(0)
                            for j in range(uint64(plane)):
                                s = src[o + j]
                                t0 += g0[j] * s
                                t1 += g1[j] * s
                                t2 += g2[j] * s
                                t3 += g3[j] * s
                            dwk[f0, ch, ky, kx] += t0
                            dwk[f0 + 1, ch, ky, kx] += t1
                            dwk[f0 + 2, ch, ky, kx] += t2
                            dwk[f0 + 3, ch, ky, kx] += t3
            if not need_dx:
                continue
            # dxp[ch, ky*wp + kx + j] += sum_f w[f, ch, ky, kx] * g[f, j]  (the transposed conv)
            dxp[:] = 0
            for ch in range(c):
                d = dxp[ch]
                for f0 in range(0, fb, CO_BLOCK):
                    g0, g1, g2, g3 = g[f0], g[f0 + 1], g[f0 + 2], g[f0 + 3]
                    for ky in range(fh):
                        for kx in range(fw):
                            w0, w1 = w4[f0, ch, ky, kx], w4[f0 + 1, ch, ky, kx]
                            w2, w3 = w4[f0 + 2, ch, ky, kx], w4[f0 + 3, ch, ky, kx]
                            o = uint64(ky * wp + kx)
                            for j in range(uint64(plane)):
                                d[o + j] += w0 * g0[j] + w1 * g1[j] + w2 * g2[j] + w3 * g3[j]
            for ch in range(c):
                d = dxp[ch]
                for y in range(h):
                    row = (y + pad) * wp + pad
                    for xx in range(wd):
                        dx[i, ch, y, xx] = d[row + xx]


def _blocked(w):
    """Weights (F, C, FH, FW) zero-padded to a multiple of CO_BLOCK output channels."""
    f = w.shape[0]
    fb = -(-f // CO_BLOCK) * CO_BLOCK
    if fb == f:
        return np.ascontiguousarray(w)
    w4 = np.zeros((fb, *w.shape[1:]), dtype=w.dtype)
    w4[:f] = w
    return w4


def conv2d(x, w, b, pad: int, out):
    """Stride-1 convolution of contiguous ``x`` (N, C, H, W) into ``out`` (N, F, OH, OW), bias added."""
    _conv2d(x, _blocked(w), b, pad, out)
    return out


def conv2d_backward(dout, x, w, pad: int, dw, db, dx=None):
    """Gradients of :func:`conv2d`: writes ``dw`` and ``db``, and ``dx`` unless it is None."""
    w4 = _blocked(w)
    chunks = min(CHUNKS, x.shape[0])
    dw_part = np.empty((chunks, *w4.shape), dtype=x.dtype)
    db_part = np.empty((chunks, w4.shape[0]), dtype=x.dtype)
    need_dx = dx is not None
    _conv2d_backward(dout, x, w4, pad, need_dx, dw_part, db_part, dx if need_dx else np.empty((1, 1, 1, 1), x.dtype))
    f = w.shape[0]
    np.sum(dw_part[:, :f], axis=0, out=dw)
    np.sum(db_part[:, :f], axis=0, out=db)
    return dx

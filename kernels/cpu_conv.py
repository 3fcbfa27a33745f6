"""Direct stride-1 convolution on the CPU: no im2col matrix, every image worked on in cache.

The trick (a "padded-width grid"): each image is zero-padded to rows of width ``wp = W + 2*pad``
and the output is computed on the same grid, ``oh`` rows of ``wp`` columns, of which the last
``wp - ow`` per row are discarded. A filter tap (ky, kx) then reads the padded image at a fixed
offset ``ky*wp + kx`` from the output position, so every tap is one contiguous multiply-add over
the whole output plane, which LLVM vectorizes, with the plane (a few KB) staying in L1.

Register reuse: four output channels share each input load, and for 3-wide kernels one pass
does a whole kernel row (3 taps), so each accumulator is loaded and stored once per 3 taps
instead of per tap (L1 stores were the bound: 75 -> 120 GFLOP/s on deep_convnet's second conv).

Small images are laid end to end, one block of ``(H + 2*pad + 1) * wp`` per image, so the
loops run over ~500 positions (deep_convnet's 8x8 layers alone give 80); every block ends in at
least FH zero rows, so outputs never mix neighbouring images.

The input gradient is the same correlation run backwards: dout on the grid, shifted by the
kernel's extent, correlated with the flipped kernels (input and output channels swapped). The
weight gradient is one dot product per (output channel, input channel, tap) over the grid,
summed per chunk of images in a fixed split, so it is deterministic for any thread count.

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
CHUNKS = 8  # image groups are split into this many chunks for the weight gradient's partial sums
GROUP_ELEMS = 512  # grid positions per group of images (group_size)


@njit(inline="always")
def _pad_group(x, i0, i1, pad, wp, psz, dst):
    """Images i0..i1-1 of x (N, C, H, W), zero-padded to rows of width wp, one per psz block of dst."""
    _, c, h, w = x.shape
    dst[:] = 0
    for i in range(i0, i1):
        base = (i - i0) * psz + pad * wp + pad
        for ch in range(c):
            for y in range(h):
                row = base + y * wp
                for xx in range(w):
                    dst[ch, row + xx] = x[i, ch, y, xx]


@njit(fastmath={"contract"}, error_model="numpy", cache=True)
def _correlate(src, start, w4, f0, wp, plane, acc):
    """acc[q, j] = sum over k, ky, kx of w4[f0+q, k, ky, kx] * src[k, start + ky*wp + kx + j], for
    q < 4 and j < plane: four output planes on the grid from the K planes of ``src``."""
    _, k, fh, fw = w4.shape
    a0, a1, a2, a3 = acc[0, :plane], acc[1, :plane], acc[2, :plane], acc[3, :plane]
    a0[:] = 0
    a1[:] = 0
    a2[:] = 0
    a3[:] = 0
    one, two = uint64(1), uint64(2)
    for ch in range(k):
        for ky in range(fh):
            row = src[ch, start + ky * wp :]
            if fw == 3:  # the whole kernel row in one pass
                p0, p1, p2 = w4[f0, ch, ky, 0], w4[f0, ch, ky, 1], w4[f0, ch, ky, 2]
                q0, q1, q2 = w4[f0 + 1, ch, ky, 0], w4[f0 + 1, ch, ky, 1], w4[f0 + 1, ch, ky, 2]
                r0, r1, r2 = w4[f0 + 2, ch, ky, 0], w4[f0 + 2, ch, ky, 1], w4[f0 + 2, ch, ky, 2]
                t0, t1, t2 = w4[f0 + 3, ch, ky, 0], w4[f0 + 3, ch, ky, 1], w4[f0 + 3, ch, ky, 2]
                for j in range(uint64(plane)):
                    s0, s1, s2 = row[j], row[j + one], row[j + two]
                    a0[j] += p0 * s0 + p1 * s1 + p2 * s2
                    a1[j] += q0 * s0 + q1 * s1 + q2 * s2
                    a2[j] += r0 * s0 + r1 * s1 + r2 * s2
                    a3[j] += t0 * s0 + t1 * s1 + t2 * s2
                continue
            for kx in range(fw):
                w0, w1 = w4[f0, ch, ky, kx], w4[f0 + 1, ch, ky, kx]
                w2, w3 = w4[f0 + 2, ch, ky, kx], w4[f0 + 3, ch, ky, kx]
                o = uint64(kx)
                for j in range(uint64(plane)):
                    s = row[o + j]
                    a0[j] += w0 * s
                    a1[j] += w1 * s
                    a2[j] += w2 * s
                    a3[j] += w3 * s


@njit(**_FWD)
def _conv2d(x, w4, b, pad, group, out):
    n, c, h, wd = x.shape
    fb = w4.shape[0]  # output channels rounded up to CO_BLOCK
    _, f, oh, ow = out.shape
    hp, wp = h + 2 * pad, wd + 2 * pad
    psz = (hp + 1) * wp  # one row of slack: the garbage columns' reads stay inside the block
    for gi in prange((n + group - 1) // group):
        i0 = gi * group
        i1 = min(n, i0 + group)
        plane = (i1 - i0 - 1) * psz + oh * wp  # up to the last image's last output
        xp = np.empty((c, group * psz), x.dtype)
        _pad_group(x, i0, i1, pad, wp, psz, xp)
        acc = np.empty((CO_BLOCK, group * psz), x.dtype)
        for f0 in range(0, fb, CO_BLOCK):
            _correlate(xp, 0, w4, f0, wp, plane, acc)
            for q in range(min(CO_BLOCK, f - f0)):
                bias = b[f0 + q]
                aq = acc[q]
                for i in range(i0, i1):
                    dst = out[i, f0 + q]
                    base = (i - i0) * psz
                    for y in range(oh):
                        for xx in range(ow):
                            dst[y, xx] = aq[base + y * wp + xx] + bias


@njit(**_RED)
def _conv2d_backward(dout, x, w4, wflip, pad, group, need_dx, dw_part, db_part, dx):
    n, c, h, wd = x.shape
    fb, _, fh, fw = w4.shape
    cb = wflip.shape[0]  # input channels rounded up to CO_BLOCK
    _, f, oh, ow = dout.shape
    hp, wp = h + 2 * pad, wd + 2 * pad
    psz = (hp + 1) * wp
    # dout on the grid, shifted right by the kernel's extent m: the input gradient at padded
    # position q is sum over taps of wflip * gm[q + ky*wp + kx], the forward correlation again.
    # Each image's block leaves fh zero rows after its outputs, so neighbours never mix.
    m = (fh - 1) * wp + (fw - 1)
    gsz = m + group * psz + wp
    ngroups = (n + group - 1) // group
    chunks = dw_part.shape[0]
    one, two = uint64(1), uint64(2)
    zero = x.dtype.type(0)
    for k in prange(chunks):  # a fixed split, so the sums' order does not depend on the thread count
        g_lo, g_hi = k * ngroups // chunks, (k + 1) * ngroups // chunks
        dwk, dbk = dw_part[k], db_part[k]
        dwk[:] = 0
        dbk[:] = 0
        xp = np.empty((c, group * psz), x.dtype)
        gm = np.empty((fb, gsz), x.dtype)
        acc = np.empty((CO_BLOCK, group * psz), x.dtype)
        for gi in range(g_lo, g_hi):
            i0 = gi * group
            i1 = min(n, i0 + group)
            plane = (i1 - i0 - 1) * psz + oh * wp
            _pad_group(x, i0, i1, pad, wp, psz, xp)
            gm[:] = 0  # zero off the outputs and in the padded channels
            for q in range(f):
                gq = gm[q]
                sb = dbk[q]
                for i in range(i0, i1):
                    dq = dout[i, q]
                    base = m + (i - i0) * psz
                    for y in range(oh):
                        for xx in range(ow):
                            v = dq[y, xx]
                            gq[base + y * wp + xx] = v
                            sb += v
                dbk[q] = sb
            # dW[f, ch, ky, kx] += sum_j g[f, j] * xp[ch, ky*wp + kx + j], g[f, j] = gm[f, m + j]
            for f0 in range(0, fb, CO_BLOCK):
                g0, g1, g2, g3 = gm[f0, m:], gm[f0 + 1, m:], gm[f0 + 2, m:], gm[f0 + 3, m:]
                for ch in range(c):
                    for ky in range(fh):
                        row = xp[ch, ky * wp :]
                        if fw == 3:  # a kernel row per pass: 12 sums share 3 + 4 loads
                            u00 = u01 = u02 = u10 = u11 = u12 = zero
                            u20 = u21 = u22 = u30 = u31 = u32 = zero
                            for j in range(uint64(plane)):
                                s0, s1, s2 = row[j], row[j + one], row[j + two]
                                e0, e1, e2, e3 = g0[j], g1[j], g2[j], g3[j]
                                u00 += e0 * s0
                                u01 += e0 * s1
                                u02 += e0 * s2
                                u10 += e1 * s0
                                u11 += e1 * s1
                                u12 += e1 * s2
                                u20 += e2 * s0
                                u21 += e2 * s1
                                u22 += e2 * s2
                                u30 += e3 * s0
                                u31 += e3 * s1
                                u32 += e3 * s2
                            dwk[f0, ch, ky, 0] += u00
                            dwk[f0, ch, ky, 1] += u01
                            dwk[f0, ch, ky, 2] += u02
                            dwk[f0 + 1, ch, ky, 0] += u10
                            dwk[f0 + 1, ch, ky, 1] += u11
                            dwk[f0 + 1, ch, ky, 2] += u12
                            dwk[f0 + 2, ch, ky, 0] += u20
                            dwk[f0 + 2, ch, ky, 1] += u21
                            dwk[f0 + 2, ch, ky, 2] += u22
                            dwk[f0 + 3, ch, ky, 0] += u30
                            dwk[f0 + 3, ch, ky, 1] += u31
                            dwk[f0 + 3, ch, ky, 2] += u32
                            continue
                        for kx in range(fw):
                            o = uint64(kx)
                            t0 = t1 = t2 = t3 = zero
                            for j in range(uint64(plane)):
                                s = row[o + j]
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
            for c0 in range(0, cb, CO_BLOCK):  # only the images' own rows, not the padding's
                _correlate(gm, pad * wp, wflip, c0, wp, (i1 - i0 - 1) * psz + h * wp, acc)
                for q in range(min(CO_BLOCK, c - c0)):
                    aq = acc[q]
                    for i in range(i0, i1):
                        dst = dx[i, c0 + q]
                        base = (i - i0) * psz + pad
                        for y in range(h):
                            row0 = base + y * wp
                            for xx in range(wd):
                                dst[y, xx] = aq[row0 + xx]


def _blocked(w):
    """Weights (F, C, FH, FW) zero-padded to a multiple of CO_BLOCK output channels."""
    f = w.shape[0]
    fb = -(-f // CO_BLOCK) * CO_BLOCK
    if fb == f:
        return np.ascontiguousarray(w)
    w4 = np.zeros((fb, *w.shape[1:]), dtype=w.dtype)
    w4[:f] = w
    return w4


def group_size(x_shape, pad: int) -> int:
    """Images laid end to end per pass: small images alone leave the vector loops short
    (deep_convnet's 8x8 planes are 80 grid positions); about GROUP_ELEMS positions per group."""
    _, _, h, w = x_shape
    return max(1, GROUP_ELEMS // ((h + 2 * pad + 1) * (w + 2 * pad)))


def conv2d(x, w, b, pad: int, out):
    """Stride-1 convolution of contiguous ``x`` (N, C, H, W) into ``out`` (N, F, OH, OW), bias added."""
    _conv2d(x, _blocked(w), b, pad, group_size(x.shape, pad), out)
    return out


def conv2d_backward(dout, x, w, pad: int, dw, db, dx=None):
    """Gradients of :func:`conv2d`: writes ``dw`` and ``db``, and ``dx`` unless it is None."""
    w4 = _blocked(w)
    # (C, F, FH, FW) flipped in both spatial axes: the transposed convolution's kernels
    wflip = _blocked(np.ascontiguousarray(w.transpose(1, 0, 2, 3)[:, :, ::-1, ::-1]))
    group = group_size(x.shape, pad)
    chunks = min(CHUNKS, -(-x.shape[0] // group))
    dw_part = np.empty((chunks, *w4.shape), dtype=x.dtype)
    db_part = np.empty((chunks, w4.shape[0]), dtype=x.dtype)
    need_dx = dx is not None
    _conv2d_backward(dout, x, w4, wflip, pad, group, need_dx, dw_part, db_part,
                     dx if need_dx else np.empty((1, 1, 1, 1), x.dtype))
    f = w.shape[0]
    np.sum(dw_part[:, :f], axis=0, out=dw)
    np.sum(db_part[:, :f], axis=0, out=db)
    return dx

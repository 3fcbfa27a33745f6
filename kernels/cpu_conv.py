"""Direct stride-1 convolution on the CPU: no im2col matrix, every image worked on in cache.

The trick (a "padded-width grid"): each image is zero-padded to rows of width ``wp = W + 2*pad``
and the output is computed on the same grid, ``oh`` rows of ``wp`` columns, of which the last
``wp - ow`` per row are discarded. A filter tap (ky, kx) then reads the padded image at a fixed
offset ``ky*wp + kx`` from the output position, so every tap is a contiguous run of
multiply-adds along the output plane, which LLVM vectorizes, with the image (a few KB) in L1.

Register blocking (``_correlate``): for a block of 16 grid positions and 4 output channels the
64 sums live in vector registers (a stack array LLVM promotes) across every input channel and
tap, and are stored once; a multiply-add over whole planes, accumulating in memory, was bound by
L1 stores (deep_convnet's 8x8 convs: 85 -> 120 GFLOP/s).

The input gradient is the same correlation run backwards: dout on the grid, shifted by the
kernel's extent, correlated with the flipped kernels (input and output channels swapped). The
weight gradient is one dot product per (output channel, input channel, tap) over the grid, a
3-wide kernel row per pass, summed per chunk of images in a fixed split: deterministic for any
thread count. (Laying small images end to end for longer loops was tried: it pushed the images
out of L1 and was slower.)

The im2col + GEMM form materializes C*FH*FW values per output position (45 MB for
deep_convnet's second conv at batch 100) and streams them through memory twice; here only the
images themselves do. Strided convolutions keep the im2col + GEMM form (``cpu.conv2d``).
"""

from __future__ import annotations

import numpy as np
from numba import carray, njit, prange, types, uint64
from numba.core import cgutils
from numba.extending import intrinsic

_FLAGS = dict(cache=True, error_model="numpy", parallel=True)
# fused multiply-adds; the weight-gradient sums may also be reordered so they vectorize
_FWD = dict(fastmath={"contract"}, **_FLAGS)
_RED = dict(fastmath={"contract", "reassoc", "nsz"}, **_FLAGS)

CO_BLOCK = 4  # output channels per pass; weights are zero-padded to a multiple of it
CHUNKS = 8  # images are split into this many chunks for the weight gradient's partial sums
JB = 16  # grid positions per register block of _correlate: 4 x 16 float32 sums = 8 AVX registers
ACC_SIZE = CO_BLOCK * JB  # a compile-time constant for _stack_array


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


@intrinsic
def _stack_array(typingctx, size, dtype):
    """A fixed-size scratch array on the stack: LLVM can keep it in vector registers, which a
    heap array (np.empty) never is."""
    if not isinstance(size, types.IntegerLiteral):
        return None
    n, elem = size.literal_value, dtype.dtype

    def codegen(context, builder, sig, args):
        return cgutils.alloca_once(builder, context.get_value_type(elem), size=context.get_constant(types.intp, n))

    return types.CPointer(elem)(size, dtype), codegen


@njit(fastmath={"contract"}, error_model="numpy", cache=True)
def _correlate(src, start, w4, f0, wp, plane, acc):
    """acc[q, j] = sum over k, ky, kx of w4[f0+q, k, ky, kx] * src[k, start + ky*wp + kx + j], for
    q < 4 and j < plane rounded up to JB: four output planes on the grid from the K planes of src.

    Register-blocked: for each block of JB positions the 4 x JB sums stay in registers over all
    K*FH*FW taps (each tap: JB/8 vector loads, 4 broadcasts, 4*JB/8 FMAs), and are stored once.
    src must hold JB - 1 readable elements past the last position's reads; acc, JB past plane.
    """
    _, k, fh, fw = w4.shape
    a = carray(_stack_array(ACC_SIZE, src.dtype), (ACC_SIZE,))
    for jb in range((plane + JB - 1) // JB):
        j0 = uint64(jb * JB)
        for q in range(ACC_SIZE):
            a[q] = 0
        for ch in range(k):
            for ky in range(fh):
                row = src[ch, start + ky * wp :]
                for kx in range(fw):
                    w0, w1 = w4[f0, ch, ky, kx], w4[f0 + 1, ch, ky, kx]
                    w2, w3 = w4[f0 + 2, ch, ky, kx], w4[f0 + 3, ch, ky, kx]
                    o = j0 + uint64(kx)
                    for jj in range(JB):
                        s = row[o + uint64(jj)]
                        a[jj] += w0 * s
                        a[JB + jj] += w1 * s
                        a[2 * JB + jj] += w2 * s
                        a[3 * JB + jj] += w3 * s
        for q in range(CO_BLOCK):
            for jj in range(JB):
                acc[q, jb * JB + jj] = a[q * JB + jj]


@njit(**_FWD)
def _conv2d(x, w4, b, pad, out):
    n, c, h, wd = x.shape
    fb = w4.shape[0]  # output channels rounded up to CO_BLOCK
    _, f, oh, ow = out.shape
    hp, wp = h + 2 * pad, wd + 2 * pad
    plane = oh * wp
    psz = (hp + 1) * wp  # one row of slack: the garbage columns' reads stay inside
    for i in prange(n):
        xp = np.empty((c, psz + JB), x.dtype)  # + JB: the last register block's reads
        _pad_image(x[i], pad, wp, xp)
        acc = np.empty((CO_BLOCK, plane + JB), x.dtype)
        for f0 in range(0, fb, CO_BLOCK):
            _correlate(xp, 0, w4, f0, wp, plane, acc)
            for q in range(min(CO_BLOCK, f - f0)):
                bias = b[f0 + q]
                aq = acc[q]
                dst = out[i, f0 + q]
                for y in range(oh):
                    for xx in range(ow):
                        dst[y, xx] = aq[y * wp + xx] + bias


@njit(**_RED)
def _conv2d_backward(dout, x, w4, wflip, pad, need_dx, dw_part, db_part, dx):
    n, c, h, wd = x.shape
    fb, _, fh, fw = w4.shape
    cb = wflip.shape[0]  # input channels rounded up to CO_BLOCK
    _, f, oh, ow = dout.shape
    hp, wp = h + 2 * pad, wd + 2 * pad
    plane = oh * wp
    psz = (hp + 1) * wp
    # dout on the grid, shifted right by the kernel's extent m: the input gradient at padded
    # position q is sum over taps of wflip * gm[q + ky*wp + kx], the forward correlation again
    m = (fh - 1) * wp + (fw - 1)
    gsz = m + hp * wp + wp + JB
    chunks = dw_part.shape[0]
    one, two = uint64(1), uint64(2)
    zero = x.dtype.type(0)
    for k in prange(chunks):  # a fixed split, so the sums' order does not depend on the thread count
        lo, hi = k * n // chunks, (k + 1) * n // chunks
        dwk, dbk = dw_part[k], db_part[k]
        dwk[:] = 0
        dbk[:] = 0
        xp = np.empty((c, psz + JB), x.dtype)
        gm = np.zeros((fb, gsz), x.dtype)  # zero off the outputs and in the padded channels
        acc = np.empty((CO_BLOCK, h * wp + JB), x.dtype)
        for i in range(lo, hi):
            _pad_image(x[i], pad, wp, xp)
            for q in range(f):
                gq, dq = gm[q], dout[i, q]
                sb = dbk[q]
                for y in range(oh):
                    for xx in range(ow):
                        v = dq[y, xx]
                        gq[m + y * wp + xx] = v
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
            for c0 in range(0, cb, CO_BLOCK):  # only the image's own rows, not the padding's
                _correlate(gm, pad * wp, wflip, c0, wp, h * wp, acc)
                for q in range(min(CO_BLOCK, c - c0)):
                    aq = acc[q]
                    dst = dx[i, c0 + q]
                    for y in range(h):
                        row0 = y * wp + pad
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


def conv2d(x, w, b, pad: int, out):
    """Stride-1 convolution of contiguous ``x`` (N, C, H, W) into ``out`` (N, F, OH, OW), bias added."""
    _conv2d(x, _blocked(w), b, pad, out)
    return out


def conv2d_backward(dout, x, w, pad: int, dw, db, dx=None):
    """Gradients of :func:`conv2d`: writes ``dw`` and ``db``, and ``dx`` unless it is None."""
    w4 = _blocked(w)
    # (C, F, FH, FW) flipped in both spatial axes: the transposed convolution's kernels
    wflip = _blocked(np.ascontiguousarray(w.transpose(1, 0, 2, 3)[:, :, ::-1, ::-1]))
    chunks = min(CHUNKS, x.shape[0])
    dw_part = np.empty((chunks, *w4.shape), dtype=x.dtype)
    db_part = np.empty((chunks, w4.shape[0]), dtype=x.dtype)
    need_dx = dx is not None
    _conv2d_backward(dout, x, w4, wflip, pad, need_dx, dw_part, db_part,
                     dx if need_dx else np.empty((1, 1, 1, 1), x.dtype))
    f = w.shape[0]
    np.sum(dw_part[:, :f], axis=0, out=dw)
    np.sum(db_part[:, :f], axis=0, out=db)
    return dx

"""Direct stride-1 convolution on the CPU: no im2col matrix, every image worked on in cache.

Every pass reads its source as "tap columns" (``_tap_columns``): for each channel and kernel
column kx, columns kx .. kx+OW-1 of the zero-padded plane, as rows of width OW. Tap (ky, kx) of
output position p = y*OW + x then reads element p + ky*OW of copy kx, so every tap is a
contiguous run of multiply-adds along the compact output plane, which LLVM vectorizes, with the
copies (tens of KB) in cache; no output position is computed to be discarded.

Register blocking (``_correlate``): for a block of 2 vectors of output positions and 8 output
channels the 16 vector sums live in registers (``simd.Vec`` values, 512-bit on AVX-512) across
every input channel and tap, and are stored once: per tap 2 vector loads and 8 broadcasts feed
16 FMAs. (A multiply-add over whole planes, accumulating in memory, was bound by L1 stores; 4
channels x 16 positions left a 512-bit block only 4 sums, too few to hide the FMA latency.)
A plane of an odd number of vectors is run two images at a time, one vector of each per block,
rather than rounded up (a 14x14 image's 196 positions: 13 vectors, not 14).

The input gradient is the same correlation run backwards: dout padded by the kernel's extent
less pad, correlated with the flipped kernels (input and output channels swapped). The
weight gradient (``_weight_grad``) is one dot product per (output channel, input channel, tap)
over the compact output plane, 8 channels x 3 taps of a kernel row in 24 vector sums, over a
group of images (as many as keep an 8-channel block of their gradients and one channel's tap
columns in L1), the lanes of each tap's 8 sums added at once per group (``simd.vsums_add``);
partial sums per chunk of images in a fixed split make it deterministic for any thread count.

A ReLU after the conv, and a max-pool after that, can be fused: applied as the sums are stored
(the pool's windows taken from the sums in registers, so the full-size output is never
written), and their backward (dout masked by the ReLU's output, each window's gradient put at
its argmax) applied as dout is laid out for the backward passes. Every pass over a row is
explicit vectors, with masked loads and stores where a row ends inside one (``vload_first``).

The im2col + GEMM form materializes C*FH*FW values per output position (45 MB for
deep_convnet's second conv at batch 100) and streams them through memory twice; here only the
images themselves do. Strided convolutions keep the im2col + GEMM form (``cpu.conv2d``).
"""

from __future__ import annotations

import numba
import numpy as np
from numba import njit, prange

from . import simd
from .cpu_pool import biased, max_windows, scatter_windows
from .cpu_winograd import (XI, clear_tiles, grad_products, grad_tiles, hwc_grads, hwc_planes, hwc_tiles,
                           input_tiles, padded_planes, phase_size, plane_stride, store_tiles, tile_products,
                           transformed_weights, weight_grad_from)
from .simd import vadd, vfma, vgate, vload, vload_first, vsplat, vsplat_at, vstore, vstore_first, vsum, vsums_add

_FLAGS = dict(cache=True, error_model="numpy")
_PAR = dict(parallel=True, **_FLAGS)

CO_BLOCK = 8  # output channels per register block; weights are zero-padded to a multiple of it
NV = 2  # vectors of output positions per register block: 8 x 2 sums in 16 vector registers
CHUNKS = 8  # images are split into this many chunks for the weight gradient's partial sums
# The L1 a weight-gradient group of images fills while a block's 24 sums run over every (channel, tap)
GROUP_L1_BYTES = 1 << 15
# The cache a run of images' transformed tiles fills in the Winograd weight gradient (both transforms'
# 16 planes, for the products that read them)
WINOGRAD_DW_BYTES = 1 << 18


@njit(inline="always")
def _padded_channels(n):
    """n channels rounded up to whole register blocks (the packed weights' channel count)."""
    return -(-n // CO_BLOCK) * CO_BLOCK


@njit(inline="always")
def _tap_columns(src, sbase, sstride, c, h, w, py, px, fw, ow, dst, base, tsz):
    """Planes of src (C of H x W, at src[sbase + ch*sstride:]) -> for each channel ch and kernel
    column kx, columns kx .. kx+ow-1 of the plane padded by py rows and px columns (cropped where
    negative), as rows of width ow, at dst[base + (ch*fw + kx)*tsz:]. Tap (ky, kx) of output
    position p = y*ow + x then reads element p + ky*ow of copy kx: the output plane is compact,
    no discarded columns. dst past each copy's rows (to tsz) is zeroed."""
    lanes = simd.lanes(dst.dtype)
    dst[base : base + c * fw * tsz] = 0
    zero = vsplat(dst.dtype.type(0))
    for ch in range(c):
        for kx in range(fw):
            x0 = min(ow, max(0, px - kx))  # the output columns whose source column x + kx - px is in the plane
            x1 = max(x0, min(ow, w + px - kx))
            for y in range(max(0, -py), min(h, h + py)):
                row = base + (ch * fw + kx) * tsz + (y + py) * ow
                s = sbase + ch * sstride + y * w + kx - px
                for xx in range(x0, x1, lanes):
                    n = min(lanes, x1 - xx)
                    vstore_first(dst, row + xx, vload_first(src, s + xx, n, zero), n)


@njit(fastmath={"contract"}, **_FLAGS)
def _correlate8(src, base, cs, rs, ks, wpk, blk, k, fh, fw, plane, paired, soff, acc, astride):
    """acc[q*astride + j] = sum over ch, ky, kx of w[blk*8 + q, ch, ky, kx] * src[base + ch*cs + ky*rs
    + kx*ks + j] for q < 8 and j < plane rounded up to 2 vectors: eight output planes. ``wpk``
    holds the weights packed (blocks, k, fh, fw, 8), flat. src holds tap columns
    (``_tap_columns``): the strides are a channel's copies, a row, one copy.

    Register-blocked: for each block of 2 vectors of positions the 16 vector sums stay in
    registers over all k*fh*fw taps (per tap: 2 vector loads, 8 broadcasts, 16 FMAs) and are
    stored once. src must be readable 2 vectors past the last position's reads.

    ``paired``: the block's second vector is the same positions of a second image at src offset
    ``soff`` (its planes go to acc[8*astride:]), so a plane of an odd number of vectors (80
    positions on 8x8 images: 5) is not rounded up to an even one (6).
    """
    lanes = simd.lanes(src.dtype)
    step, s2, a2 = (lanes, soff, CO_BLOCK * astride) if paired else (NV * lanes, lanes, lanes)
    wblk = blk * k * fh * fw * CO_BLOCK
    zero = vsplat(src.dtype.type(0))
    for j0 in range(0, plane, step):
        a00 = a01 = a10 = a11 = a20 = a21 = a30 = a31 = zero
        a40 = a41 = a50 = a51 = a60 = a61 = a70 = a71 = zero
        for ch in range(k):
            for ky in range(fh):
                s = base + ch * cs + ky * rs + j0
                t = wblk + (ch * fh + ky) * fw * CO_BLOCK
                for kx in range(fw):
                    s0, s1 = vload(src, s + kx * ks), vload(src, s + s2 + kx * ks)
                    w = t + kx * CO_BLOCK
                    w0 = vsplat_at(wpk, w)
                    a00, a01 = vfma(w0, s0, a00), vfma(w0, s1, a01)
                    w1 = vsplat_at(wpk, w + 1)
                    a10, a11 = vfma(w1, s0, a10), vfma(w1, s1, a11)
                    w2 = vsplat_at(wpk, w + 2)
                    a20, a21 = vfma(w2, s0, a20), vfma(w2, s1, a21)
                    w3 = vsplat_at(wpk, w + 3)
                    a30, a31 = vfma(w3, s0, a30), vfma(w3, s1, a31)
                    w4 = vsplat_at(wpk, w + 4)
                    a40, a41 = vfma(w4, s0, a40), vfma(w4, s1, a41)
                    w5 = vsplat_at(wpk, w + 5)
                    a50, a51 = vfma(w5, s0, a50), vfma(w5, s1, a51)
                    w6 = vsplat_at(wpk, w + 6)
                    a60, a61 = vfma(w6, s0, a60), vfma(w6, s1, a61)
                    w7 = vsplat_at(wpk, w + 7)
                    a70, a71 = vfma(w7, s0, a70), vfma(w7, s1, a71)
        for q, (v0, v1) in enumerate(((a00, a01), (a10, a11), (a20, a21), (a30, a31),
                                      (a40, a41), (a50, a51), (a60, a61), (a70, a71))):
            vstore(acc, q * astride + j0, v0)
            vstore(acc, q * astride + j0 + a2, v1)


@njit(fastmath={"contract"}, **_FLAGS)
def _correlate4(src, base, cs, rs, ks, wpk, blk, k, fh, fw, plane, paired, soff, acc, astride):
    """:func:`_correlate8` for CPUs of 16 vector registers (AVX2): the 8 output channels as two
    blocks of 4 x 2 sums (8 sums, 2 loads, a broadcast: no spills), each over every tap."""
    lanes = simd.lanes(src.dtype)
    step, s2, a2 = (lanes, soff, CO_BLOCK * astride) if paired else (NV * lanes, lanes, lanes)
    wblk = blk * k * fh * fw * CO_BLOCK
    zero = vsplat(src.dtype.type(0))
    for j0 in range(0, plane, step):
        for q0 in range(0, CO_BLOCK, 4):
            a00 = a01 = a10 = a11 = a20 = a21 = a30 = a31 = zero
            for ch in range(k):
                for ky in range(fh):
                    s = base + ch * cs + ky * rs + j0
                    t = wblk + (ch * fh + ky) * fw * CO_BLOCK + q0
                    for kx in range(fw):
                        s0, s1 = vload(src, s + kx * ks), vload(src, s + s2 + kx * ks)
                        w = t + kx * CO_BLOCK
                        w0 = vsplat_at(wpk, w)
                        a00, a01 = vfma(w0, s0, a00), vfma(w0, s1, a01)
                        w1 = vsplat_at(wpk, w + 1)
                        a10, a11 = vfma(w1, s0, a10), vfma(w1, s1, a11)
                        w2 = vsplat_at(wpk, w + 2)
                        a20, a21 = vfma(w2, s0, a20), vfma(w2, s1, a21)
                        w3 = vsplat_at(wpk, w + 3)
                        a30, a31 = vfma(w3, s0, a30), vfma(w3, s1, a31)
            for q, (v0, v1) in enumerate(((a00, a01), (a10, a11), (a20, a21), (a30, a31))):
                vstore(acc, (q0 + q) * astride + j0, v0)
                vstore(acc, (q0 + q) * astride + j0 + a2, v1)


_correlate = _correlate8 if simd.WIDE_BLOCKS else _correlate4


@njit(inline="always")
def _paired(plane, lanes):
    """Whether a plane is correlated two images at a time: when it ends in an odd vector."""
    return -(-plane // lanes) % 2 == 1



@njit(fastmath={"contract"}, **_PAR)
def _conv2d(x, wpk, fb, fh, fw, b, pad, relu, pool, out, argmax):
    lanes = simd.lanes(x.dtype)
    n, c, h, wd = x.shape
    f = out.shape[1]
    hp = h + 2 * pad
    oh, ow = hp - fh + 1, wd + 2 * pad - fw + 1
    plane = oh * ow
    tsz = hp * ow + NV * lanes  # + 2 vectors: the last block's reads
    astride = plane + NV * lanes
    per = 2 if _paired(plane, lanes) else 1  # images per task
    for p in prange(-(-n // per)):
        m = min(per, n - p * per)  # images in this task (the last may have one)
        cols = np.empty(m * c * fw * tsz, x.dtype)
        for t in range(m):
            _tap_columns(x[p * per + t], 0, h * wd, c, h, wd, pad, pad, fw, ow, cols, t * c * fw * tsz, tsz)
        acc = np.empty(per * CO_BLOCK * astride, x.dtype)
        for blk in range(fb // CO_BLOCK):
            _correlate(cols, 0, fw * tsz, ow, tsz, wpk, blk, c, fh, fw, plane, m == 2, c * fw * tsz, acc,
                       astride)
            f0 = blk * CO_BLOCK
            for t in range(m):
                i = p * per + t
                for q in range(min(CO_BLOCK, f - f0)):
                    row0 = (t * CO_BLOCK + q) * astride
                    if pool > 1:
                        _pool_plane(acc, row0, ow, b[f0 + q], relu, pool, out[i, f0 + q], argmax[i, f0 + q])
                    else:
                        _store_plane(acc, row0, ow, b[f0 + q], relu, out[i, f0 + q])


@njit(fastmath={"contract"}, **_PAR)
def _conv2d_winograd(x, upk, fb, b, pad, per, relu, pool, out, argmax):
    """``_conv2d`` for 3x3 kernels by Winograd F(2x2, 3x3) (``cpu_winograd``), ``per`` images'
    tiles end to end per task; the same epilogue (bias, ReLU, max-pool) on the output tiles."""
    lanes = simd.lanes(x.dtype)
    n, c, h, wd = x.shape
    f = out.shape[1]
    oh, ow = h + 2 * pad - 2, wd + 2 * pad - 2
    th, tw = oh // 2, ow // 2
    nt = th * tw  # tiles of an image
    psz = (2 * th + 2) * (2 * tw + 2)
    nblk = fb // CO_BLOCK
    for p in prange(-(-n // per)):
        m = min(per, n - p * per)
        tpad = -(-(m * nt) // (NV * lanes)) * NV * lanes  # the task's tiles in whole register blocks
        pp = np.empty(m * c * psz + 4 * lanes, x.dtype)
        pp[m * c * psz :] = 0
        vs = plane_stride(c, tpad, x.itemsize)
        v = np.empty(XI * vs, x.dtype)
        clear_tiles(v, c, tpad, vs, m * nt)
        cp = np.empty(16 * phase_size(th, tw, lanes), x.dtype)
        for k in range(m):
            padded_planes(x[p * per + k], 0, h * wd, c, h, wd, pad, th, tw, pp, k * c * psz)
            input_tiles(pp, k * c * psz, c, th, tw, v, k * nt, tpad, vs, cp)
        prods = np.empty(XI * plane_stride(CO_BLOCK, tpad, x.itemsize), x.dtype)
        for blk in range(nblk):
            tile_products(v, c, tpad, vs, upk, blk, nblk, prods)
            f0 = blk * CO_BLOCK
            for k in range(m):
                i = p * per + k
                for q in range(min(CO_BLOCK, f - f0)):
                    store_tiles(prods, tpad, q, k * nt, th, tw, b[f0 + q], relu, pool, out[i, f0 + q],
                                argmax[i if pool > 1 else 0, f0 + q if pool > 1 else 0])


@njit(inline="always")
def _store_plane(acc, row0, wp, bias, relu, dst):
    """Grid sums acc[row0:] -> output plane dst (OH, OW), ``bias`` added unless it is None (the
    input gradient: adding 0.0 would turn -0.0 into +0.0); with ``relu``, x * (x > 0) as the
    ReLU layer computes it (NaN stays NaN). A vector at a time; reads past a row stay in acc."""
    lanes = simd.lanes(dst.dtype)
    oh, ow = dst.shape
    vb = vsplat(dst.dtype.type(0 if bias is None else bias))
    for y in range(oh):
        for xx in range(0, ow, lanes):
            v = vload(acc, row0 + y * wp + xx)
            if bias is not None:
                v = biased(v, vb, relu)
            vstore_first(dst, y * ow + xx, v, min(lanes, ow - xx))


@njit(inline="always")
def _pool_plane(acc, row0, wp, bias, relu, k, dst, am):
    """Grid sums acc[row0:] -> bias added, ReLU if ``relu``, then each k x k window's max into
    dst (PH, PW) and its window-local index into am, as MaxPool2d on the stored output would
    (the first maximum, or the first NaN, wins): the full-size output is never written."""
    lanes = simd.lanes(dst.dtype)
    ph, pw = dst.shape
    if k == 2:  # the usual pool: LANES windows at a time, even and odd columns split in registers
        vb = vsplat(dst.dtype.type(bias))
        for py in range(ph):
            for px in range(0, pw, lanes):
                max_windows(acc, row0 + 2 * py * wp + 2 * px, wp, vb, relu, min(lanes, pw - px), dst, am,
                            py * pw + px)
        return
    for py in range(ph):
        for px in range(pw):
            base = row0 + py * k * wp + px * k
            best = acc[base] + bias
            if relu:
                best = best * dst.dtype.type(best > 0)
            arg = 0
            for ky in range(k):
                for kx in range(k):
                    v = acc[base + ky * wp + kx] + bias
                    if relu:
                        v = v * dst.dtype.type(v > 0)
                    take = (best == best) and (v > best or v != v)
                    best = v if take else best
                    arg = ky * k + kx if take else arg
            dst[py, px] = best
            am[py, px] = arg


@njit(inline="always")
def _unpool_rows(d, y, relu, am, k, gm, row0, wp):
    """Pooled gradient d (PH, PW) onto rows of width wp at gm[row0:], each value at its window's
    argmax ``am`` and zero elsewhere in the window; with ``relu``, masked by the pooled output y (the
    window's max is its ReLU output, so y > 0 is the ReLU's mask there). Positions outside every
    window are never written: they keep their zeros. Returns the sum (the bias gradient)."""
    lanes = simd.lanes(gm.dtype)
    ph, pw = d.shape
    zero = vsplat(gm.dtype.type(0))
    total = zero
    if k == 2:  # LANES windows at a time: their left and right columns interleaved as stored
        for py in range(ph):
            r0 = row0 + 2 * py * wp
            for px in range(0, pw, lanes):
                n = min(lanes, pw - px)
                g = vload_first(d, py * pw + px, n, zero)
                if relu:
                    g = vgate(g, vload_first(y, py * pw + px, n, zero))
                scatter_windows(g, vload_first(am, py * pw + px, n, zero), r0 + 2 * px, wp, n, gm)
                total = vadd(total, g)
        return vsum(total)
    s = gm.dtype.type(0)
    for py in range(ph):
        for px in range(pw):
            g = d[py, px]
            if relu:
                g = g * d.dtype.type(y[py, px] > 0)
            s += g
            a = am[py, px]
            base = row0 + py * k * wp + px * k
            for ky in range(k):
                for kx in range(k):
                    gm[base + ky * wp + kx] = g if a == ky * k + kx else gm.dtype.type(0)
    return s


@njit(inline="always")
def _masked_rows(d, y, relu, gm, row0, wp):
    """Plane d (OH, OW) onto rows of width wp at gm[row0:]; with ``relu``, masked by the fused ReLU's
    output y (its backward: d * (y > 0)). Returns the sum (the bias gradient)."""
    lanes = simd.lanes(gm.dtype)
    oh, ow = d.shape
    zero = vsplat(gm.dtype.type(0))
    total = zero
    for r in range(oh):
        for xx in range(0, ow, lanes):
            n = min(lanes, ow - xx)
            g = vload_first(d, r * ow + xx, n, zero)
            if relu:
                g = vgate(g, vload_first(y, r * ow + xx, n, zero))
            vstore_first(gm, row0 + r * wp + xx, g, n)
            total = vadd(total, g)
    return vsum(total)


@njit(fastmath={"contract"}, **_FLAGS)
def _weight_grad8(gc, gcz, fb, cols, c, tsz, fh, fw, ow, plane, ng, dwk):
    """dwk[ch, ky, kx, f] += sum over the ng images and output positions j of g[f, j] * (copy kx of
    channel ch)[ky*ow + j]: g the compact output gradient (gc, planes gcz apart), the copies the
    image's tap columns (``_tap_columns``, ``tsz`` apart; dwk flat). Register-blocked: 8 output
    channels x 3 taps of a kernel row (24 vector sums, 11 loads per 24 FMAs) summed over every
    image of the group, then the lanes of each tap's 8 sums at once (``vsums_add``), into 8
    adjacent elements of dwk."""
    lanes = simd.lanes(cols.dtype)
    zero = vsplat(cols.dtype.type(0))
    for f0 in range(0, fb, 8):
        for ch in range(c):
            for ky in range(fh):
                for kx0 in range(0, fw, 3):  # a kernel row 3 taps at a time; taps past fw dropped
                    u00 = u01 = u02 = u10 = u11 = u12 = zero
                    u20 = u21 = u22 = u30 = u31 = u32 = zero
                    u40 = u41 = u42 = u50 = u51 = u52 = zero
                    u60 = u61 = u62 = u70 = u71 = u72 = zero
                    for gi in range(ng):
                        g = (gi * fb + f0) * gcz
                        s = ((gi * c + ch) * fw + kx0) * tsz + ky * ow
                        for j in range(0, plane, lanes):
                            s0, s1, s2 = vload(cols, s + j), vload(cols, s + tsz + j), vload(cols, s + 2 * tsz + j)
                            e = vload(gc, g + j)
                            u00, u01, u02 = vfma(e, s0, u00), vfma(e, s1, u01), vfma(e, s2, u02)
                            e = vload(gc, g + gcz + j)
                            u10, u11, u12 = vfma(e, s0, u10), vfma(e, s1, u11), vfma(e, s2, u12)
                            e = vload(gc, g + 2 * gcz + j)
                            u20, u21, u22 = vfma(e, s0, u20), vfma(e, s1, u21), vfma(e, s2, u22)
                            e = vload(gc, g + 3 * gcz + j)
                            u30, u31, u32 = vfma(e, s0, u30), vfma(e, s1, u31), vfma(e, s2, u32)
                            e = vload(gc, g + 4 * gcz + j)
                            u40, u41, u42 = vfma(e, s0, u40), vfma(e, s1, u41), vfma(e, s2, u42)
                            e = vload(gc, g + 5 * gcz + j)
                            u50, u51, u52 = vfma(e, s0, u50), vfma(e, s1, u51), vfma(e, s2, u52)
                            e = vload(gc, g + 6 * gcz + j)
                            u60, u61, u62 = vfma(e, s0, u60), vfma(e, s1, u61), vfma(e, s2, u62)
                            e = vload(gc, g + 7 * gcz + j)
                            u70, u71, u72 = vfma(e, s0, u70), vfma(e, s1, u71), vfma(e, s2, u72)
                    o = ((ch * fh + ky) * fw + kx0) * fb + f0  # dwk is (C, FH, FW, FB): 8 channels side by side
                    vsums_add(dwk, o, (u00, u10, u20, u30, u40, u50, u60, u70))
                    if kx0 + 1 < fw:
                        vsums_add(dwk, o + fb, (u01, u11, u21, u31, u41, u51, u61, u71))
                    if kx0 + 2 < fw:
                        vsums_add(dwk, o + 2 * fb, (u02, u12, u22, u32, u42, u52, u62, u72))


@njit(fastmath={"contract"}, **_FLAGS)
def _weight_grad4(gc, gcz, fb, cols, c, tsz, fh, fw, ow, plane, ng, dwk):
    """:func:`_weight_grad8` for CPUs of 16 vector registers (AVX2): 4 output channels x 3 taps
    (12 sums, 4 loads) rather than 8 x 3, whose 24 sums would spill."""
    lanes = simd.lanes(cols.dtype)
    zero = vsplat(cols.dtype.type(0))
    for f0 in range(0, fb, 4):
        for ch in range(c):
            for ky in range(fh):
                for kx0 in range(0, fw, 3):  # a kernel row 3 taps at a time; taps past fw dropped
                    u00 = u01 = u02 = u10 = u11 = u12 = zero
                    u20 = u21 = u22 = u30 = u31 = u32 = zero
                    for gi in range(ng):
                        g = (gi * fb + f0) * gcz
                        s = ((gi * c + ch) * fw + kx0) * tsz + ky * ow
                        for j in range(0, plane, lanes):
                            s0, s1, s2 = vload(cols, s + j), vload(cols, s + tsz + j), vload(cols, s + 2 * tsz + j)
                            e = vload(gc, g + j)
                            u00, u01, u02 = vfma(e, s0, u00), vfma(e, s1, u01), vfma(e, s2, u02)
                            e = vload(gc, g + gcz + j)
                            u10, u11, u12 = vfma(e, s0, u10), vfma(e, s1, u11), vfma(e, s2, u12)
                            e = vload(gc, g + 2 * gcz + j)
                            u20, u21, u22 = vfma(e, s0, u20), vfma(e, s1, u21), vfma(e, s2, u22)
                            e = vload(gc, g + 3 * gcz + j)
                            u30, u31, u32 = vfma(e, s0, u30), vfma(e, s1, u31), vfma(e, s2, u32)
                    o = ((ch * fh + ky) * fw + kx0) * fb + f0  # dwk is (C, FH, FW, FB)
                    vsums_add(dwk, o, (u00, u10, u20, u30))
                    if kx0 + 1 < fw:
                        vsums_add(dwk, o + fb, (u01, u11, u21, u31))
                    if kx0 + 2 < fw:
                        vsums_add(dwk, o + 2 * fb, (u02, u12, u22, u32))


_weight_grad = _weight_grad8 if simd.WIDE_BLOCKS else _weight_grad4


@njit(inline="always", **_FLAGS)
def _group_images(oh, ow, hp, fw, lanes, itemsize):
    """Images in a weight-gradient group: as many as keep one 8-channel block of their compact
    output gradients (planes of whole vectors) and one input channel's tap columns in L1."""
    gcz = -(-(oh * ow) // lanes) * lanes
    tsz = hp * ow + NV * lanes
    return max(1, GROUP_L1_BYTES // ((CO_BLOCK * gcz + fw * tsz) * itemsize))


@njit(fastmath={"contract"}, **_PAR)
def _conv2d_backward(dout, x, wfpk, fh, fw, pad, need_dx, relu, relu_out, pool, argmax, dw_part, db_part,
                     dx, wino, dper, wdw, du_part):
    lanes = simd.lanes(x.dtype)
    n, c, h, wd = x.shape
    f = dout.shape[1]
    fb = db_part.shape[1]
    cb = _padded_channels(c)
    hp = h + 2 * pad
    oh, ow = hp - fh + 1, wd + 2 * pad - fw + 1
    # The weight gradient reads the compact output gradient (planes of gcz, whole vectors) against
    # the image's tap columns, as the forward pass does.
    gcz = -(-(oh * ow) // lanes) * lanes
    tsz = hp * ow + NV * lanes
    # The input gradient is the forward correlation of the gradient, padded by the kernel's extent
    # less pad, with the flipped kernels: tap columns of the gradient, rows of the input's width.
    tdz = (h + fh - 1) * wd + NV * lanes
    astride = h * wd + NV * lanes
    per = 2 if _paired(h * wd, lanes) else 1  # images per input-gradient correlation
    group = _group_images(oh, ow, hp, fw, lanes, x.itemsize)
    wnt = (h // 2) * (wd // 2)  # an image's tiles
    wtpad = -(-(dper * wnt) // (NV * lanes)) * NV * lanes
    wpsz = (h // 2 * 2 + 2) * (wd // 2 * 2 + 2)
    # Winograd weight gradient (``wdw``): dU of the tiles of ``mw`` images at a time into du_part
    nt = (oh // 2) * (ow // 2)
    cq = -(-c // max(lanes, CO_BLOCK)) * max(lanes, CO_BLOCK)  # input channels in vectors and 8-blocks
    fq = -(-f // lanes) * lanes
    mw = max(1, WINOGRAD_DW_BYTES // (XI * nt * (cq + fq) * x.itemsize))
    ts, tsy = plane_stride(mw * nt, cq, x.itemsize), plane_stride(mw * nt, fq, x.itemsize)
    chunks = dw_part.shape[0]
    for k in prange(chunks):  # a fixed split, so the sums' order does not depend on the thread count
        lo, hi = k * n // chunks, (k + 1) * n // chunks
        dwk, dbk = dw_part[k], db_part[k]
        dwk[:] = 0
        dbk[:] = 0
        cols = np.zeros((group * c * fw + 2) * tsz if not wdw else 1, x.dtype)  # + 2 copies: taps past fw
        cbuf = np.zeros(group * fb * gcz + lanes, x.dtype)  # zero off the outputs, in padded channels
        gc = cbuf[(-cbuf.ctypes.data) % (lanes * x.itemsize) // x.itemsize :]  # from a vector-aligned address
        dcols = np.empty(per * f * fw * tdz if need_dx and not wino else 1, x.dtype)
        acc = np.empty(per * CO_BLOCK * astride if not wino else 1, x.dtype)
        # Winograd (``wino``): the input gradient's tiles, ``dper`` images at a time
        pp = np.empty(dper * f * wpsz + 4 * lanes if wino else 1, x.dtype)
        v = np.empty(XI * plane_stride(f, wtpad, x.itemsize) if wino else 1, x.dtype)
        cp = np.empty(16 * phase_size(h // 2, wd // 2, lanes) if wino else 1, x.dtype)
        prods = np.empty(XI * plane_stride(CO_BLOCK, wtpad, x.itemsize) if wino else 1, x.dtype)
        duk = du_part[k]
        duk[:] = 0
        xh = np.empty((oh + 2) * (ow + 2) * cq if wdw else 1, x.dtype)
        gh = np.empty(oh * ow * fq if wdw else 1, x.dtype)
        vt = np.empty(XI * ts if wdw else 1, x.dtype)
        yt = np.empty(XI * tsy if wdw else 1, x.dtype)
        for g0 in range(lo, hi, group):
            ng = min(group, hi - g0)
            for gi in range(ng):
                i = g0 + gi
                if not wdw:
                    _tap_columns(x[i], 0, h * wd, c, h, wd, pad, pad, fw, ow, cols, gi * c * fw * tsz, tsz)
                for q in range(f):
                    c0 = (gi * fb + q) * gcz
                    y = relu_out[i if relu else 0, q if relu else 0]
                    if pool > 1:
                        dbk[q] += _unpool_rows(dout[i, q], y, relu, argmax[i, q], pool, gc, c0, ow)
                    else:
                        dbk[q] += _masked_rows(dout[i, q], y, relu, gc, c0, ow)
            if wdw:
                for g1 in range(0, ng, mw):
                    m = min(mw, ng - g1)
                    for t in range(m):
                        hwc_planes(x[g0 + g1 + t], 0, h * wd, c, h, wd, pad, oh // 2, ow // 2, cq, xh)
                        hwc_tiles(xh, cq, oh // 2, ow // 2, vt, t * nt, ts)
                        hwc_grads(gc, (g1 + t) * fb * gcz, gcz, f, oh * ow, fq, gh)
                        grad_tiles(gh, fq, oh // 2, ow // 2, yt, t * nt, tsy)
                    grad_products(vt, ts, yt, tsy, m * nt, cq, fq, duk)
            else:
                _weight_grad(gc, gcz, fb, cols, c, tsz, fh, fw, ow, oh * ow, ng, dwk)
            if not need_dx:
                continue
            if wino:
                for g1 in range(0, ng, dper):
                    m = min(dper, ng - g1)
                    tp = -(-(m * wnt) // (NV * lanes)) * NV * lanes  # these images' tiles in whole blocks
                    pp[m * f * wpsz :] = 0
                    vs = plane_stride(f, tp, x.itemsize)
                    clear_tiles(v, f, tp, vs, m * wnt)
                    for t in range(m):
                        padded_planes(gc, (g1 + t) * fb * gcz, gcz, f, oh, ow, fh - 1 - pad, h // 2, wd // 2, pp,
                                      t * f * wpsz)
                        input_tiles(pp, t * f * wpsz, f, h // 2, wd // 2, v, t * wnt, tp, vs, cp)
                    for blk in range(cb // CO_BLOCK):
                        tile_products(v, f, tp, vs, wfpk, blk, cb // CO_BLOCK, prods)
                        c0 = blk * CO_BLOCK
                        for t in range(m):
                            for q in range(min(CO_BLOCK, c - c0)):
                                store_tiles(prods, tp, q, t * wnt, h // 2, wd // 2, None, False, 1,
                                            dx[g0 + g1 + t, c0 + q], argmax[0, 0])
                continue
            for g1 in range(0, ng, per):
                pair = per == 2 and g1 + 1 < ng  # a group's odd image out runs alone
                for t in range(2 if pair else 1):
                    _tap_columns(gc, (g1 + t) * fb * gcz, gcz, f, oh, ow, fh - 1 - pad, fw - 1 - pad, fw, wd, dcols,
                                 t * f * fw * tdz, tdz)
                for blk in range(cb // CO_BLOCK):
                    _correlate(dcols, 0, fw * tdz, wd, tdz, wfpk, blk, f, fh, fw, h * wd, pair, f * fw * tdz,
                               acc, astride)
                    c0 = blk * CO_BLOCK
                    for gi in range(g1, min(g1 + per, ng)):
                        for q in range(min(CO_BLOCK, c - c0)):
                            _store_plane(acc, ((gi - g1) * CO_BLOCK + q) * astride, wd, None, False,
                                         dx[g0 + gi, c0 + q])


def _packed(w):
    """Weights (F, C, FH, FW) -> flat (ceil(F/8), C, FH, FW, 8): each tap's 8 output channels side
    by side for the broadcasts; output channels zero-padded to a multiple of CO_BLOCK."""
    f = w.shape[0]
    fb = _padded_channels(f)
    w8 = np.zeros((fb, *w.shape[1:]), dtype=w.dtype)
    w8[:f] = w
    return np.ascontiguousarray(w8.reshape(fb // CO_BLOCK, CO_BLOCK, *w.shape[1:]).transpose(0, 2, 3, 4, 1)).ravel(), fb


_NO_ARRAY = np.empty((1, 1, 1, 1), np.uint8)  # stands in for an optional array the kernel will not read


# When Winograd pays: its 16 products per tile sum over the input channels, so with few of them
# the transforms, not the products, are the work; and each call transforms the weights, which
# only enough tiles repay (the crossovers measured: README, "Convolutions").
WINOGRAD_MIN_CHANNELS = 16
WINOGRAD_MIN_TILES = 512


def winograd_fits(oh: int, ow: int, fh: int, fw: int, pool: int | None = None) -> bool:
    """Whether a stride-1 correlation into an oh x ow output can run by Winograd F(2x2, 3x3):
    3x3 kernels, whole 2x2 tiles, a fused pool (if any) of 2x2 windows."""
    return (fh, fw) == (3, 3) and oh % 2 == 0 and ow % 2 == 0 and (pool or 1) in (1, 2)


def winograd_pays(n: int, c: int, oh: int, ow: int) -> bool:
    """Whether Winograd is the faster way for n images of c channels into oh x ow outputs."""
    return c >= WINOGRAD_MIN_CHANNELS and n * (oh // 2) * (ow // 2) >= WINOGRAD_MIN_TILES


def winograd_runs(n: int, c: int, oh: int, ow: int, fh: int = 3, fw: int = 3, pool: int | None = None) -> bool:
    """Whether a correlation of n images of c channels into oh x ow outputs runs by Winograd
    when not forced either way: where it fits and pays."""
    return winograd_fits(oh, ow, fh, fw, pool) and winograd_pays(n, c, oh, ow)


def _winograd_images(n: int, oh: int, ow: int, lanes: int, threads: int) -> int:
    """Images whose tiles run end to end in one task: the count that minimizes the tiles each of
    ``threads`` multiplies for n images (its tasks times each task's tiles rounded up to whole
    register blocks)."""
    nt = (oh // 2) * (ow // 2)
    block = NV * lanes

    def load(m):
        tasks = -(-n // m)
        return -(-tasks // threads) * (-(-(m * nt) // block) * block)

    return min(range(1, min(n, 8) + 1), key=load)


def conv2d(x, w, b, pad: int, out, relu: bool = False, pool: int | None = None, argmax=None,
           winograd: bool | None = None):
    """Stride-1 convolution of contiguous ``x`` (N, C, H, W) into ``out`` (N, F, OH, OW), bias
    added, then ReLU if ``relu``; with ``pool``, max-pooled in pool x pool windows (stride pool)
    into ``out`` (N, F, OH // pool, OW // pool), the window-local argmax into ``argmax``.
    ``winograd``: Winograd F(2x2, 3x3) or the direct sum; None: Winograd where it fits."""
    n, c, h, wd = x.shape
    _, _, fh, fw = w.shape
    oh, ow = h + 2 * pad - fh + 1, wd + 2 * pad - fw + 1
    lanes = simd.lanes(x.dtype)
    am = _NO_ARRAY if argmax is None else argmax
    if winograd is None:
        winograd = winograd_runs(n, c, oh, ow, fh, fw, pool)
    elif winograd and not winograd_fits(oh, ow, fh, fw, pool):
        raise ValueError(f"conv2d: Winograd F(2x2, 3x3) needs 3x3 kernels and an even output, got {fh}x{fw} "
                         f"into {oh}x{ow}" + (f" pooled by {pool}" if pool else ""))
    if winograd:
        fb = _padded_channels(w.shape[0])
        per = _winograd_images(n, oh, ow, lanes, numba.get_num_threads())
        _conv2d_winograd(x, transformed_weights(w), fb, b, pad, per, relu, pool or 1, out, am)
        return out
    wpk, fb = _packed(w)
    _conv2d(x, wpk, fb, fh, fw, b, pad, relu, pool or 1, out, am)
    return out


def conv2d_backward(dout, x, w, pad: int, dw, db, dx=None, relu_out=None, pool: int | None = None, argmax=None,
                    winograd: bool | None = None):
    """Gradients of :func:`conv2d`: writes ``dw`` and ``db``, and ``dx`` unless it is None.
    ``relu_out``: the output of a forward pass with ``relu`` (dout is masked by it as it is read);
    ``pool``, ``argmax``: as the forward ran (dout and relu_out pooled). ``winograd``: the weight
    and input gradients by Winograd F(2x2, 3x3) where they fit, or both by the direct sums; None:
    each by Winograd where it fits and pays (the weight gradient as the forward pass decides)."""
    f, c, fh, fw = w.shape
    n, _, h, wd = x.shape
    oh, ow = h + 2 * pad - fh + 1, wd + 2 * pad - fw + 1
    lanes = simd.lanes(x.dtype)
    need_dx = dx is not None
    if winograd is None:
        wino_dx = need_dx and winograd_runs(n, f, h, wd, fh, fw)
        wino_dw = winograd_runs(n, c, oh, ow, fh, fw)
    elif winograd and not (winograd_fits(h, wd, fh, fw) or winograd_fits(oh, ow, fh, fw)):
        raise ValueError(f"conv2d_backward: Winograd F(2x2, 3x3) needs 3x3 kernels and an even input or output, got "
                         f"{fh}x{fw} and {h}x{wd} into {oh}x{ow}")
    else:
        wino_dx = bool(winograd) and need_dx and winograd_fits(h, wd, fh, fw)
        wino_dw = bool(winograd) and winograd_fits(oh, ow, fh, fw)
    # (C, F, FH, FW) flipped in both spatial axes: the transposed convolution's kernels
    flipped = w.transpose(1, 0, 2, 3)[:, :, ::-1, ::-1]
    wfpk = transformed_weights(np.ascontiguousarray(flipped)) if wino_dx else _packed(flipped)[0]
    fb = _padded_channels(f)
    chunks = min(CHUNKS, n)
    dw_part = np.empty((chunks, c * fh * fw * fb if not wino_dw else 1), dtype=x.dtype)  # each chunk's (C, FH, FW, FB)
    db_part = np.empty((chunks, fb), dtype=x.dtype)
    cq, fq = -(-c // max(lanes, CO_BLOCK)) * max(lanes, CO_BLOCK), -(-f // lanes) * lanes
    du_part = np.empty((chunks, XI * cq * fq if wino_dw else 1), dtype=x.dtype)  # each chunk's dU (16, CQ, FQ)
    relu = relu_out is not None
    # the input gradient's tiles are taken a group of images at a time, in runs of up to dx_images
    dx_images = min(-(-n // chunks), _group_images(oh, ow, h + 2 * pad, fw, lanes, x.itemsize))
    _conv2d_backward(dout, x, wfpk, fh, fw, pad, need_dx, relu,
                     relu_out if relu else np.empty((1, 1, 1, 1), x.dtype), pool or 1,
                     _NO_ARRAY if argmax is None else argmax, dw_part, db_part,
                     dx if need_dx else np.empty((1, 1, 1, 1), x.dtype), bool(wino_dx),
                     _winograd_images(dx_images, h, wd, lanes, 1) if wino_dx else 1, bool(wino_dw), du_part)
    if wino_dw:
        dw[...] = weight_grad_from(du_part.sum(axis=0, dtype=np.float64).reshape(XI, cq, fq), f, c, x.dtype)
    else:
        dw[...] = dw_part.sum(axis=0).reshape(c, fh, fw, fb)[..., :f].transpose(3, 0, 1, 2)
    np.sum(db_part[:, :f], axis=0, out=db)
    return dx

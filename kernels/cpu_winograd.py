"""Winograd F(2x2, 3x3) on the CPU: a 3x3 stride-1 correlation from 16 products per 2x2 output
tile instead of 36 (Lavin and Gray, "Fast Algorithms for Convolutional Neural Networks", 2015).

Y = A^T [ (G g G^T) * (B^T d B) ] A for each 4x4 input tile d (stride 2) and 3x3 kernel g; summed
over input channels, the elementwise product becomes 16 matrix products, one per tile position
xi = (i, j) of the 4x4 transforms: M[xi] (F x tiles) = U[xi] (F x C) V[xi] (C x tiles).

The pieces, for ``cpu_conv``'s drivers (which run them per image, or a few images whose tiles
are laid end to end so that the products run over whole vectors):
- ``transformed_weights``: U = G g G^T in float64, rounded once, packed (16, blocks, C, 8) for
  the broadcasts of the register block, as ``cpu_conv._packed`` packs the direct kernels.
- ``padded_planes``: the source planes zero-padded, 2*tw + 2 columns wide, the even rows before
  the odd ones: with tiles counted tw + 1 to a row (one garbage tile each), tile t's four input
  rows start at 2t of two runs of rows, so ``input_tiles`` transforms whole vectors of tiles,
  across rows (even and odd columns split as loaded, ``vload_pairs``), into V: 16 planes, one
  per tile position, spaced by ``plane_stride`` so that its 16 stores fall in different cache sets.
- ``tile_products``: the 16 products, register-blocked as ``cpu_conv._correlate`` (8 output
  channels x 2 vectors of tiles in 16 vector sums, over the C input channels).
- ``store_tiles``: A^T M A, bias and ReLU on each tile's 2x2 outputs in registers, stored as
  rows; a fused 2x2 max-pool's window is a tile, so its max and argmax are taken there, by
  ``cpu_pool``'s rule, and the full-size output is never written.

The transforms' arithmetic (B^T, A^T: additions only; G: halves, applied in float64 to the
weights) keeps F(2x2, 3x3) as accurate as the direct sum (``bench/winograd_error.py``); larger
tiles (F(4x4, 3x3)) need fractions in B and A and lose several bits in float32.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from . import simd
from .cpu_pool import biased, window_max
from .simd import (vadd, vfma, vload, vload_columns, vload_first, vload_pairs, vsplat, vsplat_at, vstore, vstore_first,
                   vstore_pairs, vsub)

_FLAGS = dict(cache=True, error_model="numpy")

CO_BLOCK = 8  # output channels per register block, as the direct kernels
XI = 16  # positions in a 4x4 transformed tile


def transformed_weights(w):
    """Kernels (F, C, 3, 3) -> U = G g G^T as flat float (16, ceil(F/8), C, 8): for each tile
    position, each block's 8 output channels side by side; output channels zero-padded."""
    f, c = w.shape[:2]
    fb = -(-f // CO_BLOCK) * CO_BLOCK
    wt = np.zeros((c, 3, 3, fb))  # float64: G's halves and the sums rounded once, at the end
    wt[..., :f] = w.transpose(1, 2, 3, 0)
    u = np.empty(XI * fb * c, w.dtype)
    _transform_weights(wt, u)
    return u


@njit(**_FLAGS)
def _transform_weights(wt, u):
    """u[xi, blk, ch, q] = (G g G^T)[xi] of kernel (blk*8 + q, ch), from wt (C, 3, 3, FB): the
    output channels innermost, so that each step is a run over them."""
    c, _, _, fb = wt.shape
    nblk = fb // CO_BLOCK
    t = np.empty((3, 4, fb))  # g G^T
    for ch in range(c):
        for k in range(3):
            for o in range(fb):  # G times each kernel row: (a, (a + b + c)/2, (a - b + c)/2, c)
                a, b, e = wt[ch, k, 0, o], wt[ch, k, 1, o], wt[ch, k, 2, o]
                t[k, 0, o], t[k, 1, o], t[k, 2, o], t[k, 3, o] = a, 0.5 * (a + b + e), 0.5 * (a - b + e), e
        for j in range(4):
            for blk in range(nblk):
                for q in range(CO_BLOCK):  # G times each column of g G^T, the same way
                    o = blk * CO_BLOCK + q
                    a, b, e = t[0, j, o], t[1, j, o], t[2, j, o]
                    base = (blk * c + ch) * CO_BLOCK + q
                    u[(j * nblk) * c * CO_BLOCK + base] = a
                    u[((4 + j) * nblk) * c * CO_BLOCK + base] = 0.5 * (a + b + e)
                    u[((8 + j) * nblk) * c * CO_BLOCK + base] = 0.5 * (a - b + e)
                    u[((12 + j) * nblk) * c * CO_BLOCK + base] = e


@njit(inline="always")
def padded_planes(src, sbase, sstride, c, h, w, p, th, tw, dst, base):
    """Planes of src (c of h x w, at src[sbase + ch*sstride:]) -> zero-padded by p rows and columns
    on the top and left, 2*th + 2 rows of 2*tw + 2 at dst[base + ch*psz:] (psz their size): what
    the tiles of a (2*th) x (2*tw) output read. The even rows come first, then the odd ones, so
    that row 2*ty + i of the padded plane is row ty of a run of rows for each i (``input_tiles``)."""
    lanes = simd.lanes(dst.dtype)
    wp = 2 * tw + 2
    half = (th + 1) * wp
    dst[base : base + c * 2 * half] = 0
    zero = vsplat(dst.dtype.type(0))
    x0, x1 = max(0, -p), min(w, wp - p)  # the source columns inside the padded row
    for ch in range(c):
        for y in range(max(0, -p), min(h, 2 * th + 2 - p)):
            r = y + p
            s = sbase + ch * sstride + y * w
            d = base + ch * 2 * half + (r % 2) * half + (r // 2) * wp + p
            for xx in range(x0, x1, lanes):
                n = min(lanes, x1 - xx)
                vstore_first(dst, d + xx, vload_first(src, s + xx, n, zero), n)


@njit(inline="always")
def plane_stride(rows, tpad, itemsize):
    """Elements between the 16 tile-position planes of V or M, ``rows`` rows of tpad each:
    rows*tpad rounded up to an odd number of 64-byte lines. ``input_tiles`` stores into all 16
    planes of V per vector of tiles and ``store_tiles`` loads from all 16 of M; planes a multiple
    of 4 KB apart would share one L1 set, which 16 accesses overflow."""
    line = 64 // itemsize
    return (-(-(rows * tpad) // line) | 1) * line


@njit(inline="always")
def clear_tiles(v, c, tpad, vs, used):
    """Zero the tiles from ``used`` to tpad in every row of V (planes vs apart): they are
    multiplied too, and must hold zeros, not garbage."""
    lanes = simd.lanes(v.dtype)
    zero = vsplat(v.dtype.type(0))
    for xi in range(XI):
        for ch in range(c):
            o = xi * vs + ch * tpad
            for k in range(o + used, o + tpad, lanes):
                vstore_first(v, k, zero, min(lanes, o + tpad - k))


@njit(inline="always")
def phase_size(th, tw, lanes):
    """Elements of one of ``input_tiles``' phase planes: th + 1 rows of tw, and a vector's room
    for the last row's stores. ``input_tiles`` needs 16 of them (two channels' 8)."""
    return (th + 1) * tw + lanes


@njit(inline="always")
def _split_phases(pp, plane, th, tw, cp, d0, ps):
    """The padded plane at pp[plane:] (``padded_planes``) -> its 8 phase planes at cp[d0:], ps
    apart: phase (j, parity) at (2j + parity)*ps holds P[2y + parity, 2tx + j] as rows y of tw."""
    lanes = simd.lanes(cp.dtype)
    wp = 2 * tw + 2
    half = (th + 1) * wp
    for r in range(2 * th + 2):
        row = plane + (r % 2) * half + (r // 2) * wp
        d = d0 + (r % 2) * ps + (r // 2) * tw
        for x0 in range(0, tw, lanes):  # whole vectors: the next row's stores, or the room, take the rest
            e0, o0 = vload_pairs(pp, row + 2 * x0)  # columns 2tx and 2tx + 1
            e2, o2 = vload_pairs(pp, row + 2 * x0 + 2)  # 2tx + 2 and 2tx + 3
            vstore(cp, d + x0, e0)
            vstore(cp, d + 2 * ps + x0, o0)
            vstore(cp, d + 4 * ps + x0, e2)
            vstore(cp, d + 6 * ps + x0, o2)


@njit(inline="always")
def input_tiles(pp, base, c, th, tw, v, t0, tpad, vs, cp):
    """V = B^T d B for every 4x4 tile d (stride 2) of the padded planes at pp[base:] (as
    ``padded_planes`` lays them) into v[xi*vs + ch*tpad + t0 + ty*tw + tx] (``vs``:
    ``plane_stride``). Each channel's padded plane is first split by the parity of its rows and
    columns (``_split_phases``, into ``cp``), so that tile position (i, j) of tiles t, t+1, ...
    is one run of phase (j, i % 2) from (i // 2)*tw + t: a vector of tiles spans tile rows with
    no gaps. The next channel is split before this one is transformed, so the transform's loads
    (each spanning several rows' stores) find those stores done, not in flight.
    pp must be readable 2 vectors past the last channel's rows."""
    lanes = simd.lanes(v.dtype)
    psz = 2 * (th + 1) * (2 * tw + 2)
    count = th * tw
    ps = phase_size(th, tw, lanes)
    _split_phases(pp, base, th, tw, cp, 0, ps)
    for ch in range(c):
        if ch + 1 < c:
            _split_phases(pp, base + (ch + 1) * psz, th, tw, cp, ((ch + 1) % 2) * 8 * ps, ps)
        p0 = (ch % 2) * 8 * ps
        for t in range(0, count, lanes):
            n = min(lanes, count - t)
            # d{i}{j}: position (i, j) of the tiles t .. t + lanes - 1; lanes past count are not stored
            s = p0 + t
            d00, d01, d02, d03 = vload(cp, s), vload(cp, s + 2 * ps), vload(cp, s + 4 * ps), vload(cp, s + 6 * ps)
            d10, d11, d12, d13 = vload(cp, s + ps), vload(cp, s + 3 * ps), vload(cp, s + 5 * ps), vload(cp, s + 7 * ps)
            s += tw
            d20, d21, d22, d23 = vload(cp, s), vload(cp, s + 2 * ps), vload(cp, s + 4 * ps), vload(cp, s + 6 * ps)
            d30, d31, d32, d33 = vload(cp, s + ps), vload(cp, s + 3 * ps), vload(cp, s + 5 * ps), vload(cp, s + 7 * ps)
            # B^T d: rows (d0 - d2, d1 + d2, d2 - d1, d1 - d3)
            e00, e01, e02, e03 = vsub(d00, d20), vsub(d01, d21), vsub(d02, d22), vsub(d03, d23)
            e10, e11, e12, e13 = vadd(d10, d20), vadd(d11, d21), vadd(d12, d22), vadd(d13, d23)
            e20, e21, e22, e23 = vsub(d20, d10), vsub(d21, d11), vsub(d22, d12), vsub(d23, d13)
            e30, e31, e32, e33 = vsub(d10, d30), vsub(d11, d31), vsub(d12, d32), vsub(d13, d33)
            o = ch * tpad + t0 + t
            for i, (a0, a1, a2, a3) in enumerate(((e00, e01, e02, e03), (e10, e11, e12, e13),
                                                  (e20, e21, e22, e23), (e30, e31, e32, e33))):
                # (B^T d) B: columns the same way
                vstore_first(v, o + (4 * i) * vs, vsub(a0, a2), n)
                vstore_first(v, o + (4 * i + 1) * vs, vadd(a1, a2), n)
                vstore_first(v, o + (4 * i + 2) * vs, vsub(a2, a1), n)
                vstore_first(v, o + (4 * i + 3) * vs, vsub(a1, a3), n)


@njit(fastmath={"contract"}, **_FLAGS)
def _tile_products8(v, c, tpad, vs, upk, blk, nblk, m):
    """m[xi*ms + q*tpad + t] = sum over ch of U[xi, blk*8 + q, ch] * v[xi*vs + ch*tpad + t] for
    the 16 tile positions xi, q < 8 and t < tpad (a multiple of 2 vectors); ms is
    ``plane_stride(8, tpad)``, as ``store_tiles`` reads all 16 per vector. Register-blocked: per
    input channel 2 vector loads, 8 broadcasts, 16 FMAs; the 16 sums stored once."""
    lanes = simd.lanes(v.dtype)
    zero = vsplat(v.dtype.type(0))
    for xi in range(XI):
        ub = (xi * nblk + blk) * c * CO_BLOCK
        vb = xi * vs
        mb = xi * plane_stride(CO_BLOCK, tpad, m.itemsize)
        for j0 in range(0, tpad, 2 * lanes):
            a00 = a01 = a10 = a11 = a20 = a21 = a30 = a31 = zero
            a40 = a41 = a50 = a51 = a60 = a61 = a70 = a71 = zero
            for ch in range(c):
                s = vb + ch * tpad + j0
                s0, s1 = vload(v, s), vload(v, s + lanes)
                w = ub + ch * CO_BLOCK
                w0 = vsplat_at(upk, w)
                a00, a01 = vfma(w0, s0, a00), vfma(w0, s1, a01)
                w1 = vsplat_at(upk, w + 1)
                a10, a11 = vfma(w1, s0, a10), vfma(w1, s1, a11)
                w2 = vsplat_at(upk, w + 2)
                a20, a21 = vfma(w2, s0, a20), vfma(w2, s1, a21)
                w3 = vsplat_at(upk, w + 3)
                a30, a31 = vfma(w3, s0, a30), vfma(w3, s1, a31)
                w4 = vsplat_at(upk, w + 4)
                a40, a41 = vfma(w4, s0, a40), vfma(w4, s1, a41)
                w5 = vsplat_at(upk, w + 5)
                a50, a51 = vfma(w5, s0, a50), vfma(w5, s1, a51)
                w6 = vsplat_at(upk, w + 6)
                a60, a61 = vfma(w6, s0, a60), vfma(w6, s1, a61)
                w7 = vsplat_at(upk, w + 7)
                a70, a71 = vfma(w7, s0, a70), vfma(w7, s1, a71)
            for q, (x0, x1) in enumerate(((a00, a01), (a10, a11), (a20, a21), (a30, a31),
                                          (a40, a41), (a50, a51), (a60, a61), (a70, a71))):
                vstore(m, mb + q * tpad + j0, x0)
                vstore(m, mb + q * tpad + j0 + lanes, x1)


@njit(fastmath={"contract"}, **_FLAGS)
def _tile_products4(v, c, tpad, vs, upk, blk, nblk, m):
    """:func:`_tile_products8` for CPUs of 16 vector registers (AVX2): the 8 output channels as
    two blocks of 4 x 2 sums, each over every input channel."""
    lanes = simd.lanes(v.dtype)
    zero = vsplat(v.dtype.type(0))
    for xi in range(XI):
        ub = (xi * nblk + blk) * c * CO_BLOCK
        vb = xi * vs
        mb = xi * plane_stride(CO_BLOCK, tpad, m.itemsize)
        for j0 in range(0, tpad, 2 * lanes):
            for q0 in range(0, CO_BLOCK, 4):
                a00 = a01 = a10 = a11 = a20 = a21 = a30 = a31 = zero
                for ch in range(c):
                    s = vb + ch * tpad + j0
                    s0, s1 = vload(v, s), vload(v, s + lanes)
                    w = ub + ch * CO_BLOCK + q0
                    w0 = vsplat_at(upk, w)
                    a00, a01 = vfma(w0, s0, a00), vfma(w0, s1, a01)
                    w1 = vsplat_at(upk, w + 1)
                    a10, a11 = vfma(w1, s0, a10), vfma(w1, s1, a11)
                    w2 = vsplat_at(upk, w + 2)
                    a20, a21 = vfma(w2, s0, a20), vfma(w2, s1, a21)
                    w3 = vsplat_at(upk, w + 3)
                    a30, a31 = vfma(w3, s0, a30), vfma(w3, s1, a31)
                for q, (x0, x1) in enumerate(((a00, a01), (a10, a11), (a20, a21), (a30, a31))):
                    vstore(m, mb + (q0 + q) * tpad + j0, x0)
                    vstore(m, mb + (q0 + q) * tpad + j0 + lanes, x1)


tile_products = _tile_products8 if simd.WIDE_BLOCKS else _tile_products4


@njit(inline="always")
def _output_tile(m, o, xs):
    """Y = A^T M A of the tiles whose 16 products are at m[o + xi*xs]: their 2x2 outputs
    (top-left, top-right, bottom-left, bottom-right), a vector of tiles each."""
    m00, m01, m02, m03 = vload(m, o), vload(m, o + xs), vload(m, o + 2 * xs), vload(m, o + 3 * xs)
    m10, m11, m12, m13 = vload(m, o + 4 * xs), vload(m, o + 5 * xs), vload(m, o + 6 * xs), vload(m, o + 7 * xs)
    m20, m21, m22, m23 = vload(m, o + 8 * xs), vload(m, o + 9 * xs), vload(m, o + 10 * xs), vload(m, o + 11 * xs)
    m30, m31, m32, m33 = vload(m, o + 12 * xs), vload(m, o + 13 * xs), vload(m, o + 14 * xs), vload(m, o + 15 * xs)
    # A^T M: rows (m0 + m1 + m2, m1 - m2 - m3); r{j}{i} is row i, column j
    r00, r01 = vadd(vadd(m00, m10), m20), vsub(vsub(m10, m20), m30)
    r10, r11 = vadd(vadd(m01, m11), m21), vsub(vsub(m11, m21), m31)
    r20, r21 = vadd(vadd(m02, m12), m22), vsub(vsub(m12, m22), m32)
    r30, r31 = vadd(vadd(m03, m13), m23), vsub(vsub(m13, m23), m33)
    # (A^T M) A: columns the same way
    return (vadd(vadd(r00, r10), r20), vsub(vsub(r10, r20), r30),
            vadd(vadd(r01, r11), r21), vsub(vsub(r11, r21), r31))


@njit(inline="always")
def store_tiles(m, tpad, q, t0, th, tw, bias, relu, pool, dst, am):
    """Y = A^T M A for output channel q of the block's products m (``tile_products``), tiles from
    t0, tw to a row (``input_tiles``), into plane dst (2*th x 2*tw): ``bias`` added unless it
    is None (the input gradient), then the ReLU if ``relu``; with ``pool`` (2) each tile is a
    pooling window: its max into dst (th x tw, at the tile's index, so a vector of tiles spans
    tile rows) and its argmax into am, as ``cpu_pool`` rules."""
    lanes = simd.lanes(m.dtype)
    vb = vsplat(dst.dtype.type(0 if bias is None else bias))
    xs = plane_stride(CO_BLOCK, tpad, m.itemsize)  # one tile position's block of products
    if pool == 2:
        for t in range(0, th * tw, lanes):
            y00, y01, y10, y11 = _output_tile(m, q * tpad + t0 + t, xs)
            window_max(y00, y01, y10, y11, vb, relu, min(lanes, th * tw - t), dst, am, t)
        return
    for ty in range(th):
        for tx in range(0, tw, lanes):
            n = min(lanes, tw - tx)
            y00, y01, y10, y11 = _output_tile(m, q * tpad + t0 + ty * tw + tx, xs)
            if bias is not None:
                y00, y01, y10, y11 = biased(y00, vb, relu), biased(y01, vb, relu), biased(y10, vb, relu), \
                    biased(y11, vb, relu)
            d = 2 * ty * (2 * tw) + 2 * tx
            vstore_pairs(dst, d, y00, y01, n)
            vstore_pairs(dst, d + 2 * tw, y10, y11, n)


# -- the weight gradient -----------------------------------------------------------------------------
# dU[xi] = sum over tiles of (A dY A^T)[xi] (x) (B^T d B)[xi], then dg = G^T dU G: for each tile
# position a product (C x tiles) @ (tiles x F), summed over every tile of every image. Both
# transforms are taken a vector of channels at a time (positions x channels layouts), so the
# products need no sums across lanes: an 8 x 2-vector register block per 8 input and 2 vectors
# of output channels, accumulated into dU over any number of tiles.

G_MATRIX = np.array([[1.0, 0.0, 0.0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0.0, 0.0, 1.0]])  # U = G g G^T


def weight_grad_from(du, f: int, c: int, dtype):
    """dg = G^T dU G for every kernel: ``du`` (16, C', F') in float64 -> (F, C, 3, 3) of dtype."""
    du = np.ascontiguousarray(du.reshape(4, 4, du.shape[1], du.shape[2])[:, :, :c, :f]).reshape(4, 4, c * f)
    t = np.tensordot(G_MATRIX, du, axes=(0, 0))  # (G^T dU)[a, j]: (3, 4, C*F)
    dg = sum(t[:, j, None, :] * G_MATRIX[j][None, :, None] for j in range(4))  # (G^T dU G)[a, b]: (3, 3, C*F)
    return dg.reshape(3, 3, c, f).transpose(3, 2, 0, 1).astype(dtype)


@njit(inline="always")
def hwc_planes(src, sbase, sstride, c, h, w, p, th, tw, cp, dst):
    """Planes of src (c of h x w at src[sbase + ch*sstride:]) -> dst as 2*th + 2 rows of 2*tw + 2
    positions of cp channels (a position's channels side by side), zero-padded by p rows and
    columns on the top and left and in the channels past c: what ``hwc_tiles`` reads. A block of
    LANES channels x LANES columns at a time, transposed in registers (``vload_columns``)."""
    lanes = simd.lanes(dst.dtype)
    zero = vsplat(dst.dtype.type(0))
    wp = 2 * tw + 2
    dst[: (2 * th + 2) * wp * cp] = 0
    x0, x1 = max(0, -p), min(w, wp - p)  # the source columns inside the padded row
    for c0 in range(0, cp, lanes):
        for y in range(max(0, -p), min(h, 2 * th + 2 - p)):
            d = ((y + p) * wp + p) * cp + c0
            for xx in range(x0, x1, lanes):
                n = min(lanes, x1 - xx)
                cols = vload_columns(src, sbase + c0 * sstride + y * w + xx, sstride, c - c0, n, zero)
                for k in range(n):
                    vstore(dst, d + (xx + k) * cp, cols[k])


@njit(inline="always")
def hwc_tiles(xh, cp, th, tw, vt, t0, ts):
    """B^T d B for every 4x4 tile d (stride 2) of xh (``hwc_planes``), a vector of channels at a
    time, into vt[xi*ts + (t0 + ty*tw + tx)*cp + ch]."""
    lanes = simd.lanes(vt.dtype)
    wp = 2 * tw + 2
    rs = wp * cp  # a padded row
    for ty in range(th):
        for tx in range(tw):
            o = (t0 + ty * tw + tx) * cp
            for c0 in range(0, cp, lanes):
                s = (2 * ty * wp + 2 * tx) * cp + c0
                d00, d01, d02, d03 = vload(xh, s), vload(xh, s + cp), vload(xh, s + 2 * cp), vload(xh, s + 3 * cp)
                s += rs
                d10, d11, d12, d13 = vload(xh, s), vload(xh, s + cp), vload(xh, s + 2 * cp), vload(xh, s + 3 * cp)
                s += rs
                d20, d21, d22, d23 = vload(xh, s), vload(xh, s + cp), vload(xh, s + 2 * cp), vload(xh, s + 3 * cp)
                s += rs
                d30, d31, d32, d33 = vload(xh, s), vload(xh, s + cp), vload(xh, s + 2 * cp), vload(xh, s + 3 * cp)
                # B^T d: rows (d0 - d2, d1 + d2, d2 - d1, d1 - d3), as ``input_tiles``
                e00, e01, e02, e03 = vsub(d00, d20), vsub(d01, d21), vsub(d02, d22), vsub(d03, d23)
                e10, e11, e12, e13 = vadd(d10, d20), vadd(d11, d21), vadd(d12, d22), vadd(d13, d23)
                e20, e21, e22, e23 = vsub(d20, d10), vsub(d21, d11), vsub(d22, d12), vsub(d23, d13)
                e30, e31, e32, e33 = vsub(d10, d30), vsub(d11, d31), vsub(d12, d32), vsub(d13, d33)
                for i, (a0, a1, a2, a3) in enumerate(((e00, e01, e02, e03), (e10, e11, e12, e13),
                                                      (e20, e21, e22, e23), (e30, e31, e32, e33))):
                    vstore(vt, (4 * i) * ts + o + c0, vsub(a0, a2))
                    vstore(vt, (4 * i + 1) * ts + o + c0, vadd(a1, a2))
                    vstore(vt, (4 * i + 2) * ts + o + c0, vsub(a2, a1))
                    vstore(vt, (4 * i + 3) * ts + o + c0, vsub(a1, a3))


@njit(inline="always")
def hwc_grads(gc, base, gcz, f, npos, fp, dst):
    """Output-gradient planes (f of npos positions, gcz apart, from gc[base:]) -> dst as npos
    positions of fp channels, zero past f (blocks transposed in registers, as ``hwc_planes``)."""
    lanes = simd.lanes(dst.dtype)
    zero = vsplat(dst.dtype.type(0))
    for f0 in range(0, fp, lanes):
        for p0 in range(0, npos, lanes):
            n = min(lanes, npos - p0)
            cols = vload_columns(gc, base + f0 * gcz + p0, gcz, f - f0, n, zero)
            for k in range(n):
                vstore(dst, (p0 + k) * fp + f0, cols[k])


@njit(inline="always")
def grad_tiles(gh, fp, th, tw, yt, t0, ts):
    """A dY A^T for every 2x2 tile dY of gh (``hwc_grads``: 2*th x 2*tw positions of fp channels),
    a vector of channels at a time, into yt[xi*ts + (t0 + ty*tw + tx)*fp + f]."""
    lanes = simd.lanes(yt.dtype)
    zero = vsplat(yt.dtype.type(0))
    rs = 2 * tw * fp  # an output row
    for ty in range(th):
        for tx in range(tw):
            o = (t0 + ty * tw + tx) * fp
            for f0 in range(0, fp, lanes):
                s = (2 * ty * 2 * tw + 2 * tx) * fp + f0
                y00, y01, y10, y11 = vload(gh, s), vload(gh, s + fp), vload(gh, s + rs), vload(gh, s + rs + fp)
                # A dY: rows (y0, y0 + y1, y0 - y1, -y1); then (A dY) A^T: columns the same way
                for i, (a, b) in enumerate(((y00, y01), (vadd(y00, y10), vadd(y01, y11)),
                                            (vsub(y00, y10), vsub(y01, y11)), (vsub(zero, y10), vsub(zero, y11)))):
                    vstore(yt, (4 * i) * ts + o + f0, a)
                    vstore(yt, (4 * i + 1) * ts + o + f0, vadd(a, b))
                    vstore(yt, (4 * i + 2) * ts + o + f0, vsub(a, b))
                    vstore(yt, (4 * i + 3) * ts + o + f0, vsub(zero, b))


@njit(fastmath={"contract"}, **_FLAGS)
def _grad_products8(vt, ts, yt, tsy, nt, cp, fp, du):
    """du[xi, ch, f] += sum over the nt tiles t of vt[xi*ts + t*cp + ch] * yt[xi*tsy + t*fp + f],
    for the 16 tile positions: 8 input channels x 2 vectors of output channels in 16 vector sums
    (one vector where fp ends in an odd one), summed from zero and added into du once per call:
    a call's tiles in one chain of sums, the calls' sums added after (a chain over every tile of
    a chunk lost 3-9x the direct kernel's float32 precision)."""
    lanes = simd.lanes(du.dtype)
    zero = vsplat(du.dtype.type(0))
    for xi in range(XI):
        vb, yb, db = xi * ts, xi * tsy, xi * cp * fp
        for c0 in range(0, cp, CO_BLOCK):
            for f0 in range(0, fp, 2 * lanes):
                o = db + c0 * fp + f0
                if f0 + lanes < fp:
                    a00 = a01 = a10 = a11 = a20 = a21 = a30 = a31 = zero
                    a40 = a41 = a50 = a51 = a60 = a61 = a70 = a71 = zero
                    for t in range(nt):
                        y = yb + t * fp + f0
                        b0, b1 = vload(yt, y), vload(yt, y + lanes)
                        v = vb + t * cp + c0
                        w = vsplat_at(vt, v)
                        a00, a01 = vfma(w, b0, a00), vfma(w, b1, a01)
                        w = vsplat_at(vt, v + 1)
                        a10, a11 = vfma(w, b0, a10), vfma(w, b1, a11)
                        w = vsplat_at(vt, v + 2)
                        a20, a21 = vfma(w, b0, a20), vfma(w, b1, a21)
                        w = vsplat_at(vt, v + 3)
                        a30, a31 = vfma(w, b0, a30), vfma(w, b1, a31)
                        w = vsplat_at(vt, v + 4)
                        a40, a41 = vfma(w, b0, a40), vfma(w, b1, a41)
                        w = vsplat_at(vt, v + 5)
                        a50, a51 = vfma(w, b0, a50), vfma(w, b1, a51)
                        w = vsplat_at(vt, v + 6)
                        a60, a61 = vfma(w, b0, a60), vfma(w, b1, a61)
                        w = vsplat_at(vt, v + 7)
                        a70, a71 = vfma(w, b0, a70), vfma(w, b1, a71)
                    for q, (x0, x1) in enumerate(((a00, a01), (a10, a11), (a20, a21), (a30, a31),
                                                  (a40, a41), (a50, a51), (a60, a61), (a70, a71))):
                        vstore(du, o + q * fp, vadd(vload(du, o + q * fp), x0))
                        vstore(du, o + q * fp + lanes, vadd(vload(du, o + q * fp + lanes), x1))
                else:  # the last, odd vector of output channels
                    a0 = a1 = a2 = a3 = a4 = a5 = a6 = a7 = zero
                    for t in range(nt):
                        b0 = vload(yt, yb + t * fp + f0)
                        v = vb + t * cp + c0
                        a0, a1 = vfma(vsplat_at(vt, v), b0, a0), vfma(vsplat_at(vt, v + 1), b0, a1)
                        a2, a3 = vfma(vsplat_at(vt, v + 2), b0, a2), vfma(vsplat_at(vt, v + 3), b0, a3)
                        a4, a5 = vfma(vsplat_at(vt, v + 4), b0, a4), vfma(vsplat_at(vt, v + 5), b0, a5)
                        a6, a7 = vfma(vsplat_at(vt, v + 6), b0, a6), vfma(vsplat_at(vt, v + 7), b0, a7)
                    for q, x0 in enumerate((a0, a1, a2, a3, a4, a5, a6, a7)):
                        vstore(du, o + q * fp, vadd(vload(du, o + q * fp), x0))


@njit(fastmath={"contract"}, **_FLAGS)
def _grad_products4(vt, ts, yt, tsy, nt, cp, fp, du):
    """:func:`_grad_products8` for CPUs of 16 vector registers (AVX2): 4 input channels x 2
    vectors of output channels (8 sums) rather than 8 x 2, whose 16 sums would spill."""
    lanes = simd.lanes(du.dtype)
    zero = vsplat(du.dtype.type(0))
    for xi in range(XI):
        vb, yb, db = xi * ts, xi * tsy, xi * cp * fp
        for c0 in range(0, cp, 4):
            for f0 in range(0, fp, 2 * lanes):
                o = db + c0 * fp + f0
                if f0 + lanes < fp:
                    a00 = a01 = a10 = a11 = a20 = a21 = a30 = a31 = zero
                    for t in range(nt):
                        y = yb + t * fp + f0
                        b0, b1 = vload(yt, y), vload(yt, y + lanes)
                        v = vb + t * cp + c0
                        w = vsplat_at(vt, v)
                        a00, a01 = vfma(w, b0, a00), vfma(w, b1, a01)
                        w = vsplat_at(vt, v + 1)
                        a10, a11 = vfma(w, b0, a10), vfma(w, b1, a11)
                        w = vsplat_at(vt, v + 2)
                        a20, a21 = vfma(w, b0, a20), vfma(w, b1, a21)
                        w = vsplat_at(vt, v + 3)
                        a30, a31 = vfma(w, b0, a30), vfma(w, b1, a31)
                    for q, (x0, x1) in enumerate(((a00, a01), (a10, a11), (a20, a21), (a30, a31))):
                        vstore(du, o + q * fp, vadd(vload(du, o + q * fp), x0))
                        vstore(du, o + q * fp + lanes, vadd(vload(du, o + q * fp + lanes), x1))
                else:  # the last, odd vector of output channels
                    a0 = a1 = a2 = a3 = zero
                    for t in range(nt):
                        b0 = vload(yt, yb + t * fp + f0)
                        v = vb + t * cp + c0
                        a0, a1 = vfma(vsplat_at(vt, v), b0, a0), vfma(vsplat_at(vt, v + 1), b0, a1)
                        a2, a3 = vfma(vsplat_at(vt, v + 2), b0, a2), vfma(vsplat_at(vt, v + 3), b0, a3)
                    for q, x0 in enumerate((a0, a1, a2, a3)):
                        vstore(du, o + q * fp, vadd(vload(du, o + q * fp), x0))


grad_products = _grad_products8 if simd.WIDE_BLOCKS else _grad_products4

"""Matrix products C = A @ B on the CPU for the shapes of a Linear layer's step, register-blocked
like the convolutions (``cpu_conv._correlate``), on Numba's threads.

Why not OpenBLAS alone: at batch 100-1000 the Linear layers' products are narrow (50 or 100
output columns) and short (100-1000 long), where OpenBLAS spends a good part of each call packing
both operands and handing work to its own threads; here B's rows are read in place (B is the
weights, or the output gradient: a few hundred KB, in L2) and A's elements are broadcast straight
from A at any strides, so x and the weight gradient's x.T are read without a copy.

Register blocking: for 8 rows of C and 2 vectors of its columns the 16 vector sums stay in
registers over the whole inner dimension (per step: 2 vector loads of B, 8 broadcasts of A, 16
FMAs) and are stored once. Columns past the last whole pair of vectors (100 columns are 3 pairs
of 16 and 4 left) are single vectors, the last masked (and of half the width when it holds at most
half: AVX-512 on Zen 4 runs a 512-bit FMA as two 256-bit halves), over 16 rows: 16 sums again. Each element of C is
one sum in k order, whatever the thread count, so results are deterministic.

A C of a few rows (a batch-1 forward) runs row by row on the calling thread (``_few_rows``):
there the product is a microsecond's arithmetic, and a call's overhead and thread hand-off are
what OpenBLAS costs.

A's rows are read at their stride: when that is a multiple of 2 KB (1024 or 512 float32
features), 8-16 rows map to the same L1 sets and evict each other (the products ran at half
speed), so :func:`fits` declines those and OpenBLAS, which packs A, computes them.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from accelnet.cpu_runtime import FLUSHED

from . import simd
from .simd import vadd, vfma, vgate, vhalf, vload, vload_first, vsplat, vsplat_like, vstore, vstore_first

_FLAGS = dict(cache=True, error_model="numpy", fastmath={"contract"})

ROWS = 8  # rows of C per 2-vector block: 8 x 2 sums (4 x 2 where 16 vector registers: simd.WIDE_BLOCKS)
TAIL_ROWS = 16  # rows per single-vector block of the last columns: 16 sums again (8 where 16 registers)
ALIASING_STRIDE_BYTES = 2048  # A's rows at a multiple of this apart share L1 sets
PACK_MAX = 1 << 14  # B not row-contiguous (W.T) is copied up to this many elements: a transposing
# copy costs NumPy 3 us at 100x100 and 270 us at 100x4320, more than the product gains
FEW_ROWS = 4  # C of up to this many rows (a batch-1 forward): row by row on the calling thread
FEW_ROWS_B_MAX = 1 << 18  # ... with B of up to this many elements: larger ones are read from beyond L2, in
# passes of 4 vectors of columns, where OpenBLAS streams B once (simple_convnet's 4320 x 100: 1.10x)


@njit(inline="always", **_FLAGS)
def _epilogue(v, vb, biased, relu):
    """v + vb if ``biased``, then x * (x > 0) if ``relu`` (the ReLU layer's formula)."""
    if biased:
        v = vadd(v, vb)
    return vgate(v, v) if relu else v


@njit(inline="always", **_FLAGS)
def _rows_x2(a, i0, m, bf, n, j0, k, of, bias, relu):
    """C[i0 : i0+8, j0 : j0 + 2*lanes] of A @ B (B's rows n long, flat in bf; C flat in of), plus
    ``bias`` (n long; empty: none) and then the ReLU if ``relu`` as they are stored. Rows past m
    repeat row m-1 and are not stored."""
    lanes = simd.lanes(of.dtype)
    zero = vsplat(bf.dtype.type(0))
    r1, r2, r3 = min(i0 + 1, m - 1), min(i0 + 2, m - 1), min(i0 + 3, m - 1)
    r4, r5, r6, r7 = min(i0 + 4, m - 1), min(i0 + 5, m - 1), min(i0 + 6, m - 1), min(i0 + 7, m - 1)
    c00 = c01 = c10 = c11 = c20 = c21 = c30 = c31 = zero
    c40 = c41 = c50 = c51 = c60 = c61 = c70 = c71 = zero
    for kk in range(k):
        s = kk * n + j0
        b0, b1 = vload(bf, s), vload(bf, s + lanes)
        x = vsplat(a[i0, kk])
        c00, c01 = vfma(x, b0, c00), vfma(x, b1, c01)
        x = vsplat(a[r1, kk])
        c10, c11 = vfma(x, b0, c10), vfma(x, b1, c11)
        x = vsplat(a[r2, kk])
        c20, c21 = vfma(x, b0, c20), vfma(x, b1, c21)
        x = vsplat(a[r3, kk])
        c30, c31 = vfma(x, b0, c30), vfma(x, b1, c31)
        x = vsplat(a[r4, kk])
        c40, c41 = vfma(x, b0, c40), vfma(x, b1, c41)
        x = vsplat(a[r5, kk])
        c50, c51 = vfma(x, b0, c50), vfma(x, b1, c51)
        x = vsplat(a[r6, kk])
        c60, c61 = vfma(x, b0, c60), vfma(x, b1, c61)
        x = vsplat(a[r7, kk])
        c70, c71 = vfma(x, b0, c70), vfma(x, b1, c71)
    rows = min(ROWS, m - i0)
    biased = bias.size > 0
    vb0, vb1 = (vload(bias, j0), vload(bias, j0 + lanes)) if biased else (zero, zero)
    for q, (v0, v1) in enumerate(((c00, c01), (c10, c11), (c20, c21), (c30, c31),
                                  (c40, c41), (c50, c51), (c60, c61), (c70, c71))):
        if q < rows:
            o = (i0 + q) * n + j0
            vstore(of, o, _epilogue(v0, vb0, biased, relu))
            vstore(of, o + lanes, _epilogue(v1, vb1, biased, relu))


@njit(inline="always", **_FLAGS)
def _rows4_x2(a, i0, m, bf, n, j0, k, of, bias, relu):
    """:func:`_rows_x2` for 4 rows: 8 sums, for CPUs of 16 vector registers (AVX2), where the 8-row
    block's 16 sums and the 3 vectors feeding them spill to the stack."""
    lanes = simd.lanes(of.dtype)
    zero = vsplat(bf.dtype.type(0))
    r1, r2, r3 = min(i0 + 1, m - 1), min(i0 + 2, m - 1), min(i0 + 3, m - 1)
    c00 = c01 = c10 = c11 = c20 = c21 = c30 = c31 = zero
    for kk in range(k):
        s = kk * n + j0
        b0, b1 = vload(bf, s), vload(bf, s + lanes)
        x = vsplat(a[i0, kk])
        c00, c01 = vfma(x, b0, c00), vfma(x, b1, c01)
        x = vsplat(a[r1, kk])
        c10, c11 = vfma(x, b0, c10), vfma(x, b1, c11)
        x = vsplat(a[r2, kk])
        c20, c21 = vfma(x, b0, c20), vfma(x, b1, c21)
        x = vsplat(a[r3, kk])
        c30, c31 = vfma(x, b0, c30), vfma(x, b1, c31)
    rows = min(4, m - i0)
    biased = bias.size > 0
    vb0, vb1 = (vload(bias, j0), vload(bias, j0 + lanes)) if biased else (zero, zero)
    for q, (v0, v1) in enumerate(((c00, c01), (c10, c11), (c20, c21), (c30, c31))):
        if q < rows:
            o = (i0 + q) * n + j0
            vstore(of, o, _epilogue(v0, vb0, biased, relu))
            vstore(of, o + lanes, _epilogue(v1, vb1, biased, relu))


@njit(inline="always", **_FLAGS)
def _rows8_x1(a, i0, m, bf, n, j0, k, of, nv, zero, bias, relu):
    """:func:`_rows_x1` for 8 rows, for CPUs of 16 vector registers (as :func:`_rows4_x2`)."""
    r1, r2, r3 = min(i0 + 1, m - 1), min(i0 + 2, m - 1), min(i0 + 3, m - 1)
    r4, r5, r6, r7 = min(i0 + 4, m - 1), min(i0 + 5, m - 1), min(i0 + 6, m - 1), min(i0 + 7, m - 1)
    c0 = c1 = c2 = c3 = c4 = c5 = c6 = c7 = zero
    for kk in range(k):
        b0 = vload_first(bf, kk * n + j0, nv, zero)
        c0, c1 = vfma(vsplat_like(a[i0, kk], zero), b0, c0), vfma(vsplat_like(a[r1, kk], zero), b0, c1)
        c2, c3 = vfma(vsplat_like(a[r2, kk], zero), b0, c2), vfma(vsplat_like(a[r3, kk], zero), b0, c3)
        c4, c5 = vfma(vsplat_like(a[r4, kk], zero), b0, c4), vfma(vsplat_like(a[r5, kk], zero), b0, c5)
        c6, c7 = vfma(vsplat_like(a[r6, kk], zero), b0, c6), vfma(vsplat_like(a[r7, kk], zero), b0, c7)
    rows = min(8, m - i0)
    biased = bias.size > 0
    vb = vload_first(bias, j0, nv, zero) if biased else zero
    for q, v in enumerate((c0, c1, c2, c3, c4, c5, c6, c7)):
        if q < rows:
            vstore_first(of, (i0 + q) * n + j0, _epilogue(v, vb, biased, relu), nv)


@njit(inline="always", **_FLAGS)
def _rows_x1(a, i0, m, bf, n, j0, k, of, nv, zero, bias, relu):
    """C[i0 : i0+16, j0 : j0+nv] (nv columns, one masked vector as wide as ``zero``) of A @ B, as
    :func:`_rows_x2`."""
    r0, r1, r2, r3 = i0, min(i0 + 1, m - 1), min(i0 + 2, m - 1), min(i0 + 3, m - 1)
    r4, r5, r6, r7 = min(i0 + 4, m - 1), min(i0 + 5, m - 1), min(i0 + 6, m - 1), min(i0 + 7, m - 1)
    r8, r9, r10, r11 = min(i0 + 8, m - 1), min(i0 + 9, m - 1), min(i0 + 10, m - 1), min(i0 + 11, m - 1)
    r12, r13, r14, r15 = min(i0 + 12, m - 1), min(i0 + 13, m - 1), min(i0 + 14, m - 1), min(i0 + 15, m - 1)
    c0 = c1 = c2 = c3 = c4 = c5 = c6 = c7 = zero
    c8 = c9 = c10 = c11 = c12 = c13 = c14 = c15 = zero
    for kk in range(k):
        b0 = vload_first(bf, kk * n + j0, nv, zero)
        c0, c1 = vfma(vsplat_like(a[r0, kk], zero), b0, c0), vfma(vsplat_like(a[r1, kk], zero), b0, c1)
        c2, c3 = vfma(vsplat_like(a[r2, kk], zero), b0, c2), vfma(vsplat_like(a[r3, kk], zero), b0, c3)
        c4, c5 = vfma(vsplat_like(a[r4, kk], zero), b0, c4), vfma(vsplat_like(a[r5, kk], zero), b0, c5)
        c6, c7 = vfma(vsplat_like(a[r6, kk], zero), b0, c6), vfma(vsplat_like(a[r7, kk], zero), b0, c7)
        c8, c9 = vfma(vsplat_like(a[r8, kk], zero), b0, c8), vfma(vsplat_like(a[r9, kk], zero), b0, c9)
        c10, c11 = vfma(vsplat_like(a[r10, kk], zero), b0, c10), vfma(vsplat_like(a[r11, kk], zero), b0, c11)
        c12, c13 = vfma(vsplat_like(a[r12, kk], zero), b0, c12), vfma(vsplat_like(a[r13, kk], zero), b0, c13)
        c14, c15 = vfma(vsplat_like(a[r14, kk], zero), b0, c14), vfma(vsplat_like(a[r15, kk], zero), b0, c15)
    rows = min(TAIL_ROWS, m - i0)
    biased = bias.size > 0
    vb = vload_first(bias, j0, nv, zero) if biased else zero
    for q, v in enumerate((c0, c1, c2, c3, c4, c5, c6, c7, c8, c9, c10, c11, c12, c13, c14, c15)):
        if q < rows:
            vstore_first(of, (i0 + q) * n + j0, _epilogue(v, vb, biased, relu), nv)


@njit(**_FLAGS)
def _few_rows(a, bf, n, of, bias, relu):
    """C = A @ B (+ bias, ReLU) row by row, for a C of a few rows (B's rows n long, flat in bf;
    C flat in of): 4 vectors of a row at a time, each summed in two chains, the even and the odd
    steps of the inner dimension, so that one FMA's latency does not wait on the last (a batch-1
    forward: OpenBLAS spent 3 of its 4 us on 1 x 784 @ 784 x 50 outside the arithmetic)."""
    lanes = simd.lanes(of.dtype)
    m, k = a.shape
    zero = vsplat(bf.dtype.type(0))
    biased = bias.size > 0
    for i in range(m):
        for j0 in range(0, n, 4 * lanes):
            n0, n1 = min(lanes, n - j0), max(0, min(lanes, n - j0 - lanes))
            n2, n3 = max(0, min(lanes, n - j0 - 2 * lanes)), max(0, min(lanes, n - j0 - 3 * lanes))
            c0 = c1 = c2 = c3 = d0 = d1 = d2 = d3 = zero
            for kk in range(0, k - 1, 2):
                x, y = vsplat(a[i, kk]), vsplat(a[i, kk + 1])
                s = kk * n + j0
                c0, d0 = vfma(x, vload_first(bf, s, n0, zero), c0), vfma(y, vload_first(bf, s + n, n0, zero), d0)
                s += lanes
                c1, d1 = vfma(x, vload_first(bf, s, n1, zero), c1), vfma(y, vload_first(bf, s + n, n1, zero), d1)
                s += lanes
                c2, d2 = vfma(x, vload_first(bf, s, n2, zero), c2), vfma(y, vload_first(bf, s + n, n2, zero), d2)
                s += lanes
                c3, d3 = vfma(x, vload_first(bf, s, n3, zero), c3), vfma(y, vload_first(bf, s + n, n3, zero), d3)
            if k % 2:
                x, s = vsplat(a[i, k - 1]), (k - 1) * n + j0
                c0, c1 = vfma(x, vload_first(bf, s, n0, zero), c0), vfma(x, vload_first(bf, s + lanes, n1, zero), c1)
                c2 = vfma(x, vload_first(bf, s + 2 * lanes, n2, zero), c2)
                c3 = vfma(x, vload_first(bf, s + 3 * lanes, n3, zero), c3)
            for v, (cv, dv, nv) in enumerate(((c0, d0, n0), (c1, d1, n1), (c2, d2, n2), (c3, d3, n3))):
                if nv > 0:
                    j = j0 + v * lanes
                    vb = vload_first(bias, j, nv, zero) if biased else zero
                    vstore_first(of, i * n + j, _epilogue(vadd(cv, dv), vb, biased, relu), nv)


@njit(parallel=True, **_FLAGS)
def _gemm_wide(a, b, out, bias, relu):
    lanes = simd.lanes(out.dtype)
    m, k = a.shape
    n = b.shape[1]
    bf, of = b.ravel(), out.ravel()
    pairs = n // (2 * lanes)  # whole 2-vector column blocks, then single vectors (the last masked)
    units = pairs + -(-(n - pairs * 2 * lanes) // lanes)
    # A task: 16 rows of C and one column block, so that a narrow C still splits between threads;
    # consecutive tasks share the rows (A's stay in L1; B is read from L2, or L3 when larger:
    # blocking the inner dimension for L2 was slower on simple_convnet's 4320 x 100 weights).
    for t in prange(-(-m // TAIL_ROWS) * units):
        r = t // units
        u = t - r * units
        i0 = r * TAIL_ROWS
        if u < pairs:
            j0 = u * 2 * lanes
            _rows_x2(a, i0, m, bf, n, j0, k, of, bias, relu)
            if i0 + ROWS < m:
                _rows_x2(a, i0 + ROWS, m, bf, n, j0, k, of, bias, relu)
        else:
            j0 = pairs * 2 * lanes + (u - pairs) * lanes
            nv = min(lanes, n - j0)
            zero = vsplat(bf.dtype.type(0))
            if 2 * nv <= lanes and lanes >= 4:  # a half-width vector: half the cost on Zen 4
                _rows_x1(a, i0, m, bf, n, j0, k, of, nv, vhalf(zero), bias, relu)
            else:
                _rows_x1(a, i0, m, bf, n, j0, k, of, nv, zero, bias, relu)


@njit(parallel=True, **_FLAGS)
def _gemm_narrow(a, b, out, bias, relu):
    """:func:`_gemm_wide` for CPUs of 16 vector registers: the same tasks, their rows in blocks of
    4 x 2 and 8 x 1 vectors (8 sums)."""
    lanes = simd.lanes(out.dtype)
    m, k = a.shape
    n = b.shape[1]
    bf, of = b.ravel(), out.ravel()
    pairs = n // (2 * lanes)
    units = pairs + -(-(n - pairs * 2 * lanes) // lanes)
    for t in prange(-(-m // TAIL_ROWS) * units):
        r = t // units
        u = t - r * units
        i0 = r * TAIL_ROWS
        if u < pairs:
            j0 = u * 2 * lanes
            for r0 in range(i0, min(i0 + TAIL_ROWS, m), 4):
                _rows4_x2(a, r0, m, bf, n, j0, k, of, bias, relu)
        else:
            j0 = pairs * 2 * lanes + (u - pairs) * lanes
            nv = min(lanes, n - j0)
            zero = vsplat(bf.dtype.type(0))
            for r0 in range(i0, min(i0 + TAIL_ROWS, m), 8):
                if 2 * nv <= lanes and lanes >= 4:
                    _rows8_x1(a, r0, m, bf, n, j0, k, of, nv, vhalf(zero), bias, relu)
                else:
                    _rows8_x1(a, r0, m, bf, n, j0, k, of, nv, zero, bias, relu)


# Chosen once, as the CPU's registers allow: one compiled form each (a branch inside would compile both)
_gemm = _gemm_wide if simd.WIDE_BLOCKS else _gemm_narrow


def fits(a, b, out=None) -> bool:
    """Whether :func:`gemm` computes a @ b (into ``out``): 2-D float32 or float64 operands of one
    dtype and ``out`` of it too, no empty dimension, B row-contiguous or small, and A's rows not at
    a stride that aliases in L1 (see the module docstring)."""
    if a.ndim != 2 or b.ndim != 2 or a.dtype != b.dtype or a.dtype.char not in "fd":
        return False
    if 0 in a.shape or b.shape[1] == 0 or a.shape[1] != b.shape[0]:
        return False
    if out is not None and (out.dtype != a.dtype or out.shape != (a.shape[0], b.shape[1])):
        return False
    if not b.flags.c_contiguous and b.size > PACK_MAX:
        return False
    return a.strides[0] % ALIASING_STRIDE_BYTES != 0  # x.T's rows are a float apart: never


def gemm(a, b, out=None, bias=None, relu: bool = False):
    """a @ b into ``out`` (C-contiguous, or a new array), for operands that :func:`fits`; with
    ``bias`` (one per column, contiguous, a's dtype) added and then the ReLU if ``relu``, as the
    sums are stored (a Linear layer's forward in one pass). A is read in place when C- or
    F-contiguous (x, x.T); B is made row-contiguous if it is not (W.T)."""
    m, n = a.shape[0], b.shape[1]
    if not (a.flags.c_contiguous or a.flags.f_contiguous):
        a = np.ascontiguousarray(a)
    b = np.ascontiguousarray(b)
    dst = out if out is not None and out.flags.c_contiguous else np.empty((m, n), a.dtype)
    bias = _NO_BIAS[a.dtype.char] if bias is None else bias
    with FLUSHED:  # the calling thread computes like Numba's workers (accelnet.cpu_runtime)
        if m <= FEW_ROWS:
            _few_rows(a, b.ravel(), n, dst.ravel(), bias, bool(relu))
        else:
            _gemm(a, b, dst, bias, bool(relu))
    if out is not None and dst is not out:
        out[...] = dst
        return out
    return dst


_NO_BIAS = {np.dtype(t).char: np.empty(0, t) for t in (np.float32, np.float64)}

"""CPU kernels: Numba ``@njit(cache=True)`` loops, parallel (prange) above a size, with the reference signatures.

Each optimizer update is one pass over the flat buffers: every element is read and
written once, with weight decay and the clipping factor folded in. The arithmetic is
``elementwise.py``'s (shared with the CUDA kernels) and follows ``reference.py``
operation for operation; no fastmath flag lets LLVM contract or reorder it, so the
fused kernels match the reference bit for bit.
"""

from __future__ import annotations

import functools
import math
import sys
import types

import numba
import numpy as np
from numba import njit, prange, uint64

from accelnet.cpu_runtime import FLUSHED, flushes_denormals, set_blas_threads

from . import conv_gemm, cpu_conv, cpu_gemm, elementwise, simd, update_loops
from . import reference as _reference
from .contracts import (ConvContext, argmax_dtype, check_bias_rows, check_relu_output, check_scores, checked_out,
                        conv_shapes, output_size, pool_shape)
from .cpu_pool import max_windows, scatter_windows
from .simd import vload_first, vsplat

# error_model='numpy': a division does not check for zero, so loops with one vectorize.
_FLAGS = dict(cache=True, error_model="numpy")

# Below this many elements of work a serial loop wins: inside a training step, right after BLAS
# calls, waking the pool costs more than small loops take (README, "Thread pools").
PARALLEL_MIN = 1 << 17


class _Loop:
    """One loop compiled twice, parallel and serial, called as ``loop(work, *args)``."""

    def __init__(self, fn, flags):
        self.parallel = njit(parallel=True, **_FLAGS, **flags)(fn)
        # A renamed copy gets its own cache file: Numba's cache index does not key on `parallel`.
        serial = types.FunctionType(fn.__code__, fn.__globals__, fn.__name__ + "_serial", fn.__defaults__,
                                    fn.__closure__)
        serial.__qualname__ = fn.__qualname__ + "_serial"
        self.serial = njit(parallel=False, **_FLAGS, **flags)(serial)

    def __call__(self, work: int, *args):
        with FLUSHED:  # the calling thread computes like Numba's workers (accelnet.cpu_runtime)
            return (self.parallel if work >= PARALLEL_MIN else self.serial)(*args)


def _loop(**flags):
    return lambda fn: _Loop(fn, flags)


# Index arithmetic is done in uint64 where it cannot go negative: Numba then drops its
# negative-index wraparound checks and the inner loops vectorize.


@_loop()
def _im2col(x, fh, fw, stride, pad, oh, ow, col):
    n, c, h, w = x.shape
    zero = x.dtype.type(0)
    st = uint64(stride)
    for r in prange(n * oh):  # one output row (image i, row oy) per iteration
        i = r // oh
        oy = r - i * oh
        blk = col[r * ow : (r + 1) * ow]
        for ch in range(c):
            for ky in range(fh):
                iy = oy * stride + ky - pad
                for kx in range(fw):
                    cidx = uint64((ch * fh + ky) * fw + kx)
                    if iy < 0 or iy >= h:
                        for ox in range(uint64(ow)):
                            blk[ox, cidx] = zero
                        continue
                    xrow = x[i, ch, iy]
                    # the outputs ox whose input column ox*stride + kx - pad lies inside the image
                    ox_lo = min(ow, max(0, (pad - kx + stride - 1) // stride))
                    ox_hi = max(ox_lo, min(ow, (w - 1 + pad - kx) // stride + 1))
                    for ox in range(uint64(ox_lo)):
                        blk[ox, cidx] = zero
                    x_lo = uint64(ox_lo * stride + kx - pad)
                    o_lo = uint64(ox_lo)
                    for j in range(uint64(ox_hi - ox_lo)):
                        blk[o_lo + j, cidx] = xrow[x_lo + j * st]
                    for ox in range(uint64(ox_hi), uint64(ow)):
                        blk[ox, cidx] = zero


@_loop()
def _col2im(col, fh, fw, stride, pad, oh, ow, out):
    # Each thread owns whole images and adds their column entries back in a fixed order
    # (oy, then channel, ky, kx): no two threads write the same pixel, so it is race-free and
    # deterministic, and col is read in memory order. (The summation order differs from the
    # reference's, so the two agree to rounding, not bit for bit.)
    n, c, h, w = out.shape
    st = uint64(stride)
    for i in prange(n):
        img = out[i]
        img[:] = 0
        for oy in range(oh):
            blk = col[(i * oh + oy) * ow : (i * oh + oy + 1) * ow]
            for ch in range(c):
                for ky in range(fh):
                    iy = oy * stride + ky - pad
                    if iy < 0 or iy >= h:
                        continue
                    orow = img[ch, iy]
                    for kx in range(fw):
                        cidx = uint64((ch * fh + ky) * fw + kx)
                        ox_lo = max(0, (pad - kx + stride - 1) // stride)
                        ox_hi = min(ow, (w - 1 + pad - kx) // stride + 1)
                        if ox_hi <= ox_lo:
                            continue
                        x_lo = uint64(ox_lo * stride + kx - pad)
                        o_lo = uint64(ox_lo)
                        for j in range(uint64(ox_hi - ox_lo)):
                            orow[x_lo + j * st] += blk[o_lo + j, cidx]


def _checked_out(out, shape, dtype):
    return checked_out(np, out, shape, dtype)


def im2col(x, fh: int, fw: int, stride: int = 1, pad: int = 0, out=None):
    """(N, C, H, W) -> (N*OH*OW, C*FH*FW): one row per output position (the book's layout)."""
    x = np.ascontiguousarray(x)
    n, c, h, w = x.shape
    oh, ow = output_size(h, fh, stride, pad), output_size(w, fw, stride, pad)
    col = _checked_out(out, (n * oh * ow, c * fh * fw), x.dtype)
    _im2col(col.size, x, fh, fw, stride, pad, oh, ow, col)
    return col


def col2im(col, x_shape, fh: int, fw: int, stride: int = 1, pad: int = 0, out=None):
    """The adjoint of :func:`im2col`: race-free and deterministic (each thread owns whole images)."""
    n, c, h, w = x_shape
    oh, ow = output_size(h, fh, stride, pad), output_size(w, fw, stride, pad)
    if col.shape != (n * oh * ow, c * fh * fw):
        raise ValueError(f"col2im: col must have shape {(n * oh * ow, c * fh * fw)}, got {col.shape}")
    col = np.ascontiguousarray(col)
    img = _checked_out(out, (n, c, h, w), col.dtype)
    _col2im(col.size, col, fh, fw, stride, pad, oh, ow, img)
    return img


# -- optimizer updates -----------------------------------------------------------------------
# One loop per elementwise.py formula; LLVM inlines the formula and the loop still vectorizes.

_UPDATES = {name: _Loop(update_loops.loop_function(f"cpu_update_{name}", formula, njit(**_FLAGS)(formula), state,
                                                   "prange(p.size)", {"prange": prange}), {})
            for name, (formula, state) in elementwise.UPDATES.items()}


# A sum may be reassociated (that is what lets it vectorize); no nnan/ninf, so NaN still propagates.
@_loop(fastmath={"reassoc", "nsz"})
def _sum_squares(g):
    s = 0.0
    for i in prange(g.size):
        gi = np.float64(g[i])
        s += gi * gi
    return s


def _check_flat(p, *others):
    for a in (p, *others):
        if not isinstance(a, np.ndarray) or a.ndim != 1 or not a.flags.c_contiguous:
            raise ValueError(f"optimizer kernels take flat C-contiguous NumPy arrays, got {type(a).__name__} "
                             f"{getattr(a, 'shape', '')}")
        if a.shape != p.shape or a.dtype != p.dtype:
            raise ValueError(f"optimizer kernel arrays must match p {p.shape} {p.dtype}, got {a.shape} {a.dtype}")
    # Scalars go in as the array dtype: a float64 scalar would promote a float32 update to float64.
    return p.dtype.type


def update(rule: str, p, g, state: tuple, scalars: tuple, gscale: float = 1.0) -> None:
    """One pass of ``elementwise.<rule>`` over flat p, g and the ``state`` buffers, in place, with
    the optimizer's ``scalars`` and the clipping factor ``gscale``."""
    elementwise.check_update(rule, state)
    s = _check_flat(p, g, *state)
    _UPDATES[rule](p.size, p, g, *state, *[s(a) for a in scalars], s(gscale), elementwise.tiny(p.dtype))


def sum_squares(g) -> float:
    """sum(g*g) as a Python float (accumulated in float64): the squared global gradient norm."""
    _check_flat(g)
    return float(_sum_squares(g.size, g))


# -- pooling ---------------------------------------------------------------------------------------
# One thread per (image, channel) plane: where windows overlap, the backward pass adds into pixels
# that only that thread owns, so it is race-free and deterministic.


@_loop()
def _maxpool2d(x, ph, pw, stride, out, argmax):
    lanes = simd.lanes(out.dtype)
    n, c, oh, ow = out.shape
    h, w = x.shape[2], x.shape[3]
    for p in prange(n * c):
        i = p // c
        ch = p - i * c
        plane = x[i, ch]
        if ph == 2 and pw == 2 and stride == 2:  # the usual pool: LANES windows at a time
            for oy in range(oh):
                r0 = p * h * w + 2 * oy * w  # flat index of the window's top row
                o = p * oh * ow + oy * ow
                ox = 0
                while ox < ow and r0 + w + 2 * ox + 2 * lanes <= x.size:  # the vectors' reads stay in x
                    max_windows(x, r0 + 2 * ox, w, None, False, min(lanes, ow - ox), out, argmax, o + ox)
                    ox += lanes
                for ox in range(ox, ow):  # the array's last windows, one at a time
                    m, k = plane[2 * oy, 2 * ox], 0
                    for t, v in ((1, plane[2 * oy, 2 * ox + 1]), (2, plane[2 * oy + 1, 2 * ox]),
                                 (3, plane[2 * oy + 1, 2 * ox + 1])):
                        take = (m == m) & ((v > m) | (v != v))  # the first NaN wins, as below
                        m = v if take else m
                        k = t if take else k
                    out[i, ch, oy, ox] = m
                    argmax[i, ch, oy, ox] = k
            continue
        for oy in range(oh):
            for ox in range(ow):
                y0, x0 = oy * stride, ox * stride
                best = plane[y0, x0]
                arg = 0
                for ky in range(ph):
                    for kx in range(pw):
                        v = plane[y0 + ky, x0 + kx]
                        # like NumPy, the first NaN wins, so a NaN reaches the loss
                        if best == best and (v > best or v != v):
                            best = v
                            arg = ky * pw + kx
                out[i, ch, oy, ox] = best
                argmax[i, ch, oy, ox] = arg


@_loop()
def _maxpool2d_backward(dout, argmax, ph, pw, stride, dx):
    lanes = simd.lanes(dx.dtype)
    n, c, oh, ow = dout.shape
    h, w = dx.shape[2], dx.shape[3]
    zero = vsplat(dx.dtype.type(0))
    for p in prange(n * c):
        i = p // c
        ch = p - i * c
        plane = dx[i, ch]
        if stride == 2 and ph == 2 and pw == 2 and oh * 2 == h and ow * 2 == w:
            # windows that tile the image: every pixel is written once, LANES windows at a time
            for oy in range(oh):
                r0 = p * h * w + 2 * oy * w
                o = p * oh * ow + oy * ow
                for ox in range(0, ow, lanes):
                    k = min(lanes, ow - ox)
                    scatter_windows(vload_first(dout, o + ox, k, zero), vload_first(argmax, o + ox, k, zero),
                                    r0 + 2 * ox, w, k, dx)
            continue
        plane[:] = 0
        for oy in range(oh):
            for ox in range(ow):
                a = argmax[i, ch, oy, ox]
                ky = a // pw
                plane[oy * stride + ky, ox * stride + a - ky * pw] += dout[i, ch, oy, ox]


@_loop()
def _avgpool2d(x, ph, pw, stride, out):
    n, c, oh, ow = out.shape
    cnt = x.dtype.type(ph * pw)
    for p in prange(n * c):
        i = p // c
        ch = p - i * c
        plane = x[i, ch]
        for oy in range(oh):
            for ox in range(ow):
                s = x.dtype.type(0)
                for ky in range(ph):
                    for kx in range(pw):
                        s += plane[oy * stride + ky, ox * stride + kx]
                out[i, ch, oy, ox] = s / cnt


@_loop()
def _avgpool2d_backward(dout, ph, pw, stride, dx):
    n, c, oh, ow = dout.shape
    cnt = dout.dtype.type(ph * pw)
    for p in prange(n * c):
        i = p // c
        ch = p - i * c
        plane = dx[i, ch]
        plane[:] = 0
        for oy in range(oh):
            for ox in range(ow):
                g = dout[i, ch, oy, ox] / cnt
                for ky in range(ph):
                    for kx in range(pw):
                        plane[oy * stride + ky, ox * stride + kx] += g


@_loop()
def _shift2d(x, dy, dx, out):
    n, c, h, w = x.shape
    zero = x.dtype.type(0)
    for p in prange(n * c):
        i = p // c
        ch = p - i * c
        a, b = dy[i], dx[i]
        for y in range(h):
            sy = y - a
            if sy < 0 or sy >= h:
                for xx in range(w):
                    out[i, ch, y, xx] = zero
                continue
            for xx in range(w):
                sx = xx - b
                out[i, ch, y, xx] = x[i, ch, sy, sx] if 0 <= sx < w else zero


def shift2d(x, dy, dx, out=None):
    """Each image ``x[i]`` (N, C, H, W) moved ``dy[i]`` rows down and ``dx[i]`` columns right,
    zeros shifted in (random-shift augmentation)."""
    x = np.ascontiguousarray(x)
    if len(dy) != len(x) or len(dx) != len(x):
        raise ValueError(f"shift2d: {len(x)} images but {len(dy)} row and {len(dx)} column shifts")
    out = _checked_out(out, x.shape, x.dtype)
    _shift2d(x.size, x, np.ascontiguousarray(dy, np.int64), np.ascontiguousarray(dx, np.int64), out)
    return out


def maxpool2d(x, ph: int, pw: int, stride: int, out=None, argmax=None):
    """Max over each window -> (out (N, C, OH, OW), argmax: the window-local index of the max,
    dtype ``argmax_dtype(ph, pw)``)."""
    x = np.ascontiguousarray(x)
    shape = pool_shape(x.shape, ph, pw, stride)
    out = _checked_out(out, shape, x.dtype)
    argmax = _checked_out(argmax, shape, argmax_dtype(ph, pw))
    _maxpool2d(x.size, x, ph, pw, stride, out, argmax)
    return out, argmax


def maxpool2d_backward(dout, argmax, x_shape, ph: int, pw: int, stride: int, out=None):
    """Route each window's gradient to its max (summed where windows overlap)."""
    dout, argmax = np.ascontiguousarray(dout), np.ascontiguousarray(argmax)
    dx = _checked_out(out, tuple(x_shape), dout.dtype)
    _maxpool2d_backward(dx.size, dout, argmax, ph, pw, stride, dx)
    return dx


def avgpool2d(x, ph: int, pw: int, stride: int, out=None):
    """Mean over each window."""
    x = np.ascontiguousarray(x)
    out = _checked_out(out, pool_shape(x.shape, ph, pw, stride), x.dtype)
    _avgpool2d(x.size, x, ph, pw, stride, out)
    return out


def avgpool2d_backward(dout, x_shape, ph: int, pw: int, stride: int, out=None):
    """Spread each window's gradient evenly over it."""
    dout = np.ascontiguousarray(dout)
    dx = _checked_out(out, tuple(x_shape), dout.dtype)
    _avgpool2d_backward(dx.size, dout, ph, pw, stride, dx)
    return dx


@_loop()
def _triad(a, b, c, s):
    for i in prange(a.size):
        a[i] = b[i] + s * c[i]


def start_thread_pool() -> None:
    """Run a parallel kernel once, so Numba's worker threads exist from here on."""
    a = np.zeros(4, np.float32)
    _triad.parallel(a, a, a, np.float32(1))


def triad(a, b, c, s):
    """STREAM triad a = b + s*c: the memory-bandwidth yardstick of the benchmarks."""
    t = _check_flat(a, b, c)
    _triad(a.size, a, b, c, t(s))


# Products below this many flops run on one OpenBLAS thread: waking a second costs more than it
# saves (accelnet.cpu_runtime.set_blas_threads; README, "Thread pools")...
SMALL_PRODUCT_FLOPS = 30e6
# ...and only below this many when a dimension is LONG_PRODUCT_DIM or more (the batch at 1000):
# measured in whole steps with `accelnet bench ab`, two threads made multi_layer_net's 20 MFLOP
# products at batch 1000 faster and its 16 MFLOP ones at batch 100 slower (README, "Thread pools").
LONG_PRODUCT_FLOPS = 15e6
LONG_PRODUCT_DIM = 1000


def blas_threads(m: int, k: int, n: int) -> int | None:
    """OpenBLAS threads for an (m, k) @ (k, n) product: 1 for a small one, else None (all)."""
    long = max(m, k, n) >= LONG_PRODUCT_DIM
    return 1 if 2 * m * k * n < (LONG_PRODUCT_FLOPS if long else SMALL_PRODUCT_FLOPS) else None


# accelnet's own product (cpu_gemm, on Numba's threads) from this many flops, and where both the
# result's rows and the inner dimension are this long: on one thread it is no faster than OpenBLAS,
# and on smaller or shorter products waking Numba's pool costs more than two threads save
# (bench/profile_products.py; `accelnet bench ab` at batch 32 and 100). Products of a few rows with
# B row-contiguous and within L2 (a batch-1 forward: x @ W) run there too, serially: OpenBLAS's
# call costs more than their arithmetic.
GEMM_MIN_FLOPS = 1e6
GEMM_MIN_LENGTH = 64


def _gemm_runs(a, b, out, m: int, k: int, n: int) -> bool:
    if m <= cpu_gemm.FEW_ROWS:
        return b.flags.c_contiguous and b.size <= cpu_gemm.FEW_ROWS_B_MAX and cpu_gemm.fits(a, b, out)
    # Its gain is the second thread: with one (NUMBA_NUM_THREADS=1, an MPI rank per core) OpenBLAS runs.
    return (2 * m * k * n >= GEMM_MIN_FLOPS and min(m, k) >= GEMM_MIN_LENGTH and cpu_gemm.fits(a, b, out)
            and numba.get_num_threads() > 1)


def matmul(a, b, out=None):
    """a @ b for 2-D arrays: accelnet's own kernel (``cpu_gemm``) where it is the faster, else
    OpenBLAS, small products on one thread."""
    m, k, n = a.shape[0], a.shape[-1], b.shape[-1]
    if _gemm_runs(a, b, out, m, k, n):
        return cpu_gemm.gemm(a, b, out)
    set_blas_threads(blas_threads(m, k, n))
    return np.matmul(a, b, out=out)


def matmul_picks(a, b, out=None) -> str:
    """Which implementation :func:`matmul` runs for a @ b: "gemm" (accelnet's, on every thread),
    "OpenBLAS 1" (one thread) or "OpenBLAS 2" (all)."""
    m, k, n = a.shape[0], a.shape[-1], b.shape[-1]
    return "gemm" if _gemm_runs(a, b, out, m, k, n) else f"OpenBLAS {blas_threads(m, k, n) or 2}"


@functools.lru_cache(maxsize=32)
def _ones(n: int, dtype) -> np.ndarray:
    ones = np.ones(n, dtype)
    ones.flags.writeable = False
    return ones


def column_sums(a, out):
    """The sum of each column of 2-D ``a`` into ``out``, as ones @ a: BLAS's gemv reads ``a`` once,
    row by row, where NumPy's axis-0 sum took 6x as long on a 1000x100 gradient."""
    set_blas_threads(blas_threads(1, a.shape[0], a.shape[1]))
    return np.dot(_ones(a.shape[0], a.dtype), a, out=out)


# -- activations --------------------------------------------------------------------------------


@_loop()
def _relu(x, out):
    zero = x.dtype.type(0)
    for i in prange(x.size):
        v = x[i]
        out[i] = v if v > zero else zero * v  # x * (x > 0): NaN survives, -0.0 and -inf*0 as there


@_loop()
def _relu_backward(dout, y, out):
    zero = dout.dtype.type(0)
    for i in prange(dout.size):
        out[i] = dout[i] if y[i] > zero else zero * dout[i]


@_loop()
def _add_bias(z, b, relu):
    zero = z.dtype.type(0)
    for i in prange(z.shape[0]):
        row = z[i]
        if relu:
            for j in range(row.size):
                v = row[j] + b[j]
                row[j] = v if v > zero else zero * v
        else:
            for j in range(row.size):
                row[j] += b[j]


# Up to this many elements the sigmoid is one compiled loop on the calling thread (a batch-1
# forward: one call where NumPy's formula makes four); past it, NumPy's vectorized tanh, faster
# per element than the C library's.
SIGMOID_LOOP_MAX = 1024


@njit(**_FLAGS)
def _sigmoid(x, out):
    half = x.dtype.type(0.5)
    for i in range(x.size):
        out[i] = half * math.tanh(half * x[i]) + half


def sigmoid(x):
    """0.5 * tanh(x / 2) + 0.5, as ``reference.sigmoid``: one loop for a small x."""
    if x.size > SIGMOID_LOOP_MAX or not x.flags.c_contiguous or x.dtype.char not in "fd":
        return _reference.sigmoid(x)
    out = np.empty_like(x)
    _sigmoid(x.reshape(-1), out.reshape(-1))
    return out


def relu(x, out=None):
    """max(0, x) as ``x * (x > 0)`` in one pass (a NaN stays NaN, so divergence reaches the loss)."""
    x = np.ascontiguousarray(x)
    out = _checked_out(out, x.shape, x.dtype)
    _relu(x.size, x.reshape(-1), out.reshape(-1))
    return out


def relu_backward(dout, y, out=None):
    """dL/dx of :func:`relu` from its output ``y``: ``dout * (y > 0)``."""
    dout, y = np.ascontiguousarray(dout), np.ascontiguousarray(y)
    check_relu_output(dout, y)
    out = _checked_out(out, dout.shape, dout.dtype)
    _relu_backward(dout.size, dout.reshape(-1), y.reshape(-1), out.reshape(-1))
    return out


def add_bias(z, b, relu: bool = False):
    """``z += b`` row-wise in place, then ReLU if ``relu``: one pass where NumPy's broadcast add
    and a ReLU layer took two, each slower on rows this short (README, "Every batch size")."""
    check_bias_rows(z, b)
    _add_bias(z.size, z, b, bool(relu))
    return z


def linear(x, w, b, relu: bool = False):
    """``x @ w + b`` then ReLU if ``relu``: where :func:`matmul` runs accelnet's gemm, the bias and
    the ReLU are applied as its sums are stored (no second pass over the product)."""
    m, k, n = x.shape[0], x.shape[-1], w.shape[-1]
    if (_gemm_runs(x, w, None, m, k, n) and b.shape == (n,) and b.dtype == x.dtype and b.flags.c_contiguous):
        return cpu_gemm.gemm(x, w, bias=b, relu=relu)
    return add_bias(matmul(x, w), b, relu)


# -- loss -------------------------------------------------------------------------------------------


@_loop()
def _softmax_cross_entropy(y, t, p):
    n, k = y.shape
    total = 0.0  # float64: the batch's sum of n terms
    for i in prange(n):
        row, prow = y[i], p[i]
        m = row[0]
        for j in range(1, k):
            m = max(m, row[j])
        s = y.dtype.type(0)
        for j in range(k):
            e = math.exp(row[j] - m)
            prow[j] = e
            s += e
        for j in range(k):
            prow[j] /= s
        total += math.log(s) - (row[t[i]] - m)
    return total


@_loop()
def _softmax_cross_entropy_backward(p, t, scale, out):
    n, k = p.shape
    one = p.dtype.type(1)
    for i in prange(n):
        for j in range(k):
            out[i, j] = (p[i, j] - one if j == t[i] else p[i, j]) * scale


def softmax_cross_entropy(y, t, p):
    """Mean cross-entropy of softmax(``y``) (N, K) against class indices ``t`` (N,), in one pass
    per row (NumPy's seven passes took 7x as long on 1000 x 10 scores); writes the
    probabilities into ``p``."""
    y, t = np.ascontiguousarray(y), np.ascontiguousarray(t)
    check_scores(y, t, p)
    p = _checked_out(p, y.shape, y.dtype)
    return y.dtype.type(np.float64(_softmax_cross_entropy(y.size, y, t, p)) / y.shape[0])  # n = 0: NaN


def softmax_cross_entropy_backward(p, t, scale, out=None):
    """dL/dy of :func:`softmax_cross_entropy` times ``n * scale``: (p - onehot(t)) * scale."""
    t = np.ascontiguousarray(t)
    check_scores(p, t, p)
    out = _checked_out(out, p.shape, p.dtype)
    _softmax_cross_entropy_backward(p.size, p, t, p.dtype.type(scale), out)
    return out


# -- conv layout changes ----------------------------------------------------------------------------


@_loop()
def _rows_to_nchw(rows, bias, out):
    n, f, oh, ow = out.shape
    p = oh * ow
    for i in prange(n):
        for c in range(f):
            b = bias[c]
            dst = out[i, c].reshape(p)  # contiguous plane
            src = rows[i * p : (i + 1) * p, c]
            for j in range(p):
                dst[j] = src[j] + b


@_loop()
def _nchw_to_rows(x, out):
    n, f, oh, ow = x.shape
    p = oh * ow
    for i in prange(n):
        blk = out[i * p : (i + 1) * p]
        for c in range(f):
            src = x[i, c].reshape(p)
            for j in range(p):
                blk[j, c] = src[j]


def rows_to_nchw(rows, bias, out):
    """GEMM rows (N*OH*OW, F) plus a per-channel bias -> the (N, F, OH, OW) batch ``out``."""
    rows = np.ascontiguousarray(rows)
    n, f, oh, ow = out.shape
    if rows.shape != (n * oh * ow, f) or bias.shape != (f,):
        raise ValueError(f"rows_to_nchw: rows {rows.shape} and bias {bias.shape} do not fit out {out.shape}")
    _rows_to_nchw(out.size, rows, bias, _checked_out(out, out.shape, rows.dtype))
    return out


def nchw_to_rows(x, out=None):
    """(N, F, OH, OW) -> rows (N*OH*OW, F): the layout the conv's backward GEMMs take."""
    x = np.ascontiguousarray(x)
    n, f, oh, ow = x.shape
    out = _checked_out(out, (n * oh * ow, f), x.dtype)
    _nchw_to_rows(x.size, x, out)
    return out


# -- convolution ----------------------------------------------------------------------------------


# Stride 1 runs directly on each image (cpu_conv). im2col + OpenBLAS GEMM, tried for deep_convnet's
# 8x8 convs, was faster in isolation but slower inside a training step: its columns' memory traffic
# against cache-resident images (bench/profile_step.py).


@flushes_denormals
def conv2d(x, w, b, stride: int = 1, pad: int = 0, relu: bool = False, pool: int | None = None, out=None):
    """Convolution of ``x`` (N, C, H, W) with ``w`` (F, C, FH, FW), plus ``b``, then ReLU if
    ``relu``, then a pool x pool max-pool if ``pool``; returns (output, ConvContext). At stride 1
    directly on each image in cache (``cpu_conv``, the ReLU and the pool applied as the sums are
    stored), otherwise by im2col + GEMM (``conv_gemm``)."""
    x = np.ascontiguousarray(x)
    n, f, fh, fw, oh, ow = conv_shapes(x, w, stride, pad)
    if stride != 1:
        return conv_gemm.conv2d(_self, x, w, b, stride, pad, relu, pool, out)
    shape = pool_shape((n, f, oh, ow), pool, pool, pool) if pool else (n, f, oh, ow)
    out = _checked_out(out, shape, x.dtype)
    argmax = np.empty(shape, argmax_dtype(pool, pool)) if pool else None
    cpu_conv.conv2d(x, w, b, pad, out, relu, pool, argmax)
    return out, ConvContext(x, w, stride, pad, relu, pool, out, argmax)


@flushes_denormals
def conv2d_backward(dout, ctx: ConvContext, dw, db, need_dx: bool = True):
    """Gradients of :func:`conv2d`: writes ``dw`` and ``db``, returns dL/dx (None unless ``need_dx``).
    With ``relu`` the output's mask is applied to ``dout`` as it is read; with ``pool`` each
    window's gradient goes to its argmax."""
    if ctx.stride != 1:
        return conv_gemm.conv2d_backward(_self, dout, ctx, dw, db, need_dx)
    dout = np.ascontiguousarray(dout)
    ctx.check_dout(dout)
    x = ctx.x
    return cpu_conv.conv2d_backward(dout, x, ctx.w, ctx.pad, dw, db, np.empty_like(x) if need_dx else None,
                                    ctx.out if ctx.relu else None, ctx.pool, ctx.argmax)


_self = sys.modules[__name__]

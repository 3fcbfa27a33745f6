"""GPU kernels: ``numba.cuda`` with the reference signatures, on CuPy arrays.

CuPy arrays reach the kernels through the CUDA array interface, and every launch goes
on CuPy's current stream, so kernels and CuPy operations stay ordered without a host
sync. Loops are grid-stride; an optimizer step is one launch over the flat buffers.
Scatter-free by construction: col2im and the pooling backward passes are gathers
(each output element sums its own contributions), so they are race-free and
deterministic. Under ``NUMBA_ENABLE_CUDASIM=1`` the same kernels run on NumPy arrays
in Numba's simulator, which is how CPU-only CI checks them.
"""

from __future__ import annotations

import math
import sys
from collections import OrderedDict

import numba
import numpy as np
from numba import cuda, float64

from accelnet.xp import array_namespace

from . import conv_gemm, elementwise, update_loops
from . import reference as _reference
from .contracts import (ConvContext, argmax_dtype, check_bias_rows, check_relu_output, check_scores, checked_out,
                        output_size, pool_shape)

# numba-cuda (0.30.4 and earlier) registers a kernel overload for np.row_stack, which NumPy 2.5 removed:
# without the alias, the first kernel compilation raises AttributeError (seen on an H200 with NumPy 2.5.2).
if not hasattr(np, "row_stack"):
    np.row_stack = np.vstack

THREADS = 256
MAX_BLOCKS = 4096  # grid-stride loops cover the rest; enough blocks to fill any current GPU
_REDUCE_BLOCKS = 512


def _blocks(n: int) -> int:
    return max(1, min(MAX_BLOCKS, -(-n // THREADS)))


_streams: dict = {}


def _stream():
    """CuPy's current stream as a Numba stream; the simulator's default stream under
    NUMBA_ENABLE_CUDASIM, which must not touch CuPy or a driver (CPU-only CI)."""
    if numba.config.ENABLE_CUDASIM:
        return 0
    import cupy

    ptr = cupy.cuda.get_current_stream().ptr
    if ptr not in _streams:
        _streams[ptr] = cuda.external_stream(ptr) if ptr else cuda.default_stream()
    return _streams[ptr]


# Launch overhead: a step launches dozens of small kernels, so neither a launch configuration nor a
# device view of an array is rebuilt when one already fits.
_CONFIGS: dict = {}
_VIEWS: OrderedDict = OrderedDict()
VIEW_CACHE = 256  # views, least recently used dropped first: the arena, optimizer state and the pool's blocks


def _dev(a):
    """A CuPy array as a Numba device array, cached by (device, pointer, shape, strides, dtype).

    The view holds no reference to the CuPy array (owner=None), so the cache never keeps freed
    memory alive, and a view describes only its pointer and layout, so it stays right when CuPy's
    pool hands the same block to a new array. No stream sync on import (CAI v3): every launch goes
    on CuPy's current stream, so the order is already right."""
    ptr = getattr(getattr(a, "data", None), "ptr", None)
    if ptr is None:
        if hasattr(a, "__cuda_array_interface__"):
            return cuda.as_cuda_array(a, sync=False)
        return a  # scalars, and NumPy arrays under the simulator
    key = (a.data.device_id, ptr, a.shape, a.strides, a.dtype.char)
    view = _VIEWS.get(key)
    if view is None:
        view = cuda.from_cuda_array_interface(a.__cuda_array_interface__, owner=None, sync=False)
        if len(_VIEWS) >= VIEW_CACHE:
            _VIEWS.popitem(last=False)
        _VIEWS[key] = view
    else:
        _VIEWS.move_to_end(key)
    return view


def _configured(kernel, n: int):
    """``kernel[blocks, THREADS, stream]`` for ``n`` elements on the current stream, built once."""
    key = (kernel, _blocks(n), _stream())
    configured = _CONFIGS.get(key)
    if configured is None:
        configured = kernel[key[1], THREADS, key[2]]
        if configured is not kernel:  # the simulator's kernels configure themselves in place: nothing to keep
            _CONFIGS[key] = configured
    return configured


LAUNCHES = 0  # Numba kernel launches so far (CuPy's own are not counted): bench/gpu_check.py reports them per step


def _launch(kernel, n: int, *args) -> None:
    """Launch ``kernel`` over ``n`` elements on CuPy's current stream."""
    global LAUNCHES
    LAUNCHES += 1
    _configured(kernel, n)(*[_dev(a) for a in args])


_xp = array_namespace


_checked_out = checked_out


# A typed zero for the kernels: an int literal in float arithmetic (x * 0) would make a float32
# kernel compute in float64 (tests/test_cuda_ptx.py checks the PTX).
def _zero(a):
    return np.dtype(a.dtype).type(0)


def _check_flat(p, *others):
    for a in (p, *others):
        if a.ndim != 1 or not a.flags.c_contiguous:
            raise ValueError(f"optimizer kernels take flat C-contiguous arrays, got shape {a.shape}")
        if a.shape != p.shape or a.dtype != p.dtype:
            raise ValueError(f"optimizer kernel arrays must match p {p.shape} {p.dtype}, got {a.shape} {a.dtype}")
    return np.dtype(p.dtype).type  # scalars go in as the array dtype: no float64 math in a float32 update


# -- optimizer updates: elementwise.py's formulas, one grid-stride launch over the flat buffers -------

_UPDATES = {name: cuda.jit(cache=True)(update_loops.loop_function(
    f"cuda_update_{name}", formula, cuda.jit(device=True, cache=True)(formula), state,
    "range(cuda.grid(1), p.size, cuda.gridsize(1))", {"cuda": cuda}))
    for name, (formula, state) in elementwise.UPDATES.items()}


@cuda.jit(cache=True)
def _sum_squares_partial(g, partial):
    # Each block reduces its grid-stride share in shared memory and writes one partial sum;
    # the partials are added on the host in a fixed order, so the norm is deterministic.
    buf = cuda.shared.array(THREADS, float64)
    t = cuda.threadIdx.x
    s = 0.0
    for i in range(cuda.grid(1), g.size, cuda.gridsize(1)):
        gi = float64(g[i])
        s += gi * gi
    buf[t] = s
    cuda.syncthreads()
    step = THREADS // 2
    while step > 0:
        if t < step:
            buf[t] += buf[t + step]
        cuda.syncthreads()
        step //= 2
    if t == 0:
        partial[cuda.blockIdx.x] = buf[0]


def update(rule: str, p, g, state: tuple, scalars: tuple, gscale: float = 1.0) -> None:
    """One launch of ``elementwise.<rule>`` over flat p, g and the ``state`` buffers, in place, with
    the optimizer's ``scalars`` and the clipping factor ``gscale``."""
    elementwise.check_update(rule, state)
    s = _check_flat(p, g, *state)
    _launch(_UPDATES[rule], p.size, p, g, *state, *[s(a) for a in scalars], s(gscale), elementwise.tiny(p.dtype))


def sum_squares(g) -> float:
    """sum(g*g) as a Python float (accumulated in float64): the squared global gradient norm."""
    _check_flat(g)
    xp = _xp(g)
    blocks = max(1, min(_REDUCE_BLOCKS, -(-g.size // THREADS)))
    partial = xp.empty(blocks, dtype=np.float64)  # every block writes its own partial
    _launch(_sum_squares_partial, blocks * THREADS, g, partial)
    host = partial.get() if hasattr(partial, "get") else partial
    return float(np.sum(host))


@cuda.jit(cache=True)
def _triad(a, b, c, s):
    start, stride = cuda.grid(1), cuda.gridsize(1)
    for i in range(start, a.size, stride):
        a[i] = b[i] + s * c[i]


def triad(a, b, c, s):
    """STREAM triad a = b + s*c: the memory-bandwidth yardstick of the benchmarks."""
    t = _check_flat(a, b, c)
    _launch(_triad, a.size, a, b, c, t(s))


@cuda.jit(device=True, cache=True)
def _unravel(e, c, h, w):
    """Flat index -> (image, channel, row, column) of a C-contiguous (N, C, H, W) array."""
    x = e % w
    r = e // w
    y = r % h
    r = r // h
    return r // c, r % c, y, x


# -- im2col / col2im -----------------------------------------------------------------------------------

@cuda.jit(cache=True)
def _im2col(x, fh, fw, stride, pad, oh, ow, col):
    n, c, h, w = x.shape
    k = c * fh * fw
    total = col.shape[0] * k
    for e in range(cuda.grid(1), total, cuda.gridsize(1)):
        row = e // k
        cidx = e - row * k
        i = row // (oh * ow)
        r = row - i * oh * ow
        oy = r // ow
        ox = r - oy * ow
        ch = cidx // (fh * fw)
        q = cidx - ch * fh * fw
        ky = q // fw
        kx = q - ky * fw
        iy = oy * stride + ky - pad
        ix = ox * stride + kx - pad
        if 0 <= iy < h and 0 <= ix < w:
            col[row, cidx] = x[i, ch, iy, ix]
        else:
            col[row, cidx] = 0


@cuda.jit(cache=True)
def _col2im(col, fh, fw, stride, pad, oh, ow, zero, out):
    n, c, h, w = out.shape
    total = n * c * h * w
    for e in range(cuda.grid(1), total, cuda.gridsize(1)):
        i, ch, y, x = _unravel(e, c, h, w)
        s = zero
        for ky in range(fh):
            ty = y + pad - ky
            if ty < 0 or ty % stride != 0 or ty // stride >= oh:
                continue
            oy = ty // stride
            for kx in range(fw):
                tx = x + pad - kx
                if tx < 0 or tx % stride != 0 or tx // stride >= ow:
                    continue
                s += col[(i * oh + oy) * ow + tx // stride, (ch * fh + ky) * fw + kx]
        out[i, ch, y, x] = s


def im2col(x, fh: int, fw: int, stride: int = 1, pad: int = 0, out=None):
    """(N, C, H, W) -> (N*OH*OW, C*FH*FW): one row per output position (the book's layout)."""
    xp = _xp(x)
    x = xp.ascontiguousarray(x)
    n, c, h, w = x.shape
    oh, ow = output_size(h, fh, stride, pad), output_size(w, fw, stride, pad)
    col = _checked_out(xp, out, (n * oh * ow, c * fh * fw), x.dtype)
    _launch(_im2col, col.size, x, fh, fw, stride, pad, oh, ow, col)
    return col


def col2im(col, x_shape, fh: int, fw: int, stride: int = 1, pad: int = 0, out=None):
    """The adjoint of :func:`im2col`, as a gather: race-free and deterministic."""
    xp = _xp(col)
    n, c, h, w = x_shape
    oh, ow = output_size(h, fh, stride, pad), output_size(w, fw, stride, pad)
    if tuple(col.shape) != (n * oh * ow, c * fh * fw):
        raise ValueError(f"col2im: col must have shape {(n * oh * ow, c * fh * fw)}, got {col.shape}")
    col = xp.ascontiguousarray(col)
    img = _checked_out(xp, out, tuple(x_shape), col.dtype)
    _launch(_col2im, img.size, col, fh, fw, stride, pad, oh, ow, _zero(col), img)
    return img


# -- pooling -------------------------------------------------------------------------------------------

@cuda.jit(cache=True)
def _maxpool2d(x, ph, pw, stride, out, argmax):
    n, c, oh, ow = out.shape
    for e in range(cuda.grid(1), out.size, cuda.gridsize(1)):
        i, ch, oy, ox = _unravel(e, c, oh, ow)
        y0, x0 = oy * stride, ox * stride
        best = x[i, ch, y0, x0]
        arg = 0
        for ky in range(ph):
            for kx in range(pw):
                v = x[i, ch, y0 + ky, x0 + kx]
                if best == best and (v > best or v != v):  # the first NaN wins, as in NumPy
                    best = v
                    arg = ky * pw + kx
        out[i, ch, oy, ox] = best
        argmax[i, ch, oy, ox] = arg


@cuda.jit(cache=True)
def _maxpool2d_backward(dout, argmax, ph, pw, stride, zero, dx):
    n, c, oh, ow = dout.shape
    h, w = dx.shape[2], dx.shape[3]
    for e in range(cuda.grid(1), dx.size, cuda.gridsize(1)):
        i, ch, y, x = _unravel(e, c, h, w)
        s = zero
        for ky in range(ph):  # gather from every window that covers (y, x)
            ty = y - ky
            if ty < 0 or ty % stride != 0 or ty // stride >= oh:
                continue
            for kx in range(pw):
                tx = x - kx
                if tx < 0 or tx % stride != 0 or tx // stride >= ow:
                    continue
                if argmax[i, ch, ty // stride, tx // stride] == ky * pw + kx:
                    s += dout[i, ch, ty // stride, tx // stride]
        dx[i, ch, y, x] = s


@cuda.jit(cache=True)
def _avgpool2d(x, ph, pw, stride, cnt, zero, out):
    n, c, oh, ow = out.shape
    for e in range(cuda.grid(1), out.size, cuda.gridsize(1)):
        i, ch, oy, ox = _unravel(e, c, oh, ow)
        s = zero
        for ky in range(ph):
            for kx in range(pw):
                s += x[i, ch, oy * stride + ky, ox * stride + kx]
        out[i, ch, oy, ox] = s / cnt


@cuda.jit(cache=True)
def _avgpool2d_backward(dout, ph, pw, stride, cnt, zero, dx):
    n, c, oh, ow = dout.shape
    h, w = dx.shape[2], dx.shape[3]
    for e in range(cuda.grid(1), dx.size, cuda.gridsize(1)):
        i, ch, y, x = _unravel(e, c, h, w)
        s = zero
        for ky in range(ph):
            ty = y - ky
            if ty < 0 or ty % stride != 0 or ty // stride >= oh:
                continue
            for kx in range(pw):
                tx = x - kx
                if tx < 0 or tx % stride != 0 or tx // stride >= ow:
                    continue
                s += dout[i, ch, ty // stride, tx // stride] / cnt
        dx[i, ch, y, x] = s


@cuda.jit(cache=True)
def _shift2d(x, dy, dx, zero, out):
    n, c, h, w = out.shape
    for e in range(cuda.grid(1), out.size, cuda.gridsize(1)):
        i, ch, y, xx = _unravel(e, c, h, w)
        sy, sx = y - dy[i], xx - dx[i]
        if sy >= 0 and sy < h and sx >= 0 and sx < w:
            out[i, ch, y, xx] = x[i, ch, sy, sx]
        else:
            out[i, ch, y, xx] = zero


def shift2d(x, dy, dx, out=None):
    """Each image ``x[i]`` (N, C, H, W) moved ``dy[i]`` rows down and ``dx[i]`` columns right,
    zeros shifted in (random-shift augmentation)."""
    xp = _xp(x)
    x = xp.ascontiguousarray(x)
    if len(dy) != len(x) or len(dx) != len(x):
        raise ValueError(f"shift2d: {len(x)} images but {len(dy)} row and {len(dx)} column shifts")
    out = _checked_out(xp, out, x.shape, x.dtype)
    _launch(_shift2d, out.size, x, xp.asarray(dy, dtype=xp.int64), xp.asarray(dx, dtype=xp.int64), _zero(x), out)
    return out


def maxpool2d(x, ph: int, pw: int, stride: int, out=None, argmax=None):
    """Max over each window -> (out (N, C, OH, OW), argmax: the window-local index of the max,
    dtype ``argmax_dtype(ph, pw)``)."""
    xp = _xp(x)
    x = xp.ascontiguousarray(x)
    shape = pool_shape(x.shape, ph, pw, stride)
    out = _checked_out(xp, out, shape, x.dtype)
    argmax = _checked_out(xp, argmax, shape, argmax_dtype(ph, pw))
    _launch(_maxpool2d, out.size, x, ph, pw, stride, out, argmax)
    return out, argmax


def maxpool2d_backward(dout, argmax, x_shape, ph: int, pw: int, stride: int, out=None):
    """Route each window's gradient to its max (summed where windows overlap), as a gather."""
    xp = _xp(dout)
    dout = xp.ascontiguousarray(dout)
    dx = _checked_out(xp, out, tuple(x_shape), dout.dtype)
    _launch(_maxpool2d_backward, dx.size, dout, argmax, ph, pw, stride, _zero(dout), dx)
    return dx


def avgpool2d(x, ph: int, pw: int, stride: int, out=None):
    """Mean over each window."""
    xp = _xp(x)
    x = xp.ascontiguousarray(x)
    out = _checked_out(xp, out, pool_shape(x.shape, ph, pw, stride), x.dtype)
    _launch(_avgpool2d, out.size, x, ph, pw, stride, np.dtype(x.dtype).type(ph * pw), _zero(x), out)
    return out


def avgpool2d_backward(dout, x_shape, ph: int, pw: int, stride: int, out=None):
    """Spread each window's gradient evenly over it, as a gather."""
    xp = _xp(dout)
    dout = xp.ascontiguousarray(dout)
    dx = _checked_out(xp, out, tuple(x_shape), dout.dtype)
    _launch(_avgpool2d_backward, dx.size, dout, ph, pw, stride, np.dtype(dout.dtype).type(ph * pw), _zero(dout),
                                           dx)
    return dx


def matmul(a, b, out=None):
    """a @ b for 2-D arrays (cuBLAS through CuPy)."""
    return _xp(a).matmul(a, b, out=out)


def column_sums(a, out):
    """The sum of each column of 2-D ``a`` into ``out`` (CuPy's reduction)."""
    return _xp(a).sum(a, axis=0, out=out)


# -- activations ----------------------------------------------------------------------------------------

@cuda.jit(cache=True)
def _relu(x, zero, out):
    for i in range(cuda.grid(1), x.size, cuda.gridsize(1)):
        v = x[i]
        out[i] = v if v > zero else zero * v  # x * (x > 0): NaN survives, -0.0 and -inf*0 as there


@cuda.jit(cache=True)
def _relu_backward(dout, y, zero, out):
    for i in range(cuda.grid(1), dout.size, cuda.gridsize(1)):
        out[i] = dout[i] if y[i] > zero else zero * dout[i]


@cuda.jit(cache=True)
def _add_bias(z, b, relu, zero):
    f = b.size
    for e in range(cuda.grid(1), z.size, cuda.gridsize(1)):
        v = z[e] + b[e % f]
        z[e] = v if not relu or v > zero else zero * v


def sigmoid(x):
    """0.5 * tanh(x / 2) + 0.5 in CuPy's elementwise kernels (``reference.sigmoid``)."""
    return _reference.sigmoid(x)


def relu(x, out=None):
    """max(0, x) as ``x * (x > 0)`` in one pass (a NaN stays NaN, so divergence reaches the loss)."""
    xp = _xp(x)
    x = xp.ascontiguousarray(x)
    out = _checked_out(xp, out, x.shape, x.dtype)
    _launch(_relu, x.size, x.reshape(-1), _zero(x), out.reshape(-1))
    return out


def relu_backward(dout, y, out=None):
    """dL/dx of :func:`relu` from its output ``y``: ``dout * (y > 0)``."""
    xp = _xp(dout)
    dout, y = xp.ascontiguousarray(dout), xp.ascontiguousarray(y)
    check_relu_output(dout, y)
    out = _checked_out(xp, out, dout.shape, dout.dtype)
    _launch(_relu_backward, dout.size, dout.reshape(-1), y.reshape(-1), _zero(dout), out.reshape(-1))
    return out


def add_bias(z, b, relu: bool = False):
    """``z += b`` row-wise in place, then ReLU if ``relu``, in one launch."""
    check_bias_rows(z, b)
    _launch(_add_bias, z.size, z.reshape(-1), b, bool(relu), _zero(z))
    return z


def linear(x, w, b, relu: bool = False):
    """``x @ w + b`` then ReLU if ``relu``: cuBLAS's product, then one launch for the rest."""
    return add_bias(matmul(x, w), b, relu)


# -- loss ---------------------------------------------------------------------------------------------

@cuda.jit(cache=True)
def _softmax_cross_entropy(y, t, zero, p, row_loss):
    n, k = y.shape
    for i in range(cuda.grid(1), n, cuda.gridsize(1)):  # one thread per row: K is a few classes
        m = y[i, 0]
        for j in range(1, k):
            m = max(m, y[i, j])
        s = zero
        for j in range(k):
            e = math.exp(y[i, j] - m)
            p[i, j] = e
            s += e
        for j in range(k):
            p[i, j] /= s
        row_loss[i] = math.log(s) - (y[i, t[i]] - m)


@cuda.jit(cache=True)
def _softmax_cross_entropy_backward(p, t, one, scale, out):
    n, k = p.shape
    for e in range(cuda.grid(1), p.size, cuda.gridsize(1)):
        i = e // k
        j = e - i * k
        out[i, j] = (p[i, j] - one if j == t[i] else p[i, j]) * scale


def softmax_cross_entropy(y, t, p):
    """Mean cross-entropy of softmax(``y``) (N, K) against class indices ``t`` (N,), a thread per
    row; writes the probabilities into ``p``. The mean stays on the device (a 0-d array)."""
    xp = _xp(y)
    y, t = xp.ascontiguousarray(y), xp.ascontiguousarray(t)
    check_scores(y, t, p)
    p = _checked_out(xp, p, y.shape, y.dtype)
    row_loss = xp.empty(y.shape[0], y.dtype)
    _launch(_softmax_cross_entropy, y.shape[0], y, t, _zero(y), p, row_loss)
    return row_loss.sum() / y.shape[0]


def softmax_cross_entropy_backward(p, t, scale, out=None):
    """dL/dy of :func:`softmax_cross_entropy` times ``n * scale``: (p - onehot(t)) * scale."""
    xp = _xp(p)
    t = xp.ascontiguousarray(t)
    check_scores(p, t, p)
    out = _checked_out(xp, out, p.shape, p.dtype)
    typed = np.dtype(p.dtype).type
    _launch(_softmax_cross_entropy_backward, p.size, p, t, typed(1), typed(scale), out)
    return out


# -- conv layout changes -------------------------------------------------------------------------------

@cuda.jit(cache=True)
def _rows_to_nchw(rows, bias, out):
    n, f, oh, ow = out.shape
    p = oh * ow
    for e in range(cuda.grid(1), out.size, cuda.gridsize(1)):
        j = e % p
        r = e // p
        c = r % f
        i = r // f
        out[i, c, j // ow, j % ow] = rows[i * p + j, c] + bias[c]


@cuda.jit(cache=True)
def _nchw_to_rows(x, out):
    n, f, oh, ow = x.shape
    p = oh * ow
    for e in range(cuda.grid(1), out.size, cuda.gridsize(1)):
        c = e % f
        row = e // f
        i = row // p
        j = row - i * p
        out[row, c] = x[i, c, j // ow, j % ow]


def rows_to_nchw(rows, bias, out):
    """GEMM rows (N*OH*OW, F) plus a per-channel bias -> the (N, F, OH, OW) batch ``out``."""
    xp = _xp(rows)
    rows = xp.ascontiguousarray(rows)
    n, f, oh, ow = out.shape
    if tuple(rows.shape) != (n * oh * ow, f) or tuple(bias.shape) != (f,):
        raise ValueError(f"rows_to_nchw: rows {rows.shape} and bias {bias.shape} do not fit out {out.shape}")
    _launch(_rows_to_nchw, out.size, rows, bias, _checked_out(xp, out, out.shape, rows.dtype))
    return out


def nchw_to_rows(x, out=None):
    """(N, F, OH, OW) -> rows (N*OH*OW, F): the layout the conv's backward GEMMs take."""
    xp = _xp(x)
    x = xp.ascontiguousarray(x)
    n, f, oh, ow = x.shape
    out = _checked_out(xp, out, (n * oh * ow, f), x.dtype)
    _launch(_nchw_to_rows, out.size, x, out)
    return out


# -- convolution: im2col + cuBLAS GEMM, the form GPUs run well ---------------------------------------


def conv2d(x, w, b, stride: int = 1, pad: int = 0, relu: bool = False, pool: int | None = None, out=None):
    """Convolution of ``x`` (N, C, H, W) with ``w`` (F, C, FH, FW), plus ``b``, as im2col + GEMM
    (``conv_gemm``), then ReLU if ``relu``, then max-pooled if ``pool``; returns (output, ConvContext)."""
    return conv_gemm.conv2d(_self, _xp(x).ascontiguousarray(x), w, b, stride, pad, relu, pool, out)


def conv2d_backward(dout, ctx: ConvContext, dw, db, need_dx: bool = True):
    """Gradients of :func:`conv2d`: writes ``dw`` and ``db``, returns dL/dx (None unless ``need_dx``)."""
    return conv_gemm.conv2d_backward(_self, dout, ctx, dw, db, need_dx)


_self = sys.modules[__name__]

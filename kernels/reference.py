"""Reference kernels: the textbook formulas in plain ``xp`` (NumPy or CuPy).

The oracle of the parity tests: each kernel here has the signature of its twins in ``cpu.py``
and ``cuda.py`` and shares with them only the contract (``contracts.py``: shapes, the argmax
dtype, the conv context), none of their code.
"""

from __future__ import annotations

from accelnet.xp import array_namespace

from .contracts import ConvContext, argmax_dtype, conv_shapes, output_size, pool_shape


def _out(xp, out, shape, dtype):
    if out is None:
        return xp.empty(shape, dtype=dtype)
    if out.shape != tuple(shape) or out.dtype != dtype:
        raise ValueError(f"out must have shape {tuple(shape)} and dtype {dtype}, got {out.shape} {out.dtype}")
    return out


def im2col(x, fh: int, fw: int, stride: int = 1, pad: int = 0, out=None):
    """(N, C, H, W) -> (N*OH*OW, C*FH*FW): one row per output position (the book's layout)."""
    xp = array_namespace(x)
    n, c, h, w = x.shape
    oh, ow = output_size(h, fh, stride, pad), output_size(w, fw, stride, pad)
    img = xp.pad(x, [(0, 0), (0, 0), (pad, pad), (pad, pad)], mode="constant") if pad else x
    col = xp.empty((n, c, fh, fw, oh, ow), dtype=x.dtype)
    for y in range(fh):
        y_max = y + stride * oh
        for xx in range(fw):
            x_max = xx + stride * ow
            col[:, :, y, xx, :, :] = img[:, :, y:y_max:stride, xx:x_max:stride]
    res = _out(xp, out, (n * oh * ow, c * fh * fw), x.dtype)
    res[...] = col.transpose(0, 4, 5, 1, 2, 3).reshape(n * oh * ow, -1)
    return res


def col2im(col, x_shape, fh: int, fw: int, stride: int = 1, pad: int = 0, out=None):
    """The adjoint of :func:`im2col`: sums each column entry back onto its input pixel."""
    xp = array_namespace(col)
    n, c, h, w = x_shape
    oh, ow = output_size(h, fh, stride, pad), output_size(w, fw, stride, pad)
    if col.shape != (n * oh * ow, c * fh * fw):
        raise ValueError(f"col2im: col must have shape {(n * oh * ow, c * fh * fw)}, got {col.shape}")
    col6 = col.reshape(n, oh, ow, c, fh, fw).transpose(0, 3, 4, 5, 1, 2)
    img = xp.zeros((n, c, h + 2 * pad + stride - 1, w + 2 * pad + stride - 1), dtype=col.dtype)
    for y in range(fh):
        y_max = y + stride * oh
        for xx in range(fw):
            x_max = xx + stride * ow
            img[:, :, y:y_max:stride, xx:x_max:stride] += col6[:, :, y, xx, :, :]
    res = _out(xp, out, (n, c, h, w), col.dtype)
    res[...] = img[:, :, pad : h + pad, pad : w + pad]
    return res


# -- optimizer updates ------------------------------------------------------------------------
# The book's formulas (common/optimizer.py), operation for operation, so that in float64 they
# reproduce its trajectories exactly. Arrays are flat and updated in place. Each takes the
# scalars its optimizer computes on the host (``Optimizer.scalars``): ``wd`` is the L2 weight
# decay and ``gscale`` the gradient-clipping factor, both folded into the gradient first
# (g' = g * gscale + wd * p), so clipping and decay cost no extra pass.


def _grad(p, g, wd, gscale):
    return g * gscale + wd * p


def _flush(a):
    """Decaying state below the smallest normal number -> 0 (why: kernels/elementwise.py)."""
    xp = array_namespace(a)
    a[xp.abs(a) < xp.finfo(a.dtype).tiny] = 0


def sgd(p, g, lr, wd, gscale):
    """p -= lr * g."""
    p -= lr * _grad(p, g, wd, gscale)


def momentum(p, g, v, lr, mu, wd, gscale):
    """v = mu * v - lr * g; p += v."""
    g = _grad(p, g, wd, gscale)
    v[...] = mu * v - lr * g
    _flush(v)
    p += v


def nesterov(p, g, v, lr, mu, mu2, lr_1mu, wd, gscale):
    """The book's Nesterov: p += mu*mu*v - (1 + mu)*lr*g with the previous v; then v = mu*v - lr*g
    (``mu2`` = mu*mu, ``lr_1mu`` = (1 + mu)*lr)."""
    g = _grad(p, g, wd, gscale)
    p += mu2 * v
    p -= lr_1mu * g
    v *= mu
    v -= lr * g
    _flush(v)


def adagrad(p, g, h, lr, eps, wd, gscale):
    """h += g*g; p -= lr * g / (sqrt(h) + eps)."""
    xp = array_namespace(p)
    g = _grad(p, g, wd, gscale)
    h += g * g
    p -= lr * g / (xp.sqrt(h) + eps)


def rmsprop(p, g, h, lr, decay, one_minus_decay, eps, wd, gscale):
    """h = decay*h + (1 - decay)*g*g; p -= lr * g / (sqrt(h) + eps)."""
    xp = array_namespace(p)
    g = _grad(p, g, wd, gscale)
    h *= decay
    h += one_minus_decay * g * g
    _flush(h)
    p -= lr * g / (xp.sqrt(h) + eps)


def adam(p, g, m, v, lr_t, one_minus_b1, one_minus_b2, eps, wd, wd_decoupled, gscale):
    """m += (1-b1)(g-m); v += (1-b2)(g*g-v); p -= wd_decoupled*p; p -= lr_t*m/(sqrt(v)+eps).

    ``lr_t`` carries the bias correction (lr * sqrt(1-b2^t) / (1-b1^t)); ``wd_decoupled``
    is AdamW's lr * weight_decay.
    """
    xp = array_namespace(p)
    g = _grad(p, g, wd, gscale)
    m += one_minus_b1 * (g - m)
    v += one_minus_b2 * (g * g - v)
    _flush(m)
    _flush(v)
    p -= wd_decoupled * p
    p -= lr_t * m / (xp.sqrt(v) + eps)


_FORMULAS = {f.__name__: f for f in (sgd, momentum, nesterov, adagrad, rmsprop, adam)}


def update(rule: str, p, g, state: tuple, scalars: tuple, gscale: float = 1.0) -> None:
    """The textbook formula ``rule`` over p, g and the ``state`` buffers, in place."""
    if rule not in _FORMULAS:
        raise ValueError(f"no reference formula for update {rule!r}: expected one of {sorted(_FORMULAS)}")
    _FORMULAS[rule](p, g, *state, *scalars, gscale)


def sum_squares(g) -> float:
    """sum(g*g) as a Python float (accumulated in float64): the squared global gradient norm."""
    xp = array_namespace(g)
    return float(xp.dot(g.astype(xp.float64, copy=False), g.astype(xp.float64, copy=False)))


# -- pooling (the book's Pooling layer: windows through im2col) ---------------------------------


def _pool_windows(x, ph, pw, stride):
    return im2col(x, ph, pw, stride, 0).reshape(-1, ph * pw)


def _pool_image(rows, x_shape, ph, pw, stride):
    n, c, oh, ow = pool_shape(x_shape, ph, pw, stride)
    return rows.reshape(n, oh, ow, c).transpose(0, 3, 1, 2)


def _pool_back(dwin, x_shape, ph, pw, stride, out):
    n, c, oh, ow = pool_shape(x_shape, ph, pw, stride)
    return col2im(dwin.reshape(n * oh * ow, c * ph * pw), x_shape, ph, pw, stride, 0, out=out)


def maxpool2d(x, ph: int, pw: int, stride: int, out=None, argmax=None):
    """Max over each window -> (out (N, C, OH, OW), argmax: the window-local index of the max,
    dtype ``argmax_dtype(ph, pw)``)."""
    xp = array_namespace(x)
    win = _pool_windows(x, ph, pw, stride)
    idx = win.argmax(axis=1)
    res = _pool_image(win[xp.arange(idx.size), idx], x.shape, ph, pw, stride)
    am = _pool_image(idx.astype(argmax_dtype(ph, pw)), x.shape, ph, pw, stride)
    res = _copy_into(xp, out, res)
    return res, _copy_into(xp, argmax, am)


def maxpool2d_backward(dout, argmax, x_shape, ph: int, pw: int, stride: int, out=None):
    """Route each window's gradient to its max (summed where windows overlap)."""
    xp = array_namespace(dout)
    flat = dout.transpose(0, 2, 3, 1).reshape(-1)
    dwin = xp.zeros((flat.size, ph * pw), dtype=dout.dtype)
    dwin[xp.arange(flat.size), argmax.transpose(0, 2, 3, 1).reshape(-1)] = flat
    return _pool_back(dwin, x_shape, ph, pw, stride, out)


def avgpool2d(x, ph: int, pw: int, stride: int, out=None):
    """Mean over each window."""
    xp = array_namespace(x)
    return _copy_into(xp, out, _pool_image(_pool_windows(x, ph, pw, stride).mean(axis=1), x.shape, ph, pw, stride))


def avgpool2d_backward(dout, x_shape, ph: int, pw: int, stride: int, out=None):
    """Spread each window's gradient evenly over it."""
    xp = array_namespace(dout)
    flat = dout.transpose(0, 2, 3, 1).reshape(-1, 1) / dout.dtype.type(ph * pw)
    return _pool_back(xp.broadcast_to(flat, (flat.shape[0], ph * pw)), x_shape, ph, pw, stride, out)


def _copy_into(xp, out, value):
    if out is None:
        return xp.ascontiguousarray(value)
    if out.shape != value.shape:
        raise ValueError(f"out must have shape {value.shape}, got {out.shape}")
    out[...] = value
    return out


def triad(a, b, c, s):
    """STREAM triad a = b + s*c: the memory-bandwidth yardstick of the benchmarks."""
    a[...] = b + s * c


def matmul(a, b, out=None):
    """a @ b for 2-D arrays (the Linear layer's products)."""
    return array_namespace(a).matmul(a, b, out=out)


def column_sums(a, out):
    """The sum of each column of 2-D ``a`` into ``out`` (the Linear layer's bias gradient)."""
    return array_namespace(a).sum(a, axis=0, out=out)


# -- activations ------------------------------------------------------------------------------------


def relu(x, out=None):
    """max(0, x) as ``x * (x > 0)``: a NaN stays NaN, so divergence reaches the loss."""
    return _copy_into(array_namespace(x), out, x * (x > 0))


def sigmoid(x):
    """1 / (1 + exp(-x)) as 0.5 * tanh(x / 2) + 0.5, so that a large |x| never overflows (the
    halvings are exact; 0.5 * tanh + 0.5 rounds as (tanh + 1) * 0.5)."""
    out = array_namespace(x).tanh(x * 0.5)
    out *= 0.5
    out += 0.5
    return out


def relu_backward(dout, y, out=None):
    """dL/dx of :func:`relu` from its output ``y``: ``dout * (y > 0)`` (y > 0 exactly where x > 0)."""
    return _copy_into(array_namespace(dout), out, dout * (y > 0))


def add_bias(z, b, relu: bool = False):
    """``z += b`` for each row of 2-D ``z`` in place, then ReLU (as :func:`relu`) if ``relu``: the
    Linear layer's work after its product. Returns ``z``."""
    z += b
    if relu:
        z *= z > 0
    return z


def linear(x, w, b, relu: bool = False):
    """``x @ w + b`` for 2-D ``x``, then ReLU if ``relu``: the Linear layer's forward, a new array."""
    return add_bias(matmul(x, w), b, relu)


# -- loss -------------------------------------------------------------------------------------------


def softmax_cross_entropy(y, t, p):
    """Mean cross-entropy of softmax(``y``) (N, K) against class indices ``t`` (N,), through a
    stable log-sum-exp; writes the probabilities into ``p`` (the backward pass reads them)."""
    xp = array_namespace(y)
    shifted = y - y.max(axis=1, keepdims=True)  # exp never overflows
    e = xp.exp(shifted)
    s = e.sum(axis=1, keepdims=True)
    p[...] = e / s
    n = y.shape[0]
    return -(shifted[xp.arange(n), t] - xp.log(s[:, 0])).sum() / n


def softmax_cross_entropy_backward(p, t, scale, out=None):
    """dL/dy of :func:`softmax_cross_entropy` times ``n * scale``: (p - onehot(t)) * scale."""
    xp = array_namespace(p)
    d = p.copy()
    d[xp.arange(p.shape[0]), t] -= 1
    return _copy_into(xp, out, d * p.dtype.type(scale))


# -- conv layout changes ----------------------------------------------------------------------------


def rows_to_nchw(rows, bias, out):
    """GEMM rows (N*OH*OW, F) plus a per-channel bias -> the (N, F, OH, OW) batch ``out``."""
    n, f, oh, ow = out.shape
    out[...] = rows.reshape(n, oh, ow, f).transpose(0, 3, 1, 2) + bias.reshape(1, f, 1, 1)
    return out


def nchw_to_rows(x, out=None):
    """(N, F, OH, OW) -> rows (N*OH*OW, F): the layout the conv's backward GEMMs take."""
    xp = array_namespace(x)
    n, f, oh, ow = x.shape
    res = x.transpose(0, 2, 3, 1).reshape(n * oh * ow, f)
    return _copy_into(xp, out, res)


# -- convolution (the book's Convolution layer: im2col, one product, reshape) --------------------------


def conv2d(x, w, b, stride: int = 1, pad: int = 0, relu: bool = False, pool: int | None = None, out=None):
    """Convolution (cross-correlation) of ``x`` (N, C, H, W) with ``w`` (F, C, FH, FW), plus ``b`` (F,),
    then ReLU if ``relu``, then a pool x pool max-pool (stride pool) if ``pool``.
    Returns (output, ConvContext): the context is what :func:`conv2d_backward` reads."""
    xp = array_namespace(x)
    n, f, fh, fw, oh, ow = conv_shapes(x, w, stride, pad)
    col = im2col(x, fh, fw, stride, pad)
    y = (col @ w.reshape(f, -1).T + b).reshape(n, oh, ow, f).transpose(0, 3, 1, 2)
    if relu:
        y = y * (y > 0)
    argmax = None
    if pool:
        y, argmax = maxpool2d(y, pool, pool, pool)
    y = _copy_into(xp, out, y)
    return y, ConvContext(x, w, stride, pad, relu, pool, y, argmax, col)


def conv2d_backward(dout, ctx: ConvContext, dw, db, need_dx: bool = True):
    """Gradients of :func:`conv2d`: writes ``dw`` (F, C, FH, FW) and ``db`` (F,), returns dL/dx
    (None unless ``need_dx``)."""
    ctx.check_dout(dout)
    n, f, fh, fw, oh, ow = conv_shapes(ctx.x, ctx.w, ctx.stride, ctx.pad)
    if ctx.relu:
        dout = dout * (ctx.out > 0)  # pooled: the mask at each window's max
    if ctx.pool:
        dout = maxpool2d_backward(dout, ctx.argmax, (n, f, oh, ow), ctx.pool, ctx.pool, ctx.pool)
    drows = dout.transpose(0, 2, 3, 1).reshape(-1, f)
    db[...] = drows.sum(axis=0)
    dw[...] = (drows.T @ ctx.col).reshape(dw.shape)
    if not need_dx:
        return None
    return col2im(drows @ ctx.w.reshape(f, -1), ctx.x.shape, fh, fw, ctx.stride, ctx.pad)


# -- augmentation ------------------------------------------------------------------------------------


def shift2d(x, dy, dx, out=None):
    """Each image ``x[i]`` (N, C, H, W) moved ``dy[i]`` rows down and ``dx[i]`` columns right,
    zeros shifted in (random-shift augmentation)."""
    xp = array_namespace(x)
    n, c, h, w = x.shape
    out = _out(xp, out, x.shape, x.dtype)
    out[...] = 0
    for i, (a, b) in enumerate(zip(dy.tolist(), dx.tolist())):
        if abs(a) < h and abs(b) < w:
            out[i, :, max(a, 0):h + min(a, 0), max(b, 0):w + min(b, 0)] = \
                x[i, :, max(-a, 0):h + min(-a, 0), max(-b, 0):w + min(-b, 0)]
    return out

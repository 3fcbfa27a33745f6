"""Convolution as im2col -> one GEMM -> rows to (N, F, OH, OW), built from a kernel module's
primitives (``im2col``, ``rows_to_nchw``, ``maxpool2d``, ``nchw_to_rows``, ``col2im`` and their
backward twins): the GPU's form (cuBLAS), and the CPU's for strided convolutions."""

from __future__ import annotations

from accelnet.xp import array_namespace

from .contracts import ConvContext, checked_out, conv_shapes


def conv2d(k, x, w, b, stride: int, pad: int, relu: bool, pool: int | None, out):
    """(output, ConvContext) of a convolution with kernel module ``k``'s primitives; ``relu`` then
    ``pool`` (max, pool x pool, stride pool) applied to its output. The columns are kept for the
    backward pass."""
    xp = array_namespace(x)
    n, f, fh, fw, oh, ow = conv_shapes(x, w, stride, pad)
    col = k.im2col(x, fh, fw, stride, pad)
    rows = xp.matmul(col, w.reshape(f, -1).T)
    y = k.rows_to_nchw(rows, b, checked_out(xp, None if pool else out, (n, f, oh, ow), x.dtype))
    if relu:
        xp.multiply(y, y > 0, out=y)  # x * (x > 0), as the ReLU layer: NaN stays NaN
    argmax = None
    if pool:
        y, argmax = k.maxpool2d(y, pool, pool, pool, out=out)
    return y, ConvContext(x, w, stride, pad, relu, pool, y, argmax, col)


def conv2d_backward(k, dout, ctx: ConvContext, dw, db, need_dx: bool):
    """Gradients of :func:`conv2d`: writes ``dw`` and ``db``, returns dL/dx (None unless ``need_dx``)."""
    xp = array_namespace(dout)
    ctx.check_dout(dout)
    n, f, fh, fw, oh, ow = conv_shapes(ctx.x, ctx.w, ctx.stride, ctx.pad)
    if ctx.relu:
        # pooled: each window's max is its ReLU output, so (pooled > 0) is the mask at the argmax
        dout = dout * (ctx.out > 0)
    if ctx.pool:
        dout = k.maxpool2d_backward(dout, ctx.argmax, (n, f, oh, ow), ctx.pool, ctx.pool, ctx.pool)
    col = ctx.col if ctx.col is not None else k.im2col(ctx.x, fh, fw, ctx.stride, ctx.pad)
    drows = k.nchw_to_rows(dout)
    xp.sum(dout, axis=(0, 2, 3), out=db)
    xp.matmul(drows.T, col, out=dw.reshape(f, -1))
    if not need_dx:
        return None
    return k.col2im(drows @ ctx.w.reshape(f, -1), ctx.x.shape, fh, fw, ctx.stride, ctx.pad)

"""Reference kernels: the textbook formulas in plain ``xp`` (NumPy or CuPy).

They are the oracle of the parity tests and the fallback where no fused kernel
exists. Every kernel here has the same signature as its twins in ``cpu.py`` and
``cuda.py``.
"""

from __future__ import annotations

from accelnet.backend import array_namespace


def conv_output_size(size: int, k: int, stride: int, pad: int) -> int:
    """Output length of a window of ``k`` sliding by ``stride`` over ``size + 2*pad``."""
    return (size + 2 * pad - k) // stride + 1


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
    oh, ow = conv_output_size(h, fh, stride, pad), conv_output_size(w, fw, stride, pad)
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
    oh, ow = conv_output_size(h, fh, stride, pad), conv_output_size(w, fw, stride, pad)
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

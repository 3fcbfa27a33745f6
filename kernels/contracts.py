"""The contract every kernel module keeps (``reference``, ``cpu``, ``cuda``): output sizes, the
argmax dtype, the checks on ``out`` arrays, and the context a convolution hands its backward pass.

Shared here so that the modules agree by construction; the reference oracle uses only these
definitions, never the code it checks.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def output_size(size: int, k: int, stride: int, pad: int) -> int:
    """Output length of a window of ``k`` sliding by ``stride`` over ``size + 2*pad``."""
    return (size + 2 * pad - k) // stride + 1


def conv_shapes(x, w, stride: int, pad: int) -> tuple[int, int, int, int, int, int]:
    """(N, F, FH, FW, OH, OW) of a convolution, checking that x and w agree on the channels."""
    n, c, h, wd = x.shape
    f, wc, fh, fw = w.shape
    if wc != c:
        raise ValueError(f"conv2d: weights {tuple(w.shape)} expect {wc} input channels, x {tuple(x.shape)} has {c}")
    return n, f, fh, fw, output_size(h, fh, stride, pad), output_size(wd, fw, stride, pad)


def pool_shape(x_shape, ph: int, pw: int, stride: int) -> tuple[int, int, int, int]:
    """(N, C, OH, OW) of a ph x pw pooling with ``stride`` (no padding) over ``x_shape``."""
    n, c, h, w = x_shape
    return (n, c, output_size(h, ph, stride, 0), output_size(w, pw, stride, 0))


def argmax_dtype(ph: int, pw: int):
    """The dtype of a max-pool's argmax (the window-local index of each max): one byte where the
    window has at most 256 pixels (less memory traffic), else intp."""
    return np.dtype(np.uint8) if ph * pw <= 256 else np.dtype(np.intp)


def checked_out(xp, out, shape, dtype):
    """``out`` if it is a C-contiguous array of ``shape`` and ``dtype``, a new one if it is None."""
    if out is None:
        return xp.empty(shape, dtype=dtype)
    if tuple(out.shape) != tuple(shape) or out.dtype != dtype or not out.flags.c_contiguous:
        raise ValueError(f"out must be C-contiguous with shape {tuple(shape)} and dtype {np.dtype(dtype)}, "
                         f"got {tuple(out.shape)} {out.dtype}")
    return out


def check_relu_output(dout, y) -> None:
    """A ReLU's backward: its output ``y`` must have the gradient's shape."""
    if tuple(y.shape) != tuple(dout.shape):
        raise ValueError(f"relu_backward: y must have dout's shape {tuple(dout.shape)}, got {tuple(y.shape)}")


def check_bias_rows(z, b) -> None:
    """``add_bias`` works in place on a C-contiguous (N, F) ``z`` with ``b`` of shape (F,)."""
    if z.ndim != 2 or not z.flags.c_contiguous or tuple(b.shape) != tuple(z.shape[1:]):
        raise ValueError(f"add_bias: z must be a C-contiguous (N, F) array and b (F,), got {tuple(z.shape)} and "
                         f"{tuple(b.shape)}")


def check_scores(y, t, p) -> None:
    """Softmax cross-entropy: scores (N, K), class indices (N,), probabilities of the scores' shape."""
    if y.ndim != 2 or tuple(t.shape) != tuple(y.shape[:1]) or tuple(p.shape) != tuple(y.shape):
        raise ValueError(f"softmax_cross_entropy: expected scores (N, K), class indices (N,) and p of the scores' "
                         f"shape, got {tuple(y.shape)}, {tuple(t.shape)} and {tuple(p.shape)}")


@dataclass
class ConvContext:
    """What ``conv2d`` returns beside its output and ``conv2d_backward`` reads: the inputs, the
    options it ran with, and what it kept (the pool's argmax, im2col's columns)."""

    x: object
    w: object
    stride: int
    pad: int
    relu: bool
    pool: int | None
    out: object  # the output; with ``relu`` its mask (out > 0) is the ReLU's backward
    argmax: object = None  # with ``pool``: window-local index of each max, dtype argmax_dtype(pool, pool)
    col: object = None  # im2col's columns, where the kernel ran a GEMM

    def check_dout(self, dout) -> None:
        """dout must have the shape of the output the forward pass returned."""
        if tuple(dout.shape) != tuple(self.out.shape):
            raise ValueError(f"conv2d_backward: dout must have shape {tuple(self.out.shape)}, got {tuple(dout.shape)}")

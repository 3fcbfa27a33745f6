"""Layers with the book's ``forward(x)`` / ``backward(dout)`` interface.

A layer is built by :class:`accelnet.Sequential`, which infers its input shape,
gives it the backend and dtype, and hands it views into the parameter arena as
``params`` / ``grads``. ``backward`` writes gradients into those views in place.
Layers use ``self.xp`` and ``self.kernels`` only: the same code runs on NumPy and
CuPy.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .backend import Backend
from .init import get_initializer
from .kernels.contracts import output_size
from .params import ParamArena
from .validate import positive_int, positive_pair

__all__ = [
    "BuildContext",
    "Layer",
    "Linear",
    "ReLU",
    "Sigmoid",
    "Tanh",
    "Dropout",
    "BatchNorm",
    "Conv2d",
    "MaxPool2d",
    "AvgPool2d",
    "Flatten",
]


@dataclass
class BuildContext:
    """What a layer needs from its model while it is built."""

    backend: Backend
    dtype: np.dtype
    rng: np.random.Generator  # the model's host RNG (initial weights, dropout masks)
    init: object  # the model's default weight initializer (name, float std or callable)
    arena: ParamArena


def _shape_str(shape) -> str:
    return "(N, " + ", ".join(str(d) for d in shape) + ")"


class Layer:
    """Base class: shape/dtype validation, train/eval mode, named params and grads."""

    def __init__(self, name: str | None = None):
        self.name = name
        self.training = True
        self.params: dict = {}
        self.grads: dict = {}
        self.buffers: dict = {}  # non-trained state saved in checkpoints (BatchNorm statistics)
        self.in_shape: tuple | None = None
        self.out_shape: tuple | None = None
        self.backend: Backend | None = None
        self.dtype: np.dtype | None = None
        self._last_out_shape: tuple | None = None

    # -- building -------------------------------------------------------------
    def build(self, in_shape: tuple, ctx: BuildContext) -> tuple:
        """Bind to a backend and dtype, declare parameters, return the output shape (no batch)."""
        self.in_shape = tuple(int(d) for d in in_shape)
        self.backend, self.dtype = ctx.backend, ctx.dtype
        self.out_shape = tuple(self._build(self.in_shape, ctx))
        return self.out_shape

    def _build(self, in_shape: tuple, ctx: BuildContext) -> tuple:
        return in_shape

    def _declare(self, ctx: BuildContext, local_name: str, shape, init=None, fan_in: int = 1,
                 fill: float | None = None) -> None:
        """Declare a parameter, drawn by an initializer spec (``init``) or set to ``fill``."""
        if fill is not None:
            draw = lambda rng: np.full(shape, float(fill))  # noqa: E731
        else:
            fn = get_initializer(init)
            draw = lambda rng: fn(rng, tuple(shape), fan_in)  # noqa: E731
        ctx.arena.declare(self, local_name, shape, draw)

    def _require_rank(self, in_shape: tuple, ranks: tuple[int, ...], layout: str) -> None:
        if len(in_shape) + 1 not in ranks:
            raise ValueError(
                f"{self._label()}: expects {layout} input, but the layer before it outputs {_shape_str(in_shape)}"
            )

    @property
    def xp(self):
        return self.backend.xp

    @property
    def kernels(self):
        return self.backend.kernels

    # -- running --------------------------------------------------------------
    def forward(self, x):
        """Compute the output for a batch ``x`` of shape (N, *in_shape)."""
        self._check(x, self.in_shape, "input")
        out = self._forward(x)
        self._last_out_shape = out.shape
        return out

    def backward(self, dout, input_grad: bool = True):
        """Given dL/d(output), write dL/d(params) into ``grads`` and return dL/d(input).

        With ``input_grad=False`` (the first layer of a model: nothing consumes dL/dx) only the
        parameter gradients are computed and None is returned; a conv then skips its col2im.
        """
        if self._last_out_shape is None:
            raise RuntimeError(f"{self._label()}: backward() called before forward()")
        if not self.backend.is_array(dout) or dout.shape != self._last_out_shape or dout.dtype != self.dtype:
            raise ValueError(
                f"{self._label()}: backward expected dout of shape {self._last_out_shape} and dtype "
                f"{self.dtype.name}, received {self._describe(dout)}"
            )
        if input_grad:
            return self._backward(dout)
        if self.params:
            self._param_grads(dout)
        return None

    def _forward(self, x):
        raise NotImplementedError

    def _backward(self, dout):
        raise NotImplementedError

    def _param_grads(self, dout) -> None:
        """Parameter gradients only; layers that can skip work for dL/dx override it."""
        self._backward(dout)

    def train(self) -> "Layer":
        self.training = True
        return self

    def eval(self) -> "Layer":
        self.training = False
        return self

    @property
    def num_params(self) -> int:
        return sum(int(p.size) for p in self.params.values())

    # -- validation -----------------------------------------------------------
    def _label(self) -> str:
        kind = type(self).__name__
        return f"{kind} '{self.name}'" if self.name else kind

    def _describe(self, a) -> str:
        if not hasattr(a, "shape") or not hasattr(a, "dtype"):
            return f"a {type(a).__name__}"
        where = "" if self.backend.is_array(a) else f" on the wrong device ({type(a).__module__}.{type(a).__name__})"
        return f"shape {tuple(a.shape)} dtype {a.dtype}{where}"

    def _check(self, x, shape: tuple, what: str) -> None:
        if self.backend is None:
            raise RuntimeError(f"{self._label()} is not built: put it in a Sequential before calling it")
        ok = (
            self.backend.is_array(x)
            and x.ndim == len(shape) + 1
            and tuple(x.shape[1:]) == shape
            and x.dtype == self.dtype
            and x.shape[0] > 0
        )
        if not ok:
            raise ValueError(
                f"{self._label()}: expected {what} of shape {_shape_str(shape)} and dtype {self.dtype.name}, "
                f"received {self._describe(x)}"
            )

    def __repr__(self) -> str:
        args = self._repr_args()
        return f"{type(self).__name__}({args})"

    def _repr_args(self) -> str:
        return ""

    def config(self) -> dict:
        """The constructor's keywords (JSON values) that rebuild this layer's architecture:
        ``type(layer)(**layer.config())``. An initializer that is a function is left out."""
        return {}


def _init_config(init) -> dict:
    return {"init": init} if isinstance(init, (str, int, float)) and not isinstance(init, bool) else {}


class Linear(Layer):
    """Fully connected ``x @ W + b`` (the book's Affine); flattens (N, ...) input.

    ``Linear(out_features)`` infers the input size from the layer before it;
    ``in_features`` may be given to have it checked. ``activation="relu"`` is Linear followed by
    ReLU in one layer: the bias and the ReLU are applied with the product (``kernels.linear``),
    and the backward pass masks the gradient by the output (README, "Every batch size").
    """

    ACTIVATIONS = (None, "relu")

    def __init__(self, out_features: int, in_features: int | None = None, init=None,
                 activation: str | None = None, name=None):
        super().__init__(name)
        if activation not in self.ACTIVATIONS:
            raise ValueError(f"Linear activation must be one of {self.ACTIVATIONS}, got {activation!r}")
        self.activation = activation
        self.out_features = positive_int(out_features, "Linear out_features")
        self.in_features = None if in_features is None else positive_int(in_features, "Linear in_features")
        self.init = init

    def _build(self, in_shape, ctx):
        fan_in = math.prod(in_shape)
        if self.in_features is not None and self.in_features != fan_in:
            raise ValueError(
                f"{self._label()}: in_features={self.in_features} but the layer before it outputs "
                f"{_shape_str(in_shape)} ({fan_in} features)"
            )
        self.in_features = fan_in
        self._declare(ctx, "W", (fan_in, self.out_features), ctx.init if self.init is None else self.init, fan_in)
        self._declare(ctx, "b", (self.out_features,), fill=0.0)
        return (self.out_features,)

    def _forward(self, x):
        self._x_shape = x.shape
        self._x = x.reshape(x.shape[0], -1)
        relu = self.activation == "relu"
        out = self.kernels.linear(self._x, self.params["W"], self.params["b"], relu=relu)
        self._out = out if relu else None  # the fused ReLU's mask; otherwise nothing to keep
        return out

    def _param_grads(self, dout):
        """Writes dW and db; returns dL/d(x @ W + b), which the input gradient reuses."""
        if self.activation == "relu":
            dout = self.kernels.relu_backward(dout, self._out)
        self.kernels.matmul(self._x.T, dout, out=self.grads["W"])
        self.kernels.column_sums(dout, self.grads["b"])
        return dout

    def _backward(self, dout):
        dz = self._param_grads(dout)
        return self.kernels.matmul(dz, self.params["W"].T).reshape(self._x_shape)

    def _repr_args(self):
        act = f", activation={self.activation!r}" if self.activation else ""
        sizes = f"{self.in_features}, {self.out_features}" if self.in_features else f"{self.out_features}"
        return sizes + act

    def config(self):
        return {"out_features": self.out_features, "in_features": self.in_features, "activation": self.activation,
                **_init_config(self.init)}


class ReLU(Layer):
    """max(0, x); the backward pass masks the gradient by the output (y > 0 exactly where x > 0)."""

    def _forward(self, x):
        self._out = self.kernels.relu(x)
        return self._out

    def _backward(self, dout):
        return self.kernels.relu_backward(dout, self._out)


class Sigmoid(Layer):
    """1 / (1 + exp(-x)), computed as (1 + tanh(x/2)) / 2 so large |x| never overflows."""

    def _forward(self, x):
        self._out = self.kernels.sigmoid(x)
        return self._out

    def _backward(self, dout):
        return dout * (1 - self._out) * self._out


class Tanh(Layer):
    """tanh(x)."""

    def _forward(self, x):
        self._out = self.xp.tanh(x)
        return self._out

    def _backward(self, dout):
        return dout * (1 - self._out * self._out)


class Dropout(Layer):
    """Inverted dropout: in training zero each unit with probability ``ratio`` and scale the
    rest by 1/(1-ratio), so evaluation is the identity. Masks are drawn on the host RNG."""

    def __init__(self, ratio: float = 0.5, name=None):
        super().__init__(name)
        if not (isinstance(ratio, (int, float)) and 0 <= ratio < 1):
            raise ValueError(f"Dropout ratio must be in [0, 1), got {ratio!r}")
        self.ratio = float(ratio)

    def _build(self, in_shape, ctx):
        self._rng = ctx.rng
        return in_shape

    def _forward(self, x):
        if not self.training or self.ratio == 0:
            self._mask = None
            return x
        keep = self._rng.random(x.shape, dtype=np.float32) >= self.ratio
        scale = self.dtype.type(1.0 / (1.0 - self.ratio))
        self._mask = self.backend.to_device(keep.astype(self.dtype) * scale)
        return x * self._mask

    def _backward(self, dout):
        return dout if self._mask is None else dout * self._mask

    def _repr_args(self):
        return f"{self.ratio:g}"

    def config(self):
        return {"ratio": self.ratio}


class BatchNorm(Layer):
    """Batch normalization over features of (N, D) input or channels of (N, C, H, W) input.

    Training normalizes with the batch statistics and updates the running ones
    (``running = momentum * running + (1 - momentum) * batch``, the book's rule);
    evaluation uses the running statistics, so it is deterministic.

    Data-parallel, the statistics are each rank's own (as PyTorch DDP's); with ``comm`` set (a
    Trainer's ``sync_batchnorm``) they are those of the global batch, summed over the ranks.
    """

    def __init__(self, momentum: float = 0.9, eps: float = 1e-6, name=None):
        super().__init__(name)
        if not 0 <= momentum < 1:
            raise ValueError(f"BatchNorm momentum must be in [0, 1), got {momentum!r}")
        if not eps > 0:
            raise ValueError(f"BatchNorm eps must be positive, got {eps!r}")
        self.momentum, self.eps = float(momentum), float(eps)
        self.comm = None  # a communicator: batch statistics over every rank's samples

    def _build(self, in_shape, ctx):
        self._require_rank(in_shape, (2, 4), "(N, D) or (N, C, H, W)")
        features = in_shape[0]
        self._declare(ctx, "gamma", (features,), fill=1.0)
        self._declare(ctx, "beta", (features,), fill=0.0)
        xp = ctx.backend.xp
        self.buffers["running_mean"] = xp.zeros(features, dtype=ctx.dtype)
        self.buffers["running_var"] = xp.ones(features, dtype=ctx.dtype)
        # Reduce over the batch (and the spatial axes of an image); broadcast per feature.
        self._axes = (0,) if len(in_shape) == 1 else (0, 2, 3)
        self._bshape = (1, features) if len(in_shape) == 1 else (1, features, 1, 1)
        return in_shape

    def _forward(self, x):
        xp, b = self.xp, self._bshape
        gamma, beta = self.params["gamma"].reshape(b), self.params["beta"].reshape(b)
        if self.training:
            if self.comm is None:
                mu = x.mean(axis=self._axes, keepdims=True)
                xc = x - mu
                var = (xc * xc).mean(axis=self._axes, keepdims=True)
            else:
                mu, xc, var = self._global_statistics(x)
            m = self.momentum
            rm, rv = self.buffers["running_mean"], self.buffers["running_var"]
            rm[...] = m * rm + (1 - m) * mu.reshape(-1)
            rv[...] = m * rv + (1 - m) * var.reshape(-1)
        else:
            xc = x - self.buffers["running_mean"].reshape(b)
            var = self.buffers["running_var"].reshape(b)
        self._std = xp.sqrt(var + self.dtype.type(self.eps))
        self._xhat = xc / self._std
        self._batch_stats = self.training
        return gamma * self._xhat + beta

    def _backward(self, dout):
        xp, axes, b = self.xp, self._axes, self._bshape
        xhat = self._xhat
        xp.sum(dout, axis=axes, out=self.grads["beta"])
        xp.sum(dout * xhat, axis=axes, out=self.grads["gamma"])
        dxhat = dout * self.params["gamma"].reshape(b)
        if not self._batch_stats:
            return dxhat / self._std
        # d/dx of (x - mean) / std(x) with batch statistics, over m = N (or N*H*W) samples.
        if self.comm is None:
            mean_dxhat = dxhat.mean(axis=axes, keepdims=True)
            mean_dxhat_xhat = (dxhat * xhat).mean(axis=axes, keepdims=True)
        else:  # the means over the global batch: one all-reduce of both sums
            c = b[1]
            sums = self.comm.allreduce(xp.concatenate([dxhat.sum(axis=axes), (dxhat * xhat).sum(axis=axes)]))
            mean_dxhat, mean_dxhat_xhat = (sums[:c] / self._count).reshape(b), (sums[c:] / self._count).reshape(b)
        return (dxhat - mean_dxhat - xhat * mean_dxhat_xhat) / self._std

    def _global_statistics(self, x):
        """Mean, centred input and variance over the samples of every rank (two passes, as the
        single-process statistics: the sum and count, then the squared deviations)."""
        xp, axes, b = self.xp, self._axes, self._bshape
        c = b[1]
        local = xp.concatenate([x.sum(axis=axes), xp.full(1, x.size // c, dtype=x.dtype)])
        self.comm.allreduce(local)
        self._count = local[c]
        mu = (local[:c] / self._count).reshape(b)
        xc = x - mu
        var = (self.comm.allreduce((xc * xc).sum(axis=axes)) / self._count).reshape(b)
        return mu, xc, var

    def _repr_args(self):
        return f"momentum={self.momentum:g}, eps={self.eps:g}"

    def config(self):
        return {"momentum": self.momentum, "eps": self.eps}


class Conv2d(Layer):
    """2-D convolution: weights (FN, C, FH, FW), bias (FN,), input (N, C, H, W). The backend's
    kernels pick the method: direct per-image loops on the CPU at stride 1, im2col + GEMM otherwise.

    ``activation="relu"`` is Conv2d followed by ReLU in one layer: the kernel applies the ReLU as
    it stores the sums and masks the incoming gradient as it reads it, which saves the separate
    layer's two passes over the activations (README, "Training-step throughput").

    ``pool=k`` then max-pools in k x k windows with stride k, as a following ``MaxPool2d(k)``
    would (same outputs, same gradient routing): on the CPU the windows are taken as the sums
    are stored, so the full-size output is never written or read back.
    """

    ACTIVATIONS = (None, "relu")

    def __init__(self, out_channels: int, kernel_size=3, stride: int = 1, pad: int = 0,
                 in_channels: int | None = None, init=None, activation: str | None = None,
                 pool: int | None = None, name=None):
        super().__init__(name)
        if activation not in self.ACTIVATIONS:
            raise ValueError(f"Conv2d activation must be one of {self.ACTIVATIONS}, got {activation!r}")
        self.activation = activation
        self.pool = None if pool is None else positive_int(pool, "Conv2d pool")
        if self.pool == 1:  # a 1x1 max-pool is the identity
            self.pool = None
        self.out_channels = positive_int(out_channels, "Conv2d out_channels")
        self.kernel_size = positive_pair(kernel_size, "Conv2d kernel_size")
        self.stride = positive_int(stride, "Conv2d stride")
        if not isinstance(pad, (int, np.integer)) or pad < 0:
            raise ValueError(f"Conv2d pad must be a non-negative int, got {pad!r}")
        self.pad = int(pad)
        self.in_channels = in_channels
        self.init = init

    def _build(self, in_shape, ctx):
        self._require_rank(in_shape, (4,), "(N, C, H, W)")
        c, h, w = in_shape
        if self.in_channels is not None and self.in_channels != c:
            raise ValueError(f"{self._label()}: in_channels={self.in_channels} but its input has {c} channels")
        self.in_channels = c
        fh, fw = self.kernel_size
        oh, ow = output_size(h, fh, self.stride, self.pad), output_size(w, fw, self.stride, self.pad)
        if oh < 1 or ow < 1:
            raise ValueError(
                f"{self._label()}: a {fh}x{fw} kernel with pad {self.pad} does not fit input {_shape_str(in_shape)}"
            )
        if self.pool and (oh < self.pool or ow < self.pool):
            raise ValueError(f"{self._label()}: a {self.pool}x{self.pool} pool does not fit its {oh}x{ow} output")
        fan_in = c * fh * fw
        self._declare(ctx, "W", (self.out_channels, c, fh, fw), ctx.init if self.init is None else self.init, fan_in)
        self._declare(ctx, "b", (self.out_channels,), fill=0.0)
        if self.pool:
            return (self.out_channels, oh // self.pool, ow // self.pool)
        return (self.out_channels, oh, ow)

    def _forward(self, x):
        out = self.xp.empty((x.shape[0], *self.out_shape), dtype=self.dtype)
        out, self._ctx = self.kernels.conv2d(x, self.params["W"], self.params["b"], self.stride, self.pad,
                                             relu=self.activation == "relu", pool=self.pool, out=out)
        return out

    def _param_grads(self, dout):
        self.kernels.conv2d_backward(dout, self._ctx, self.grads["W"], self.grads["b"], need_dx=False)

    def _backward(self, dout):
        return self.kernels.conv2d_backward(dout, self._ctx, self.grads["W"], self.grads["b"], need_dx=True)

    def _repr_args(self):
        fh, fw = self.kernel_size
        act = f", activation={self.activation!r}" if self.activation else ""
        pool = f", pool={self.pool}" if self.pool else ""
        return f"{self.out_channels}, kernel_size={fh}x{fw}, stride={self.stride}, pad={self.pad}{act}{pool}"

    def config(self):
        return {"out_channels": self.out_channels, "kernel_size": list(self.kernel_size), "stride": self.stride,
                "pad": self.pad, "in_channels": self.in_channels, "activation": self.activation, "pool": self.pool,
                **_init_config(self.init)}


class _Pool2d(Layer):
    """Pooling over (kernel_size) windows moving by ``stride`` (default: the window size)."""

    def __init__(self, kernel_size=2, stride: int | None = None, name=None):
        super().__init__(name)
        self.kernel_size = positive_pair(kernel_size, f"{type(self).__name__} kernel_size")
        self.stride = self.kernel_size[0] if stride is None else positive_int(stride, f"{type(self).__name__} stride")

    def _build(self, in_shape, ctx):
        self._require_rank(in_shape, (4,), "(N, C, H, W)")
        c, h, w = in_shape
        ph, pw = self.kernel_size
        oh, ow = output_size(h, ph, self.stride, 0), output_size(w, pw, self.stride, 0)
        if oh < 1 or ow < 1:
            raise ValueError(f"{self._label()}: a {ph}x{pw} window does not fit input {_shape_str(in_shape)}")
        return (c, oh, ow)

    def _repr_args(self):
        ph, pw = self.kernel_size
        return f"{ph}x{pw}, stride={self.stride}"

    def config(self):
        return {"kernel_size": list(self.kernel_size), "stride": self.stride}


class MaxPool2d(_Pool2d):
    """Max over each window; the gradient flows to the (first) maximum."""

    def _forward(self, x):
        ph, pw = self.kernel_size
        self._x_shape = x.shape
        out, self._argmax = self.kernels.maxpool2d(x, ph, pw, self.stride)
        return out

    def _backward(self, dout):
        ph, pw = self.kernel_size
        return self.kernels.maxpool2d_backward(dout, self._argmax, self._x_shape, ph, pw, self.stride)


class AvgPool2d(_Pool2d):
    """Mean over each window."""

    def _forward(self, x):
        ph, pw = self.kernel_size
        self._x_shape = x.shape
        return self.kernels.avgpool2d(x, ph, pw, self.stride)

    def _backward(self, dout):
        ph, pw = self.kernel_size
        return self.kernels.avgpool2d_backward(dout, self._x_shape, ph, pw, self.stride)


class Flatten(Layer):
    """(N, ...) -> (N, prod(...))."""

    def _build(self, in_shape, ctx):
        return (math.prod(in_shape),)

    def _forward(self, x):
        self._x_shape = x.shape
        return x.reshape(x.shape[0], -1)

    def _backward(self, dout):
        return dout.reshape(self._x_shape)


# The layers a saved architecture may name (``accelnet.saved_model``), by class name.
LAYERS = {cls.__name__: cls for cls in (Linear, ReLU, Sigmoid, Tanh, Dropout, BatchNorm, Conv2d, MaxPool2d, AvgPool2d,
                                        Flatten)}

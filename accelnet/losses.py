"""Losses: ``forward(y, t)`` returns the batch-mean loss as a 0-d ``xp`` array (no
device-to-host copy); ``backward()`` returns dL/dy.

Labels ``t`` are class indices of shape (N,) or one-hot of the scores' shape.
"""

from __future__ import annotations

import numpy as np

from .backend import backend_of
from .xp import array_namespace
from .cpu_runtime import flushes_denormals

__all__ = ["Loss", "SoftmaxCrossEntropy", "MeanSquaredError", "get_loss"]


class Loss:
    """Base class: label validation shared by the losses."""

    def _labels(self, xp, y, t):
        """Return (indices or None, one-hot or None) after checking ``t`` against ``y``."""
        name = type(self).__name__
        if not hasattr(y, "ndim") or y.ndim != 2:
            raise ValueError(f"{name}: expected scores of shape (N, classes), received {getattr(y, 'shape', type(y))}")
        n, k = y.shape
        if not isinstance(t, type(y)):
            t = np.asarray(t)
        on_host = isinstance(t, np.ndarray)
        if t.shape == (n,) and t.dtype.kind in "iu":
            # Host labels are range-checked here; device labels were checked when the data was loaded
            # (checking them here would copy to the host every step).
            if on_host and t.size and (int(t.min()) < 0 or int(t.max()) >= k):
                raise ValueError(f"{name}: class indices must be in [0, {k}), received {int(t.min())}..{int(t.max())}")
            return xp.asarray(t), None
        if t.shape == (n, k):
            return None, xp.asarray(t, dtype=y.dtype)
        raise ValueError(
            f"{name}: expected labels as class indices of shape ({n},) with an integer dtype or one-hot of shape "
            f"({n}, {k}), received shape {tuple(t.shape)} dtype {t.dtype}"
        )

    def _require_forward(self, attr: str) -> None:
        if getattr(self, attr, None) is None:
            raise ValueError(f"{type(self).__name__}.backward: there is no loss to differentiate yet; "
                             f"compute it first (model.loss(x, t), or the loss's forward)")

    def __call__(self, y, t):
        return self.forward(y, t)

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class SoftmaxCrossEntropy(Loss):
    """Softmax followed by cross-entropy, mean over the batch, via a stable log-sum-exp."""

    @flushes_denormals
    def forward(self, y, t):
        xp = array_namespace(y)
        idx, onehot = self._labels(xp, y, t)
        n = y.shape[0]
        if idx is not None:  # class indices: the backend's one-pass kernel
            self._p = xp.empty(y.shape, y.dtype)
            loss = backend_of(y).kernels.softmax_cross_entropy(y, idx, self._p)
        else:
            shifted = y - y.max(axis=1, keepdims=True)  # exp never overflows
            e = xp.exp(shifted)
            s = e.sum(axis=1, keepdims=True)
            self._p = e / s
            loss = -(onehot * (shifted - xp.log(s))).sum() / n
        self._idx, self._onehot, self._n = idx, onehot, n
        return loss

    @flushes_denormals
    def backward(self, dout=1.0):
        self._require_forward("_p")
        scale = self._p.dtype.type(dout) / self._n
        if self._idx is not None:
            return backend_of(self._p).kernels.softmax_cross_entropy_backward(self._p, self._idx, scale)
        return (self._p - self._onehot) * scale

    @staticmethod
    def probabilities(y):
        """Softmax of scores ``y`` (N, classes)."""
        xp = array_namespace(y)
        e = xp.exp(y - y.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)


class MeanSquaredError(Loss):
    """0.5 * sum((y - t)^2) per sample (the book's formula), mean over the batch.

    Class-index labels are one-hot encoded first.
    """

    @flushes_denormals
    def forward(self, y, t):
        xp = array_namespace(y)
        idx, onehot = self._labels(xp, y, t)
        if idx is not None:
            onehot = xp.zeros_like(y)
            onehot[xp.arange(y.shape[0]), idx] = 1
        self._diff = y - onehot
        self._n = y.shape[0]
        return 0.5 * (self._diff * self._diff).sum() / self._n

    @flushes_denormals
    def backward(self, dout=1.0):
        self._require_forward("_diff")
        return self._diff * (self._diff.dtype.type(dout) / self._n)


_LOSSES = {"softmax_cross_entropy": SoftmaxCrossEntropy, "cross_entropy": SoftmaxCrossEntropy,
           "mse": MeanSquaredError, "mean_squared_error": MeanSquaredError}


def get_loss(loss) -> Loss:
    """A Loss instance from an instance or a name ("cross_entropy", "mse")."""
    if isinstance(loss, Loss):
        return loss
    if isinstance(loss, str) and loss in _LOSSES:
        return _LOSSES[loss]()
    raise ValueError(f"unknown loss {loss!r}: expected one of {sorted(_LOSSES)} or a Loss instance")

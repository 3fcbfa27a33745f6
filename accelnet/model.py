"""Sequential: a stack of layers over one parameter arena, with a loss."""

from __future__ import annotations

from collections import Counter

import numpy as np

from .backend import Backend, as_dtype, get_backend, host_rng
from .cpu_runtime import flushes_denormals
from .layers import BuildContext, Layer
from .losses import get_loss
from .params import ParamArena
from .validate import positive_int

__all__ = ["Sequential"]


class Sequential:
    """Layers applied in order, built for one backend and dtype.

    ``input_shape`` is one sample's shape, without the batch axis (``(784,)`` or
    ``(1, 28, 28)``). Parameters are drawn on the host from ``seed`` in layer order
    and live in one flat arena (``model.arena.data`` / ``model.arena.grad``).
    """

    def __init__(self, layers, input_shape, backend: str | Backend = "cpu", dtype="float32", seed: int | None = 0,
                 init="he", loss="cross_entropy"):
        self.backend = get_backend(backend)
        self.dtype = as_dtype(dtype)
        self.layers: list[Layer] = list(layers)
        if not self.layers:
            raise ValueError("Sequential needs at least one layer")
        for i, layer in enumerate(self.layers):
            if not isinstance(layer, Layer):
                raise ValueError(f"Sequential: item {i} is a {type(layer).__name__}, not a Layer")
            if layer.backend is not None:
                raise ValueError(f"Sequential: layer {i} ({layer!r}) already belongs to a model")
        try:
            self.input_shape = tuple(int(d) for d in input_shape)
        except TypeError as exc:
            raise ValueError(f"input_shape must be a tuple of ints (one sample, no batch axis), got {input_shape!r}") from exc
        if not self.input_shape or min(self.input_shape) < 1:
            raise ValueError(f"input_shape must be a non-empty tuple of positive ints, got {input_shape!r}")
        self.seed = seed
        self.rng = host_rng(seed)
        self.loss_fn = get_loss(loss)
        self._name_layers()

        self.arena = ParamArena(self.backend, self.dtype)
        ctx = BuildContext(self.backend, self.dtype, self.rng, init, self.arena)
        shape = self.input_shape
        for layer in self.layers:
            shape = layer.build(shape, ctx)
        self.output_shape = shape
        self.arena.allocate(self.rng)
        self.training = True

    def _name_layers(self) -> None:
        counts: Counter = Counter()
        taken = {layer.name for layer in self.layers if layer.name}
        for layer in self.layers:
            if layer.name:
                continue
            base = type(layer).__name__.lower()
            while True:
                counts[base] += 1
                name = f"{base}{counts[base]}"
                if name not in taken:
                    break
            layer.name = name
            taken.add(name)
        names = [layer.name for layer in self.layers]
        dup = [n for n, c in Counter(names).items() if c > 1]
        if dup:
            raise ValueError(f"Sequential: layer names must be unique, repeated: {dup}")

    # -- computation ------------------------------------------------------------
    def to_device(self, x):
        """``x`` as an array of this model's backend and dtype."""
        return self.backend.to_device(x, self.dtype)

    @flushes_denormals
    def forward(self, x):
        """Scores for a batch ``x`` (N, *input_shape) already on the device, in the model's dtype."""
        for layer in self.layers:
            x = layer.forward(x)
        return x

    @flushes_denormals
    def backward(self, dout=None, input_grad: bool = False):
        """Backpropagate ``dout`` (default: the loss's gradient); grads land in ``arena.grad``.

        Returns dL/d(input) when ``input_grad`` is true, else None: training needs no gradient
        for the data, and the first layer then skips computing it (as PyTorch does for inputs
        that do not require grad).
        """
        if dout is None:
            dout = self.loss_fn.backward()
        for i in reversed(range(len(self.layers))):
            dout = self.layers[i].backward(dout, input_grad=input_grad or i > 0)
        return dout

    def loss(self, x, t):
        """Forward pass and loss; returns a 0-d device array (call ``float()`` to read it)."""
        return self.loss_fn.forward(self.forward(x), t)

    def gradient(self, x, t) -> dict:
        """The book's ``gradient(x, t)``: loss and backward, returns {name: grad view}."""
        self.loss(x, t)
        self.backward()
        return self.grads

    def _check_input(self, x, batch_size: int, what: str):
        """``x`` as an array of samples of ``input_shape`` with a float dtype (cast to the model's:
        unnormalized integer images are refused, not scaled), and a positive ``batch_size``."""
        positive_int(batch_size, f"{what}: batch_size")
        if not hasattr(x, "dtype") or not hasattr(x, "shape"):
            raise ValueError(f"{what}: x must be an array of shape (N, {', '.join(map(str, self.input_shape))}), "
                             f"got {type(x).__name__}")
        if x.dtype.kind != "f":
            raise ValueError(f"{what}: x must hold floats (images scaled to [0, 1], as the data loaders give), "
                             f"got dtype {x.dtype}")
        if tuple(x.shape[1:]) != self.input_shape or len(x) == 0:
            raise ValueError(f"{what}: x must have shape (N >= 1, {', '.join(map(str, self.input_shape))}), "
                             f"got {tuple(x.shape)}")

    def predict(self, x, batch_size: int = 1000):
        """Scores in eval mode (dropout off, running BatchNorm statistics), batched; accepts host
        arrays of a float dtype (cast to the model's)."""
        self._check_input(x, batch_size, "predict")
        was_training = self.training
        self.eval()
        try:
            if len(x) <= batch_size:  # one batch: no slices to make and join (latency at batch 1)
                return self.forward(self.to_device(x))
            outs = [self.forward(self.to_device(x[i : i + batch_size])) for i in range(0, len(x), batch_size)]
        finally:
            if was_training:
                self.train()
        return self.backend.xp.concatenate(outs)

    def class_indices(self, t, n: int, what: str = "accuracy") -> np.ndarray:
        """Labels ``t`` for ``n`` samples as host class indices: ``t`` is either indices of shape
        (n,) with an integer dtype in [0, classes), or one-hot of shape (n, classes)."""
        classes = self.output_shape[0]
        t = self.backend.to_numpy(t) if hasattr(t, "shape") else np.asarray(t)
        if t.shape == (n,) and t.dtype.kind in "iu":
            if n and (int(t.min()) < 0 or int(t.max()) >= classes):
                raise ValueError(f"{what}: class indices must be in [0, {classes}), got {int(t.min())}..{int(t.max())}")
            return t
        if t.shape == (n, classes) and ((t == 0) | (t == 1)).all() and (t.sum(axis=1) == 1).all():
            return t.argmax(axis=1)
        raise ValueError(f"{what}: labels must be class indices of shape ({n},) with an integer dtype or one-hot "
                         f"of shape ({n}, {classes}) (one 1 per row), got shape {t.shape} dtype {t.dtype}")

    def accuracy(self, x, t, batch_size: int = 1000) -> float:
        """Fraction of samples whose top score is the label (class indices or one-hot)."""
        return self.count_correct(x, t, batch_size) / len(x)

    def count_correct(self, x, t, batch_size: int = 1000) -> int:
        """Number of samples whose top score is the label (class indices or one-hot)."""
        self._check_input(x, batch_size, "accuracy")
        t = self.class_indices(t, len(x))
        pred = self.backend.to_numpy(self.predict(x, batch_size).argmax(axis=1))
        return int((pred == t).sum())

    def step_bytes(self, batch_size: int, train: bool = True) -> int:
        """Device bytes a training step (or, with ``train=False``, a forward pass) at ``batch_size``
        allocates beyond the parameters: activations, workspaces, the batch itself. Measured once
        at ``batch_size`` up to 128, else at 64 and 128 and extrapolated (these grow linearly with
        the batch). The model's state (parameters, buffers, dropout RNG, mode) is left as it was."""
        positive_int(batch_size, "step_bytes: batch_size")
        rng_state, mode = self.rng.bit_generator.state, self.training
        buffers = {k: v.copy() for k, v in self.buffers().items()}
        r = np.random.default_rng(0)

        def measure(b):
            x, t = r.random((b, *self.input_shape)), r.integers(0, self.output_shape[0], b)

            def run():
                xb = self.to_device(x)
                if train:
                    self.loss(xb, self.backend.to_device(t))
                    self.backward()
                else:
                    self.forward(xb)
            return self.backend.peak_bytes(run)

        try:
            self.train() if train else self.eval()
            if batch_size <= 128:
                return measure(batch_size)
            measure(64)  # first-call allocations (caches, library handles) are not per step
            small, large = measure(64), measure(128)
            return large + max(0, large - small) * (batch_size - 128) // 64
        finally:
            self.rng.bit_generator.state = rng_state
            for k, v in self.buffers().items():
                v[...] = buffers[k]
            self.train() if mode else self.eval()

    def train(self) -> "Sequential":
        """Training mode: dropout on, BatchNorm uses and updates batch statistics."""
        self.training = True
        for layer in self.layers:
            layer.train()
        return self

    def eval(self) -> "Sequential":
        """Evaluation mode: deterministic (no dropout, running BatchNorm statistics)."""
        self.training = False
        for layer in self.layers:
            layer.eval()
        return self

    # -- parameters and state --------------------------------------------------------
    @property
    def params(self) -> dict:
        """{qualified name: parameter view}, in layer order."""
        return self.arena.named(self.arena.data)

    @property
    def grads(self) -> dict:
        """{qualified name: gradient view}, in layer order."""
        return self.arena.named(self.arena.grad)

    @property
    def num_params(self) -> int:
        return self.arena.size

    def buffers(self) -> dict:
        """{qualified name: buffer}: non-trained state such as BatchNorm running statistics."""
        return {f"{layer.name}.{k}": v for layer in self.layers for k, v in layer.buffers.items()}

    def state_dict(self) -> dict:
        """Host copies of all parameters and buffers, by qualified name."""
        items = {**self.params, **self.buffers()}
        return {k: self.backend.to_numpy(v).copy() for k, v in items.items()}

    def check_state_dict(self, state: dict) -> None:
        """Raise ValueError, changing nothing, unless :meth:`load_state_dict` can load ``state``."""
        targets = {**self.params, **self.buffers()}
        if not isinstance(state, dict):
            raise ValueError(f"load_state_dict: expected a dict of arrays, got {type(state).__name__}")
        missing = [k for k in targets if k not in state]
        unexpected = [k for k in state if k not in targets]
        if missing or unexpected:
            raise ValueError(f"load_state_dict: missing keys {missing}, unexpected keys {unexpected}")
        for k, dst in targets.items():
            src = self.backend.to_numpy(state[k]) if hasattr(state[k], "shape") else np.asarray(state[k])
            if src.shape != dst.shape:
                raise ValueError(f"load_state_dict: {k} has shape {src.shape}, the model expects {dst.shape}")
            if src.dtype.kind in "fc" and not np.isfinite(src).all():
                raise ValueError(f"load_state_dict: {k} holds NaN or inf: a diverged state cannot be loaded")

    def load_state_dict(self, state: dict) -> None:
        """Copy values into the parameters and buffers; names and shapes must match exactly
        (checked completely before anything changes)."""
        self.check_state_dict(state)
        targets = {**self.params, **self.buffers()}
        for k, dst in targets.items():
            dst[...] = self.backend.to_device(state[k], self.dtype)

    # -- display -------------------------------------------------------------------
    def summary_rows(self) -> list[tuple[str, str, tuple, int]]:
        """(name, layer, output shape, parameter count) per layer."""
        return [(layer.name, repr(layer), layer.out_shape, layer.num_params) for layer in self.layers]

    def __repr__(self) -> str:
        rows = [("name", "layer", "output shape", "params")]
        rows.append(("input", "", str(self.input_shape), ""))
        rows += [(n, r, str(s), f"{p:,}") for n, r, s, p in self.summary_rows()]
        widths = [max(len(r[i]) for r in rows) for i in range(4)]
        lines = [
            f"Sequential(backend={self.backend.name}, dtype={self.dtype.name}, params={self.num_params:,}, "
            f"loss={self.loss_fn!r})"
        ]
        for r in rows:
            lines.append("  " + "  ".join(c.ljust(w) if i < 3 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))))
        return "\n".join(lines)

"""Saved models: a checkpoint records the model's architecture (each layer's type and
constructor keywords) beside its weights, so :func:`load_model` rebuilds a trained model from
the file alone, on any backend, without the code that built it."""

from __future__ import annotations

from pathlib import Path

from .backend import as_dtype, get_backend
from .checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from .layers import LAYERS
from .losses import MeanSquaredError, SoftmaxCrossEntropy
from .model import Sequential

__all__ = ["ARCHITECTURE_FORMAT", "architecture", "from_architecture", "save_model", "load_model", "model_from"]

ARCHITECTURE_FORMAT = "accelnet-architecture-1"
_LOSS_NAMES = {SoftmaxCrossEntropy: "cross_entropy", MeanSquaredError: "mse"}


def architecture(model: Sequential) -> dict:
    """The JSON description of ``model``'s architecture: input shape, dtype, loss and layers.
    A ValueError names a layer that is not one of accelnet's (its constructor is unknown)."""
    layers = []
    for layer in model.layers:
        cls = type(layer)
        if LAYERS.get(cls.__name__) is not cls:
            raise ValueError(f"layer {layer.name!r} is a {cls.__name__}, not one of accelnet's layers "
                             f"({', '.join(LAYERS)}), so its architecture cannot be recorded")
        layers.append({"type": cls.__name__, "name": layer.name, "config": layer.config()})
    return {"format": ARCHITECTURE_FORMAT, "input_shape": list(model.input_shape), "dtype": model.dtype.name,
            "loss": _LOSS_NAMES.get(type(model.loss_fn)), "layers": layers}


def recorded_architecture(model: Sequential) -> dict:
    """:func:`architecture`, or, for a model it cannot describe, the reason (what a checkpoint
    records, so that loading it says why instead of failing to save)."""
    try:
        return architecture(model)
    except ValueError as exc:
        return {"format": ARCHITECTURE_FORMAT, "unsupported": str(exc)}


def from_architecture(arch: dict, backend="cpu", dtype=None, seed: int | None = 0) -> Sequential:
    """A fresh (untrained) model of architecture ``arch``, in ``dtype`` (default: the recorded one)."""
    if not isinstance(arch, dict) or arch.get("format") != ARCHITECTURE_FORMAT:
        found = arch.get("format") if isinstance(arch, dict) else type(arch).__name__
        raise ValueError(f"unknown architecture format {found!r} (expected {ARCHITECTURE_FORMAT}): written by a "
                         f"newer accelnet?")
    if "unsupported" in arch:
        raise ValueError(arch["unsupported"])
    layers = []
    for i, spec in enumerate(arch["layers"]):
        cls = LAYERS.get(spec.get("type"))
        if cls is None:
            raise ValueError(f"layer {i} has type {spec.get('type')!r}, not one of accelnet's ({', '.join(LAYERS)})")
        try:
            layers.append(cls(**spec.get("config", {}), name=spec.get("name")))
        except (TypeError, ValueError) as exc:
            raise ValueError(f"layer {i} ({spec.get('type')}): {exc}") from None
    return Sequential(layers, tuple(arch["input_shape"]), backend=backend, dtype=dtype or arch["dtype"], seed=seed,
                      loss=arch.get("loss") or "cross_entropy")


def save_model(model: Sequential, path) -> None:
    """Write ``model``'s architecture and weights (parameters and BatchNorm statistics) to
    ``path`` atomically, as a checkpoint :func:`load_model` reads."""
    save_checkpoint(path, {"model": model.state_dict()}, {"architecture": architecture(model)})


def model_from(ckpt: dict, path, backend="cpu", dtype=None) -> Sequential:
    """The trained model of an already read checkpoint ``ckpt`` (read from ``path``), in eval mode."""
    arch = ckpt["meta"].get("architecture")
    if arch is None:
        raise CheckpointError(f"{path} records no architecture (written before accelnet 0.1.0 saved one): rebuild the "
                              f"model in code, then model.load_state_dict(accelnet.checkpoint.load_checkpoint(path)"
                              f"['state']['model'])")
    try:
        model = from_architecture(arch, backend=backend, dtype=dtype)
        model.load_state_dict(ckpt["state"].get("model"))
    except ValueError as exc:
        raise CheckpointError(f"{path}: cannot rebuild its model: {exc}") from None
    return model.eval()


def load_model(path, backend="cpu", dtype=None) -> Sequential:
    """The trained model saved at ``path`` (by :func:`save_model`, a Trainer or ``accelnet
    train --checkpoint``), rebuilt on ``backend`` ("cpu", "gpu", "auto" or a Backend) in
    ``dtype`` (default: the dtype it was trained in), in eval mode."""
    backend = get_backend(backend)  # a bad backend or dtype is the caller's error, named before the file is read
    dtype = None if dtype is None else as_dtype(dtype)
    return model_from(load_checkpoint(Path(path)), path, backend=backend, dtype=dtype)

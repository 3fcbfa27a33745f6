"""Checkpoints: one ``.npz`` file holding arrays plus a JSON document for everything else,
written atomically so a crash mid-write never damages the previous checkpoint."""

from __future__ import annotations

import json
import os
import tempfile
import zipfile
from pathlib import Path

import numpy as np

__all__ = ["CheckpointError", "save_checkpoint", "load_checkpoint", "FORMAT"]

FORMAT = "accelnet-checkpoint-1"


class CheckpointError(RuntimeError):
    """A checkpoint is missing, unreadable or not an accelnet checkpoint."""


def _split(obj, arrays: dict):
    """Replace arrays in a nested structure by references into ``arrays``; the rest must be JSON."""
    if isinstance(obj, np.ndarray):
        key = f"a{len(arrays)}"
        arrays[key] = obj
        return {"__array__": key}
    if isinstance(obj, dict):
        return {str(k): _split(v, arrays) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_split(v, arrays) for v in obj]
    if isinstance(obj, np.generic):
        return obj.item()
    return obj


def _join(obj, arrays):
    if isinstance(obj, dict):
        if set(obj) == {"__array__"}:
            return arrays[obj["__array__"]]
        return {k: _join(v, arrays) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_join(v, arrays) for v in obj]
    return obj


def save_checkpoint(path, state: dict, meta: dict | None = None) -> None:
    """Write ``state`` (nested dicts of arrays and JSON values) and ``meta`` to ``path`` atomically:
    a temp file in the same folder, flushed to disk, then renamed over the old one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays: dict = {}
    doc = {"format": FORMAT, "meta": meta or {}, "state": _split(state, arrays)}
    arrays["__doc__"] = np.frombuffer(json.dumps(doc).encode(), dtype=np.uint8)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    try:  # make the rename itself durable
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except OSError:
        pass


def load_checkpoint(path) -> dict:
    """Read a checkpoint: ``{"state": ..., "meta": ...}``."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
        doc = json.loads(arrays.pop("__doc__").tobytes().decode())
    except (OSError, ValueError, KeyError, zipfile.BadZipFile, EOFError) as exc:
        raise CheckpointError(f"{path} is not a readable accelnet checkpoint ({exc.__class__.__name__}: {exc})") from exc
    if doc.get("format") != FORMAT:
        raise CheckpointError(f"{path}: unknown checkpoint format {doc.get('format')!r} (expected {FORMAT})")
    return {"state": _join(doc["state"], arrays), "meta": doc.get("meta", {})}

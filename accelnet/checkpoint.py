"""Checkpoints: one ``.npz`` file holding arrays plus a JSON document for everything else,
written atomically so a crash mid-write never damages the previous checkpoint."""

from __future__ import annotations

import glob
import json
import os
import socket
import tempfile
import zipfile
from pathlib import Path

import numpy as np

__all__ = ["CheckpointError", "save_checkpoint", "load_checkpoint", "describe_checkpoint", "remove_stale_temp_files",
           "FORMAT"]

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


def _temp_prefix(path: Path, pid: int) -> str:
    """The temp files of ``path``'s writer ``pid`` on this host: ``.NAME.HOST-PID.*.tmp``."""
    return f".{path.name}.{socket.gethostname()}-{pid}."


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def remove_stale_temp_files(path) -> list[Path]:
    """Delete the temp files that writers of ``path`` on this host left when they were killed
    mid-save (their process is gone); a live writer's, or another host's, are left alone.
    Returns what was removed."""
    path = Path(path)
    prefix = f".{path.name}.{socket.gethostname()}-"
    removed = []
    for tmp in path.parent.glob(f".{glob.escape(path.name)}.*.tmp"):
        pid = tmp.name[len(prefix):].split(".", 1)[0] if tmp.name.startswith(prefix) else ""
        if pid.isdigit() and not _alive(int(pid)):
            try:
                tmp.unlink()
                removed.append(tmp)
            except FileNotFoundError:  # another writer removed it first
                pass
    return removed


def save_checkpoint(path, state: dict, meta: dict | None = None) -> None:
    """Write ``state`` (nested dicts of arrays and JSON values) and ``meta`` to ``path`` atomically:
    a temp file in the same folder, flushed to disk, then renamed over the old one. Temp files of
    writers that were killed mid-save are removed first."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays: dict = {}
    doc = {"format": FORMAT, "meta": meta or {}, "state": _split(state, arrays)}
    arrays["__doc__"] = np.frombuffer(json.dumps(doc).encode(), dtype=np.uint8)
    remove_stale_temp_files(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=_temp_prefix(path, os.getpid()), suffix=".tmp")
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


def _read(path, arrays: bool) -> tuple[dict, dict]:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        with np.load(path, allow_pickle=False) as z:
            doc = json.loads(z["__doc__"].tobytes().decode())
            data = {k: z[k] for k in z.files if k != "__doc__"} if arrays else {}
    except (OSError, ValueError, KeyError, zipfile.BadZipFile, EOFError) as exc:
        raise CheckpointError(f"{path} is not a readable accelnet checkpoint ({exc.__class__.__name__}: {exc})") from exc
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        found = doc.get("format") if isinstance(doc, dict) else None
        raise CheckpointError(f"{path}: unknown checkpoint format {found!r} (expected {FORMAT})")
    return doc, data


def load_checkpoint(path) -> dict:
    """Read a checkpoint: ``{"state": ..., "meta": ...}``."""
    doc, arrays = _read(path, arrays=True)
    return {"state": _join(doc["state"], arrays), "meta": doc.get("meta", {})}


def describe_checkpoint(path) -> str:
    """"epoch E, step S" of a checkpoint, reading only its JSON part; :class:`CheckpointError` if
    ``path`` is not an accelnet checkpoint."""
    state = _read(path, arrays=False)[0].get("state", {})
    return f"epoch {state.get('epoch', '?')}, step {state.get('step', '?')}"

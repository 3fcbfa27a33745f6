"""The files a training run writes (checkpoint, history): proven writable before the first step,
and owned by one run at a time through an exclusive lock held for the run."""

from __future__ import annotations

import json
import os
import socket
import tempfile
import time
from pathlib import Path

__all__ = ["OutputError", "OutputLock", "probe_folder", "probe_writable"]


class OutputError(OSError):
    """An output file cannot be written, or belongs to another run."""


def probe_folder(folder, what: str) -> Path:
    """Create ``folder`` if needed and prove it writable with a real temp file; ``what`` names the
    flag in the error (e.g. "--out")."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".accelnet-probe-"):
            pass
    except OSError as exc:
        raise OutputError(f"{what}: cannot write into {folder} ({exc.strerror or exc})") from None
    return folder


def probe_writable(path, what: str) -> Path:
    """Prove the file ``path`` can be written: its folder created if needed and writable, and the
    path not a folder."""
    path = Path(path)
    probe_folder(path.parent, f"{what} {path}")
    if path.is_dir():
        raise OutputError(f"{what} {path} is a folder: give a file path")
    return path


def _lock_path(path: Path) -> Path:
    return path.with_name(f".{path.name}.lock")


class OutputLock:
    """An exclusive, non-blocking lock on ``path`` for one run (``flock`` on ``.NAME.lock``, which
    the kernel releases when the process dies, so a killed run leaves no stale lock). A second run
    gets an :class:`OutputError` naming the holder (its run id, pid, host and start time)."""

    def __init__(self, path, run_id: str, what: str):
        self.path, self.run_id, self.what = Path(path), run_id, what
        self._fd = None

    def acquire(self) -> OutputLock:
        import fcntl

        lock = _lock_path(self.path)
        while True:
            fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.read(fd, 4096).decode(errors="replace")
                os.close(fd)
                raise OutputError(f"{self.what} {self.path} is in use by another run ({_describe(holder)}): "
                                  f"one run at a time per file; wait for it or choose another path") from None
            # The holder before us may have removed the lock file after we opened it: then our lock is on
            # an unlinked file, and the next run would lock a new one; start over on the current file.
            try:
                same = os.path.samestat(os.fstat(fd), os.stat(lock))
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        os.ftruncate(fd, 0)
        os.write(fd, json.dumps({"run": self.run_id, "pid": os.getpid(), "host": socket.gethostname(),
                                 "started": time.strftime("%Y-%m-%d %H:%M:%S")}).encode())
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is None:
            return
        try:
            os.unlink(_lock_path(self.path))  # while still locked: no other run holds this file
        except FileNotFoundError:
            pass
        os.close(self._fd)
        self._fd = None

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc):
        self.release()


def _describe(holder: str) -> str:
    try:
        h = json.loads(holder)
        return f"run {h['run']}, pid {h['pid']} on {h['host']}, started {h['started']}"
    except (ValueError, KeyError, TypeError):
        return "holder unknown"

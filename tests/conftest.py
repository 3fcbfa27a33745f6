"""Fixtures of the unit tests: a seeded RNG and the real MNIST folder. (The backend and kernel
axes are the repository's conftest.py.)"""

import os
from pathlib import Path

import numpy as np
import pytest


@pytest.fixture
def rng():
    return np.random.default_rng(12345)


def _data_dir():
    env = os.environ.get("ACCELNET_DATA")
    if env:
        return Path(env)
    shared = Path(__file__).resolve().parents[2] / "shared" / "data"
    return shared if shared.is_dir() else None


@pytest.fixture(scope="session")
def data_dir():
    """The folder holding mnist/ and fashion-mnist/ (ACCELNET_DATA or ../shared/data)."""
    d = _data_dir()
    if d is None or not (d / "mnist").is_dir():
        pytest.skip("real MNIST not found: set ACCELNET_DATA to a folder holding mnist/")
    return d


class _DeviceArray:
    """Stands in for a CuPy array: NumPy may not convert it implicitly; ``get()`` copies it to the host."""

    def __init__(self, a):
        self._a = np.asarray(a)
        self.shape, self.dtype = self._a.shape, self._a.dtype

    def get(self):
        return self._a.copy()

    def __array__(self, *args, **kwargs):
        raise TypeError("Implicit conversion to a NumPy array is not allowed")


@pytest.fixture
def device_array(monkeypatch):
    """The class of a CuPy-like device array, found as CuPy's are (``accelnet.xp``), on any machine."""
    import sys
    import types

    devices = types.ModuleType("devicearrays")
    devices.ndarray = _DeviceArray
    monkeypatch.setattr(_DeviceArray, "__module__", "devicearrays")
    monkeypatch.setitem(sys.modules, "devicearrays", devices)
    return _DeviceArray

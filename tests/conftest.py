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

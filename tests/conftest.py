"""Shared fixtures: every backend-parametrized test body runs on CPU and, where CuPy
and a device are present, on GPU (Chainer's inject_backend_tests idea, one body)."""

import os
from pathlib import Path

import numpy as np
import pytest

from accelnet.backend import gpu_status

GPU_OK, GPU_REASON = gpu_status()

requires_gpu = pytest.mark.skipif(not GPU_OK, reason=f"no GPU: {GPU_REASON}")

BACKENDS = [
    pytest.param("cpu", id="cpu"),
    pytest.param("gpu", id="gpu", marks=[pytest.mark.gpu, requires_gpu]),
]


@pytest.fixture(params=BACKENDS)
def backend_name(request):
    """'cpu', then 'gpu' where available."""
    return request.param


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

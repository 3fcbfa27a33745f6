"""The GPU extras resolve to one working stack per CUDA major: one CuPy distribution, its CUDA
libraries (runtime, cuBLAS, NVRTC) and numba-cuda's NVVM, all for the same CUDA major. Resolved
with ``pip install --dry-run --report`` against the package index (network: marked slow)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# extra -> (CUDA major, the CuPy distribution, the package that brings NVVM)
EXTRAS = {
    "gpu-cu12": (12, "cupy-cuda12x", "nvidia-cuda-nvcc-cu12"),
    "gpu-cu13": (13, "cupy-cuda13x", "nvidia-nvvm"),
    "gpu": (12, "cupy-cuda12x", "nvidia-cuda-nvcc-cu12"),
}


def _resolve(extra, tmp_path):
    report = tmp_path / "report.json"
    res = subprocess.run([sys.executable, "-m", "pip", "install", "--dry-run", "--quiet", "--ignore-installed",
                          "--report", str(report), f"{ROOT}[{extra}]"], capture_output=True, text=True, timeout=600)
    if res.returncode != 0:
        pytest.fail(f"pip could not resolve accelnet[{extra}]: {res.stderr[-2000:]}")
    return {i["metadata"]["name"].lower(): i["metadata"]["version"] for i in json.loads(report.read_text())["install"]}


def _major(version: str) -> int:
    return int(version.split(".")[0])


@pytest.mark.slow
@pytest.mark.parametrize("extra", sorted(EXTRAS))
def test_gpu_extra_resolves_to_one_cuda_major_with_cublas_nvrtc_and_nvvm(extra, tmp_path):
    major, cupy, nvvm = EXTRAS[extra]
    dists = _resolve(extra, tmp_path)
    assert [d for d in dists if d.startswith("cupy")] == [cupy]
    assert nvvm in dists, sorted(dists)
    suffix = f"-cu{major}" if major == 12 else ""
    for lib in ("nvidia-cuda-runtime", "nvidia-cublas", "nvidia-cuda-nvrtc"):
        assert _major(dists[lib + suffix]) == major, (lib, dists.get(lib + suffix))
    for pkg in ("cuda-bindings", "cuda-toolkit", nvvm):
        assert _major(dists[pkg]) == major, (pkg, dists[pkg])
    assert _major(dists["numba-cuda"]) == 0 and int(dists["numba-cuda"].split(".")[1]) >= 19


@pytest.mark.slow
def test_mpi_extra_brings_mpi4py_and_an_mpi_with_mpiexec(tmp_path):
    dists = _resolve("mpi", tmp_path)
    assert "mpi4py" in dists and "mpich" in dists, sorted(dists)


@pytest.mark.slow
@pytest.mark.parametrize("major", [12, 13])
def test_nccl_extra_is_the_gpu_stack_with_mpi_and_nccl_of_the_same_cuda_major(major, tmp_path):
    dists = _resolve(f"nccl-cu{major}", tmp_path)
    assert [d for d in dists if d.startswith("cupy")] == [f"cupy-cuda{major}x"]
    assert {"mpi4py", "mpich", f"nvidia-nccl-cu{major}"} <= set(dists), sorted(dists)
    assert _major(dists[f"nvidia-nccl-cu{major}"]) == 2

"""The GPU readiness check (``gpu_status``, behind ``--device gpu|auto``, ``accelnet info`` and the
``gpu`` test marker) names the first missing piece of the stack and what installs it. Each failure
is simulated here: a fake CuPy module and probes that raise, in the order a step needs them."""

import sys
import types

import pytest

from accelnet import backend
from accelnet.backend import GPU_PROBES, BackendUnavailable, get_backend, gpu_status
from accelnet.cli import main


@pytest.fixture
def fresh_status(monkeypatch):
    """gpu_status recomputed in the test and the real cached answer restored afterwards."""
    monkeypatch.setattr(backend, "_GPU_STATUS", [])


def _fake_cupy(devices=1, error=None):
    def count():
        if error:
            raise error
        return devices

    return types.SimpleNamespace(cuda=types.SimpleNamespace(runtime=types.SimpleNamespace(getDeviceCount=count)))


def test_without_cupy_the_reason_names_the_gpu_extra(fresh_status, monkeypatch):
    monkeypatch.setitem(sys.modules, "cupy", None)  # import cupy raises ImportError
    ok, reason = gpu_status()
    assert not ok and "CuPy is not installed" in reason and "accelnet[gpu-cu12]" in reason


def test_without_a_driver_the_reason_says_to_check_it(fresh_status, monkeypatch):
    monkeypatch.setitem(sys.modules, "cupy", _fake_cupy(error=RuntimeError("cudaErrorInsufficientDriver")))
    ok, reason = gpu_status()
    assert not ok and "no usable CUDA device" in reason and "nvidia-smi" in reason


@pytest.mark.parametrize("failing", range(len(GPU_PROBES)), ids=[p[1].__name__ for p in GPU_PROBES])
def test_the_first_failing_probe_is_named_with_what_installs_it(fresh_status, monkeypatch, failing):
    monkeypatch.setitem(sys.modules, "cupy", _fake_cupy())
    ran = []

    def probe(i):
        def run(cupy):
            ran.append(i)
            if i == failing:
                raise ImportError("libsomething.so: cannot open shared object file")
        return run

    monkeypatch.setattr(backend, "GPU_PROBES", tuple((what, probe(i), install)
                                                      for i, (what, _, install) in enumerate(GPU_PROBES)))
    ok, reason = gpu_status()
    what, _, install = GPU_PROBES[failing]
    assert not ok and reason.startswith(what) and install in reason and "libsomething.so" in reason
    assert ran == list(range(failing + 1))  # stops at the first missing piece


def test_all_probes_passing_makes_the_gpu_usable(fresh_status, monkeypatch):
    monkeypatch.setitem(sys.modules, "cupy", _fake_cupy())
    monkeypatch.setattr(backend, "GPU_PROBES", tuple((w, lambda cupy: None, i) for w, _, i in GPU_PROBES))
    assert gpu_status() == (True, "ok")


def test_the_answer_is_computed_once_per_process(fresh_status, monkeypatch):
    monkeypatch.setitem(sys.modules, "cupy", None)
    first = gpu_status()
    monkeypatch.setitem(sys.modules, "cupy", _fake_cupy(devices=0))
    assert gpu_status() == first and gpu_status(refresh=True) != first


def test_device_gpu_raises_with_the_reason(fresh_status, monkeypatch):
    monkeypatch.setattr(backend, "_GPU_STATUS", [(False, "NVRTC (CuPy's kernel compiler) is missing; install X")])
    monkeypatch.delitem(backend._CACHE, "gpu", raising=False)
    with pytest.raises(BackendUnavailable, match="backend 'gpu' is not available: NVRTC .* is missing; install X"):
        get_backend("gpu")


def test_device_auto_falls_back_to_the_cpu_with_the_reason_as_a_note(fresh_status, monkeypatch, capsys):
    monkeypatch.setattr(backend, "_GPU_STATUS", [(False, "cuBLAS (matrix products) is missing; install Y")])
    assert get_backend("auto").name == "cpu"
    assert "using the CPU: cuBLAS (matrix products) is missing; install Y" in capsys.readouterr().err


def test_the_cli_exits_2_with_one_line_naming_the_missing_piece(fresh_status, monkeypatch, capsys):
    monkeypatch.setattr(backend, "_GPU_STATUS", [(False, "numba-cuda is not installed; install Z")])
    monkeypatch.delitem(backend._CACHE, "gpu", raising=False)
    assert main(["train", "--device", "gpu", "--dataset", "synthetic", "--epochs", "1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "numba-cuda is not installed; install Z" in err[0]

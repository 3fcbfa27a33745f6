"""One backend axis for every test and benchmark (Chainer's inject_backend_tests idea): a test
that takes ``backend_name`` runs once per backend, the GPU one marked ``gpu`` and skipped without
CuPy and a device; a test that takes ``kernels`` runs once per fused kernel module (the CUDA one
only under Numba's simulator, in a process of its own), ``any_kernels`` with the reference too.
``rerun_pytest`` reruns test files in a fresh process under environment settings read at import
(``start_pytest`` starts such runs side by side)."""

import importlib
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from accelnet.backend import gpu_status

GPU_OK, GPU_REASON = gpu_status()

BACKENDS = {
    "cpu": pytest.param("cpu", id="cpu"),
    "gpu": pytest.param("gpu", id="gpu", marks=[pytest.mark.gpu, pytest.mark.skipif(not GPU_OK,
                                                                                     reason=f"no GPU: {GPU_REASON}")]),
}

KERNEL_MODULES = ["cpu"] + (["cuda"] if os.environ.get("NUMBA_ENABLE_CUDASIM") == "1" else [])


def pytest_configure(config):
    config.addinivalue_line("markers", "backends(*names): run this test on these backends only")


def pytest_generate_tests(metafunc):
    if "backend_name" in metafunc.fixturenames:
        only = metafunc.definition.get_closest_marker("backends")
        names = only.args if only else tuple(BACKENDS)
        metafunc.parametrize("backend_name", [BACKENDS[n] for n in names])
    for fixture, modules in (("kernels", KERNEL_MODULES), ("any_kernels", ["reference"] + KERNEL_MODULES)):
        if fixture in metafunc.fixturenames:
            metafunc.parametrize(fixture, [pytest.param(importlib.import_module(f"accelnet.kernels.{m}"), id=m)
                                           for m in modules])


class PytestRun:
    """pytest on ``files`` in a fresh process with ``env`` added (settings such as NUMBA_ENABLE_CUDASIM
    or ACCELNET_SIMD_BYTES are read once, at import), started now; ``result()`` waits for it."""

    def __init__(self, files, env, k=None):
        root = Path(__file__).parent
        cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *(["-k", k] if k else []),
               *(str(root / f) for f in files)]
        self.out, self.err = tempfile.TemporaryFile("w+"), tempfile.TemporaryFile("w+")
        self.proc = subprocess.Popen(cmd, stdout=self.out, stderr=self.err, text=True, env={**os.environ, **env},
                                     cwd=root)

    def result(self, timeout=900):
        """(tests passed, pytest's summary line); fails the calling test with the output if any failed."""
        try:
            code = self.proc.wait(timeout)
        finally:
            self.stop()
        self.out.seek(0)
        self.err.seek(0)
        out, err = self.out.read(), self.err.read()
        print(out[-3000:])
        assert code == 0, out[-5000:] + err[-2000:]
        summary = out.strip().splitlines()[-1]
        return int(summary.split(" passed")[0].split()[-1]), summary

    def stop(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture
def rerun_pytest():
    """``run(files, env, k=None) -> (passed, summary line)``: a :class:`PytestRun`, waited for."""
    return lambda files, env, k=None: PytestRun(files, env, k).result()


@pytest.fixture(scope="session")
def start_pytest():
    """``start(files, env, k=None) -> PytestRun``, for runs that overlap one another; any still
    running at the end of the session are stopped."""
    runs = []

    def start(files, env, k=None):
        runs.append(PytestRun(files, env, k))
        return runs[-1]

    yield start
    for run in runs:
        run.stop()

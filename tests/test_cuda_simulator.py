"""Runs tests/test_kernel_parity.py with the numba.cuda kernels in Numba's CUDA simulator, in its
own process: NUMBA_ENABLE_CUDASIM must be set before Numba is first imported."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("numba.cuda", reason="numba-cuda is not installed (pip install 'accelnet[dev]')")


def test_cuda_kernels_pass_in_the_simulator():
    here = Path(__file__).parent
    env = {**os.environ, "NUMBA_ENABLE_CUDASIM": "1"}
    res = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-k", "cuda",
                          str(here / "test_kernel_parity.py")],
                         capture_output=True, text=True, env=env, timeout=900, cwd=here.parent)
    print(res.stdout[-3000:])
    assert res.returncode == 0, res.stdout[-5000:] + res.stderr[-2000:]
    summary = res.stdout.strip().splitlines()[-1]
    assert int(summary.split(" passed")[0].split()[-1]) >= 20 and "skipped" not in summary, summary

"""Runs the SIMD and kernel parity tests with 32- and 16-byte vectors (as an AVX2 or an SSE-only
CPU runs them), each in its own process: the vector width is fixed when kernels/simd.py is first
imported (kernels built with a forced width are not cached)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest


@pytest.mark.parametrize("width", ["32", "16"])
def test_kernels_pass_with_narrower_vectors(width):
    here = Path(__file__).parent
    env = {**os.environ, "ACCELNET_SIMD_BYTES": width}
    res = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-k", "not cuda",
                          str(here / "test_simd.py"), str(here / "test_kernel_parity.py")],
                         capture_output=True, text=True, env=env, timeout=900, cwd=here.parent)
    print(res.stdout[-3000:])
    assert res.returncode == 0, res.stdout[-5000:] + res.stderr[-2000:]
    summary = res.stdout.strip().splitlines()[-1]
    assert int(summary.split(" passed")[0].split()[-1]) >= 100, summary


def test_a_bad_forced_width_is_named():
    env = {**os.environ, "ACCELNET_SIMD_BYTES": "24"}
    res = subprocess.run([sys.executable, "-c", "import accelnet.kernels.simd"], capture_output=True, text=True,
                         env=env, timeout=120)
    assert res.returncode != 0 and "ACCELNET_SIMD_BYTES must be 16, 32 or 64, got '24'" in res.stderr

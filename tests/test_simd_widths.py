"""Runs the SIMD and kernel parity tests with 32- and 16-byte vectors (as an AVX2 or an SSE-only
CPU runs them), each in its own process: the vector width is fixed when kernels/simd.py is first
imported (kernels built at a forced width are cached in a folder of their own). The two widths
run side by side."""

import os
import subprocess
import sys

import pytest


WIDTHS = ("32", "16")
# 32 bytes as an AVX2 CPU compiles them (Haswell's features alone: not the host's AVX-512 mask and
# upper vector registers), as bench/laptop_cpu.py runs; 16 on the host CPU's instructions
CPUS = {"32": {"NUMBA_CPU_NAME": "haswell", "NUMBA_CPU_FEATURES": ""}, "16": {}}


@pytest.fixture(scope="module")
def narrow_runs(start_pytest):
    """Both widths' reruns, started together: on a fresh checkout each compiles every kernel it
    tests, one process each, so they overlap on two cores."""
    tests = ["tests/test_simd.py", "tests/test_kernel_parity.py", "tests/test_cpu_gemm.py", "tests/test_register_blocks.py"]
    return {w: start_pytest(tests, {"ACCELNET_SIMD_BYTES": w, **CPUS[w]}, k="not cuda") for w in WIDTHS}


@pytest.mark.parametrize("width", WIDTHS)
def test_kernels_pass_with_narrower_vectors(width, narrow_runs):
    passed, summary = narrow_runs[width].result()
    assert passed >= 100, summary


def test_a_bad_forced_width_is_named():
    env = {**os.environ, "ACCELNET_SIMD_BYTES": "24"}
    res = subprocess.run([sys.executable, "-c", "import accelnet.kernels.simd"], capture_output=True, text=True,
                         env=env, timeout=120)
    assert res.returncode != 0 and "ACCELNET_SIMD_BYTES must be 16, 32 or 64, got '24'" in res.stderr

"""Runs the SIMD and kernel parity tests with 32- and 16-byte vectors (as an AVX2 or an SSE-only
CPU runs them), each in its own process: the vector width is fixed when kernels/simd.py is first
imported (kernels built with a forced width are not cached). The two widths run side by side."""

import os
import subprocess
import sys

import pytest


WIDTHS = ("32", "16")


@pytest.fixture(scope="module")
def narrow_runs(start_pytest):
    """Both widths' reruns, started together: each compiles every kernel it tests afresh (nothing
    built at a forced width is cached), one process each, so they overlap on two cores."""
    return {w: start_pytest(["tests/test_simd.py", "tests/test_kernel_parity.py", "tests/test_cpu_gemm.py"],
                            {"ACCELNET_SIMD_BYTES": w}, k="not cuda") for w in WIDTHS}


@pytest.mark.parametrize("width", WIDTHS)
def test_kernels_pass_with_narrower_vectors(width, narrow_runs):
    passed, summary = narrow_runs[width].result()
    assert passed >= 100, summary


def test_a_bad_forced_width_is_named():
    env = {**os.environ, "ACCELNET_SIMD_BYTES": "24"}
    res = subprocess.run([sys.executable, "-c", "import accelnet.kernels.simd"], capture_output=True, text=True,
                         env=env, timeout=120)
    assert res.returncode != 0 and "ACCELNET_SIMD_BYTES must be 16, 32 or 64, got '24'" in res.stderr

"""Runs tests/test_kernel_parity.py and tests/test_im2col.py with the numba.cuda kernels in Numba's
CUDA simulator, in its own process: NUMBA_ENABLE_CUDASIM must be set before Numba is first
imported. The simulator needs neither CuPy nor a driver."""

import pytest

pytest.importorskip("numba.cuda", reason="numba-cuda is not installed (pip install 'accelnet[dev]')")


def test_cuda_kernels_pass_in_the_simulator(rerun_pytest):
    passed, summary = rerun_pytest(["tests/test_kernel_parity.py", "tests/test_im2col.py", "tests/test_cuda_launch.py"],
                                   {"NUMBA_ENABLE_CUDASIM": "1"}, k="cuda")
    assert passed >= 20 and "skipped" not in summary, summary

"""These tests run the numba.cuda kernels on Numba's CUDA simulator (NUMBA_ENABLE_CUDASIM=1,
which must be set before Numba is imported), so tests/test_cuda_simulator.py runs them in a
pytest process of their own; a plain `pytest` run leaves them out."""

import os

if os.environ.get("NUMBA_ENABLE_CUDASIM") != "1":
    collect_ignore_glob = ["test_*.py"]

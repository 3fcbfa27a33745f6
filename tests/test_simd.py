"""kernels/simd.py: explicit vector values in Numba kernels, checked lane by lane against NumPy."""

import numpy as np
import pytest
from numba import njit

from accelnet.kernels import simd
from accelnet.kernels.simd import vfma, vload, vsplat, vstore, vsum

DTYPES = pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])


@njit
def _axpy_at(a, x, y, i, out):
    """out[i:i+L] = a * x[i:i+L] + y[i:i+L] through one vector register."""
    vstore(out, i, vfma(vsplat(a), vload(x, i), vload(y, i)))


@njit
def _lane_sum(x, i):
    return vsum(vload(x, i))


def test_a_vector_is_as_wide_as_the_hosts_registers():
    assert simd.VECTOR_BYTES in (16, 32, 64)
    assert simd.lanes(np.float32) == simd.VECTOR_BYTES // 4 and simd.lanes(np.float64) == simd.VECTOR_BYTES // 8


@DTYPES
def test_vfma_load_store_work_lane_by_lane_at_an_unaligned_index(dtype):
    n = simd.lanes(dtype)
    r = np.random.default_rng(0)
    x, y = r.standard_normal(n + 3).astype(dtype), r.standard_normal(n + 3).astype(dtype)
    out = np.full(n + 3, -7.0, dtype)
    _axpy_at(dtype(1.5), x, y, 3, out)
    np.testing.assert_allclose(out[3:], 1.5 * x[3:] + y[3:], rtol=1e-6)
    assert (out[:3] == -7.0).all()  # nothing written outside the vector


@DTYPES
def test_vsum_adds_the_lanes(dtype):
    n = simd.lanes(dtype)
    x = np.arange(1, n + 2, dtype=dtype)
    assert _lane_sum(x, 1) == pytest.approx(x[1:].sum())


def test_vload_rejects_a_non_contiguous_array():
    with pytest.raises(Exception, match="C-contiguous float array"):
        _lane_sum(np.zeros((4, 64), np.float32)[:, ::2], 0)

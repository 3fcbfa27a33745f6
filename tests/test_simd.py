"""kernels/simd.py: explicit vector values in Numba kernels, checked lane by lane against NumPy."""

import numpy as np
import pytest
from numba import njit

from accelnet.kernels import simd
from accelnet.kernels.simd import (vadd, vfma, vgate, vload, vload_first, vload_pairs, vmax_arg, vpick, vsplat, vstore,
                                   vstore_first, vstore_pairs, vsum, vsums_add)

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
    if dtype == np.float32:  # one rounding: the float64 result rounded once (float32 a*x + y rounds twice)
        np.testing.assert_array_equal(out[3:], (1.5 * x[3:].astype(np.float64) + y[3:]).astype(dtype))
    else:
        np.testing.assert_allclose(out[3:], 1.5 * x[3:] + y[3:], rtol=1e-14, atol=1e-15)
    assert (out[:3] == -7.0).all()  # nothing written outside the vector


@DTYPES
def test_vsum_adds_the_lanes(dtype):
    n = simd.lanes(dtype)
    x = np.arange(1, n + 2, dtype=dtype)
    assert _lane_sum(x, 1) == pytest.approx(x[1:].sum())


@njit
def _sums_add(x, out, i):
    """out[i + r] += the lanes of x's vectors r = 0..7 (x holds 8 vectors, one after another)."""
    n = len(x) // 8
    vsums_add(out, i, (vload(x, 0), vload(x, n), vload(x, 2 * n), vload(x, 3 * n), vload(x, 4 * n), vload(x, 5 * n),
                       vload(x, 6 * n), vload(x, 7 * n)))


@DTYPES
def test_vsums_add_adds_each_vectors_lanes_into_its_own_element(dtype):
    n = simd.lanes(dtype)
    x = np.random.default_rng(1).standard_normal(8 * n).astype(dtype)
    out = np.full(11, 2.0, dtype)
    _sums_add(x, out, 2)
    np.testing.assert_allclose(out[2:10], x.reshape(8, n).sum(axis=1) + 2, rtol=1e-6)
    assert (out[:2] == 2).all() and (out[10:] == 2).all()  # nothing outside the 8 elements


def test_vload_rejects_a_non_contiguous_array():
    with pytest.raises(Exception, match="C-contiguous float array"):
        _lane_sum(np.zeros((4, 64), np.float32)[:, ::2], 0)


@njit
def _copy_first(src, i, n, fill, dst, j):
    """dst[j:j+n] = src[i:i+n] through a vector whose other lanes hold ``fill``; returns its sum."""
    v = vload_first(src, i, n, vsplat(fill))
    vstore_first(dst, j, v, n)
    return vsum(v)


@DTYPES
@pytest.mark.parametrize("n", [0, 1, -1], ids=["none", "one", "all_but_one"])
def test_vload_first_and_vstore_first_touch_only_the_first_n_lanes(dtype, n):
    lanes = simd.lanes(dtype)
    n = n % lanes
    src = np.arange(1, 3 + n, dtype=dtype)  # ends n elements after index 2: a whole vector would read past it
    dst = np.full(n + 3, -7.0, dtype)
    total = _copy_first(src, 2, n, dtype(0.5), dst, 1)
    np.testing.assert_array_equal(dst[1:1 + n], src[2:])
    assert dst[0] == -7.0 and (dst[1 + n:] == -7.0).all()
    assert total == pytest.approx(src[2:].sum() + 0.5 * (lanes - n))


@DTYPES
def test_vload_first_converts_integers_and_vstore_first_converts_back(dtype):
    n = simd.lanes(dtype)
    idx = np.resize(np.array([3, 0, 255, 2, 1], np.uint8), n)
    out = np.zeros(n, np.uint8)
    assert _copy_first(idx, 0, n, dtype(0), out, 0) == pytest.approx(idx.sum(dtype=np.int64))
    np.testing.assert_array_equal(out, idx)


@njit
def _pool_pairs(x, bias):
    """A 1x2 max-pool of x (2*LANES values) + bias with ReLU, then the window's value put back
    at its argmax (the pooled backward), through the pooling primitives."""
    left, right = vload_pairs(x, 0)
    vb = vsplat(bias)
    m, arg = vmax_arg(vgate(vadd(left, vb), vadd(left, vb)), vsplat(x.dtype.type(0)), vgate(vadd(right, vb),
                                                                                          vadd(right, vb)), 1)
    back = np.full(x.size + 2, -7.0, x.dtype)
    vstore_pairs(back, 1, vpick(arg, 0, m), vpick(arg, 1, m), x.size // 2 - 1)
    return m, arg, back


@njit
def _pool_pairs_lanes(x, bias):
    m, arg, back = _pool_pairs(x, bias)
    ms, args = np.empty(x.size // 2, x.dtype), np.empty(x.size // 2, x.dtype)
    vstore(ms, 0, m)
    vstore(args, 0, arg)
    return ms, args, back


@DTYPES
def test_pooling_primitives_match_maxpool_semantics(dtype):
    lanes = simd.lanes(dtype)
    r = np.random.default_rng(1)
    x = r.standard_normal(2 * lanes).astype(dtype)
    special = [[np.nan, 1.0],  # first of the window NaN: it wins
               [1.0, np.nan],  # second NaN: it wins
               [2.0, 2.0],  # a tie: the first wins
               [-1.0, -2.0]]  # both below zero after the ReLU: -0.0 and -0.0, the first wins
    for k in range(lanes):  # the special windows in turn, as many as there are lanes
        x[2 * k : 2 * k + 2] = special[k % len(special)] if k < len(special) or k % 2 else x[2 * k : 2 * k + 2]
    ms, args, back = _pool_pairs_lanes(x, dtype(0.25))
    y = x + dtype(0.25)
    with np.errstate(invalid="ignore"):
        y = y * (y > 0)
    left, right = y[0::2], y[1::2]
    take = (left == left) & ((right > left) | (right != right))
    np.testing.assert_array_equal(ms, np.where(take, right, left))
    np.testing.assert_array_equal(args, take.astype(dtype))
    want = np.full(x.size + 2, -7.0, dtype)
    k = lanes - 1  # windows stored: the last one is not
    want[1:1 + 2 * k:2] = np.where(take, 0, ms)[:k]
    want[2:2 + 2 * k:2] = np.where(take, ms, 0)[:k]
    np.testing.assert_array_equal(back, want)

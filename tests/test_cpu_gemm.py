"""accelnet's own matrix product (kernels/cpu_gemm.py) and where kernels.cpu.matmul runs it."""

import numba
import numpy as np
import pytest

from accelnet.kernels import cpu, cpu_gemm, simd

LANES = simd.lanes(np.float32)
# Columns: one and two vectors, whole pairs and every kind of remainder (a masked half-width vector,
# a masked full one, a whole one, a whole one and a masked one); rows: a few (row by row: cpu_gemm.FEW_ROWS), less
# than one block, between blocks, many blocks.
COLUMNS = [1, LANES // 2, LANES // 2 + 1, LANES - 1, LANES, LANES + 1, 2 * LANES, 2 * LANES + 3, 3 * LANES,
           3 * LANES + 5, 50, 100]
ROWS = [1, 2, 4, 5, 7, 9, 16, 17, 100]


def _operands(m, k, n, dtype, seed=0):
    r = np.random.default_rng(seed)
    return r.standard_normal((m, k)).astype(dtype), r.standard_normal((k, n)).astype(dtype)


def _assert_product(got, a, b):
    want = a.astype(np.float64) @ b.astype(np.float64)
    tol = 1e-5 if a.dtype == np.float32 else 1e-12
    np.testing.assert_allclose(got, want, rtol=tol, atol=tol * np.sqrt(a.shape[1]) * np.abs(want).max())


@pytest.mark.parametrize("n", COLUMNS)
@pytest.mark.parametrize("m", ROWS)
def test_gemm_matches_a_float64_product_for_every_block_remainder(m, n):
    a, b = _operands(m, 37, n, np.float32)
    _assert_product(cpu_gemm.gemm(a, b), a, b)


@pytest.mark.parametrize("m", [2, 33])
@pytest.mark.parametrize("k", [1, 2, 3, 100, 1000])
def test_gemm_matches_a_float64_product_for_any_inner_length(k, m):
    a, b = _operands(m, k, 100, np.float32)
    _assert_product(cpu_gemm.gemm(a, b), a, b)


def test_gemm_computes_in_float64_for_float64_operands():
    a, b = _operands(50, 300, 70, np.float64)
    got = cpu_gemm.gemm(a, b)
    assert got.dtype == np.float64
    _assert_product(got, a, b)


def test_gemm_reads_a_transposed_first_operand_in_place():
    x, dout = _operands(1000, 784, 100, np.float32)[0], _operands(1000, 100, 1, np.float32)[0]
    _assert_product(cpu_gemm.gemm(x.T, dout), x.T, dout)  # a Linear layer's weight gradient


def test_gemm_takes_a_transposed_second_operand():
    dz, w = _operands(100, 100, 1, np.float32)[0], _operands(100, 100, 1, np.float32)[0]
    _assert_product(cpu_gemm.gemm(dz, w.T), dz, w.T)  # a Linear layer's input gradient


def test_gemm_reads_a_strided_first_operand():
    a, b = _operands(40, 90, 60, np.float32)
    _assert_product(cpu_gemm.gemm(a[::2, ::3], b[::3]), a[::2, ::3], b[::3])


def test_gemm_writes_into_out_and_returns_it():
    a, b = _operands(100, 50, 100, np.float32)
    out = np.full((100, 100), np.nan, np.float32)
    assert cpu_gemm.gemm(a, b, out) is out
    _assert_product(out, a, b)


def test_gemm_writes_into_a_non_contiguous_out():
    a, b = _operands(30, 20, 40, np.float32)
    big = np.zeros((30, 80), np.float32)
    cpu_gemm.gemm(a, b, big[:, ::2])
    _assert_product(big[:, ::2], a, b)
    assert not big[:, 1::2].any()


def test_gemm_writes_nothing_past_the_result():
    a, b = _operands(17, 10, LANES + 3, np.float32)
    buf = np.full(17 * (LANES + 3) + 64, 7.0, np.float32)
    out = buf[: 17 * (LANES + 3)].reshape(17, LANES + 3)
    cpu_gemm.gemm(a, b, out)
    assert (buf[17 * (LANES + 3):] == 7.0).all()


@pytest.mark.parametrize("relu", [False, True], ids=["bias", "bias-relu"])
@pytest.mark.parametrize("n", [LANES // 2, LANES + 1, 2 * LANES + 3, 100])
@pytest.mark.parametrize("m", [1, 17])
def test_gemm_adds_the_bias_then_the_relu_as_it_stores(m, n, relu):
    a, b = _operands(m, 37, n, np.float32)
    bias = np.random.default_rng(1).standard_normal(n).astype(np.float32)
    want = a.astype(np.float64) @ b.astype(np.float64) + bias
    if relu:
        want *= want > 0
    np.testing.assert_allclose(cpu_gemm.gemm(a, b, bias=bias, relu=relu), want, rtol=1e-5, atol=1e-4)


def test_gemm_gives_the_same_bits_on_any_number_of_threads():
    a, b = _operands(1000, 784, 100, np.float32)
    threads = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        one = cpu_gemm.gemm(a, b)
    finally:
        numba.set_num_threads(threads)
    np.testing.assert_array_equal(cpu_gemm.gemm(a, b), one)


def test_gemm_carries_nan_and_inf_like_numpy():
    a, b = _operands(20, 30, 40, np.float32)
    a[3, 5], a[7, 2], b[4, 9] = np.nan, np.inf, np.inf
    with np.errstate(invalid="ignore"):
        got, want = cpu_gemm.gemm(a, b), a @ b
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    np.testing.assert_array_equal(np.isinf(got), np.isinf(want))


@pytest.mark.parametrize("a, b, why", [
    (np.ones((4, 3), np.float32), np.ones((3, 2), np.float64), "mixed dtypes"),
    (np.ones((4, 3), np.int64), np.ones((3, 2), np.int64), "integers"),
    (np.ones((4, 3), np.float16), np.ones((3, 2), np.float16), "float16"),
    (np.ones((0, 3), np.float32), np.ones((3, 2), np.float32), "no rows"),
    (np.ones((4, 0), np.float32), np.ones((0, 2), np.float32), "no inner dimension"),
    (np.ones((4, 3), np.float32), np.ones((3, 0), np.float32), "no columns"),
    (np.ones((4, 3), np.float32), np.ones((4, 2), np.float32), "mismatched shapes"),
    (np.ones((4, 3, 2), np.float32), np.ones((2, 2), np.float32), "3-D"),
    (np.ones((64, 512), np.float32), np.ones((512, 50), np.float32), "rows 2 KB apart: L1 aliasing"),
    (np.ones((64, 1024), np.float32), np.ones((1024, 50), np.float32), "rows 4 KB apart: L1 aliasing"),
    (np.ones((64, 100), np.float32), np.ones((4320, 100), np.float32).T, "a large transposed B"),
])
def test_gemm_declines_what_it_does_not_compute(a, b, why):
    assert not cpu_gemm.fits(a, b), why


def test_gemm_declines_an_out_of_another_dtype():
    a, b = _operands(20, 30, 40, np.float32)
    assert cpu_gemm.fits(a, b) and not cpu_gemm.fits(a, b, np.empty((20, 40), np.float64))


def test_matmul_runs_gemm_for_a_training_steps_products_at_batch_100_and_up():
    for m, k, n in [(1000, 784, 100), (1000, 100, 100), (100, 784, 50), (100, 100, 100)]:
        a, b = _operands(m, k, n, np.float32)
        assert cpu.matmul_picks(a, b) == "gemm"
        assert cpu.matmul_picks(a.T.copy().T, b) == "gemm"  # x.T: the weight gradient's first operand


def test_matmul_runs_a_few_rows_on_gemm_row_by_row_whatever_the_threads():
    threads = numba.get_num_threads()
    try:
        for t in (1, threads):
            numba.set_num_threads(t)
            for m, k, n in [(1, 784, 50), (1, 50, 10), (cpu_gemm.FEW_ROWS, 100, 100)]:
                assert cpu.matmul_picks(*_operands(m, k, n, np.float32)) == "gemm"
    finally:
        numba.set_num_threads(threads)
    dz, w = _operands(1, 100, 784, np.float32)
    assert cpu.matmul_picks(dz, w.T.copy().T) == "OpenBLAS 1"  # W.T, the input gradient's: not row-contiguous
    x, w = _operands(1, 4320, 100, np.float32)
    assert cpu.matmul_picks(x, w) == "OpenBLAS 1"  # simple_convnet's first Linear: B past L2


def test_matmul_leaves_small_and_short_products_to_openblas_on_one_thread():
    for m, k, n in [(cpu_gemm.FEW_ROWS + 1, 784, 100), (10, 100, 100), (100, 100, 10), (32, 784, 100),
                    (784, 32, 100)]:
        a, b = _operands(m, k, n, np.float32)
        assert cpu.matmul_picks(a, b) == "OpenBLAS 1"


def test_matmul_leaves_products_to_openblas_when_numba_has_one_thread():
    a, b = _operands(1000, 784, 100, np.float32)
    threads = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        assert cpu.matmul_picks(a, b) == "OpenBLAS 2"
    finally:
        numba.set_num_threads(threads)


@pytest.mark.parametrize("m, k, n", [(1, 784, 100), (10, 784, 50), (100, 100, 100), (1000, 784, 100),
                                     (100, 1024, 50), (1000, 100, 10)])
def test_matmul_matches_a_float64_product_whichever_runs(m, k, n):
    a, b = _operands(m, k, n, np.float32)
    _assert_product(cpu.matmul(a, b), a, b)
    _assert_product(cpu.matmul(b.T, a.T), b.T, a.T)

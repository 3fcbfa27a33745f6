import numpy as np
import pytest

import accelnet
from accelnet.backend import BackendUnavailable, as_dtype, get_backend, gpu_status, host_rng
from accelnet.xp import array_namespace


def test_cpu_backend_uses_numpy_and_numba_kernels():
    b = get_backend("cpu")
    assert b.name == "cpu" and b.xp is np
    assert b.kernels.__name__ == "accelnet.kernels.cpu"


def test_unknown_device_name_is_rejected_by_name():
    with pytest.raises(ValueError, match="'tpu'"):
        get_backend("tpu")


@pytest.mark.skipif(gpu_status()[0], reason="a GPU is present")
def test_gpu_without_cupy_or_device_names_what_is_missing_and_what_to_do():
    # without CuPy: the extra to install; with CuPy but no driver: check it (each case simulated
    # in tests/test_gpu_readiness.py; this one is whatever this machine lacks)
    with pytest.raises(BackendUnavailable, match=r"backend 'gpu' is not available: .*(accelnet\[gpu-cu12\]|nvidia-smi)"):
        get_backend("gpu")


@pytest.mark.skipif(gpu_status()[0], reason="a GPU is present")
def test_auto_falls_back_to_cpu_and_says_so(capsys):
    assert get_backend("auto").name == "cpu"
    assert "using the CPU" in capsys.readouterr().err


def test_to_device_and_back_round_trips_values_and_dtype(backend_name):
    b = get_backend(backend_name)
    a = np.arange(6, dtype=np.float64).reshape(2, 3)
    d = b.to_device(a, np.float32)
    assert b.is_array(d) and d.dtype == np.float32
    back = b.to_numpy(d)
    assert isinstance(back, np.ndarray)
    np.testing.assert_array_equal(back, a.astype(np.float32))
    b.synchronize()


def test_array_namespace_of_numpy_is_numpy():
    assert array_namespace(np.zeros(3)) is np


def test_host_rng_is_reproducible():
    assert np.array_equal(host_rng(7).random(5), host_rng(7).random(5))
    assert not np.array_equal(host_rng(7).random(5), host_rng(8).random(5))


@pytest.mark.parametrize("bad", ["float16", "int32", "banana"])
def test_only_float32_and_float64_are_model_dtypes(bad):
    with pytest.raises(ValueError, match="dtype must be one of"):
        as_dtype(bad)


def test_package_exports_version():
    assert accelnet.__version__


def test_blas_threads_can_be_set_per_product_and_restored():
    from accelnet.cpu_runtime import set_blas_threads

    if set_blas_threads.threads() is None:
        pytest.skip("NumPy's BLAS is not an OpenBLAS found in /proc/self/maps")
    default = set_blas_threads.default
    try:
        set_blas_threads(1)
        assert set_blas_threads.threads() == 1
        set_blas_threads(None)
        assert set_blas_threads.threads() == default
    finally:
        set_blas_threads(None)


def test_small_products_run_on_one_blas_thread_and_large_ones_on_all():
    from accelnet.cpu_runtime import set_blas_threads
    from accelnet.kernels import cpu

    if set_blas_threads.threads() is None or set_blas_threads.default < 2:
        pytest.skip("needs OpenBLAS with 2+ threads")
    a = np.ones((10, 10), np.float32)
    cpu.matmul(a, a)
    assert set_blas_threads.threads() == 1
    big = np.ones((400, 512), np.float32)  # rows 2 KB apart: OpenBLAS's, not accelnet's gemm (test_cpu_gemm.py)
    assert cpu.matmul_picks(big, big.T) == "OpenBLAS 2"
    np.testing.assert_array_equal(cpu.matmul(big, big.T), big @ big.T)
    assert set_blas_threads.threads() == set_blas_threads.default


def test_products_of_15_to_30_mflop_get_two_blas_threads_only_with_a_dimension_of_1000():
    from accelnet.kernels import cpu

    assert cpu.blas_threads(100, 784, 100) == 1  # multi_layer_net's first layer at batch 100: 16 MFLOP
    assert cpu.blas_threads(1000, 100, 100) is None  # its hidden layers at batch 1000: 20 MFLOP
    assert cpu.blas_threads(100, 1000, 100) is None  # their weight gradient: the batch is the inner dimension
    assert cpu.blas_threads(1000, 10, 100) == 1  # 2 MFLOP
    assert cpu.blas_threads(100, 4320, 100) is None  # 86 MFLOP


def test_freed_activation_memory_is_kept_unless_the_user_opts_out(monkeypatch):
    from accelnet import cpu_runtime

    monkeypatch.setenv("ACCELNET_KEEP_FREED_MEMORY", "0")
    assert cpu_runtime.keep_freed_memory() is False
    monkeypatch.delenv("ACCELNET_KEEP_FREED_MEMORY")
    monkeypatch.setenv("MALLOC_TRIM_THRESHOLD_", "1000")  # the user's own glibc tuning wins
    assert cpu_runtime.keep_freed_memory() is False
    monkeypatch.delenv("MALLOC_TRIM_THRESHOLD_")
    import ctypes

    if not hasattr(ctypes.CDLL(None), "mallopt"):
        pytest.skip("not glibc")
    assert cpu_runtime.keep_freed_memory() is True

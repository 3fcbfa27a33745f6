"""Launch overhead of the numba.cuda kernels: launch configurations and device views are built once
and reused, without keeping freed GPU memory alive. Runs in Numba's CUDA simulator, in its own
process (tests/test_cuda_simulator.py), with stand-ins for CuPy arrays."""

import gc
import os
import weakref
from types import SimpleNamespace

import numpy as np
import pytest

if os.environ.get("NUMBA_ENABLE_CUDASIM") != "1":
    pytest.skip("runs in Numba's CUDA simulator, from tests/test_cuda_simulator.py", allow_module_level=True)

from accelnet.kernels import cuda as kcuda  # noqa: E402


class FakeCupyArray:
    """What ``_dev`` reads of a CuPy array: its memory pointer, layout and CUDA array interface."""

    def __init__(self, ptr, shape=(8,), dtype=np.float32):
        self.dtype = np.dtype(dtype)
        self.shape = shape
        self.strides = (self.dtype.itemsize,)
        self.data = SimpleNamespace(ptr=ptr, device_id=0)

    @property
    def __cuda_array_interface__(self):
        return {"shape": self.shape, "strides": None, "typestr": self.dtype.str, "data": (self.data.ptr, False),
                "version": 3, "stream": 1}


@pytest.fixture
def views(monkeypatch):
    """Records each view ``_dev`` builds (with its owner) instead of asking a driver."""
    built = []

    def from_cai(desc, owner=None, sync=True):
        built.append((desc["data"][0], owner, sync))
        return object()

    monkeypatch.setattr(kcuda.cuda, "from_cuda_array_interface", from_cai, raising=False)  # absent in the simulator
    monkeypatch.setattr(kcuda, "_VIEWS", type(kcuda._VIEWS)())
    return built


class FakeKernel:
    """A numba-cuda dispatcher as ``_configured`` sees it: ``kernel[grid, block, stream]`` builds a
    new launch configuration each time."""

    def __init__(self):
        self.built = []

    def __getitem__(self, config):
        self.built.append(config)
        return SimpleNamespace(config=config)


def test_cuda_launch_configuration_is_built_once_per_grid_and_stream():
    kernel = FakeKernel()
    first = kcuda._configured(kernel, 10_000)
    assert kcuda._configured(kernel, 10_000) is first
    assert kcuda._configured(kernel, 10_100) is first  # the same number of blocks
    assert kcuda._configured(kernel, 100) is not first
    assert [blocks for blocks, _, _ in kernel.built] == [40, 1]


def test_cuda_simulator_kernel_gets_the_grid_of_each_launch():
    kcuda._configured(kcuda._triad, 10_000)
    assert kcuda._configured(kcuda._triad, 100).grid_dim == (1, 1, 1)
    assert kcuda._configured(kcuda._triad, 10_000).grid_dim == (40, 1, 1)


def test_cuda_device_view_of_a_persistent_buffer_is_built_once(views):
    arena = FakeCupyArray(0x1000)
    assert kcuda._dev(arena) is kcuda._dev(arena)
    assert len(views) == 1


def test_cuda_device_view_is_built_without_a_stream_sync(views):
    kcuda._dev(FakeCupyArray(0x1000))
    assert views[0][2] is False


def test_cuda_device_views_differ_by_pointer_shape_and_dtype(views):
    a = kcuda._dev(FakeCupyArray(0x1000))
    assert kcuda._dev(FakeCupyArray(0x2000)) is not a
    assert kcuda._dev(FakeCupyArray(0x1000, shape=(4,))) is not a
    assert kcuda._dev(FakeCupyArray(0x1000, dtype=np.float64)) is not a
    assert len(views) == 4


def test_cuda_device_view_cache_keeps_no_freed_array_alive(views):
    arr = FakeCupyArray(0x1000)
    alive = weakref.ref(arr)
    kcuda._dev(arr)
    del arr
    gc.collect()
    assert alive() is None and views[0][1] is None


def test_cuda_device_view_cache_is_bounded(views):
    for i in range(kcuda.VIEW_CACHE + 50):
        kcuda._dev(FakeCupyArray(0x1000 * (i + 1)))
    assert len(kcuda._VIEWS) == kcuda.VIEW_CACHE


def test_cuda_device_view_cache_drops_the_least_recently_used(views):
    arena = FakeCupyArray(0x1)
    kcuda._dev(arena)
    for i in range(kcuda.VIEW_CACHE * 2):
        kcuda._dev(FakeCupyArray(0x1000 * (i + 1)))
        kcuda._dev(arena)  # used every step: never dropped
    assert len([v for v in views if v[0] == 0x1]) == 1


def test_cuda_kernels_take_numpy_arrays_unchanged_in_the_simulator():
    a = np.zeros(3, np.float32)
    assert kcuda._dev(a) is a


def test_cuda_launches_are_counted_for_the_gpu_check():
    before = kcuda.LAUNCHES
    a = np.zeros(16, np.float32)
    kcuda.triad(a, a.copy(), a.copy(), 2.0)
    assert kcuda.LAUNCHES == before + 1

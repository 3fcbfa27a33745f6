"""The one place that knows NumPy (CPU) from CuPy (NVIDIA GPU).

A :class:`Backend` is an array namespace (``xp``), its kernel module and the host/device
transfers. Models and layers are built for one and use ``backend.xp`` and
``backend.kernels``, so they are written once; code that holds only arrays (losses,
gradient checks, the book's ``update(params, grads)``) finds theirs with :func:`backend_of`
or ``accelnet.xp.array_namespace``. CPU process tuning lives in ``cpu_runtime``.
"""

from __future__ import annotations

import importlib
import os
import platform
import sys
import time
import tracemalloc
from dataclasses import dataclass
from types import ModuleType

import numpy as np

from . import cpu_runtime
from .xp import array_namespace

__all__ = [
    "Backend",
    "BackendUnavailable",
    "DTYPES",
    "array_namespace",
    "as_dtype",
    "backend_of",
    "get_backend",
    "gpu_status",
    "host_rng",
]

GPU_INSTALL_HINT = "pip install 'accelnet[gpu-cu12]' (or [gpu-cu13] for a CUDA 13 driver)"

DTYPES = ("float32", "float64")


class BackendUnavailable(RuntimeError):
    """The requested device cannot be used on this machine."""


def as_dtype(dtype) -> np.dtype:
    """Validate a model dtype: float32 (default) or float64 (gradient checks)."""
    try:
        dt = np.dtype(dtype)
    except TypeError as exc:
        raise ValueError(f"dtype must be one of {DTYPES}, got {dtype!r}") from exc
    if dt.name not in DTYPES:
        raise ValueError(f"dtype must be one of {DTYPES}, got {dt.name!r}")
    return dt


def host_rng(seed: int | None) -> np.random.Generator:
    """The seeded host RNG: weights and dropout masks are drawn here, then moved.

    CPU and GPU random streams differ, so drawing on the host is what makes a
    CPU run and a GPU run the same computation.
    """
    return np.random.Generator(np.random.PCG64(seed))


@dataclass(frozen=True)
class Backend:
    """An array namespace (``xp``), its kernels, and host/device transfers."""

    name: str
    xp: ModuleType
    kernels: ModuleType

    def to_device(self, a, dtype=None):
        """Return ``a`` as an ``xp`` array (no copy when it already is one of ``dtype``)."""
        if self.name == "cpu":
            if hasattr(a, "get") and not isinstance(a, np.ndarray):  # a CuPy array
                a = a.get()
            return np.asarray(a, dtype=dtype)
        return self.xp.asarray(a, dtype=dtype)

    def to_numpy(self, a) -> np.ndarray:
        """Return ``a`` as a host NumPy array."""
        if isinstance(a, np.ndarray):
            return a
        if hasattr(a, "get"):
            return a.get()
        return np.asarray(a)

    def synchronize(self) -> None:
        """Wait for queued device work (a no-op on CPU); needed before reading a clock."""
        if self.name == "gpu":
            self.xp.cuda.get_current_stream().synchronize()

    def time_call(self, fn) -> float:
        """Seconds one call of ``fn`` takes on this device: CUDA events around it on GPU (device
        time, synchronized), the host clock on CPU."""
        if self.name == "gpu":
            start, end = self.xp.cuda.Event(), self.xp.cuda.Event()
            start.record()
            fn()
            end.record()
            end.synchronize()
            return self.xp.cuda.get_elapsed_time(start, end) / 1e3
        t0 = time.perf_counter()
        fn()
        return time.perf_counter() - t0

    def peak_bytes(self, fn) -> int:
        """Peak bytes ``fn()`` allocates on this device beyond what was allocated before it:
        NumPy's allocations as tracemalloc sees them on CPU, CuPy pool blocks on GPU."""
        if self.name == "gpu":
            hook = _peak_hook(self.xp)
            with hook:
                fn()
            return hook.peak
        tracing = tracemalloc.is_tracing()
        if not tracing:
            tracemalloc.start()
        try:
            tracemalloc.reset_peak()
            base = tracemalloc.get_traced_memory()[0]
            fn()
            return max(0, tracemalloc.get_traced_memory()[1] - base)
        finally:
            if not tracing:
                tracemalloc.stop()

    def available_bytes(self) -> int | None:
        """Bytes this device can still allocate (host: MemAvailable; GPU: free plus CuPy's pooled
        free blocks); None where unknown."""
        if self.name == "gpu":
            return int(self.xp.cuda.runtime.memGetInfo()[0] + self.xp.get_default_memory_pool().free_bytes())
        try:
            with open("/proc/meminfo") as f:
                for line in f:
                    if line.startswith("MemAvailable:"):
                        return int(line.split()[1]) * 1024
        except OSError:
            pass
        try:
            return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (ValueError, OSError, AttributeError):
            return None

    def describe(self) -> dict[str, str]:
        """What this backend runs on, for ``accelnet info``: the device, and on the CPU Numba's
        threading layer and the runtime settings (``cpu_runtime``)."""
        if self.name == "gpu":
            dev = self.xp.cuda.Device()
            props = self.xp.cuda.runtime.getDeviceProperties(dev.id)
            name = props["name"].decode() if isinstance(props["name"], bytes) else props["name"]
            free, total = dev.mem_info
            return {"gpu": f"{name} (device {dev.id}, compute capability {dev.compute_capability}, "
                           f"{total / 2**30:.0f} GiB, {free / 2**30:.0f} GiB free)"}
        import numba

        try:
            threading = f"{numba.threading_layer()} ({numba.get_num_threads()} threads)"
        except ValueError as exc:  # no parallel kernel has run yet
            threading = f"unknown ({exc})"
        return {"cpu": f"{platform.machine()}, {os.cpu_count()} cores", "threading": threading,
                "cpu settings": cpu_runtime.settings()}

    def compile_notice(self, optimizer=None, convolutions: bool = False) -> str | None:
        """The line to show before a run compiles kernels that Numba's on-disk cache does not yet
        hold for this machine (a first run, or the first after an upgrade): the optimizer's update
        and, with ``convolutions``, the convolution kernels (the slow ones to compile). None when
        they are cached."""
        k = self.kernels
        probes = []
        if optimizer is not None:
            probes.append(getattr(k, "_UPDATES", {}).get(optimizer.rule))
        if convolutions:
            conv = getattr(k, "cpu_conv", None)
            probes += list(vars(conv).values()) if conv else [getattr(k, "_im2col", None), getattr(k, "_col2im", None)]
        if any(_cached(p) is False for p in probes):
            what = "GPU" if self.name == "gpu" else "CPU"
            return (f"compiling accelnet's kernels for this {what} (the first run only: about "
                    f"{'10-40 s' if convolutions else '2-10 s'}; later runs load them from Numba's cache)")
        return None

    def is_array(self, a) -> bool:
        """Whether ``a`` lives in this backend's memory."""
        return isinstance(a, self.xp.ndarray)

    def __repr__(self) -> str:
        return f"Backend({self.name!r})"


def _cached(kernel) -> bool | None:
    """Whether Numba's on-disk cache holds machine code of ``kernel`` (a dispatcher, or a parallel
    and serial pair) for this machine; None for anything that is not a cached dispatcher, or when
    the cache cannot be read (its index is a Numba internal: then nothing is claimed)."""
    found = None
    for d in (getattr(kernel, "parallel", None), getattr(kernel, "serial", None), kernel):
        cache = getattr(d, "_cache", None)
        if not hasattr(cache, "_cache_file"):
            continue
        try:
            magic = d.targetctx.codegen().magic_tuple()
            index = cache._cache_file._load_index()  # {} when the source changed since it was written
        except Exception:
            return None
        if any(isinstance(key, tuple) and len(key) > 1 and key[1] == magic for key in index):
            return True
        found = False
    return found


def _peak_hook(cupy):
    """A CuPy memory hook that follows the bytes taken from the pool and keeps their peak."""

    class PeakHook(cupy.cuda.MemoryHook):
        name = "accelnet_peak_bytes"

        def __init__(self):
            self.now = self.peak = 0

        def malloc_postprocess(self, **kw):
            self.now += kw["mem_size"]
            self.peak = max(self.peak, self.now)

        def free_postprocess(self, **kw):
            self.now -= kw["mem_size"]

    return PeakHook()


_CACHE: dict[str, Backend] = {}


def _cpu() -> Backend:
    from accelnet.kernels import cpu

    cpu_runtime.start(cpu.start_thread_pool)
    return Backend("cpu", np, cpu)


def _probe_cupy_kernel(cupy):
    if float((cupy.arange(4, dtype=cupy.float32) * 2).sum()) != 12.0:
        raise RuntimeError("wrong result")


def _probe_cublas(cupy):
    a = cupy.ones((2, 2), dtype=cupy.float32)
    if float((a @ a).sum()) != 8.0:
        raise RuntimeError("wrong result")


def _probe_nvrtc(cupy):
    double = cupy.ElementwiseKernel("float32 x", "float32 y", "y = x + x", "accelnet_readiness_double")
    if float(double(cupy.ones(3, dtype=cupy.float32)).sum()) != 6.0:
        raise RuntimeError("wrong result")


def _probe_numba_cuda(cupy):
    import numba.cuda

    if "numba_cuda" not in (numba.cuda.__file__ or ""):
        raise ImportError("numba.cuda is Numba's built-in CUDA target, not the numba-cuda package")


def _probe_numba_launch(cupy):
    from accelnet.kernels import cuda as kernels

    a, b = cupy.zeros(300, dtype=cupy.float32), cupy.ones(300, dtype=cupy.float32)
    kernels.triad(a, b, b, 2.0)  # on CuPy's current stream
    if float(a.sum()) != 900.0:
        raise RuntimeError("wrong result")


# (what is checked, the probe, what to install when it fails), in the order a step needs them
GPU_PROBES = (
    ("CuPy cannot run a kernel on the device", _probe_cupy_kernel, "a CuPy matching the driver's CUDA major: "
     "pip install 'accelnet[gpu-cu12]' or 'accelnet[gpu-cu13]'"),
    ("cuBLAS (matrix products) is missing", _probe_cublas, "CuPy's CUDA libraries: pip install 'accelnet[gpu-cu12]' "
     "(cupy-cuda12x[ctk]) or a CUDA toolkit"),
    ("NVRTC (CuPy's kernel compiler) is missing", _probe_nvrtc, "CuPy's CUDA libraries: pip install "
     "'accelnet[gpu-cu12]' (cupy-cuda12x[ctk]) or a CUDA toolkit"),
    ("numba-cuda is not installed", _probe_numba_cuda, "pip install 'numba-cuda[cu12]' (or [cu13])"),
    ("numba.cuda cannot compile or launch a kernel (NVVM or the driver)", _probe_numba_launch,
     "numba-cuda with NVVM: pip install 'numba-cuda[cu12]' (or [cu13])"),
)

_GPU_STATUS: list = []


def gpu_status(refresh: bool = False) -> tuple[bool, str]:
    """(usable, reason): whether a training step can run on the GPU, found by launching real work
    once per process: CuPy on a device, cuBLAS, NVRTC, numba-cuda's kernels on CuPy's stream. The
    reason names the first missing piece and what installs it."""
    if _GPU_STATUS and not refresh:
        return _GPU_STATUS[0]
    _GPU_STATUS[:] = [_gpu_status()]
    return _GPU_STATUS[0]


def _gpu_status() -> tuple[bool, str]:
    try:
        import cupy
    except Exception as exc:  # ImportError, or a CUDA library that fails to load
        return False, (f"CuPy is not installed or failed to import ({exc.__class__.__name__}: {exc}); "
                       f"install the GPU extra: {GPU_INSTALL_HINT}")
    try:
        count = cupy.cuda.runtime.getDeviceCount()
    except Exception as exc:
        return False, (f"CuPy found no usable CUDA device ({exc.__class__.__name__}: {exc}); check the driver "
                       f"with nvidia-smi: its CUDA version must be at least the major of the installed CuPy")
    if count < 1:
        return False, "CuPy found no CUDA device (nvidia-smi lists the devices the driver sees)"
    for what, probe, install in GPU_PROBES:
        try:
            probe(cupy)
        except Exception as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            return False, f"{what} ({exc.__class__.__name__}: {first}); install {install}"
    return True, "ok"


def _gpu() -> Backend:
    ok, reason = gpu_status()
    if not ok:
        raise BackendUnavailable(
            f"backend 'gpu' is not available: {reason}"
        )
    import cupy

    kernels = importlib.import_module("accelnet.kernels.cuda")
    return Backend("gpu", cupy, kernels)


def get_backend(name: str | Backend = "cpu") -> Backend:
    """Return the backend for ``"cpu"``, ``"gpu"`` or ``"auto"`` (GPU if usable, else CPU).

    ``"gpu"`` without CuPy or without a device raises :class:`BackendUnavailable`
    naming the install command; ``"auto"`` falls back to CPU and says so on stderr.
    """
    if isinstance(name, Backend):
        return name
    if name not in ("cpu", "gpu", "auto"):
        raise ValueError(f"backend must be 'cpu', 'gpu' or 'auto' (the CLI's --device), got {name!r}")
    if name == "auto":
        ok, reason = gpu_status()
        if not ok:
            print(f"accelnet: backend 'auto' is using the CPU: {reason}", file=sys.stderr)
        name = "gpu" if ok else "cpu"
    if name not in _CACHE:
        _CACHE[name] = _cpu() if name == "cpu" else _gpu()
    return _CACHE[name]


def backend_of(a) -> Backend:
    """The backend whose memory holds array ``a``."""
    return get_backend("cpu" if array_namespace(a) is np else "gpu")

"""The one place that knows NumPy (CPU) from CuPy (NVIDIA GPU).

Everything else receives a :class:`Backend` and uses ``backend.xp`` as its array
namespace and ``backend.kernels`` for the Numba kernels, so layers and
optimizers are written once.
"""

from __future__ import annotations

import importlib
import os
import sys
import time
from dataclasses import dataclass
from types import ModuleType

import numpy as np

__all__ = [
    "Backend",
    "BackendUnavailable",
    "DTYPES",
    "array_namespace",
    "as_dtype",
    "backend_of",
    "get_backend",
    "gpu_status",
    "cpu_settings",
    "host_rng",
    "set_blas_threads",
]

GPU_INSTALL_HINT = "pip install 'accelnet[gpu]'  (CuPy for CUDA 12 and numba-cuda)"

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


def array_namespace(a) -> ModuleType:
    """The array module that owns ``a``: numpy, or cupy for a CuPy array (found without importing it)."""
    if isinstance(a, np.ndarray):
        return np
    mod = sys.modules.get(type(a).__module__.split(".")[0])
    return mod if mod is not None and hasattr(mod, "ndarray") and isinstance(a, mod.ndarray) else np


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

    def is_array(self, a) -> bool:
        """Whether ``a`` lives in this backend's memory."""
        return isinstance(a, self.xp.ndarray)

    def __repr__(self) -> str:
        return f"Backend({self.name!r})"


_CACHE: dict[str, Backend] = {}


def _start_numba_threads() -> None:
    """Start Numba's OpenMP thread pool with workers that spin only briefly after a kernel.

    libgomp's default spin (~300k iterations) and OpenBLAS's keep idle workers busy on
    the cores the next BLAS call or kernel needs; on 2 cores that made an optimizer
    step after a matrix product 20-40x slower. GOMP_SPINCOUNT=10000 keeps back-to-back
    kernel launches fast and was the best whole-step setting measured (see README).
    libgomp reads it once, when Numba loads it here, so the variable is set only around
    that load. A GOMP_SPINCOUNT or OMP_WAIT_POLICY the user set wins.
    """
    import numba

    user_set = "GOMP_SPINCOUNT" in os.environ or "OMP_WAIT_POLICY" in os.environ
    if not user_set:
        os.environ["GOMP_SPINCOUNT"] = "10000"
    try:
        numba.get_num_threads()  # launches the pool
    finally:
        if not user_set:
            del os.environ["GOMP_SPINCOUNT"]


class _OpenBLASThreads:
    """Sets how many threads NumPy's OpenBLAS uses for the next products, through its C API.

    Between two products its idle workers go to sleep (OPENBLAS_THREAD_TIMEOUT, see
    ``accelnet/__init__.py``), and waking one cost ~50 us per product here: more than a second
    thread saves on a small one (multi_layer_net's steps took 1.7 ms with two threads against
    0.8 ms with one). A no-op where NumPy's BLAS is not OpenBLAS or the library is not found.
    """

    _SYMBOLS = ("scipy_openblas_set_num_threads64_", "openblas_set_num_threads64_", "openblas_set_num_threads")

    def __init__(self):
        self._set = self._get = None
        self._current = None
        self.default = None

    def _resolve(self):
        import ctypes

        self._set = False
        try:
            with open("/proc/self/maps") as maps:  # Linux: the library NumPy loaded, wherever it lives
                paths = {line.split()[-1] for line in maps if "openblas" in line.lower() and "/" in line}
        except OSError:
            return
        for path in sorted(paths):
            try:
                lib = ctypes.CDLL(path)
            except OSError:
                continue
            for name in self._SYMBOLS:
                fn = getattr(lib, name, None)
                get = getattr(lib, name.replace("set_num", "get_num"), None)
                if fn is not None and get is not None:
                    get.restype = ctypes.c_int
                    self._set, self._get, self.default = fn, get, get()
                    self._current = self.default
                    return

    def threads(self) -> int | None:
        """OpenBLAS's current thread count (None where it was not found)."""
        if self._set is None:
            self._resolve()
        return self._get() if self._set else None

    def __call__(self, n: int | None) -> None:
        """Use ``n`` threads (None: OpenBLAS's default, its thread count at start-up)."""
        if self._set is None:
            self._resolve()
        if not self._set:
            return
        n = self.default if n is None else max(1, min(int(n), self.default))
        if n != self._current:
            self._set(n)
            self._current = n


set_blas_threads = _OpenBLASThreads()


# glibc mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
MALLOC_MMAP_THRESHOLD = 32 << 20  # glibc's maximum
MALLOC_TRIM_THRESHOLD = 256 << 20


def _keep_freed_memory() -> bool:
    """Have glibc keep freed activation-sized blocks for reuse instead of returning them to the OS.

    A training step allocates and frees the same few-MB arrays every step; by default glibc
    unmaps them and the next step takes fresh pages from the kernel, one page fault per 4 KB:
    a simple_convnet step took 18-20 ms that way against 12.4 ms with blocks up to 32 MB served
    from the heap and up to 256 MB of free heap kept (bench/profile_step.py). The cost is that
    memory, held by the process. Skipped where the user set MALLOC_MMAP_THRESHOLD_ or
    MALLOC_TRIM_THRESHOLD_, or ACCELNET_KEEP_FREED_MEMORY=0; a no-op without glibc.
    """
    if os.environ.get("ACCELNET_KEEP_FREED_MEMORY", "1") == "0" or any(
            k in os.environ for k in ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_")):
        return False
    try:
        import ctypes

        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    return bool(mallopt(_M_MMAP_THRESHOLD, MALLOC_MMAP_THRESHOLD)) and bool(
        mallopt(_M_TRIM_THRESHOLD, MALLOC_TRIM_THRESHOLD))


_MXCSR_FTZ, _MXCSR_DAZ = 0x8000, 0x0040  # flush-to-zero, denormals-are-zero


def _flush_denormals() -> bool:
    """Set flush-to-zero and denormals-are-zero in this thread's SSE control register (MXCSR).

    Late in training, confident samples' softmax gradients underflow to subnormal floats, which
    x86 handles in microcode at ~100x the cost, and they flow through the whole backward pass:
    deep_convnet's backward took 2.3 s instead of 46 ms on such gradients, and epochs slowed
    from 44 s to 75 s over a 20-epoch run. TensorFlow and XLA set the same bits on the CPU.
    Threads started afterwards inherit them, which is why this runs before Numba's pool starts.
    x86-64 Linux (glibc) only; ACCELNET_FLUSH_DENORMALS=0 leaves IEEE gradual underflow on.
    """
    if os.environ.get("ACCELNET_FLUSH_DENORMALS", "1") == "0":
        return False
    import platform

    if not sys.platform.startswith("linux") or platform.machine() not in ("x86_64", "AMD64"):
        return False
    try:
        import ctypes

        libc = ctypes.CDLL(None)
        env = (ctypes.c_uint8 * 32)()  # glibc's x86-64 fenv_t: 28 bytes of x87 state, then MXCSR
        if libc.fegetenv(env) != 0:
            return False
        mxcsr = int.from_bytes(bytes(env[28:32]), "little") | _MXCSR_FTZ | _MXCSR_DAZ
        env[28:32] = mxcsr.to_bytes(4, "little")
        return libc.fesetenv(env) == 0
    except (OSError, AttributeError):
        return False


_CPU_SETTINGS: dict = {}


def cpu_settings() -> str:
    """What the CPU backend set up for speed, in one line (``accelnet info`` prints it)."""
    if not _CPU_SETTINGS:
        return "CPU backend not started"
    set_blas_threads.threads()  # finds OpenBLAS, if it has not been yet
    blas = set_blas_threads.default
    on = lambda flag: "on" if flag else "off"  # noqa: E731
    return (f"flush-to-zero {on(_CPU_SETTINGS['ftz'])}, freed memory kept {on(_CPU_SETTINGS['keep_memory'])}, "
            f"OpenBLAS threads {blas if blas else 'unknown'} (1 for small products)")


def _cpu() -> Backend:
    from accelnet.kernels import cpu

    _CPU_SETTINGS["ftz"] = _flush_denormals()  # first: Numba's workers inherit it when their pool starts
    _start_numba_threads()
    _CPU_SETTINGS["keep_memory"] = _keep_freed_memory()
    return Backend("cpu", np, cpu)


def gpu_status() -> tuple[bool, str]:
    """(usable, reason): whether CuPy imports and sees an NVIDIA device."""
    try:
        import cupy
    except Exception as exc:  # ImportError, or a CUDA library that fails to load
        return False, f"CuPy is not installed or failed to import ({exc.__class__.__name__}: {exc})"
    try:
        count = cupy.cuda.runtime.getDeviceCount()
    except Exception as exc:
        return False, f"CuPy found no usable CUDA device ({exc.__class__.__name__}: {exc})"
    if count < 1:
        return False, "CuPy found no CUDA device"
    return True, "ok"


def _gpu() -> Backend:
    ok, reason = gpu_status()
    if not ok:
        raise BackendUnavailable(
            f"device 'gpu' is not available: {reason}. Install the GPU extra with: {GPU_INSTALL_HINT}"
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
        raise ValueError(f"device must be 'cpu', 'gpu' or 'auto', got {name!r}")
    if name == "auto":
        ok, reason = gpu_status()
        if not ok:
            print(f"accelnet: device 'auto' is using the CPU: {reason}", file=sys.stderr)
        name = "gpu" if ok else "cpu"
    if name not in _CACHE:
        _CACHE[name] = _cpu() if name == "cpu" else _gpu()
    return _CACHE[name]


def backend_of(a) -> Backend:
    """The backend whose memory holds array ``a``."""
    return get_backend("cpu" if array_namespace(a) is np else "gpu")

"""CPU runtime tuning: every setting accelnet makes beyond its own arrays, and how to opt out.

Each was measured inside whole training steps on 2 cores (README, "Thread pools"):

* ``OPENBLAS_THREAD_TIMEOUT=4`` in the environment, only when accelnet is imported before
  NumPy (NumPy reads it when it loads OpenBLAS): idle OpenBLAS workers sleep instead of
  spinning on the cores the next Numba kernel needs. A value you set wins.
* Under ``mpiexec`` with several ranks on a node, each rank's share of the cores as
  ``NUMBA_NUM_THREADS``, ``OPENBLAS_NUM_THREADS`` and ``OMP_NUM_THREADS`` (again only when
  accelnet is imported before NumPy): ranks that each start a thread per core oversubscribe
  the node. Any of these you set wins, and then accelnet sets none of them.
* ``GOMP_SPINCOUNT=10000`` while Numba's OpenMP pool starts (then removed again): its workers
  spin only briefly after a kernel. A ``GOMP_SPINCOUNT`` or ``OMP_WAIT_POLICY`` you set wins.
* OpenBLAS's thread count, through its C API: one thread for small products
  (``kernels/cpu.py`` ``matmul``), its start-up count for the rest.
* glibc ``mallopt``: freed blocks up to 32 MB stay in the heap for the next step's
  activations. Opt out: ``ACCELNET_KEEP_FREED_MEMORY=0`` or your own ``MALLOC_*_`` variables.
* Flush-to-zero and denormals-are-zero (the x86-64 SSE control register, MXCSR): set for good
  in Numba's worker threads, which accelnet starts, and in the calling thread only for the
  duration of an accelnet call (:class:`denormals_flushed`, switched by ``kernels/mxcsr.py``):
  the caller's own NumPy keeps IEEE gradual underflow. x86-64 only. Opt out:
  ``ACCELNET_FLUSH_DENORMALS=0``. (:func:`flush_denormals_in_this_thread` sets them in a
  thread for good, for a program that owns its process.)

A leaf module (no accelnet imports at import time), so the kernels may use it.
"""

from __future__ import annotations

import ctypes
import functools
import os
import platform
import sys
import threading

from .launcher import launched_world

__all__ = ["denormals_flushed", "flushes_denormals", "flush_denormals_in_this_thread", "set_blas_threads",
           "keep_freed_memory", "preset_openblas_timeout", "preset_threads_per_rank", "start", "settings"]


def preset_openblas_timeout() -> None:
    """Default ``OPENBLAS_THREAD_TIMEOUT`` to 4 if NumPy has not loaded OpenBLAS yet."""
    if "numpy" not in sys.modules:
        os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "4")


THREAD_VARIABLES = ("NUMBA_NUM_THREADS", "OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS")


def preset_threads_per_rank() -> int | None:
    """Set each rank's threads to its share of this node's cores when ``mpiexec`` started several
    ranks here and NumPy has not loaded yet; returns that count (None when nothing was set)."""
    local = launched_world()[3]
    if local <= 1 or "numpy" in sys.modules or any(v in os.environ for v in THREAD_VARIABLES):
        return None
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    n = max(1, cores // local)
    for v in THREAD_VARIABLES:
        os.environ[v] = str(n)
    _SETTINGS["threads_per_rank"] = (n, local)
    return n


# -- flush-to-zero -------------------------------------------------------------------------------
# Late in training, confident samples' softmax gradients underflow to subnormal floats, which x86
# handles in microcode at ~100x the cost, and they flow through the whole backward pass.

_FTZ_DAZ = 0x8000 | 0x0040  # MXCSR bits: flush-to-zero, denormals-are-zero
_ENABLED = platform.machine().lower() in ("x86_64", "amd64") and os.environ.get("ACCELNET_FLUSH_DENORMALS",
                                                                                  "1") != "0"
_swap = None  # kernels/mxcsr.py's swap, imported on first use (Numba loads NumPy: not at import time)


class _ThreadState(threading.local):
    depth = 0  # nesting of denormals_flushed scopes in this thread
    restore = None  # the caller's FTZ/DAZ bits, when the outermost scope changed them


_THREAD = _ThreadState()


def _swap_bits(bits: int) -> int | None:
    """Set this thread's FTZ/DAZ bits to ``bits``; returns the previous bits, None if they were
    already so (or where accelnet does not set them)."""
    global _swap
    if not _ENABLED:
        return None
    if _swap is None:
        from accelnet.kernels.mxcsr import swap as _swap
    old = int(_swap(_FTZ_DAZ, bits)) & _FTZ_DAZ
    return None if old == bits else old


class denormals_flushed:
    """Context manager: subnormal floats flush to zero in this thread inside it, and the thread's
    previous setting comes back on exit. Nested scopes cost one counter."""

    __slots__ = ()

    def __enter__(self):
        t = _THREAD
        if t.depth == 0:
            t.restore = _swap_bits(_FTZ_DAZ)
        t.depth += 1
        return self

    def __exit__(self, *exc):
        t = _THREAD
        t.depth -= 1
        if t.depth == 0 and t.restore is not None:
            _swap_bits(t.restore)
            t.restore = None
        return False


FLUSHED = denormals_flushed()


def flushes_denormals(fn):
    """Decorator: ``fn`` runs inside :class:`denormals_flushed`."""

    @functools.wraps(fn)
    def flushed(*args, **kwargs):
        with FLUSHED:
            return fn(*args, **kwargs)

    return flushed


def flush_denormals_in_this_thread(on: bool = True) -> bool:
    """Flush subnormals in the calling thread for good (``on=False``: IEEE gradual underflow
    again); returns whether flushing is now on."""
    _swap_bits(_FTZ_DAZ if on else 0)
    return flush_to_zero_available() and _current_bits() == _FTZ_DAZ


def flush_to_zero_available() -> bool:
    """Whether accelnet sets flush-to-zero here (an x86-64 CPU, not opted out)."""
    return _ENABLED


def _current_bits() -> int:
    """This thread's FTZ/DAZ bits (read by setting them to 0 and back)."""
    old = _swap_bits(0)
    if old is None:
        return 0
    _swap_bits(old)
    return old


# -- OpenBLAS threads ------------------------------------------------------------------------------


class _OpenBLASThreads:
    """Sets how many threads NumPy's OpenBLAS uses for the next products, through its C API.

    Waking a sleeping worker costs more than a second thread saves on a small product. A no-op
    where NumPy's BLAS is not OpenBLAS or the library is not found.
    """

    _SYMBOLS = ("scipy_openblas_set_num_threads64_", "openblas_set_num_threads64_", "openblas_set_num_threads")

    def __init__(self):
        self._set = self._get = self._core = None
        self._current = None
        self._asked = self  # the last n asked for (nothing yet): a repeat returns at once
        self.default = None

    def _resolve(self):
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
                    self._core = getattr(lib, name.replace("set_num_threads", "get_corename"), None)
                    if self._core is not None:
                        self._core.restype = ctypes.c_char_p
                    self._current = self.default
                    return

    def threads(self) -> int | None:
        """OpenBLAS's current thread count (None where it was not found)."""
        if self._set is None:
            self._resolve()
        return self._get() if self._set else None

    def corename(self) -> str | None:
        """The kernels OpenBLAS picked for this CPU ("Haswell", "SkylakeX", "Zen"; None where unknown)."""
        if self._set is None:
            self._resolve()
        return self._core().decode() if self._core else None

    def __call__(self, n: int | None) -> None:
        """Use ``n`` threads (None: OpenBLAS's default, its thread count at start-up)."""
        if n is self._asked:  # None or a small int, as every product asks: a microsecond at batch 1
            return
        if self._set is None:
            self._resolve()
        if not self._set:
            return
        self._asked = n
        n = self.default if n is None else max(1, min(int(n), self.default))
        if n != self._current:
            self._set(n)
            self._current = n


set_blas_threads = _OpenBLASThreads()


# -- glibc heap ---------------------------------------------------------------------------------------

_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc mallopt parameters (malloc.h)
MALLOC_MMAP_THRESHOLD = 32 << 20  # glibc's maximum
MALLOC_TRIM_THRESHOLD = 256 << 20


def keep_freed_memory() -> bool:
    """Have glibc keep freed activation-sized blocks for reuse instead of returning them to the OS.

    A step allocates and frees the same few-MB arrays every step; by default glibc unmaps them
    and the next step page-faults fresh ones in. The cost: that memory stays with the process.
    """
    if os.environ.get("ACCELNET_KEEP_FREED_MEMORY", "1") == "0" or any(
            k in os.environ for k in ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_")):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    return bool(mallopt(_M_MMAP_THRESHOLD, MALLOC_MMAP_THRESHOLD)) and bool(
        mallopt(_M_TRIM_THRESHOLD, MALLOC_TRIM_THRESHOLD))


# -- start-up ---------------------------------------------------------------------------------------

_SETTINGS: dict = {}


def start(run_parallel_kernel) -> dict:
    """Start Numba's thread pool (by ``run_parallel_kernel()``) with brief spinning and with
    subnormals flushed in its workers, which inherit the setting from this thread when they are
    created; this thread's own setting is restored afterwards. Then the heap setting."""
    import numba

    user_set = "GOMP_SPINCOUNT" in os.environ or "OMP_WAIT_POLICY" in os.environ
    if not user_set:
        os.environ["GOMP_SPINCOUNT"] = "10000"  # libgomp reads it once, when Numba loads it here
    try:
        with FLUSHED:
            numba.get_num_threads()  # loads the threading layer
            run_parallel_kernel()  # creates the workers
    finally:
        if not user_set:
            del os.environ["GOMP_SPINCOUNT"]
    _SETTINGS.update(ftz=flush_to_zero_available(), keep_memory=keep_freed_memory(),
                     numba_threads=numba.get_num_threads())
    return dict(_SETTINGS)


def settings() -> str:
    """What the CPU runtime set up, in one line (``accelnet info`` prints it)."""
    if not _SETTINGS:
        return "CPU backend not started"
    set_blas_threads.threads()  # finds OpenBLAS, if it has not been yet
    blas = set_blas_threads.default
    on = lambda flag: "on" if flag else "off"  # noqa: E731
    per_rank = _SETTINGS.get("threads_per_rank")
    shared = f" (this node's cores shared by {per_rank[1]} ranks)" if per_rank else ""
    return (f"flush-to-zero {on(_SETTINGS['ftz'])} (in accelnet's calls and Numba's workers), "
            f"freed memory kept {on(_SETTINGS['keep_memory'])}, Numba threads {_SETTINGS['numba_threads']}, "
            f"OpenBLAS threads {blas if blas else 'unknown'} (1 for small products), "
            f"OpenBLAS kernels {set_blas_threads.corename() or 'unknown'}{shared}")

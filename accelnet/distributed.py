"""Data-parallel training: the world under ``mpiexec``, and the communicator a Trainer reduces with.

The engines are proven ones: MPI through mpi4py on the CPU; NCCL through CuPy on NVIDIA GPUs
(one GPU per rank, picked by the node-local rank), bootstrapped over MPI (rank 0's NCCL unique
id is broadcast). A step's gradients are one flat buffer (``params.py``), so a step needs one
all-reduce. Host-side agreements (configs, checksums, evaluation counts, errors) always go
over MPI.

Without a launcher (or under ``mpiexec -n 1``) :func:`init` returns :data:`LOCAL`, the
single-process communicator, and nothing distributed is imported.
"""

from __future__ import annotations

import importlib.util
import sys
import warnings
import zlib

import numpy as np

from .launcher import launched_world

__all__ = ["Communicator", "MPICommunicator", "NCCLCommunicator", "LOCAL", "init", "world", "launched_world",
           "DistributedError", "DistributedUnavailable", "ReplicaMismatch", "MPI_HINT", "NCCL_HINT",
           "checksum", "on_all_ranks", "raised_on_all_ranks"]

MPI_HINT = "pip install 'accelnet[mpi]' (mpi4py and the mpich wheel; with a system MPI, pip install mpi4py)"
NCCL_HINT = "pip install 'accelnet[nccl-cu12]' (or [nccl-cu13] for a CUDA 13 driver)"


class DistributedError(RuntimeError):
    """The ranks of a data-parallel run disagree, or the run cannot be set up."""


class DistributedUnavailable(DistributedError):
    """A data-parallel engine (mpi4py, NCCL) or the GPUs it needs are missing."""


class ReplicaMismatch(DistributedError):
    """The ranks' parameters or optimizer state differ: the replicas drifted apart."""


def on_all_ranks(exc: BaseException) -> BaseException:
    """Mark ``exc`` as raised by every rank at the same point (so no rank waits for another and
    the job can end normally, rank 0 reporting it); returns ``exc``."""
    exc.accelnet_all_ranks = True
    return exc


def raised_on_all_ranks(exc: BaseException) -> bool:
    return bool(getattr(exc, "accelnet_all_ranks", False))


def checksum(arrays) -> int:
    """CRC-32 of the arrays' bytes (host or device), in order: equal replicas give equal
    checksums, bit for bit."""
    from .backend import get_backend

    to_numpy = get_backend("cpu").to_numpy  # any array (NumPy or CuPy) as a host array
    crc = 0
    for a in arrays:
        crc = zlib.crc32(np.ascontiguousarray(to_numpy(a)).view(np.uint8), crc)
    return crc


class Communicator:
    """The single-process world (size 1): every collective is the identity. The base of the
    multi-process communicators, which override the collectives.

    ``allreduce(a)`` sums a device array over the ranks in place; the ``*_host`` and ``*_obj``
    collectives move small host values (counts, losses, checksums, configs, errors).
    """

    engine = "local"
    device = None  # the backend whose arrays ``allreduce`` takes (None: any)
    rank, size, local_rank, local_size = 0, 1, 0, 1

    def allreduce(self, a):
        """Sum ``a`` over the ranks, in place; returns ``a``."""
        return a

    def broadcast(self, a, root: int = 0):
        """Overwrite ``a`` with ``root``'s ``a``, in place; returns ``a``."""
        return a

    def allreduce_host(self, a: np.ndarray) -> np.ndarray:
        """Sum a host array over the ranks (a new array)."""
        return np.array(a)

    def bcast_obj(self, obj, root: int = 0):
        return obj

    def allgather_obj(self, obj) -> list:
        return [obj]

    def abort(self, code: int = 1) -> None:
        """End every rank of the job now (a rank failing alone must not leave the others waiting)."""
        sys.exit(code)

    def agree(self, error: BaseException | None) -> None:
        """Collective: raise on every rank if any rank passes an error (the lowest failing rank's,
        its type kept where it can be rebuilt from the message); return on every rank otherwise."""
        errors = self.allgather_obj(None if error is None else (type(error), str(error)))
        failed = [(r, e) for r, e in enumerate(errors) if e is not None]
        if not failed:
            return
        if error is not None and failed[0][0] == self.rank:
            raise on_all_ranks(error)
        r, (cls, msg) = failed[0]
        prefix = f"rank {r}: " if self.size > 1 else ""
        try:
            exc = cls(prefix + msg)
        except Exception:  # an exception type that cannot be rebuilt from its message
            exc = DistributedError(f"{prefix}{cls.__name__}: {msg}")
        raise on_all_ranks(exc)

    def collectively(self, fn):
        """Call ``fn()`` on every rank and return its result; an error it raises on any rank is
        raised on every rank."""
        result, error = None, None
        try:
            result = fn()
        except Exception as exc:  # every rank learns of it before raising
            error = exc
        self.agree(error)
        return result

    def on_root(self, fn, root: int = 0):
        """Call ``fn()`` on ``root`` alone and return its result on every rank; an error it raises
        is raised on every rank."""
        result, error = None, None
        if self.rank == root:
            try:
                result = fn()
            except Exception as exc:  # handed to the other ranks, then raised on all
                error = exc
        self.agree(error)
        return self.bcast_obj(result, root)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(engine={self.engine}, rank={self.rank}, size={self.size})"


LOCAL = Communicator()


class MPICommunicator(Communicator):
    """All collectives over MPI (mpi4py); ``allreduce`` takes host (NumPy) arrays."""

    engine = "mpi"
    device = "cpu"

    def __init__(self, comm=None):
        from mpi4py import MPI

        self.MPI = MPI
        self.comm = comm if comm is not None else MPI.COMM_WORLD
        self.rank, self.size = self.comm.Get_rank(), self.comm.Get_size()
        node = self.comm.Split_type(MPI.COMM_TYPE_SHARED, key=self.rank)
        self.local_rank, self.local_size = node.Get_rank(), node.Get_size()
        node.Free()

    def allreduce(self, a):
        self.comm.Allreduce(self.MPI.IN_PLACE, a, op=self.MPI.SUM)
        return a

    def broadcast(self, a, root: int = 0):
        self.comm.Bcast(a, root=root)
        return a

    def allreduce_host(self, a: np.ndarray) -> np.ndarray:
        a = np.array(a)
        self.comm.Allreduce(self.MPI.IN_PLACE, a, op=self.MPI.SUM)
        return a

    def bcast_obj(self, obj, root: int = 0):
        return self.comm.bcast(obj, root=root)

    def allgather_obj(self, obj) -> list:
        return self.comm.allgather(obj)

    def abort(self, code: int = 1) -> None:
        sys.stdout.flush()
        sys.stderr.flush()
        self.comm.Abort(code)


class NCCLCommunicator(MPICommunicator):
    """Device collectives over NCCL (through CuPy) on CuPy's current stream; host collectives
    over MPI. Each rank uses the GPU numbered by its node-local rank."""

    engine = "nccl"
    device = "gpu"

    def __init__(self, comm=None, cupy=None, nccl=None):
        super().__init__(comm)
        if cupy is None:
            import cupy
        if nccl is None:
            from cupy.cuda import nccl
        self.cupy, self.nccl = cupy, nccl
        error = None
        try:  # every rank learns whether any node lacks GPUs, so none waits in NCCL's set-up
            self.device_id = gpu_for_rank(self.local_rank, self.local_size, cupy.cuda.runtime.getDeviceCount())
            cupy.cuda.Device(self.device_id).use()
        except DistributedUnavailable as exc:
            error = exc
        except Exception as exc:  # no driver, no device: CuPy's own error, in one line
            error = DistributedUnavailable(f"no usable GPU ({type(exc).__name__}: {exc})")
        self.agree(error)
        uid = self.comm.bcast(nccl.get_unique_id() if self.rank == 0 else None, root=0)
        self.nccl_comm = nccl.NcclCommunicator(self.size, uid, self.rank)
        self._types = {np.dtype(np.float32): nccl.NCCL_FLOAT32, np.dtype(np.float64): nccl.NCCL_FLOAT64,
                       np.dtype(np.int64): nccl.NCCL_INT64}

    def _nccl_type(self, a):
        if not a.flags.c_contiguous or a.dtype not in self._types:
            raise ValueError(f"NCCL collectives take C-contiguous arrays of {sorted(t.name for t in self._types)}, "
                             f"got {a.dtype} (contiguous: {a.flags.c_contiguous})")
        return self._types[a.dtype]

    def allreduce(self, a):
        stream = self.cupy.cuda.get_current_stream().ptr
        self.nccl_comm.allReduce(a.data.ptr, a.data.ptr, a.size, self._nccl_type(a), self.nccl.NCCL_SUM, stream)
        return a

    def broadcast(self, a, root: int = 0):
        stream = self.cupy.cuda.get_current_stream().ptr
        self.nccl_comm.bcast(a.data.ptr, a.size, self._nccl_type(a), root, stream)
        return a

    def abort(self, code: int = 1) -> None:
        try:
            self.nccl_comm.abort()
        finally:
            super().abort(code)


def gpu_for_rank(local_rank: int, local_size: int, gpus: int) -> int:
    """The GPU a rank uses: its node-local rank; more ranks than GPUs on a node is an error (two
    ranks on one GPU would contend for it and NCCL refuses shared devices)."""
    if local_size > gpus:
        raise DistributedUnavailable(f"{local_size} ranks on this node but {gpus} GPU{'s' if gpus != 1 else ''}: "
                                     f"start at most {gpus} rank{'s' if gpus != 1 else ''} per node with --device gpu")
    return local_rank


def _abort_unless_all_ranks(comm: Communicator):
    """sys.excepthook for a multi-rank job: an exception raised on one rank alone ends the whole
    job (MPI_Abort) instead of leaving the other ranks waiting in their next collective."""
    previous = sys.excepthook

    def hook(cls, exc, tb):
        if raised_on_all_ranks(exc):
            if comm.rank == 0:
                previous(cls, exc, tb)
            return
        sys.stderr.write(f"rank {comm.rank} of {comm.size} failed alone; ending the job:\n")
        previous(cls, exc, tb)
        comm.abort(1)

    return hook


_WORLD: Communicator | None = None


def world() -> Communicator:
    """The communicator :func:`init` set up in this process (:data:`LOCAL` before it is called)."""
    return _WORLD or LOCAL


def init(device: str = "cpu") -> Communicator:
    """The communicator of this process's world: :data:`LOCAL` when not launched by ``mpiexec``
    with more than one rank, else MPI (``device="cpu"``) or NCCL over MPI (``device="gpu"``).

    Call it on every rank, once (later calls return the same communicator). It also installs a
    ``sys.excepthook`` that ends the whole job when one rank fails alone, as ``python -m mpi4py``
    does, so no rank is left waiting.
    """
    global _WORLD
    if device not in ("cpu", "gpu"):
        raise ValueError(f"init: device must be 'cpu' or 'gpu', got {device!r}")
    if _WORLD is not None:
        if _WORLD.size > 1 and _WORLD.device != device:
            raise DistributedError(f"init: this process's world is already set up for the {_WORLD.device}")
        return _WORLD
    size = launched_world()[1]
    if size == 1 and "mpi4py.MPI" in sys.modules:  # a launcher we do not know, but MPI is up
        size = sys.modules["mpi4py.MPI"].COMM_WORLD.Get_size()
    if size == 1:
        _WORLD = LOCAL
        return _WORLD
    if importlib.util.find_spec("mpi4py") is None:
        raise DistributedUnavailable(f"launched with {size} ranks, but mpi4py is not installed: {MPI_HINT}")
    if device == "gpu":
        try:
            with warnings.catch_warnings():  # CuPy warns when NCCL is missing; the error below says it
                warnings.simplefilter("ignore")
                from cupy.cuda import nccl
        except ImportError:
            raise DistributedUnavailable("--device gpu with several ranks needs CuPy: "
                                         "pip install 'accelnet[gpu-cu12]'") from None
        if not getattr(nccl, "available", True):
            raise DistributedUnavailable(f"--device gpu with several ranks needs NCCL, which CuPy could not load: "
                                         f"{NCCL_HINT}")
        comm = NCCLCommunicator()
    else:
        comm = MPICommunicator()
    sys.excepthook = _abort_unless_all_ranks(comm)
    _WORLD = comm
    return comm

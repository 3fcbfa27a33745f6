"""The MPI launcher's view of this process: rank, world size and node-local rank and size, read
from the environment ``mpiexec`` (MPICH's Hydra, Open MPI, PMIx) sets, so it is known before
NumPy or MPI load. A leaf module (imports nothing of accelnet's, nor NumPy)."""

from __future__ import annotations

import os

__all__ = ["launched_world"]

# (rank, size, node-local rank, node-local size) variables of each launcher.
_LAUNCHERS = (
    ("PMI_RANK", "PMI_SIZE", "MPI_LOCALRANKID", "MPI_LOCALNRANKS"),  # MPICH's Hydra (the mpich wheel)
    ("OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_LOCAL_RANK", "OMPI_COMM_WORLD_LOCAL_SIZE"),
    ("PMIX_RANK", "PMIX_SIZE", "PMIX_LOCAL_RANK", "PMIX_LOCAL_SIZE"),
)


def launched_world(environ=None) -> tuple[int, int, int, int]:
    """(rank, size, local rank, local size) as the MPI launcher set them; (0, 1, 0, 1) without one."""
    env = os.environ if environ is None else environ
    for rank, size, local_rank, local_size in _LAUNCHERS:
        if rank in env and size in env:
            try:
                r, s = int(env[rank]), int(env[size])
                return r, s, int(env.get(local_rank, r)), int(env.get(local_size, s))
            except ValueError:
                continue
    return 0, 1, 0, 1

"""Numba kernels for the loops NumPy cannot make fast: one signature per kernel in
``reference`` (plain xp, the oracle), ``cpu`` (@njit) and ``cuda`` (numba.cuda)."""

from . import numba_cache  # noqa: F401 - before any kernel is compiled or loaded from the cache

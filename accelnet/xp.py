"""The array namespace (``xp``) an array belongs to: NumPy, or CuPy for a CuPy array.

A leaf module, found without importing CuPy, so that code holding only arrays (losses, gradient
checks, the book's ``update(params, grads)``, the kernels) can use it without a Backend.
"""

from __future__ import annotations

import sys
from types import ModuleType

import numpy as np

__all__ = ["array_namespace"]


def array_namespace(a) -> ModuleType:
    """The array module that owns ``a``: numpy, or cupy for a CuPy array."""
    if isinstance(a, np.ndarray):
        return np
    mod = sys.modules.get(type(a).__module__.split(".")[0])
    return mod if mod is not None and hasattr(mod, "ndarray") and isinstance(a, mod.ndarray) else np

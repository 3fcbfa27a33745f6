"""Numba's on-disk cache keyed by every source file of this package, not only the kernel's own.

Numba checks a cached kernel against the file that defines it, but a kernel compiles in the
helpers it calls from other files (``cpu_conv``'s drivers inline ``cpu_winograd``'s transforms):
after an edit to a helper, the cached caller would load and run the old code. Here the stamp of
a kernel of this package is a hash of all of its ``*.py``, so any edit here recompiles them all.
Kernels built at a forced vector width (``ACCELNET_SIMD_BYTES``, see ``simd.py``) are cached in a
folder of their own: Numba keys a cached kernel by its signature and CPU, not by the width its
vectors were built at.
"""

from __future__ import annotations

import hashlib
import os

from numba.core import caching

_DIR = os.path.dirname(os.path.abspath(__file__))


def package_stamp() -> str:
    """The hash of every ``*.py`` of this package, names and contents."""
    h = hashlib.sha256()
    for name in sorted(os.listdir(_DIR)):
        if name.endswith(".py"):
            with open(os.path.join(_DIR, name), "rb") as f:
                h.update(name.encode() + b"\0" + f.read())
    return h.hexdigest()


_STAMP = package_stamp()
_WIDTH_DIR = f"simd{os.environ['ACCELNET_SIMD_BYTES']}" if os.environ.get("ACCELNET_SIMD_BYTES") else ""


class _PackageStamped:
    """A locator of Numba's for the functions defined in this package, stamped by all of it."""

    def get_source_stamp(self):
        return _STAMP

    def get_cache_path(self):
        path = super().get_cache_path()
        return os.path.join(path, _WIDTH_DIR) if _WIDTH_DIR else path

    @classmethod
    def from_function(cls, py_func, py_file):
        if os.path.dirname(os.path.abspath(py_file)) != _DIR:
            return None  # not ours: Numba's own locators
        return super().from_function(py_func, py_file)


def _install() -> bool:
    # Numba 0.59-0.6x name these classes with a leading underscore; later ones without.
    impl = getattr(caching, "CacheImpl", None) or getattr(caching, "_CacheImpl", None)
    bases = [getattr(caching, n, None) or getattr(caching, "_" + n, None)
             for n in ("UserProvidedCacheLocator", "InTreeCacheLocator", "UserWideCacheLocator")]
    if impl is None or None in bases or not isinstance(getattr(impl, "_locator_classes", None), list):
        return False
    ours = [type("Package" + b.__name__.lstrip("_"), (_PackageStamped, b), {}) for b in bases]
    impl._locator_classes[:0] = ours  # in Numba's own order: NUMBA_CACHE_DIR, __pycache__, the user's cache
    return True


INSTALLED = _install()

"""The ``accelnet`` command line."""

from __future__ import annotations

import argparse
import platform
import sys

__all__ = ["main"]


def _versions() -> list[tuple[str, str]]:
    import numba
    import numpy

    import accelnet

    rows = [("accelnet", accelnet.__version__), ("python", platform.python_version()),
            ("numpy", numpy.__version__), ("numba", numba.__version__)]
    for mod in ("cupy", "numba_cuda", "torch", "tqdm", "matplotlib"):
        try:
            m = __import__(mod)
            rows.append((mod, getattr(m, "__version__", "installed")))
        except Exception:
            rows.append((mod, "not installed"))
    return rows


def _threading_layer() -> str:
    """Numba's threading layer, known only after a parallel kernel has run: run a tiny one."""
    import numba
    import numpy as np

    from accelnet.kernels import cpu

    cpu.im2col(np.zeros((1, 1, 2, 2), np.float32), 1, 1)
    try:
        return f"{numba.threading_layer()} ({numba.get_num_threads()} threads)"
    except ValueError as exc:
        return f"unknown ({exc})"


def cmd_info(args) -> int:
    from accelnet.backend import gpu_status

    for name, version in _versions():
        print(f"{name:<12} {version}")
    print(f"{'cpu':<12} available")
    ok, reason = gpu_status()
    if ok:
        import cupy

        props = cupy.cuda.runtime.getDeviceProperties(0)
        name = props["name"].decode() if isinstance(props["name"], bytes) else props["name"]
        print(f"{'gpu':<12} available: {name}")
    else:
        print(f"{'gpu':<12} unavailable: {reason}")
    print(f"{'threading':<12} {_threading_layer()}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="accelnet", description="Train the book's networks on CPU or GPU.")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    info = sub.add_parser("info", help="versions, available backends, GPU name, Numba threading layer")
    info.set_defaults(func=cmd_info)
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())

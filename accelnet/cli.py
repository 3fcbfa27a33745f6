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


BENCH_GROUPS = ("optimizers", "im2col", "steps")


def _bench_optimizers(args, out):
    from accelnet import bench

    rows = []
    for n in args.sizes:
        tri = bench.measure(bench.triad(n, args.device), min_time=args.min_time)
        tri_in = bench.measure(bench.triad(n, args.device, inplace=True), min_time=args.min_time)
        for name in args.optimizers:
            t = {(layout, impl): bench.measure(bench.optimizer_update(name, n, layout, impl, backend=args.device),
                                               min_time=args.min_time)
                 for layout in ("flat", "tensors") for impl in ("fused", "reference")}
            fused = t["flat", "fused"]
            rows.append({
                "optimizer": name, "N": f"{n:.0e}",
                "fused ms": fused.median * 1e3, "GB/s": fused.gbps, "% triad": 100 * fused.gbps / tri.gbps,
                "% in-place triad": 100 * fused.gbps / tri_in.gbps,
                "ref ms": t["flat", "reference"].median * 1e3,
                "x ref": t["flat", "reference"].median / fused.median,
                "20 tensors fused ms": t["tensors", "fused"].median * 1e3,
                "20 tensors ref ms": t["tensors", "reference"].median * 1e3,
                "x ref 20 tensors": t["tensors", "reference"].median / fused.median,
            })
        rows.append({"optimizer": "triad", "N": f"{n:.0e}", "fused ms": tri.median * 1e3, "GB/s": tri.gbps,
                     "% triad": 100.0, "% in-place triad": 100 * tri.gbps / tri_in.gbps})
        rows.append({"optimizer": "in-place triad", "N": f"{n:.0e}", "fused ms": tri_in.median * 1e3,
                     "GB/s": tri_in.gbps, "% triad": 100 * tri_in.gbps / tri.gbps, "% in-place triad": 100.0})
    cols = ["optimizer", "N", "fused ms", "GB/s", "% triad", "% in-place triad", "ref ms", "x ref", "20 tensors fused ms",
            "20 tensors ref ms", "x ref 20 tensors"]
    print("Optimizer updates (fused: one flat buffer, one kernel; ref: the textbook xp formulas; "
          "x ref 20 tensors: fused flat vs the reference over 20 tensors; triad: STREAM a = b + s*c, "
          "in-place triad: a = a + s*c)", file=out)
    print(bench.format_table(rows, cols), file=out)


def _bench_im2col(args, out):
    from accelnet import bench

    rows = []
    for case, shape, k, stride, pad in bench.CONV_SHAPES:
        row = {"case": case, "input": "x".join(map(str, shape)), "kernel": f"{k}x{k} s{stride} p{pad}"}
        for kernel in ("im2col", "col2im"):
            make = getattr(bench, kernel)
            fused = bench.measure(make(case, "fused", args.device), min_time=args.min_time)
            ref = bench.measure(make(case, "reference", args.device), min_time=args.min_time)
            row |= {f"{kernel} ms": fused.median * 1e3, f"{kernel} GB/s": fused.gbps,
                    f"{kernel} x ref": ref.median / fused.median}
        rows.append(row)
    cols = ["case", "input", "kernel", "im2col ms", "im2col GB/s", "im2col x ref", "col2im ms", "col2im GB/s",
            "col2im x ref"]
    print("im2col / col2im (x ref: speed-up over the reference xp kernels)", file=out)
    print(bench.format_table(rows, cols), file=out)


def _bench_steps(args, out):
    from accelnet import bench
    from accelnet.models import PRESETS

    try:
        import torch  # noqa: F401

        peer = True
    except ImportError:
        peer = False
    rows = []
    for preset in PRESETS:
        for batch in args.batches:
            ours = bench.measure(bench.train_step(preset, batch, backend=args.device), min_time=args.min_time)
            row = {"model": preset, "batch": batch, "accelnet ms": ours.median * 1e3,
                   "samples/s": batch / ours.median}
            if peer and args.device == "cpu":
                theirs = bench.measure(bench.peer_train_step(preset, batch), min_time=args.min_time)
                row |= {"torch ms": theirs.median * 1e3, "accelnet / torch": ours.median / theirs.median}
            rows.append(row)
    cols = ["model", "batch", "accelnet ms", "samples/s"] + (["torch ms", "accelnet / torch"] if peer else [])
    note = "" if peer else " (PyTorch not installed: no peer column)"
    print(f"Training step: forward, backward, Adam ({args.device}){note}", file=out)
    print(bench.format_table(rows, cols), file=out)


def cmd_bench(args) -> int:
    from accelnet.backend import get_backend

    get_backend(args.device)  # fail early, with the install hint, on a missing GPU
    groups = args.only or list(BENCH_GROUPS)
    runners = {"optimizers": _bench_optimizers, "im2col": _bench_im2col, "steps": _bench_steps}
    for i, g in enumerate(groups):
        if i:
            print()
        runners[g](args, sys.stdout)
    return 0


def _csv(kind):
    def parse(text):
        try:
            return [kind(float(v)) if kind is int else kind(v) for v in text.split(",") if v]
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected comma-separated {kind.__name__}s, got {text!r}") from None
    return parse


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="accelnet", description="Train the book's networks on CPU or GPU.")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    info = sub.add_parser("info", help="versions, available backends, GPU name, Numba threading layer")
    info.set_defaults(func=cmd_info)

    from accelnet.optim import OPTIMIZERS

    b = sub.add_parser("bench", help="per-kernel and per-step throughput as tables (the bench/ suite's workloads)")
    b.add_argument("--device", choices=["cpu", "gpu"], default="cpu")
    b.add_argument("--only", type=_csv(str), metavar="GROUPS", help=f"comma-separated subset of {','.join(BENCH_GROUPS)}")
    b.add_argument("--sizes", type=_csv(int), default=[10**5, 10**6, 10**7], metavar="N,N",
                   help="optimizer buffer sizes (default 1e5,1e6,1e7)")
    b.add_argument("--optimizers", type=_csv(str), default=sorted(OPTIMIZERS), metavar="NAMES")
    b.add_argument("--batches", type=_csv(int), default=[100], metavar="B,B", help="step batch sizes (default 100)")
    b.add_argument("--min-time", type=float, default=0.3, help="seconds of timed calls per workload (default 0.3)")
    b.set_defaults(func=cmd_bench)
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())

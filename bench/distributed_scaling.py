"""Data-parallel step time on one machine: 1 rank x all cores against N ranks x their share, and
the all-reduce's share of a step, for every preset.

    python bench/distributed_scaling.py [--ranks 2] [--runs 3] [--steps 20] [--batch 100] [--json OUT]

    python bench/distributed_scaling.py --model RUNS.json    # the GPU scaling model from a run's figures

Each configuration runs in fresh processes under ``mpiexec`` (``--runs`` times, interleaved);
each rank times ``--steps`` training steps at the global ``--batch`` after warm-up: the step as
the Trainer takes it (forward, backward, one all-reduce of the flat gradient buffer, the fused
optimizer step), the all-reduce inside it (waiting for the slower rank included), and the same
all-reduce alone, back to back after a barrier (the transfer itself). Medians over steps, then
the median of the runs; every run is printed.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PRESETS = ("two_layer_net", "multi_layer_net", "simple_convnet", "deep_convnet")


def worker(out: str, steps: int, batch: int, warmup: int = 5) -> None:
    """One rank's measurements of every preset (run under mpiexec); rank 0 writes ``out``."""
    import accelnet  # noqa: F401 - before NumPy: threads per rank (cpu_runtime)
    import numpy as np

    from accelnet import distributed
    from accelnet.cpu_runtime import settings
    from accelnet.optim import Adam
    from accelnet.presets import get_preset

    comm = distributed.init("cpu")
    results = {}
    for name in PRESETS:
        model = get_preset(name)(seed=0)
        opt = Adam(model)
        local = batch // comm.size
        r = np.random.default_rng(comm.rank)
        x = model.to_device(r.random((local, *model.input_shape), dtype=np.float32))
        t = r.integers(0, 10, local)
        grad = model.arena.grad
        step_s, reduce_s = [], []
        for i in range(warmup + steps):
            t0 = time.perf_counter()
            model.loss(x, t)
            if comm.size > 1:
                model.backward(model.loss_fn.backward(local / batch))
            else:
                model.backward()
            t1 = time.perf_counter()
            comm.allreduce(grad)
            t2 = time.perf_counter()
            opt.step()
            t3 = time.perf_counter()
            if i >= warmup:
                step_s.append(t3 - t0)
                reduce_s.append(t2 - t1)
        comm.allgather_obj(None)  # a barrier: the transfer alone, with both ranks ready
        alone = []
        for _ in range(steps):
            t0 = time.perf_counter()
            comm.allreduce(grad)
            alone.append(time.perf_counter() - t0)
        results[name] = {"step_ms": statistics.median(step_s) * 1e3, "allreduce_ms": statistics.median(reduce_s) * 1e3,
                         "allreduce_alone_ms": statistics.median(alone) * 1e3, "bytes": int(grad.nbytes)}
    if comm.rank == 0:
        Path(out).write_text(json.dumps({"ranks": comm.size, "threads": settings(), "presets": results}))


def run(ranks: int, steps: int, batch: int) -> dict:
    """One configuration in fresh processes: ``ranks`` ranks under mpiexec."""
    mpiexec = shutil.which("mpiexec", path=str(Path(sys.executable).parent)) or shutil.which("mpiexec")
    if mpiexec is None:
        sys.exit("mpiexec not found: pip install 'accelnet[mpi]'")
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "out.json")
        subprocess.run([mpiexec, "-n", str(ranks), sys.executable, __file__, "--worker", out, "--steps", str(steps),
                        "--batch", str(batch)], check=True)
        return json.loads(Path(out).read_text())


# Links of the scaling model (assumptions, not measurements here): NVLink 4 through NVSwitch in an
# 8-GPU H100/H200 node, and one 400 Gb/s InfiniBand NIC per GPU between nodes; bandwidths as NCCL's
# bus bandwidth reaches them on large messages, latencies the order of its small-message all-reduce.
LINKS = {"8 GPUs, one node (NVLink)": (8, 400e9, 20e-6), "4 nodes x 8 GPUs (InfiniBand)": (32, 45e9, 50e-6)}


def ring_allreduce_s(nbytes: int, ranks: int, bandwidth: float, latency: float) -> float:
    """A ring all-reduce: each rank sends and receives 2(N-1)/N of the buffer, plus a latency."""
    return 2 * (ranks - 1) / ranks * nbytes / bandwidth + latency


def model(runs: dict) -> None:
    """Print the all-reduce time of each preset's gradient buffer on LINKS, and the step time below
    which it exceeds 10% of a step (data parallelism stops paying its way)."""
    one = runs["1"] if "1" in runs else runs[1]
    print("| preset | gradient bytes | measured CPU step ms (1 rank, batch 100) | "
          + " | ".join(f"{k}: all-reduce us / step ms for <= 10%" for k in LINKS) + " |")
    print("| --- | ---: | ---: | " + " | ".join("---:" for _ in LINKS) + " |")
    for name in PRESETS:
        nbytes = one[0]["presets"][name]["bytes"]
        step = statistics.median(r["presets"][name]["step_ms"] for r in one)
        cells = []
        for n, bw, lat in LINKS.values():
            t = ring_allreduce_s(nbytes, n, bw, lat)
            cells.append(f"{t * 1e6:.0f} / {9 * t * 1e3:.2f}")
        print(f"| {name} | {nbytes:,} | {step:.2f} | " + " | ".join(cells) + " |")


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--ranks", type=int, default=2)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--batch", type=int, default=100)
    p.add_argument("--json", help="write every run's figures here")
    p.add_argument("--model", metavar="RUNS.json", help="print the GPU scaling model from a --json file")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.model:
        model(json.loads(Path(args.model).read_text()))
        return
    if args.worker:
        worker(args.worker, args.steps, args.batch)
        return
    runs = {1: [], args.ranks: []}
    for _ in range(args.runs):  # interleaved, so drift on the machine hits both alike
        for n in runs:
            runs[n].append(run(n, args.steps, args.batch))
    print(f"global batch {args.batch}, {args.steps} steps per run, {args.runs} runs; "
          f"1 rank: {runs[1][0]['threads']}\n{args.ranks} ranks: {runs[args.ranks][0]['threads']}\n")
    n = args.ranks
    print(f"| preset | gradient bytes | 1 rank step ms (runs) | {n} ranks step ms (runs) | {n} ranks / 1 rank | "
          f"all-reduce in the step ms | its share | all-reduce alone ms |")
    print("| --- | ---: | --- | --- | ---: | ---: | ---: | ---: |")
    med = statistics.median
    for name in PRESETS:
        one = [r["presets"][name]["step_ms"] for r in runs[1]]
        many = [r["presets"][name]["step_ms"] for r in runs[n]]
        ar = [r["presets"][name]["allreduce_ms"] for r in runs[n]]
        alone = [r["presets"][name]["allreduce_alone_ms"] for r in runs[n]]
        share = [a / s for a, s in zip(ar, many)]
        fmt = lambda v: ", ".join(f"{x:.2f}" for x in v)  # noqa: E731
        print(f"| {name} | {runs[n][0]['presets'][name]['bytes']:,} | {med(one):.2f} ({fmt(one)}) | "
              f"{med(many):.2f} ({fmt(many)}) | {med(many) / med(one):.2f} | {med(ar):.3f} | {med(share):.1%} | "
              f"{med(alone):.3f} |")
    if args.json:
        Path(args.json).write_text(json.dumps(runs, indent=1))


if __name__ == "__main__":
    main()

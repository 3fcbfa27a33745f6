"""Which implementation for each matrix product a training step makes, measured per shape.

    python bench/profile_products.py [--batches 1,10,100,1000] [--repeat 7]
    python bench/profile_products.py --steps 30e6,15e6 [--presets ...] [--batches ...]
    python bench/profile_products.py --gemm inf,2e6,8e6 [--presets ...] [--batches ...]

For every product of the presets' Linear layers (forward x @ W, weight gradient x.T @ dout, input
gradient dout @ W.T) at each batch size, times it on 1 and on 2 OpenBLAS threads and by accelnet's
own kernel (``kernels/cpu_gemm.py``, on Numba's threads), each call followed by a serial
elementwise pass (as a step does: the bias, the activation), interleaved, median of ``--repeat``
bursts; prints the three, and what ``kernels.cpu.matmul`` picks.

Products alone mislead (the thread wake-ups and the other pool's spinning are part of a step), so
``--steps`` and ``--gemm`` decide: whole training steps of every preset at each batch size with each
candidate threshold applied to every product (``--steps``: both ``SMALL_PRODUCT_FLOPS`` and
``LONG_PRODUCT_FLOPS`` of ``kernels.cpu.blas_threads``; ``--gemm``: ``GEMM_MIN_FLOPS``, from which
``kernels.cpu.matmul`` runs accelnet's gemm), the candidates interleaved round by round
(``--repeat`` rounds), each candidate's median step and its ratio to the first candidate's.
"""

from __future__ import annotations

import argparse
import statistics
import time

import accelnet  # noqa: F401 - before NumPy: accelnet's thread-pool settings (README, "Thread pools")
import numpy as np

from accelnet import workloads
from accelnet.cpu_runtime import set_blas_threads
from accelnet.kernels import cpu, cpu_gemm
from accelnet.layers import Linear
from accelnet.presets import PRESETS, get_preset


def linear_shapes() -> list[tuple[int, int]]:
    """(features in, features out) of every preset's Linear layers, each once."""
    shapes = []
    for name in sorted(PRESETS):
        for layer in get_preset(name)(seed=0).layers:
            if isinstance(layer, Linear) and (layer.in_features, layer.out_features) not in shapes:
                shapes.append((layer.in_features, layer.out_features))
    return shapes


def products(batch: int):
    """(name, a, b) of every product a step at ``batch`` makes, as the layers lay them out."""
    r = np.random.default_rng(0)
    out = []
    for k, n in linear_shapes():
        x, w, dout = (r.random((batch, k), dtype=np.float32), r.random((k, n), dtype=np.float32),
                      r.random((batch, n), dtype=np.float32))
        out += [(f"{batch}x{k} @ {k}x{n}", x, w), (f"{k}x{batch} @ {batch}x{n} (dW)", x.T, dout),
                (f"{batch}x{n} @ {n}x{k} (dx)", dout, w.T)]
    return out


HOWS = ("OpenBLAS 1", "OpenBLAS 2", "gemm")  # as kernels.cpu.matmul_picks names them


def burst(a, b, how: str, seconds: float = 0.02) -> float:
    """Median seconds of a product by ``how`` (one of HOWS: the implementation and 1 or 2 threads)
    and the pass after it, over a burst."""
    out = np.empty((a.shape[0], b.shape[1]), np.float32)
    if how == "gemm":
        product = cpu_gemm.gemm
    else:
        set_blas_threads(1 if how == "OpenBLAS 1" else 2)
        product = np.matmul
    times = []
    end = time.perf_counter() + seconds
    while time.perf_counter() < end or len(times) < 3:
        t0 = time.perf_counter()
        product(a, b, out=out)
        out += 1.0  # the elementwise work that follows a product in a step
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


# What --steps and --gemm vary: the BLAS thread thresholds, or where accelnet's gemm takes over.
SETTINGS = {"steps": ("SMALL_PRODUCT_FLOPS", "LONG_PRODUCT_FLOPS"), "gemm": ("GEMM_MIN_FLOPS",)}


def compare_thresholds(setting: str, thresholds: list[float], presets: list[str], batches: list[int],
                       rounds: int) -> None:
    """Median step time of each preset and batch with each candidate threshold for every product
    (``setting``: a key of SETTINGS), interleaved."""
    names = SETTINGS[setting]
    print("| preset | batch | " + " | ".join(f"{t / 1e6:g} MFLOP" for t in thresholds) + " |")
    print("| --- | ---: |" + " ---: |" * len(thresholds))
    saved = [getattr(cpu, name) for name in names]
    try:
        for preset in presets:
            for batch in batches:
                w = workloads.train_step(preset, batch)
                times = {t: [] for t in thresholds}
                for _ in range(rounds):
                    for t in thresholds:
                        for name in names:
                            setattr(cpu, name, t)
                        times[t].append(workloads.measure(w, min_time=0.2).median)
                base = statistics.median(times[thresholds[0]])
                cells = [f"{base * 1e3:.3f} ms"] + [f"{statistics.median(times[t]) / base:.3f}x" for t in thresholds[1:]]
                print(f"| {preset} | {batch} | " + " | ".join(cells) + " |", flush=True)
    finally:
        for name, value in zip(names, saved):
            setattr(cpu, name, value)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batches", default="1,10,100,1000")
    p.add_argument("--repeat", type=int, default=7)
    p.add_argument("--steps", metavar="FLOPS,FLOPS", help="compare these BLAS thread thresholds in whole steps")
    p.add_argument("--gemm", metavar="FLOPS,FLOPS", help="compare these GEMM_MIN_FLOPS in whole steps (inf: never)")
    p.add_argument("--presets", default=",".join(sorted(PRESETS)), help="with --steps or --gemm")
    args = p.parse_args(argv)
    for setting in SETTINGS:
        if getattr(args, setting):
            compare_thresholds(setting, [float(t) for t in getattr(args, setting).split(",")],
                               args.presets.split(","), [int(b) for b in args.batches.split(",")], args.repeat)
            return
    print("| product | MFLOP | " + " | ".join(HOWS) + " | fastest | matmul picks |")
    print("| --- | ---: |" + " ---: |" * len(HOWS) + " --- | --- |")
    for batch in (int(b) for b in args.batches.split(",")):
        for name, a, b in products(batch):
            times = {how: [] for how in HOWS}
            for _ in range(args.repeat):
                for how, record in times.items():
                    record.append(burst(a, b, how))
            med = {how: statistics.median(times[how]) for how in HOWS}
            flops = 2 * a.shape[0] * a.shape[1] * b.shape[1]
            cells = " | ".join(f"{med[how] * 1e6:.1f} us" for how in HOWS)
            print(f"| {name} | {flops / 1e6:.2f} | {cells} | {min(med, key=med.get)} | {cpu.matmul_picks(a, b)} |",
                  flush=True)
    set_blas_threads(None)


if __name__ == "__main__":
    main()

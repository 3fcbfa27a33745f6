"""One or two OpenBLAS threads for each matrix product a training step makes, measured per shape.

    python bench/profile_blas_threads.py [--batches 1,10,100,1000] [--repeat 7]

For every product of the MLP presets' steps (forward x @ W, weight gradient x.T @ dout, input
gradient dout @ W.T) at each batch size, times it on 1 and on 2 OpenBLAS threads, each call
followed by a serial elementwise pass (as a step does: the bias, the activation), ABAB-interleaved,
median of ``--repeat`` bursts; prints both, their ratio, and what ``kernels.cpu.matmul`` picks.
"""

from __future__ import annotations

import argparse
import statistics
import time

import accelnet  # noqa: F401 - before NumPy: accelnet's thread-pool settings (README, "Thread pools")
import numpy as np

from accelnet.cpu_runtime import set_blas_threads
from accelnet.kernels import cpu

# (features in, features out) of the Linear layers of two_layer_net and multi_layer_net
LAYERS = [(784, 50), (50, 10), (784, 100), (100, 100), (100, 10)]


def products(batch: int):
    """(name, a, b) of every product a step at ``batch`` makes, as the layers lay them out."""
    r = np.random.default_rng(0)
    out = []
    for k, n in LAYERS:
        x, w, dout = (r.random((batch, k), dtype=np.float32), r.random((k, n), dtype=np.float32),
                      r.random((batch, n), dtype=np.float32))
        out += [(f"{batch}x{k} @ {k}x{n}", x, w), (f"{k}x{batch} @ {batch}x{n} (dW)", x.T, dout),
                (f"{batch}x{n} @ {n}x{k} (dx)", dout, w.T)]
    return out


def burst(a, b, threads: int, seconds: float = 0.02) -> float:
    """Median seconds of a product on ``threads`` threads and the pass after it, over a burst."""
    set_blas_threads(threads)
    out = np.empty((a.shape[0], b.shape[1]), np.float32)
    times = []
    end = time.perf_counter() + seconds
    while time.perf_counter() < end or len(times) < 3:
        t0 = time.perf_counter()
        np.matmul(a, b, out=out)
        out += 1.0  # the elementwise work that follows a product in a step
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batches", default="1,10,100,1000")
    p.add_argument("--repeat", type=int, default=7)
    args = p.parse_args(argv)
    print("| product | MFLOP | 1 thread | 2 threads | 2/1 | matmul picks |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for batch in (int(b) for b in args.batches.split(",")):
        for name, a, b in products(batch):
            one, two = [], []
            for _ in range(args.repeat):
                one.append(burst(a, b, 1))
                two.append(burst(a, b, 2))
            t1, t2 = statistics.median(one), statistics.median(two)
            flops = 2 * a.shape[0] * a.shape[1] * b.shape[1]
            picks = 1 if flops < cpu.SMALL_PRODUCT_FLOPS else 2
            print(f"| {name} | {flops / 1e6:.2f} | {t1 * 1e6:.1f} us | {t2 * 1e6:.1f} us | {t2 / t1:.2f} | {picks} |",
                  flush=True)
    set_blas_threads(None)


if __name__ == "__main__":
    main()

"""deep_convnet's six convolutions alone, through the CPU kernels: forward, backward without and
with the input gradient, and GFLOP/s (2 * N * F * C * FH * FW * OH * OW per pass).

    python bench/profile_convs.py [--batch 100] [--reps 25]

Each conv runs as the preset runs it (ReLU fused, the max-pool fused into the second of each
pair) on random data; the figures are medians of ``--reps`` calls after one warm-up call.
"""

from __future__ import annotations

import argparse
import statistics
import time

import accelnet  # noqa: F401 - before NumPy, so accelnet's thread-pool defaults apply (README, "Thread pools")
import numpy as np

from accelnet.kernels import cpu

# (in channels, out channels, image size, pad, pool) of deep_convnet's convs, in order
CONVS = [(1, 16, 28, 1, None), (16, 16, 28, 1, 2), (16, 32, 14, 1, None), (32, 32, 14, 2, 2),
         (32, 64, 8, 1, None), (64, 64, 8, 1, 2)]


def _median_ms(fn, reps: int) -> float:
    fn()
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times) * 1e3


def profile(batch: int = 100, reps: int = 25) -> list[dict]:
    """One row per conv: its shape, forward ms, backward ms without and with dL/dx, GFLOP per pass."""
    r = np.random.default_rng(0)
    rows = []
    for c, f, h, pad, pool in CONVS:
        x = r.standard_normal((batch, c, h, h), dtype=np.float32)
        w = r.standard_normal((f, c, 3, 3), dtype=np.float32) * np.float32(np.sqrt(2 / (9 * c)))
        b = np.zeros(f, np.float32)
        y, ctx = cpu.conv2d(x, w, b, 1, pad, relu=True, pool=pool)
        dout = r.standard_normal(y.shape, dtype=np.float32)
        dw, db = np.empty_like(w), np.empty_like(b)
        oh = h + 2 * pad - 2
        row = {"conv": f"{c}->{f} {h}x{h} pad {pad}" + (f" pool {pool}" if pool else ""),
               "gflop": 2 * batch * f * c * 9 * oh * oh / 1e9}
        row["forward_ms"] = _median_ms(lambda: cpu.conv2d(x, w, b, 1, pad, relu=True, pool=pool, out=y), reps)
        for key, need_dx in (("weight_grad_ms", False), ("backward_ms", True)):
            if need_dx and c == 1:  # the first layer: no dL/dx for the data
                row[key] = row["weight_grad_ms"]
                continue
            row[key] = _median_ms(lambda: cpu.conv2d_backward(dout, ctx, dw, db, need_dx), reps)
        rows.append(row)
    return rows


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=100)
    p.add_argument("--reps", type=int, default=25)
    a = p.parse_args(argv)
    rows = profile(a.batch, a.reps)
    print(f"{'conv':<24} {'fwd ms':>7} {'GF/s':>5} {'dW,db ms':>8} {'GF/s':>5} {'+dx ms':>7}")
    for row in rows:
        g = row["gflop"]
        print(f"{row['conv']:<24} {row['forward_ms']:>7.2f} {g / row['forward_ms'] * 1e3:>5.0f} "
              f"{row['weight_grad_ms']:>8.2f} {g / row['weight_grad_ms'] * 1e3:>5.0f} "
              f"{row['backward_ms'] - row['weight_grad_ms']:>7.2f}")
    print(f"{'total':<24} {sum(r['forward_ms'] for r in rows):>7.2f} {'':>5} "
          f"{sum(r['weight_grad_ms'] for r in rows):>8.2f} {'':>5} "
          f"{sum(r['backward_ms'] - r['weight_grad_ms'] for r in rows):>7.2f}")


if __name__ == "__main__":
    main()

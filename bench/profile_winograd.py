"""Winograd F(2x2, 3x3) against the direct kernels, conv by conv and batch by batch: the time of
each of deep_convnet's convolutions with >= 16 input channels by Winograd over its time by the
direct sums, forward and backward (weight and input gradients), interleaved in one process.
Where the ratio crosses 1 is what ``cpu_conv.WINOGRAD_MIN_TILES`` is chosen from.

    python bench/profile_winograd.py [--batches 1,2,4,8,16,32,100] [--reps 15]
"""

from __future__ import annotations

import argparse
import statistics
import time

import accelnet  # noqa: F401 - before NumPy, so accelnet's thread-pool defaults apply (README, "Thread pools")
import numpy as np

from accelnet import workloads
from accelnet.kernels import cpu_conv


def ratios(conv, batch: int, reps: int) -> tuple[float, float]:
    """(forward, backward) median time by Winograd over the direct kernels' at this batch size."""
    (c, h, w), f, pad, pool = conv.in_shape, conv.out_channels, conv.pad, conv.pool
    r = np.random.default_rng(0)
    x = r.standard_normal((batch, c, h, w), dtype=np.float32)
    wt = r.standard_normal((f, c, 3, 3), dtype=np.float32) * np.float32(np.sqrt(2 / (9 * c)))
    b = np.zeros(f, np.float32)
    oh, ow = h + 2 * pad - 2, w + 2 * pad - 2
    shape = (batch, f, oh // (pool or 1), ow // (pool or 1))
    y, am = np.empty(shape, np.float32), np.empty(shape, np.uint8) if pool else None
    dout = r.standard_normal(shape, dtype=np.float32)
    dw, db, dx = np.empty_like(wt), np.empty_like(b), np.empty_like(x)
    calls = {(pass_, algo): (lambda algo=algo: cpu_conv.conv2d(x, wt, b, pad, y, True, pool, am, winograd=algo))
             if pass_ == "forward" else
             (lambda algo=algo: cpu_conv.conv2d_backward(dout, x, wt, pad, dw, db, dx, y, pool, am, winograd=algo))
             for pass_ in ("forward", "backward") for algo in (True, False)}
    cpu_conv.conv2d(x, wt, b, pad, y, True, pool, am)
    times = {key: [] for key in calls}
    for fn in calls.values():
        fn()
    for _ in range(reps):  # interleaved: a slow moment of the machine lands on both algorithms
        for key, fn in calls.items():
            t = time.perf_counter()
            fn()
            times[key].append(time.perf_counter() - t)
    med = {key: statistics.median(v) for key, v in times.items()}
    return tuple(med[(p, True)] / med[(p, False)] for p in ("forward", "backward"))


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batches", default="1,2,4,8,16,32,100")
    p.add_argument("--reps", type=int, default=15)
    a = p.parse_args(argv)
    batches = [int(v) for v in a.batches.split(",")]
    rows = []
    for conv in workloads.deep_convnet_convs():
        c, h, w = conv.in_shape
        if c < cpu_conv.WINOGRAD_MIN_CHANNELS:
            continue
        row = {"conv": f"{c}->{conv.out_channels} {h}x{w} pad {conv.pad}",
               "tiles/image": ((h + 2 * conv.pad - 2) // 2) * ((w + 2 * conv.pad - 2) // 2)}
        for n in batches:
            fwd, bwd = ratios(conv, n, a.reps)
            row[f"b{n}"] = f"{fwd:.2f} / {bwd:.2f}"
        rows.append(row)
    print("Winograd / direct time, forward / backward (dW + dx), median of interleaved calls:")
    print(workloads.format_table(rows, ["conv", "tiles/image"] + [f"b{n}" for n in batches]))


if __name__ == "__main__":
    main()

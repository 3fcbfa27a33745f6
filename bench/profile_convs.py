"""deep_convnet's six convolutions alone, through the backend's kernels: each pass's time and
effective GFLOP/s (2 * N * F * C * FH * FW * OH * OW per pass, whatever algorithm ran) beside a
float32 sgemm measured in the same run, and the share of that rate each pass reaches.

    python bench/profile_convs.py [--batch 100] [--min-time 0.3] [--device cpu]

Each conv runs as the preset runs it (ReLU fused, the max-pool fused into the second of each
pair) on random data (``accelnet.workloads.conv_pass``); the input-gradient pass is the backward's
time beyond the weight gradient's. The same table is ``accelnet bench --only convs``.
"""

from __future__ import annotations

import argparse

import accelnet  # noqa: F401 - before NumPy, so accelnet's thread-pool defaults apply (README, "Thread pools")

from accelnet import workloads


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=100)
    p.add_argument("--min-time", type=float, default=0.3)
    p.add_argument("--device", default="cpu", choices=["cpu", "gpu"])
    a = p.parse_args(argv)
    rate, rows = workloads.conv_rates(a.batch, a.device, a.min_time)
    print(f"sgemm (float32, 1024^3, in this run): {rate:.0f} GFLOP/s")
    cols = ["conv"] + [f"{k} {m}" for k in ("fwd", "dW", "dx") for m in ("ms", "GF/s", "% sgemm")]
    print(workloads.format_table(rows, cols))


if __name__ == "__main__":
    main()

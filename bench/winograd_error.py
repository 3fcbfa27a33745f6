"""Winograd F(2x2, 3x3)'s float32 error beside the direct float32 convolution's, both against the
float64 direct convolution of the same values: deep_convnet's convolutions that run by Winograd,
forward, weight gradient and input gradient, on random data and on real MNIST activations.

    python bench/winograd_error.py [--batch 32] [--data DIR]

Each error is the relative RMS ||y - y64|| / ||y64||; ``tests/test_winograd_numerics.py`` holds
the ratio to at most 4 (issue 18).
"""

from __future__ import annotations

import argparse

import accelnet  # noqa: F401 - before NumPy, so accelnet's thread-pool defaults apply (README, "Thread pools")

from accelnet import workloads


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--data", default=None, help="directory with the MNIST files (default: ACCELNET_DATA, the cache)")
    a = p.parse_args(argv)
    for inputs in ("random", "mnist"):
        rows = workloads.conv_errors(inputs, a.batch, a.data)
        print(f"\n{inputs} inputs, batch {a.batch}:")
        print(workloads.format_table(rows, ["conv", "pass", "direct", "winograd", "ratio"]))


if __name__ == "__main__":
    main()

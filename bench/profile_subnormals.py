"""A training step on subnormal-heavy gradients: accelnet's scoped flush-to-zero against the same
step with flush-to-zero set for the whole thread (the process-wide setting accelnet used to make).

    python bench/profile_subnormals.py [--preset two_layer_net] [--rounds 5] [--steps 10] [--off]

The inputs are scaled to ~1e-36, so the first layer's weight gradients underflow into subnormals
(as confident samples' gradients do late in training). The two settings alternate within one run;
the medians of their per-round medians are printed. ``--off`` adds a run with
ACCELNET_FLUSH_DENORMALS=0 (IEEE gradual underflow everywhere) in a process of its own.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys

import accelnet  # noqa: F401 - before NumPy, so accelnet's thread-pool defaults apply (README, "Thread pools")
import numpy as np

from accelnet import cpu_runtime
from accelnet.presets import get_preset
from accelnet.optim import Adam
from accelnet.workloads import Workload, measure


def make_step(preset: str, batch: int = 100):
    model = get_preset(preset)(seed=0)
    opt = Adam(model, lr=1e-3)
    r = np.random.default_rng(0)
    x = (r.standard_normal((batch, *model.input_shape)) * 1e-36).astype(np.float32)
    t = r.integers(0, model.output_shape[0], batch)

    def step():
        model.loss(x, t)
        model.backward()
        opt.step()

    return step


def _median_ms(fn, steps):
    return 1e3 * measure(Workload("step", "subnormal step", fn), min_time=0, min_runs=steps, max_runs=steps,
                         warmup=0).median


def profile(preset: str = "two_layer_net", rounds: int = 5, steps: int = 10) -> dict:
    """{setting: median ms of a step}: 'scoped' (the caller's thread untouched between calls) and
    'thread-wide' (flush-to-zero set in the calling thread for good), interleaved."""
    step = make_step(preset)
    for _ in range(3):
        step()  # compile, warm caches
    out = {"scoped": [], "thread-wide": []}
    for _ in range(rounds):
        out["scoped"].append(_median_ms(step, steps))
        cpu_runtime.flush_denormals_in_this_thread(True)
        out["thread-wide"].append(_median_ms(step, steps))
        cpu_runtime.flush_denormals_in_this_thread(False)
    return {k: statistics.median(v) for k, v in out.items()}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="two_layer_net")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--off", action="store_true", help="also run with ACCELNET_FLUSH_DENORMALS=0")
    ap.add_argument("--only-scoped", action="store_true", help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.only_scoped:  # the --off child: one setting, whatever the environment says
        step = make_step(a.preset)
        for _ in range(3):
            step()
        print(statistics.median(_median_ms(step, a.steps) for _ in range(a.rounds)))
        return
    res = profile(a.preset, a.rounds, a.steps)
    if a.off:
        child = subprocess.run([sys.executable, __file__, "--only-scoped", "--preset", a.preset, "--rounds",
                                str(a.rounds), "--steps", str(a.steps)], capture_output=True, text=True, check=True,
                               env={**os.environ, "ACCELNET_FLUSH_DENORMALS": "0"})
        res["off (IEEE)"] = float(child.stdout.split()[-1])
    print(f"{a.preset}, subnormal-heavy step, median ms ({cpu_runtime.settings()}):")
    for k, v in res.items():
        print(f"  {k:<12} {v:8.3f}  ({v / res['thread-wide']:.2f}x thread-wide)")


if __name__ == "__main__":
    main()

"""Why the PyTorch comparison gives each workload a process of its own: PyTorch's step in a fresh
process against one that ran a bigger workload first (page faults per step and median ms).

    python bench/profile_peer_faults.py [--preset deep_convnet] [--batch 100] [--first 1000]

glibc raises its mmap threshold when a big block is freed, so after a bigger workload the step's
fresh tensors come from the heap instead of newly mapped pages (README, "Against PyTorch").
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

_CHILD = """
import json, resource, statistics, sys, time
import accelnet
from accelnet.workloads import peer_train_step
preset, batch, first = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
if first:
    big = peer_train_step(preset, first)
    big(); big()
w = peer_train_step(preset, batch)
for _ in range(10):
    w()
f0, times = resource.getrusage(resource.RUSAGE_SELF).ru_minflt, []
for _ in range(40):
    t0 = time.perf_counter(); w(); times.append(time.perf_counter() - t0)
faults = (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0) / 40
print(json.dumps({"faults": faults, "ms": statistics.median(times) * 1e3}))
"""


def run(preset: str, batch: int, first: int) -> dict:
    done = subprocess.run([sys.executable, "-c", _CHILD, preset, str(batch), str(first)], capture_output=True,
                          text=True)
    if done.returncode != 0:
        sys.exit(f"profile_peer_faults: {done.stderr.strip().splitlines()[-1]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", default="deep_convnet")
    p.add_argument("--batch", type=int, default=100)
    p.add_argument("--first", type=int, default=1000, help="the bigger batch run first in the second process")
    p.add_argument("--runs", type=int, default=2)
    a = p.parse_args(argv)
    for _ in range(a.runs):
        for first in (0, a.first):
            r = run(a.preset, a.batch, first)
            what = "fresh process" if not first else f"after batch {first}"
            print(f"PyTorch {a.preset} step at batch {a.batch}, {what}: {r['ms']:.1f} ms, "
                  f"{r['faults']:.0f} page faults per step", flush=True)


if __name__ == "__main__":
    main()

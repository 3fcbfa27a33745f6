"""One process of an A/B benchmark (``accelnet bench ab``): times workloads with whatever accelnet
is first on ``sys.path`` (the revision under test) and prints one JSON line.

Run as a file, not as ``accelnet.ab_worker``: the revision under test need not have this module.
It uses only ``accelnet.workloads`` (``train_step``, ``optimizer_update``, ``measure``), which
every revision the A/B compares has.

    python ab_worker.py DEVICE MIN_TIME WORKLOAD [WORKLOAD ...]    # step:PRESET[:BATCH], adam:N
"""

import json
import statistics
import sys
import time


def _workload(spec: str, device: str):
    from accelnet import workloads

    kind, _, arg = spec.partition(":")
    if kind == "step":
        preset, _, batch = arg.partition(":")
        return workloads.train_step(preset, int(batch or 100), backend=device)
    if kind in ("adam", "sgd", "momentum", "adagrad", "rmsprop", "nesterov", "adamw"):
        return workloads.optimizer_update(kind, int(float(arg)), "flat", "fused", backend=device)
    raise ValueError(f"unknown workload {spec!r}: expected step:PRESET[:BATCH] or OPTIMIZER:N")


def main(argv) -> None:
    device, min_time, specs = argv[0], float(argv[1]), argv[2:]
    start = time.perf_counter()
    import accelnet
    from accelnet import workloads

    out = {"accelnet": accelnet.__file__, "import_s": time.perf_counter() - start, "workloads": {}}
    for spec in specs:
        try:
            timing = workloads.measure(_workload(spec, device), min_time=min_time)
        except Exception as exc:  # a workload this revision cannot run: reported, the others still timed
            out["workloads"][spec] = {"error": f"{type(exc).__name__}: {exc}"}
            continue
        times = sorted(timing.times)
        # the lower quartile: calls slowed by other work on the machine only ever add time
        out["workloads"][spec] = {"median": statistics.median(times), "q25": times[len(times) // 4],
                                  "times": list(timing.times)}
    print(json.dumps(out))


if __name__ == "__main__":
    main(sys.argv[1:])

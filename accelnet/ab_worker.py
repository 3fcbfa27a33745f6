"""One side of an A/B benchmark round (``accelnet bench ab``): a process that imports whatever
accelnet is first on ``sys.path`` (the revision under test), builds and warms up the workloads,
then times bursts of calls on request, so the orchestrator can alternate the two revisions'
processes every few tenths of a second (the machine's drift then hits both alike).

Run as a file, not as ``accelnet.ab_worker``: the revision under test need not have this module.
It uses only ``accelnet.workloads`` (``train_step``, ``optimizer_update``, and ``predict`` where
the revision has it); ``peer:`` before a step or predict workload times PyTorch's same workload
(``peer_train_step``, ``peer_predict``) instead, for ``accelnet bench``'s interleaved comparison.
Protocol on stdin/stdout, one JSON line per reply:

    python ab_worker.py DEVICE WORKLOAD [WORKLOAD ...]    # [peer:]step|predict:PRESET[:BATCH], OPTIMIZER:N
    -> {"accelnet": path, "per_call": {workload: seconds}, "errors": {workload: message}}
    <- "I N [W]" time N calls of workload number I, after W untimed ones (default 0)
    -> [seconds, ...]
"""

import json
import sys
import time


def _workload(spec: str, device: str):
    from accelnet import workloads

    peer = spec.startswith("peer:")
    kind, _, arg = spec.removeprefix("peer:").partition(":")
    if peer:
        preset, _, batch = arg.partition(":")
        make = {"step": workloads.peer_train_step, "predict": workloads.peer_predict}[kind]
        return make(preset, int(batch or 100), device="cuda" if device == "gpu" else device)
    if kind in ("step", "predict"):
        preset, _, batch = arg.partition(":")
        make = workloads.train_step if kind == "step" else workloads.predict
        return make(preset, int(batch or 100), backend=device)
    return workloads.optimizer_update(kind, int(float(arg)), "flat", "fused", backend=device)  # OPTIMIZER:N


def _timer(w):
    """Seconds one call takes: CUDA events on a GPU backend (``time_call``), else the host clock
    around the call and its synchronization."""
    backend = getattr(w, "backend", None)
    if backend is not None and hasattr(backend, "time_call"):
        return lambda: backend.time_call(w)

    def host():
        t0 = time.perf_counter()
        w()
        return time.perf_counter() - t0
    return host


def main(argv) -> None:
    device, specs = argv[0], argv[1:]
    import accelnet

    timers, per_call, errors = [], {}, {}
    for spec in specs:
        try:
            w = _workload(spec, device)
            for _ in range(3):  # JIT, first-call allocations, library set-up
                w()
            timer = _timer(w)
            t_end, times = time.perf_counter() + 0.1, []
            while time.perf_counter() < t_end or not times:
                times.append(timer())
            per_call[spec] = min(times)
        except Exception as exc:  # a workload this revision cannot run: reported, the others still timed
            errors[spec] = f"{type(exc).__name__}: {exc}"
            timer = None
        timers.append(timer)
    print(json.dumps({"accelnet": accelnet.__file__, "per_call": per_call, "errors": errors}), flush=True)
    for line in sys.stdin:
        i, n, *warm = (int(v) for v in line.split())
        for _ in range(warm[0] if warm else 0):  # untimed: caches and thread pools back to this workload
            timers[i]()
        print(json.dumps([timers[i]() for _ in range(n)]), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])

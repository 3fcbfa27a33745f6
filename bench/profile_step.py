"""Where one training step's time goes: per-layer forward and backward, loss and optimizer.

    python bench/profile_step.py deep_convnet [--batch 100] [--steps 30] [--device cpu] [--unfused] [--host]

Each part is timed with the backend's clock (CUDA events on the GPU) over ``--steps`` steps
after a few warm-up steps, and the medians are printed with their share of the step.

``--host``: the host's side instead. The step's median time with the device synchronized after
every step and without (the host running ahead, the device catching up at the end), then
cProfile's functions by own time over the steps. On the GPU a step that is no faster unsynced,
whose time is mostly Python functions, is bound by the host (README, Results "GPU").
"""

from __future__ import annotations

import argparse
import cProfile
import inspect
import io
import pstats
import statistics
import time

import accelnet  # noqa: F401 - before NumPy, so accelnet's thread-pool defaults apply (README, "Thread pools")
import numpy as np

from accelnet import get_backend
from accelnet.presets import PRESETS, get_preset
from accelnet.optim import get_optimizer


def profile(preset: str, batch: int = 100, steps: int = 30, device: str = "cpu", warmup: int = 5,
            fused: bool = True) -> list[tuple]:
    """Median ms of each part of a step: [(part, forward ms, backward ms)], the loss and Adam last.
    ``fused=False``: the preset with separate ReLU (and MaxPool2d) layers."""
    b = get_backend(device)
    model = get_preset(preset)(backend=b, seed=0, **({} if fused else {"fused": False}))
    opt = get_optimizer("adam", model)
    r = np.random.default_rng(0)
    x = model.to_device(r.random((batch, *model.input_shape)))
    t = b.to_device(r.integers(0, model.output_shape[0], batch))
    names = [layer.name for layer in model.layers] + ["loss", "adam"]
    fwd = {n: [] for n in names}
    bwd = {n: [] for n in names}

    def timed(record, name, fn):
        """Run fn, append its time (the backend's clock) to record[name], return its result."""
        box = []
        record[name].append(b.time_call(lambda: box.append(fn())))
        return box[0]

    last = len(model.layers) - 1
    for _ in range(warmup + steps):
        h = x
        for layer in model.layers:
            h = timed(fwd, layer.name, lambda: layer.forward(h))
        timed(fwd, "loss", lambda: model.loss_fn.forward(h, t))
        d = timed(bwd, "loss", model.loss_fn.backward)
        for i in range(last, -1, -1):  # as Sequential.backward: no dL/dx for the data
            layer = model.layers[i]
            d = timed(bwd, layer.name, lambda: layer.backward(d, input_grad=i > 0))
        timed(bwd, "adam", opt.step)
    med = lambda v: statistics.median(v[warmup:]) * 1e3 if v else 0.0  # noqa: E731
    return [(n, med(fwd[n]), med(bwd[n])) for n in names]


def host_profile(preset: str, batch: int = 100, steps: int = 30, device: str = "cpu", top: int = 25) -> str:
    """Text: the step's median ms synchronized after each step and unsynchronized (the mean of a
    run of ``steps`` ended by one sync), then cProfile's ``top`` functions by own time."""
    from accelnet import workloads

    b = get_backend(device)
    step = workloads.train_step(preset, batch, backend=b).run  # unsynchronized
    for _ in range(5):
        step()
    b.synchronize()
    synced = []
    for _ in range(steps):
        t0 = time.perf_counter()
        step()
        b.synchronize()
        synced.append(time.perf_counter() - t0)
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    b.synchronize()
    ahead = (time.perf_counter() - t0) / steps
    prof = cProfile.Profile()
    prof.enable()
    for _ in range(steps):
        step()
    b.synchronize()
    prof.disable()
    out = io.StringIO()
    pstats.Stats(prof, stream=out).sort_stats("tottime").print_stats(top)
    return (f"{preset}, batch {batch}, {device}: {statistics.median(synced) * 1e3:.3f} ms per step synchronized, "
            f"{ahead * 1e3:.3f} ms unsynchronized\n{out.getvalue()}")


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("preset", choices=sorted(PRESETS))
    p.add_argument("--batch", type=int, default=100)
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--device", default="cpu")
    p.add_argument("--unfused", action="store_true", help="ReLU (and the convnets' max-pool) as separate layers")
    p.add_argument("--host", action="store_true", help="the host's side: synced/unsynced step time, cProfile")
    a = p.parse_args(argv)
    if a.host:
        print(host_profile(a.preset, a.batch, a.steps, a.device))
        return
    if a.unfused and "fused" not in inspect.signature(PRESETS[a.preset]).parameters:
        p.error(f"--unfused: {a.preset} has nothing fused")
    rows = profile(a.preset, a.batch, a.steps, a.device, fused=not a.unfused)
    total = sum(f + bk for _, f, bk in rows)
    print(f"{a.preset}, batch {a.batch}, {a.device}: {total:.2f} ms per step (sum of the parts' medians)")
    print(f"{'part':<12} {'forward ms':>10} {'backward ms':>11} {'share':>6}")
    for n, f, bk in rows:
        print(f"{n:<12} {f:>10.3f} {bk:>11.3f} {100 * (f + bk) / total:>5.1f}%")


if __name__ == "__main__":
    main()

"""Benchmark workloads shared by ``bench/`` (pytest-benchmark) and ``accelnet bench``.

A :class:`Workload` is one call to time plus the bytes it must move at least, so
results read as effective GB/s and, next to the STREAM-style triad measured in the
same run, as a fraction of the machine's memory bandwidth. Regression gates compare
ratios measured in one run, never absolute times: shared machines drift 10-30%.
"""

from __future__ import annotations

import math
import statistics
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from .backend import Backend, get_backend
from .kernels import reference
from .optim import OPTIMIZERS, get_optimizer

__all__ = ["Workload", "Timing", "measure", "copy", "triad", "optimizer_update", "im2col", "col2im", "train_step",
           "peer_network", "peer_train_step", "predict", "peer_predict",
           "OPTIMIZER_STREAMS", "CONV_SHAPES", "format_table", "sgemm", "conv_pass", "conv_rates",
           "deep_convnet_convs", "CONV_PASSES", "conv_errors"]

# Arrays each update streams: read p, g and the state, write p and the state.
OPTIMIZER_STREAMS = {name: 3 + 2 * len(cls.state_names) for name, cls in OPTIMIZERS.items()}

# (name, input shape, kernel, stride, pad): the first conv of simple_convnet and each conv input of deep_convnet.
CONV_SHAPES = [
    ("simple_convnet.conv1", (100, 1, 28, 28), 5, 1, 0),
    ("deep_convnet.conv1", (100, 1, 28, 28), 3, 1, 1),
    ("deep_convnet.conv2", (100, 16, 28, 28), 3, 1, 1),
    ("deep_convnet.conv3", (100, 16, 14, 14), 3, 1, 1),
    ("deep_convnet.conv4", (100, 32, 14, 14), 3, 1, 2),
    ("deep_convnet.conv5", (100, 32, 8, 8), 3, 1, 1),
    ("deep_convnet.conv6", (100, 64, 8, 8), 3, 1, 1),
]


@dataclass
class Workload:
    """One timed call: ``run()`` does the work; ``nbytes`` is the least memory traffic it needs."""

    group: str
    name: str
    run: Callable[[], object]
    nbytes: int = 0
    backend: Backend | None = None  # synchronized after each call (None: nothing to wait for)
    info: dict = field(default_factory=dict)

    def __call__(self):
        """Run once and wait for the device, so a host clock around it measures the work."""
        out = self.run()
        if self.backend is not None:
            self.backend.synchronize()
        return out


@dataclass
class Timing:
    workload: Workload
    times: list

    @property
    def median(self) -> float:
        return statistics.median(self.times)

    @property
    def gbps(self) -> float:
        return self.workload.nbytes / self.median / 1e9 if self.workload.nbytes else float("nan")


def measure(w: Workload, min_time: float = 0.3, min_runs: int = 5, max_runs: int = 1000,
            warmup: float = 0.1) -> Timing:
    """Warm up (JIT, caches, other thread pools going idle), then time single calls until both
    ``min_time`` seconds and ``min_runs`` runs are reached."""
    t_end = time.perf_counter() + warmup
    for _ in range(3):  # JIT, first-call allocations and library set-up (oneDNN primitives, cuBLAS handles)
        w()
    while time.perf_counter() < t_end:
        w()
    timer = w.backend.time_call if w.backend is not None else _host_time
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < max_runs and (len(times) < min_runs or time.perf_counter() - start < min_time):
        times.append(timer(w))
    return Timing(w, times)


def _host_time(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def copy(n: int, backend: str | Backend = "cpu", dtype=np.float32) -> Workload:
    """A device-to-device copy of ``n`` elements (2 arrays moved): the GPU's bandwidth yardstick."""
    b = get_backend(backend)
    src, dst = _rand(b, n, dtype, 0), _rand(b, n, dtype, 1)
    return Workload("copy", f"copy/{n:.0e}", lambda: b.xp.copyto(dst, src), 2 * n * np.dtype(dtype).itemsize, b,
                    {"n": n})


def _rand(backend: Backend, shape, dtype=np.float32, seed: int = 0):
    return backend.to_device(np.random.default_rng(seed).standard_normal(shape).astype(dtype))


def triad(n: int, backend: str | Backend = "cpu", dtype=np.float32, inplace: bool = False) -> Workload:
    """STREAM triad a = b + s*c (3 arrays counted), the memory-bandwidth yardstick.

    STREAM does not count the read a cache must do before writing ``a`` (write-allocate),
    so kernels that write only arrays they also read, as optimizer updates do, can exceed
    it; ``inplace=True`` times a = a + s*c, the same traffic pattern as those updates.
    """
    b = get_backend(backend)
    a, x, y = (_rand(b, n, dtype, seed) for seed in range(3))
    if inplace:
        x = a
    return Workload("triad", f"triad{'/inplace' if inplace else ''}/{n:.0e}", lambda: b.kernels.triad(a, x, y, 3.0),
                    3 * n * np.dtype(dtype).itemsize, b, {"n": n, "inplace": inplace})


def _split(n: int, parts: int) -> list[int]:
    base, extra = divmod(n, parts)
    return [base + (i < extra) for i in range(parts)]


def optimizer_update(name: str, n: int, layout: str = "flat", impl: str = "fused", tensors: int = 20,
                     backend: str | Backend = "cpu", dtype=np.float32) -> Workload:
    """One optimizer update over ``n`` parameters: one flat buffer (one kernel launch) or
    ``tensors`` arrays through the book's ``update(params, grads)``; ``impl`` is "fused"
    (the backend's kernels) or "reference" (the textbook xp formulas)."""
    b = get_backend(backend)
    if layout not in ("flat", "tensors") or impl not in ("fused", "reference"):
        raise ValueError(f"layout must be flat|tensors and impl fused|reference, got {layout!r}, {impl!r}")
    sizes = [n] if layout == "flat" else _split(n, tensors)
    params = {f"p{i}": _rand(b, s, dtype, i) for i, s in enumerate(sizes)}
    grads = {k: _rand(b, p.shape, dtype, 100 + i) * 1e-3 for i, (k, p) in enumerate(params.items())}
    opt = get_optimizer(name, lr=1e-4, kernels=reference if impl == "reference" else b.kernels)
    opt.update(params, grads)  # allocate the state outside the timed calls
    nbytes = OPTIMIZER_STREAMS[name] * n * np.dtype(dtype).itemsize
    return Workload("optimizer", f"{name}/{impl}/{layout}/{n:.0e}", lambda: opt.update(params, grads), nbytes, b,
                    {"optimizer": name, "n": n, "layout": layout, "impl": impl, "tensors": len(sizes)})


def _conv_case(case: str):
    for name, shape, k, stride, pad in CONV_SHAPES:
        if name == case:
            return shape, k, stride, pad
    raise ValueError(f"unknown conv shape {case!r}: expected one of {[c[0] for c in CONV_SHAPES]}")


def im2col(case: str, impl: str = "fused", backend: str | Backend = "cpu") -> Workload:
    """im2col at one of :data:`CONV_SHAPES`, writing into a reused buffer (as Conv2d does)."""
    b = get_backend(backend)
    shape, k, stride, pad = _conv_case(case)
    kernels = reference if impl == "reference" else b.kernels
    x = _rand(b, shape)
    col = b.kernels.im2col(x, k, k, stride, pad)
    run = (lambda: kernels.im2col(x, k, k, stride, pad, out=col))
    return Workload("im2col", f"im2col/{impl}/{case}", run, x.nbytes + col.nbytes, b,
                    {"case": case, "impl": impl, "shape": shape, "k": k})


def col2im(case: str, impl: str = "fused", backend: str | Backend = "cpu") -> Workload:
    """col2im at one of :data:`CONV_SHAPES`, writing into a reused buffer."""
    b = get_backend(backend)
    shape, k, stride, pad = _conv_case(case)
    kernels = reference if impl == "reference" else b.kernels
    col = b.kernels.im2col(_rand(b, shape), k, k, stride, pad)
    out = b.xp.empty(shape, dtype=np.float32)
    run = (lambda: kernels.col2im(col, shape, k, k, stride, pad, out=out))
    return Workload("col2im", f"col2im/{impl}/{case}", run, col.nbytes + out.nbytes, b,
                    {"case": case, "impl": impl, "shape": shape, "k": k})


def sgemm(n: int = 1024, backend: str | Backend = "cpu") -> Workload:
    """A float32 n x n x n matrix product on every BLAS thread: what the arithmetic units deliver,
    the yardstick of the convolutions' rates (``info["flop"]``)."""
    b = get_backend(backend)
    x, y = _rand(b, (n, n)), _rand(b, (n, n), seed=1)
    out = b.xp.empty((n, n), np.float32)
    return Workload("sgemm", f"sgemm/{n}", lambda: b.xp.matmul(x, y, out=out), 3 * x.nbytes, b,
                    {"flop": 2 * n**3})


CONV_PASSES = ("forward", "weight_grad", "backward")  # backward: weight and input gradients


def deep_convnet_convs() -> list:
    """deep_convnet's Conv2d layers as the preset builds them (ReLU and pool fused), built."""
    from .layers import Conv2d
    from .presets import deep_convnet

    return [layer for layer in deep_convnet().layers if isinstance(layer, Conv2d)]


def conv_pass(index: int, which: str, batch: int = 100, backend: str | Backend = "cpu") -> Workload:
    """One pass of deep_convnet's conv ``index`` (0-5) through the backend's kernels, ReLU and
    pool fused as in the preset; ``info["flop"]``: the direct convolution's 2 N F C 9 OH OW, what
    each pass does whatever the algorithm."""
    b = get_backend(backend)
    conv = deep_convnet_convs()[index]
    (c, h, _), f, pad, pool = conv.in_shape, conv.out_channels, conv.pad, conv.pool
    r = np.random.default_rng(index)
    x = b.to_device(r.standard_normal((batch, c, h, h), dtype=np.float32))
    w = b.to_device(r.standard_normal((f, c, 3, 3), dtype=np.float32) * np.float32(np.sqrt(2 / (9 * c))))
    bias = b.xp.zeros(f, np.float32)
    y, ctx = b.kernels.conv2d(x, w, bias, 1, pad, relu=True, pool=pool)
    dout = b.to_device(r.standard_normal(y.shape, dtype=np.float32))
    dw, db = b.xp.empty_like(w), b.xp.empty_like(bias)
    oh = h + 2 * pad - 2
    runs = {"forward": lambda: b.kernels.conv2d(x, w, bias, 1, pad, relu=True, pool=pool, out=y),
            "weight_grad": lambda: b.kernels.conv2d_backward(dout, ctx, dw, db, need_dx=False),
            "backward": lambda: b.kernels.conv2d_backward(dout, ctx, dw, db, need_dx=True)}
    name = f"{c}->{f} {h}x{h} pad {pad}" + (f" pool {pool}" if pool else "")
    return Workload("conv", f"conv/{which}/{name}", runs[which], 0, b,
                    {"conv": name, "pass": which, "flop": 2 * batch * f * c * 9 * oh * oh, "in_channels": c})


def conv_rates(batch: int = 100, backend: str | Backend = "cpu", min_time: float = 0.3) -> tuple[float, list[dict]]:
    """(the sgemm rate in GFLOP/s, one row per deep_convnet conv: each pass's ms, effective GFLOP/s
    and share of the sgemm rate), all measured in this one call. The input-gradient pass is the
    backward's time beyond the weight gradient's (the first conv has none: nothing needs dL/dx)."""
    gemm = sgemm(backend=backend)
    rate = gemm.info["flop"] / min(measure(gemm, min_time).median for _ in range(3)) / 1e9
    rows = []
    for i in range(len(deep_convnet_convs())):
        t = {which: measure(conv_pass(i, which, batch, backend), min_time) for which in CONV_PASSES}
        info = t["forward"].workload.info
        row = {"conv": info["conv"]}
        passes = {"fwd": t["forward"].median, "dW": t["weight_grad"].median}
        if info["in_channels"] > 1 and t["backward"].median > t["weight_grad"].median:  # else lost in the noise
            passes["dx"] = t["backward"].median - t["weight_grad"].median
        for key, seconds in passes.items():
            gflops = info["flop"] / seconds / 1e9
            row |= {f"{key} ms": seconds * 1e3, f"{key} GF/s": gflops, f"{key} % sgemm": 100 * gflops / rate}
        rows.append(row)
    return rate, rows


def conv_errors(inputs: str = "random", batch: int = 32, data_dir=None) -> list[dict]:
    """Float32 error of each pass of deep_convnet's convolutions that runs by Winograd at this batch
    size (forward, weight gradient, input gradient) against the float64 direct convolution of the same float32
    values, for the direct float32 kernels and for Winograd: {conv, pass, direct, winograd,
    ratio}, each error the relative RMS ||y - y64|| / ||y64||. ``inputs``: "random" (standard normal) or "mnist" (the
    conv's input when deep_convnet, as initialized, runs on the first MNIST test images)."""
    from .data import load_mnist
    from .kernels import cpu_conv
    from .layers import Conv2d
    from .presets import deep_convnet

    model = deep_convnet()
    r = np.random.default_rng(0)
    if inputs == "mnist":
        h = load_mnist("mnist", data_dir, flatten=False, progress=False).x_test[:batch]
    elif inputs == "random":
        h = None
    else:
        raise ValueError(f"conv_errors: inputs must be 'random' or 'mnist', got {inputs!r}")
    rows = []
    for layer in model.layers:
        if h is not None:
            x, h = h, layer.forward(h)
        if not isinstance(layer, Conv2d):
            continue
        (c, hh, ww), pad = layer.in_shape, layer.pad
        if inputs == "random":
            x = r.standard_normal((batch, c, hh, ww), dtype=np.float32)
        w, b = layer.params["W"], layer.params["b"]
        oh, ow = hh + 2 * pad - 2, ww + 2 * pad - 2
        name = f"{c}->{w.shape[0]} {hh}x{ww} pad {pad}"
        y64, ctx64 = reference.conv2d(x.astype(np.float64), w.astype(np.float64), b.astype(np.float64), 1, pad)
        dout = r.standard_normal(y64.shape, dtype=np.float32)
        dw64, db64 = np.empty(w.shape), np.empty(b.shape)
        dx64 = reference.conv2d_backward(dout.astype(np.float64), ctx64, dw64, db64)

        def rel(y, want):
            return float(np.linalg.norm((y - want).ravel()) / np.linalg.norm(want.ravel()))

        for which, runs in (("forward", cpu_conv.winograd_runs(batch, c, oh, ow)),
                            ("weight gradient", cpu_conv.winograd_runs(batch, c, oh, ow)),
                            ("input gradient", cpu_conv.winograd_runs(batch, w.shape[0], hh, ww))):
            if not runs:
                continue
            err = {}
            for algo in ("direct", "winograd"):
                if which == "forward":
                    y = cpu_conv.conv2d(x, w, b, pad, np.empty((batch, w.shape[0], oh, ow), np.float32),
                                        winograd=algo == "winograd")
                    err[algo] = rel(y, y64)
                else:
                    dw, dx = np.empty_like(w), np.empty_like(x)
                    cpu_conv.conv2d_backward(dout, x, w, pad, dw, np.empty_like(b), dx, winograd=algo == "winograd")
                    err[algo] = rel(dw, dw64) if which == "weight gradient" else rel(dx, dx64)
            rows.append({"conv": name, "pass": which, **err, "ratio": err["winograd"] / err["direct"]})
    return rows


def train_step(preset: str, batch: int = 100, optimizer: str = "adam", backend: str | Backend = "cpu") -> Workload:
    """One whole training step of a preset: forward, loss, backward, optimizer step."""
    from .presets import get_preset

    b = get_backend(backend)
    model = get_preset(preset)(backend=b, seed=0)
    opt = get_optimizer(optimizer, model)
    r = np.random.default_rng(0)
    x = model.to_device(r.random((batch, *model.input_shape)))
    t = b.to_device(r.integers(0, model.output_shape[0], batch))

    def step():
        model.loss(x, t)
        model.backward()
        opt.step()

    return Workload("step", f"step/accelnet/{preset}/b{batch}", step, 0, b,
                    {"preset": preset, "batch": batch, "framework": "accelnet"})


def peer_network(preset: str):
    """(PyTorch ``nn.Sequential``, one sample's shape) of a preset: the same layers and parameter
    count as ``accelnet.presets`` (``tests/test_presets.py`` checks), for the benchmark peer."""
    from torch import nn

    def deep():
        layers, c_in = [], 1
        for i, ch in enumerate((16, 16, 32, 32, 64, 64)):
            layers += [nn.Conv2d(c_in, ch, 3, padding=2 if i == 3 else 1), nn.ReLU()]
            c_in = ch
            if i % 2:
                layers.append(nn.MaxPool2d(2))
        return layers + [nn.Flatten(), nn.Linear(64 * 4 * 4, 50), nn.ReLU(), nn.Dropout(0.5), nn.Linear(50, 10),
                         nn.Dropout(0.5)]

    nets = {
        "two_layer_net": (lambda: [nn.Linear(784, 50), nn.Sigmoid(), nn.Linear(50, 10)], (784,)),
        "multi_layer_net": (lambda: [m for i in range(5) for m in (nn.Linear(784 if i == 0 else 100, 100), nn.ReLU())]
                            + [nn.Linear(100, 10)], (784,)),
        "simple_convnet": (lambda: [nn.Conv2d(1, 30, 5), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                                    nn.Linear(4320, 100), nn.ReLU(), nn.Linear(100, 10)], (1, 28, 28)),
        "deep_convnet": (deep, (1, 28, 28)),
    }
    make, shape = nets[preset]
    return nn.Sequential(*make()), shape


def peer_train_step(preset: str, batch: int = 100, device: str = "cpu") -> Workload:
    """The same step in PyTorch eager (Adam, same shapes) on ``device`` ("cpu" or "cuda"); needs
    torch installed. On CUDA the step waits for the device, so a host clock measures it."""
    import torch
    from torch import nn

    torch.manual_seed(0)
    net, shape = peer_network(preset)
    net = net.to(device)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    loss_fn = nn.CrossEntropyLoss()
    x, t = torch.rand(batch, *shape, device=device), torch.randint(0, 10, (batch,), device=device)
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)

    def step():
        opt.zero_grad(set_to_none=False)
        loss_fn(net(x), t).backward()
        opt.step()
        sync()

    return Workload("step", f"step/torch-{device}/{preset}/b{batch}", step, 0, None,
                    {"preset": preset, "batch": batch, "framework": f"torch {torch.__version__} {device}"})


def predict(preset: str, batch: int = 1, backend: str | Backend = "cpu") -> Workload:
    """Inference as a user runs it: ``model.predict`` on a host batch (eval mode, scores back)."""
    from .presets import get_preset

    b = get_backend(backend)
    model = get_preset(preset)(backend=b, seed=0)
    x = np.random.default_rng(0).random((batch, *model.input_shape), dtype=np.float32)
    return Workload("predict", f"predict/accelnet/{preset}/b{batch}", lambda: model.predict(x), 0, b,
                    {"preset": preset, "batch": batch, "framework": "accelnet"})


def peer_predict(preset: str, batch: int = 1, device: str = "cpu") -> Workload:
    """The same inference in PyTorch: eval mode, under ``torch.inference_mode``; needs torch."""
    import torch

    torch.manual_seed(0)
    net, shape = peer_network(preset)
    net = net.to(device).eval()
    x = torch.rand(batch, *shape, device=device)
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)

    def run():
        with torch.inference_mode():
            out = net(x)
        sync()
        return out

    return Workload("predict", f"predict/torch-{device}/{preset}/b{batch}", run, 0, None,
                    {"preset": preset, "batch": batch, "framework": f"torch {torch.__version__} {device}"})


def format_table(rows: list[dict], columns: list[str]) -> str:
    """A plain-text table of ``rows`` (dicts) with the given columns."""
    def cell(v):
        if isinstance(v, float):
            return "" if math.isnan(v) else (f"{v:.3g}" if abs(v) < 1000 else f"{v:,.0f}")
        return str(v)

    cells = [[cell(r.get(c, "")) for c in columns] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) if cells else len(c) for i, c in enumerate(columns)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths)), "  ".join("-" * w for w in widths)]
    lines += ["  ".join(v.rjust(w) if i else v.ljust(w) for i, (v, w) in enumerate(zip(row, widths))) for row in cells]
    return "\n".join(lines)

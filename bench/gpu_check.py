"""The GPU check: everything accelnet needs an NVIDIA GPU for, in one run, into one Markdown report.

    python bench/gpu_check.py REPORT_DIR --data DATA_DIR [--backend gpu] [--quick]

For a machine with a GPU, CuPy and numba-cuda preinstalled and no network: install accelnet with
``pip install --no-deps --no-build-isolation -e .`` and bring the data folder along (it holds
``mnist/`` with the four IDX gzip files). In order, each part's output also saved beside the report:

1. ``accelnet info`` (versions, the device, the readiness check);
2. ``pytest -m gpu`` (CPU/GPU parity tests and the GPU variants of the backend axis);
3. the GPU benchmarks: fused Adam and SGD at 1e7 and 1e8 against the device's copy bandwidth, a
   training step of every preset at batch 100 and 1000 (CUDA events) beside PyTorch CUDA eager
   where torch sees the GPU;
4. two epochs of simple_convnet on MNIST on the GPU and on the CPU: samples/s, test accuracy;
5. the host's side of a deep_convnet step (``profile_step.py --host``): its time synchronized and
   not, and the Python functions it spends it in (the GPU step was host-bound on the first GPU);
6. the targets: each with its measured figure and whether it is met.

``--backend cpu --quick`` runs the same code on the CPU with tiny sizes and synthetic data: the
smoke test that keeps this script working (bench/test_profiles.py).
"""

from __future__ import annotations

import argparse
import platform
import subprocess
import sys
import time
import traceback
from pathlib import Path

import accelnet  # noqa: F401 - before NumPy, so accelnet's thread-pool defaults apply (README, "Thread pools")

ROOT = Path(__file__).resolve().parents[1]


def _run(cmd, log: Path, timeout: int) -> tuple[int, str]:
    """Run ``cmd``, save its output to ``log``; (exit code, last line)."""
    t0 = time.perf_counter()
    try:
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=ROOT)
        out, code = res.stdout + res.stderr, res.returncode
    except subprocess.TimeoutExpired as exc:  # its captured output is bytes, whatever text= says
        out = "".join(b.decode(errors="replace") if isinstance(b, bytes) else b or ""
                      for b in (exc.stdout, exc.stderr))
        out, code = f"{out}\ntimed out after {timeout} s", 124
    log.write_text(out)
    last = out.strip().splitlines()[-1] if out.strip() else ""
    return code, f"{last} ({time.perf_counter() - t0:.0f} s)"


def benchmarks(backend: str, quick: bool, figures: dict) -> list[str]:
    """Markdown lines: update bandwidth against copy, and step times beside PyTorch's (and the CPU's
    for deep_convnet at the large batch); the figures the targets need go into ``figures``."""
    from accelnet import workloads
    from accelnet.backend import get_backend
    from accelnet.presets import PRESETS

    min_time = 0.05 if quick else 1.0
    sizes = [10**4] if quick else [10**7, 10**8]
    lines = ["| workload | N | ms | GB/s | % of copy |", "| --- | ---: | ---: | ---: | ---: |"]
    for n in sizes:
        copy = workloads.measure(workloads.copy(n, backend), min_time=min_time)
        lines.append(f"| copy | {n:.0e} | {copy.median * 1e3:.3f} | {copy.gbps:.0f} | 100 |")
        for name in ("adam", "sgd"):
            t = workloads.measure(workloads.optimizer_update(name, n, backend=backend), min_time=min_time)
            lines.append(f"| {name} (fused) | {n:.0e} | {t.median * 1e3:.3f} | {t.gbps:.0f} | "
                         f"{100 * t.gbps / copy.gbps:.0f} |")
            figures[f"{name}_pct_copy"] = 100 * t.gbps / copy.gbps  # the largest size wins
    peer = _torch_device(backend)
    kernels = get_backend(backend).kernels
    batches = [8] if quick else [100, 1000]
    lines += ["", "| preset | batch | accelnet ms | samples/s | Numba launches | PyTorch ms | accelnet / PyTorch |",
              "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for preset in sorted(PRESETS):
        for batch in batches:
            step = workloads.train_step(preset, batch, backend=backend)
            ours = workloads.measure(step, min_time=min_time)
            launches = _launches_per_call(kernels, step)
            theirs = (workloads.measure(workloads.peer_train_step(preset, batch, peer), min_time=min_time)
                      if peer else None)
            ratio = f"{ours.median / theirs.median:.2f}" if theirs else "n/a"
            figures[(preset, batch)] = (ours.median, theirs.median if theirs else None)
            lines.append(f"| {preset} | {batch} | {ours.median * 1e3:.2f} | {batch / ours.median:,.0f} | {launches} | "
                         f"{theirs.median * 1e3 if theirs else float('nan'):.2f} | {ratio} |")
            print(lines[-1], flush=True)  # as it goes: a run stopped by a time limit keeps the rows so far
    cpu = workloads.measure(workloads.train_step("deep_convnet", batches[-1], backend="cpu"), min_time=min_time)
    figures["cpu_deep_convnet"] = cpu.median
    lines += ["", f"deep_convnet at batch {batches[-1]} on this machine's CPU: {cpu.median * 1e3:.1f} ms "
              f"({batches[-1] / cpu.median:,.0f} samples/s)"]
    return lines


def _launches_per_call(kernels, step) -> str:
    """The Numba kernel launches of one call of ``step`` (``kernels.LAUNCHES``; CuPy's not counted)."""
    if not hasattr(kernels, "LAUNCHES"):
        return "n/a"
    before = kernels.LAUNCHES
    step()
    return str(kernels.LAUNCHES - before)


def targets(figures: dict, backend: str, quick: bool) -> list[str]:
    """Markdown lines: issue 13's targets, each with its measured figure and a verdict."""
    big = 8 if quick else 1000
    rows = []

    def row(name, value, ok):
        rows.append(f"| {name} | {value} | {'met' if ok else 'NOT met'} |")

    if "adam_pct_copy" in figures:
        pct = figures["adam_pct_copy"]
        row("fused Adam at the largest size >= 80% of copy bandwidth", f"{pct:.0f}%", pct >= 80)
    if "epoch_speedup" in figures:
        s = figures["epoch_speedup"]
        row(f"simple_convnet epoch on {backend} >= 10x the CPU's samples/s", f"{s:.1f}x", s >= 10)
    if ("deep_convnet", big) in figures and "cpu_deep_convnet" in figures:
        ours, theirs = figures[("deep_convnet", big)]
        s = figures["cpu_deep_convnet"] / ours
        row(f"deep_convnet batch {big}: >= 20x this machine's CPU samples/s", f"{s:.1f}x", s >= 20)
        if theirs:
            ratio = ours / theirs
            row(f"deep_convnet batch {big}: step <= 1.5x PyTorch eager's", f"{ratio:.2f}x", ratio <= 1.5)
    if "accuracy_gap" in figures:
        gap = figures["accuracy_gap"]
        row("test accuracy within 0.2 points of the CPU's", f"{gap:.2f} points", gap <= 0.2)
    return ["| target | measured | verdict |", "| --- | ---: | --- |", *rows]


def _torch_device(backend: str) -> str | None:
    """The PyTorch device of the peer: CUDA beside the GPU backend, the CPU beside the CPU one."""
    try:
        import torch
    except ImportError:
        return None
    if backend == "gpu":
        return "cuda" if torch.cuda.is_available() else None
    return "cpu"


def epochs(backend: str, data_dir: str | None, quick: bool, figures: dict) -> list[str]:
    """Markdown lines: simple_convnet for two epochs on ``backend`` and on the CPU; the speed-up of
    the last epoch and the accuracy gap go into ``figures``."""
    from accelnet.data import load, synthetic
    from accelnet.optim import Adam
    from accelnet.presets import simple_convnet
    from accelnet.train import Trainer

    data = (synthetic(200, 100, (1, 28, 28), seed=0) if quick
            else load("mnist", data_dir, flatten=False, download=False, progress=False))
    lines = ["| backend | epoch | seconds | samples/s | test accuracy |", "| --- | ---: | ---: | ---: | ---: |"]
    last = {}
    for b in dict.fromkeys([backend, "cpu"]):
        model = simple_convnet(backend=b, seed=0)
        trainer = Trainer(model, Adam(model, lr=1e-3), data, batch_size=100, epochs=1 if quick else 2,
                          progress=False, train_eval_samples=1000)
        for rec in trainer.fit():
            last[b] = rec
            lines.append(f"| {b} | {rec['epoch']} | {rec['seconds']:.1f} | {rec['samples_per_s']:,.0f} | "
                         f"{100 * rec['test_acc']:.2f}% |")
    figures["epoch_speedup"] = last[backend]["samples_per_s"] / last["cpu"]["samples_per_s"]
    figures["accuracy_gap"] = 100 * abs(last[backend]["test_acc"] - last["cpu"]["test_acc"])
    return lines


def host_side(backend: str, quick: bool) -> list[str]:
    """Markdown lines: deep_convnet's step at batch 100 synchronized and not, and cProfile's top
    functions by own time (``profile_step.host_profile``)."""
    from profile_step import host_profile

    return ["```", host_profile("deep_convnet", 4 if quick else 100, 3 if quick else 100, backend).strip(), "```"]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("report_dir", type=Path)
    p.add_argument("--data", help="the folder holding mnist/ (default: $ACCELNET_DATA, the cache)")
    p.add_argument("--backend", choices=["gpu", "cpu"], default="gpu")
    p.add_argument("--quick", action="store_true", help="tiny sizes and synthetic data (the smoke test)")
    p.add_argument("--test-timeout", type=int, default=1800, help="seconds allowed for the pytest part")
    p.add_argument("--test-workers", type=int, default=1,
                   help="pytest-xdist processes for the pytest part (each compiles its own CUDA kernels)")
    p.add_argument("--skip", action="append", default=[], choices=["tests", "benchmarks", "epochs", "profile"],
                   help="leave a part out (repeatable), to fit a short lease")
    a = p.parse_args(argv)
    out = a.report_dir
    out.mkdir(parents=True, exist_ok=True)
    report = [f"# accelnet GPU check ({time.strftime('%Y-%m-%d %H:%M')}, {platform.node()})", ""]

    code, last = _run([sys.executable, "-m", "accelnet.cli", "info"], out / "info.txt", 300)
    report += ["## accelnet info", "", "```", (out / "info.txt").read_text().strip(), "```", ""]
    if "tests" not in a.skip:
        if a.quick:
            tests = [sys.executable, "-m", "pytest", "-q", "tests/test_backend.py"]
        else:
            tests = [sys.executable, "-m", "pytest", "-q", "-m", "gpu", "-p", "no:cacheprovider"]
        if a.test_workers > 1:
            tests += ["-n", str(a.test_workers)]
        code, last = _run(tests, out / "pytest.txt", a.test_timeout)
        report += ["## " + " ".join(tests[2:]), "", f"exit code {code}: `{last}` (full output: pytest.txt)", ""]
        (out / "gpu_check.md").write_text("\n".join(report) + "\n")

    figures: dict = {}
    parts = {"benchmarks": ("Benchmarks", lambda: benchmarks(a.backend, a.quick, figures)),
             "epochs": ("Two epochs of simple_convnet", lambda: epochs(a.backend, a.data, a.quick, figures)),
             "profile": ("The host's side of a step", lambda: host_side(a.backend, a.quick)),
             "targets": ("Targets (issue 13)", lambda: targets(figures, a.backend, a.quick))}
    for title, part in (parts[k] for k in parts if k not in a.skip):
        try:
            report += [f"## {title}", "", *part(), ""]
        except Exception as exc:  # one failing part must not lose the others' figures
            report += [f"## {title}", "", f"failed: {exc.__class__.__name__}: {exc}", "",
                       "```", traceback.format_exc().strip(), "```", ""]
        # written after every part, so that a run stopped by a time limit keeps what it measured
        (out / "gpu_check.md").write_text("\n".join(report) + "\n")
    print("\n".join(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())

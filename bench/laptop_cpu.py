"""This machine as a laptop's AVX2 CPU: every preset's step, and deep_convnet's convolutions,
with accelnet and PyTorch both held to AVX2 in the same run.

    python bench/laptop_cpu.py [--runs 3] [--batches 100] [--convs]

Each run is a fresh process with the environment an AVX2 laptop would give. accelnet:
``ACCELNET_SIMD_BYTES=32`` (its kernels' vectors), ``NUMBA_CPU_NAME=haswell`` with
``NUMBA_CPU_FEATURES=`` empty (Numba compiles for AVX2: with the name alone it keeps the host's
features, AVX-512 among them, and the kernels used its 32 vector and 8 mask registers),
``OPENBLAS_CORETYPE=Haswell`` (OpenBLAS's AVX2 kernels). PyTorch, whose peer process
inherits it: ``ATEN_CPU_CAPABILITY=avx2``, ``ONEDNN_MAX_CPU_ISA=AVX2``,
``MKL_ENABLE_INSTRUCTIONS=AVX2``. The run checks that each took (OpenBLAS's kernels, Numba's
CPU, the vector width, PyTorch's capability) and stops if one did not. Prints each run's
accelnet / PyTorch step ratios (interleaved over ``--rounds``, as ``accelnet bench`` compares),
then per preset every run and the median; ``--convs`` adds deep_convnet's convolutions against
the sgemm of the same run (OpenBLAS's AVX2 kernels).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys

AVX2 = {"ACCELNET_SIMD_BYTES": "32", "NUMBA_CPU_NAME": "haswell", "NUMBA_CPU_FEATURES": "",
        "OPENBLAS_CORETYPE": "Haswell", "ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2",
        "MKL_ENABLE_INSTRUCTIONS": "AVX2"}


def _isa_in_effect() -> dict:
    """What this process (and a PyTorch process it starts) actually run with."""
    import numba

    from accelnet.cpu_runtime import set_blas_threads
    from accelnet.kernels import simd

    torch = subprocess.run([sys.executable, "-c", "import torch; print(torch.backends.cpu.get_cpu_capability())"],
                           capture_output=True, text=True)
    return {"openblas": set_blas_threads.corename(), "numba_cpu": numba.config.CPU_NAME,
            "numba_features": numba.config.CPU_FEATURES, "vector_bytes": simd.VECTOR_BYTES,
            "torch": torch.stdout.strip() or None}


def child(batches: list[int], convs: bool, rounds: int = 6) -> None:
    """One run, in the AVX2 environment: JSON of the ISA in effect, the steps and the convs."""
    import accelnet  # noqa: F401 - before NumPy (README, "Thread pools")
    from accelnet import ab, workloads
    from accelnet.presets import PRESETS

    isa = _isa_in_effect()
    cells = [(preset, batch) for preset in PRESETS for batch in batches]
    if isa["torch"] is None:  # no PyTorch: accelnet's steps alone
        steps = [{"preset": p, "batch": b, "torch ms": None, "accelnet ms": 1e3 * workloads.measure(
            workloads.train_step(p, b), min_time=1.0, warmup=1.0).median} for p, b in cells]
    else:  # interleaved with PyTorch's, as ``accelnet bench`` does; its processes inherit the AVX2 settings
        result = ab.run_peer([f"step:{p}:{b}" for p, b in cells], rounds=rounds)
        steps = [{"preset": p, "batch": b, "accelnet ms": s["head_median_s"] * 1e3,
                  "torch ms": s["base_median_s"] * 1e3, "ratio": s["ratio"]}
                 for (p, b), s in zip(cells, result.summaries())]
    rate, rows = workloads.conv_rates(100) if convs else (None, [])
    print(json.dumps({"isa": isa, "steps": steps, "sgemm": rate, "convs": rows}))


def check_isa(isa: dict) -> None:
    want = {"openblas": "Haswell", "numba_cpu": "haswell", "numba_features": "", "vector_bytes": 32,
            "torch": "AVX2"}
    wrong = {k: isa.get(k) for k, v in want.items() if isa.get(k) != v and not (k == "torch" and isa.get(k) is None)}
    if wrong:
        sys.exit(f"laptop_cpu: the AVX2 settings did not take: {wrong} (wanted {want})")


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--batches", default="100")
    p.add_argument("--convs", action="store_true", help="also deep_convnet's convolutions against sgemm")
    p.add_argument("--rounds", type=int, default=6, help="rounds of the interleaved comparison with PyTorch")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    batches = [int(b) for b in a.batches.split(",")]
    if a.child:
        child(batches, a.convs, a.rounds)
        return
    runs = []
    for i in range(a.runs):
        cmd = [sys.executable, __file__, "--child", "--batches", a.batches, "--rounds", str(a.rounds)] + (
            ["--convs"] if a.convs else [])
        res = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, **AVX2})
        if res.returncode != 0:
            sys.exit(f"laptop_cpu: run {i + 1} failed:\n{res.stderr[-3000:]}")
        run = json.loads(res.stdout.strip().splitlines()[-1])
        check_isa(run["isa"])
        runs.append(run)
        print(f"run {i + 1}: {run['isa']}" + (f", sgemm {run['sgemm']:.0f} GFLOP/s" if run["sgemm"] else ""),
              flush=True)
        for s in run["steps"]:
            ratio = f"{s['ratio']:.3f}" if s["torch ms"] else "no torch"
            print(f"  {s['preset']} batch {s['batch']}: accelnet {s['accelnet ms']:.3f} ms, "
                  f"torch {s['torch ms'] or float('nan'):.3f} ms, {ratio}", flush=True)
    print("\n| preset | batch | accelnet / PyTorch, each run | median |")
    print("| --- | ---: | --- | ---: |")
    for j, s in enumerate(runs[0]["steps"]):
        ratios = [r["steps"][j]["ratio"] for r in runs if r["steps"][j]["torch ms"]]
        if ratios:
            print(f"| {s['preset']} | {s['batch']} | {', '.join(f'{x:.2f}' for x in ratios)} | "
                  f"{statistics.median(ratios):.2f} |")
    if a.convs:
        rates = ", ".join(f"{r['sgemm']:.0f}" for r in runs)
        print(f"\nsgemm (AVX2 kernels) per run: {rates} GFLOP/s; "
              "each cell: the runs' lowest/median/highest share of their run's sgemm")
        print("\n| conv | forward | weight gradient | input gradient |")
        print("| --- | --- | --- | --- |")
        for j, row in enumerate(runs[0]["convs"]):
            cells = []
            for key in ("fwd", "dW", "dx"):
                shares = sorted(r["convs"][j][f"{key} % sgemm"] for r in runs if f"{key} % sgemm" in r["convs"][j])
                cells.append("/".join(f"{x:.0f}" for x in (shares[0], statistics.median(shares), shares[-1]))
                             + "%" if shares else "")
            print(f"| {row['conv']} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()

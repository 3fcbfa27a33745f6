"""Train the book's networks on the real MNIST to their published accuracy and print a table.

    python bench/accuracy.py                       # all three (deep_convnet takes ~1 h on 2 cores)
    python bench/accuracy.py --only two_layer_net  # one of them

Needs the MNIST files (--data-dir, $ACCELNET_DATA, or a download). Appends one JSON line per
run to --out (default bench/results/accuracy.jsonl).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import sys
import time
from pathlib import Path

from accelnet.data import load
from accelnet.presets import get_preset
from accelnet.optim import get_optimizer
from accelnet.train import Trainer

# name -> (preset keywords, optimizer, optimizer keywords, batch, epochs, max steps, target, the book's setting)
RUNS = {
    "two_layer_net": ({"activation": "relu"}, "sgd", {"lr": 0.1}, 100, 17, 10000, 0.97,
                      "chapter 5 TwoLayerNet (ReLU, std 0.01): SGD lr 0.1, batch 100, 10,000 iterations"),
    "simple_convnet": ({}, "adam", {"lr": 0.001}, 100, 20, None, 0.988,
                       "chapter 7 SimpleConvNet: Adam lr 0.001, batch 100, 20 epochs"),
    "deep_convnet": ({}, "adam", {"lr": 0.001}, 100, 20, None, 0.993,
                     "chapter 8 DeepConvNet: Adam lr 0.001, batch 100, 20 epochs (the book: 99.38%)"),
}


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"{cpu}, {os.cpu_count()} cores"


def run(name: str, data_dir, device: str, seed: int, progress: bool) -> dict:
    kw, opt_name, opt_kw, batch, epochs, max_steps, target, setting = RUNS[name]
    conv = name.endswith("convnet")
    data = load("mnist", data_dir, flatten=not conv)
    model = get_preset(name)(backend=device, seed=seed, **kw)
    trainer = Trainer(model, get_optimizer(opt_name, model, **opt_kw), data, batch_size=batch, epochs=epochs,
                      max_steps=max_steps, seed=seed, progress=progress)
    t0 = time.perf_counter()

    def show(tr, r):
        print(f"  {name} epoch {r['epoch']:>2}: loss {r['loss']:.4f} train {r['train_acc']:.4f} "
              f"test {r['test_acc']:.4f} ({r['seconds']:.0f} s)", flush=True)

    trainer.callbacks.append(show)
    history = trainer.fit()
    wall = time.perf_counter() - t0
    reached = next((r["epoch"] for r in history if r["test_acc"] >= target), None)
    return {"model": name, "setting": setting, "device": device, "seed": seed, "steps": trainer.step,
            "epochs": trainer.epoch, "final_test_acc": history[-1]["test_acc"],
            "best_test_acc": max(r["test_acc"] for r in history), "target": target,
            "first_epoch_at_target": reached, "wall_s": round(wall, 1), "machine": machine(),
            "date": datetime.date.today().isoformat(), "history": history}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--only", default=",".join(RUNS), help="comma-separated subset of " + ",".join(RUNS))
    p.add_argument("--data-dir")
    p.add_argument("--device", default="cpu", choices=["cpu", "gpu"])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=str(Path(__file__).parent / "results" / "accuracy.jsonl"))
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)
    rows = []
    for name in args.only.split(","):
        if name not in RUNS:
            p.error(f"unknown run {name!r}: expected one of {', '.join(RUNS)}")
        r = run(name, args.data_dir, args.device, args.seed, not args.no_progress)
        rows.append(r)
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        with open(args.out, "a") as f:
            f.write(json.dumps(r) + "\n")
    print("\n| model | setting | final test acc | best | target | first epoch at target | wall time | machine |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: | --- |")
    for r in rows:
        print(f"| {r['model']} | {r['setting']} | {r['final_test_acc']:.4f} | {r['best_test_acc']:.4f} | "
              f"{r['target']} | {r['first_epoch_at_target'] or 'not reached'} | {r['wall_s'] / 60:.1f} min | "
              f"{r['machine']} ({r['device']}) |")
    return 0 if all(r["best_test_acc"] >= r["target"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())

"""The ``accelnet`` command line."""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import warnings

__all__ = ["main"]


def _versions() -> list[tuple[str, str]]:
    import numba
    import numpy

    import accelnet

    rows = [("accelnet", accelnet.__version__), ("python", platform.python_version()),
            ("numpy", numpy.__version__), ("numba", numba.__version__)]
    for mod in ("cupy", "numba_cuda", "torch", "tqdm", "matplotlib"):
        try:
            m = __import__(mod)
            rows.append((mod, getattr(m, "__version__", "installed")))
        except Exception:
            rows.append((mod, "not installed"))
    return rows


def cmd_info(args) -> int:
    from accelnet.backend import get_backend, gpu_status

    for name, version in _versions():
        print(f"{name:<12} {version}")
    rows = get_backend("cpu").describe()
    ok, reason = gpu_status()
    rows.update(get_backend("gpu").describe() if ok else {"gpu": f"unavailable: {reason}"})
    for name, value in rows.items():
        print(f"{name:<12} {value}")
    return 0


BENCH_GROUPS = ("optimizers", "im2col", "convs", "steps", "predict")


def _bench_optimizers(args, out):
    from accelnet import workloads

    rows = []
    sizes = args.sizes or ([10**7, 10**8] if args.device == "gpu" else [10**5, 10**6, 10**7])
    for n in sizes:
        tri = workloads.measure(workloads.triad(n, args.device), min_time=args.min_time)
        tri_in = workloads.measure(workloads.triad(n, args.device, inplace=True), min_time=args.min_time)
        cp = workloads.measure(workloads.copy(n, args.device), min_time=args.min_time)
        for name in args.optimizers:
            t = {(layout, impl): workloads.measure(workloads.optimizer_update(name, n, layout, impl, backend=args.device),
                                               min_time=args.min_time)
                 for layout in ("flat", "tensors") for impl in ("fused", "reference")}
            fused = t["flat", "fused"]
            rows.append({
                "optimizer": name, "N": f"{n:.0e}",
                "fused ms": fused.median * 1e3, "GB/s": fused.gbps, "% triad": 100 * fused.gbps / tri.gbps,
                "% in-place triad": 100 * fused.gbps / tri_in.gbps, "% copy": 100 * fused.gbps / cp.gbps,
                "ref ms": t["flat", "reference"].median * 1e3,
                "x ref": t["flat", "reference"].median / fused.median,
                "20 tensors fused ms": t["tensors", "fused"].median * 1e3,
                "20 tensors ref ms": t["tensors", "reference"].median * 1e3,
                "x ref 20 tensors": t["tensors", "reference"].median / fused.median,
            })
        rows.append({"optimizer": "triad", "N": f"{n:.0e}", "fused ms": tri.median * 1e3, "GB/s": tri.gbps,
                     "% triad": 100.0, "% in-place triad": 100 * tri.gbps / tri_in.gbps})
        rows.append({"optimizer": "in-place triad", "N": f"{n:.0e}", "fused ms": tri_in.median * 1e3,
                     "GB/s": tri_in.gbps, "% triad": 100 * tri_in.gbps / tri.gbps, "% in-place triad": 100.0})
        rows.append({"optimizer": "copy", "N": f"{n:.0e}", "fused ms": cp.median * 1e3, "GB/s": cp.gbps,
                     "% copy": 100.0})
    cols = ["optimizer", "N", "fused ms", "GB/s", "% triad", "% in-place triad", "% copy", "ref ms", "x ref", "20 tensors fused ms",
            "20 tensors ref ms", "x ref 20 tensors"]
    print("Optimizer updates (fused: one flat buffer, one kernel; ref: the textbook xp formulas; "
          "x ref 20 tensors: fused flat vs the reference over 20 tensors; triad: STREAM a = b + s*c, "
          "in-place triad: a = a + s*c)", file=out)
    print(workloads.format_table(rows, cols), file=out)


def _bench_im2col(args, out):
    from accelnet import workloads

    rows = []
    for case, shape, k, stride, pad in workloads.CONV_SHAPES:
        row = {"case": case, "input": "x".join(map(str, shape)), "kernel": f"{k}x{k} s{stride} p{pad}"}
        for kernel in ("im2col", "col2im"):
            make = getattr(workloads, kernel)
            fused = workloads.measure(make(case, "fused", args.device), min_time=args.min_time)
            ref = workloads.measure(make(case, "reference", args.device), min_time=args.min_time)
            row |= {f"{kernel} ms": fused.median * 1e3, f"{kernel} GB/s": fused.gbps,
                    f"{kernel} x ref": ref.median / fused.median}
        rows.append(row)
    cols = ["case", "input", "kernel", "im2col ms", "im2col GB/s", "im2col x ref", "col2im ms", "col2im GB/s",
            "col2im x ref"]
    print("im2col / col2im (x ref: speed-up over the reference xp kernels)", file=out)
    print(workloads.format_table(rows, cols), file=out)


def _bench_convs(args, out):
    from accelnet import workloads

    rate, rows = workloads.conv_rates(100, args.device, args.min_time)
    cols = ["conv"] + [f"{p} {k}" for p in ("fwd", "dW", "dx") for k in ("ms", "GF/s", "% sgemm")]
    print(f"deep_convnet's convolutions at batch 100 ({args.device}): effective GFLOP/s (the direct convolution's "
          f"flops, whatever algorithm ran) against a float32 1024^3 sgemm measured in the same run: "
          f"{rate:.0f} GFLOP/s; dx: the backward beyond the weight gradient", file=out)
    print(workloads.format_table(rows, cols), file=out)


def _bench_against_peer(args, out, ours, kind: str, default_batches: list[int], title: str):
    """Each preset at each batch size: accelnet's ``ours(preset, batch, backend)`` beside PyTorch
    eager's same ``kind`` of workload ("step" or "predict"), one table. On the CPU the two are
    interleaved round by round (``ab.run_peer``), so the machine's drift hits both alike."""
    import importlib.util

    from accelnet import ab, workloads
    from accelnet.presets import PRESETS

    cells = [(preset, batch) for preset in PRESETS for batch in args.batches or default_batches]
    peer = args.device == "cpu" and importlib.util.find_spec("torch") is not None
    rows = []
    if peer:
        try:
            result = ab.run_peer([f"{kind}:{p}:{b}" for p, b in cells], args.device, args.min_time, args.rounds)
        except ab.ABError as exc:
            raise CLIError(f"accelnet bench: the comparison with PyTorch failed: {exc}") from None
        for (preset, batch), s in zip(cells, result.summaries()):
            if s["verdict"] == "error":
                raise CLIError(f"accelnet bench: {preset} at batch {batch}: {s['error']}")
            interval = f"{s['ci_low']:.2f}-{s['ci_high']:.2f}" if math.isfinite(s["ci_high"]) else "-"
            rows.append({"model": preset, "batch": batch, "accelnet ms": s["head_median_s"] * 1e3,
                         "samples/s": batch / s["head_median_s"], "torch ms": s["base_median_s"] * 1e3,
                         "accelnet / torch": s["ratio"], "95% interval": interval})
        how = (f"PyTorch eager in its own processes, interleaved with accelnet's, {args.rounds} rounds; ms: the "
               f"rounds' medians; accelnet / torch: the Hodges-Lehmann estimate of the rounds' ratios")
    else:
        window = max(args.min_time, 1.0)  # whole steps and predicts: a longer warm-up and window than the kernels
        for preset, batch in cells:
            mine = workloads.measure(ours(preset, batch, backend=args.device), min_time=window, warmup=1.0).median
            rows.append({"model": preset, "batch": batch, "accelnet ms": mine * 1e3, "samples/s": batch / mine})
        how = "no PyTorch peer: not installed, or not on this device"
    cols = ["model", "batch", "accelnet ms", "samples/s"] + (
        ["torch ms", "accelnet / torch", "95% interval"] if peer else [])
    print(f"{title} ({args.device}; {how})", file=out)
    print(workloads.format_table(rows, cols), file=out)


def _bench_steps(args, out):
    from accelnet import workloads

    _bench_against_peer(args, out, workloads.train_step, "step",
                        [100, 1000] if args.device == "gpu" else [100], "Training step: forward, backward, Adam")


def _bench_predict(args, out):
    from accelnet import workloads

    _bench_against_peer(args, out, workloads.predict, "predict", [1, 1000],
                        "Inference: model.predict on a host batch, eval mode (PyTorch: inference_mode)")


def _check_bench_args(args) -> None:
    """Every flag of ``bench`` checked before anything runs: one line naming the flag."""
    from accelnet.backend import get_backend
    from accelnet.optim import OPTIMIZERS

    def bad(flag, msg):
        raise CLIError(f"accelnet bench: {flag} {msg}")

    if args.only is not None:
        if not args.only:
            bad("--only", f"names no group: choose from {','.join(BENCH_GROUPS)}")
        unknown = [g for g in args.only if g not in BENCH_GROUPS]
        if unknown:
            bad("--only", f"has unknown groups {unknown}: choose from {','.join(BENCH_GROUPS)}")
    unknown = [o for o in args.optimizers if o not in OPTIMIZERS]
    if unknown or not args.optimizers:
        bad("--optimizers", f"must name some of {','.join(sorted(OPTIMIZERS))}, got {unknown or 'none'}")
    for flag, values in (("--sizes", args.sizes), ("--batches", args.batches)):
        if values is not None and (not values or min(values) < 1):
            bad(flag, f"must be positive integers, got {values}")
    available = get_backend("cpu").available_bytes()
    if args.sizes and available:
        need = 10 * 4 * max(args.sizes)  # the update's float32 arrays, their reference copies and the triads
        if need > available:
            bad("--sizes", f"{max(args.sizes):.0e} needs about {need / 2**30:.1f} GiB, {available / 2**30:.1f} GiB "
                           f"is available: use smaller sizes")


def cmd_bench(args) -> int:
    from accelnet.backend import get_backend

    _check_bench_args(args)
    get_backend(args.device)  # fail early, with the install hint, on a missing GPU
    groups = args.only or list(BENCH_GROUPS)
    runners = {"optimizers": _bench_optimizers, "im2col": _bench_im2col, "convs": _bench_convs, "steps": _bench_steps,
               "predict": _bench_predict}
    for i, g in enumerate(groups):
        if i:
            print()
        runners[g](args, sys.stdout)
    return 0


def cmd_bench_ab(args) -> int:
    import subprocess
    from pathlib import Path

    from accelnet import ab
    from accelnet.data import cache_dir
    from accelnet.outputs import probe_folder

    if args.min_rounds > args.max_rounds:
        raise CLIError(f"--min-rounds {args.min_rounds} is above --max-rounds {args.max_rounds}")
    try:
        repo = Path(args.repo or subprocess.run(["git", "rev-parse", "--show-toplevel"], capture_output=True, text=True,
                                                check=True).stdout.strip())
        ab.resolve(repo, "HEAD")
    except (subprocess.CalledProcessError, FileNotFoundError, ValueError):
        raise CLIError(f"bench ab: {args.repo or 'the current directory'} is not in a git repository with commits "
                       f"(--repo)") from None
    workloads = ab.check_workloads(args.workloads or ab.DEFAULT_WORKLOADS)
    out = Path(args.out)
    probe_folder(out, "--out")
    cache = Path(args.cache) if args.cache else cache_dir() / "ab"
    log = lambda line: print(line, file=sys.stderr, flush=True)  # noqa: E731
    try:
        base_site, base = ab.build(repo, args.base, cache)
        head_site, head = ab.build(repo, args.head, cache)
        log(f"bench ab: {head} against {base}: {', '.join(workloads)}")
        result = ab.run_ab(base_site, head_site, base, head, workloads, args.device, args.min_time, args.min_rounds,
                           args.max_rounds, args.threshold, args.quiet_load, budget_s=args.budget, log=log)
    except ab.ABError as exc:
        raise CLIError(f"bench ab: {exc}") from None
    table = result.markdown()
    print(table)
    (out / "ab.md").write_text(table)
    (out / "ab.json").write_text(json.dumps(result.to_json(), indent=1))
    (out / "base.json").write_text(json.dumps(result.pytest_benchmark_json("base"), indent=1))
    (out / "head.json").write_text(json.dumps(result.pytest_benchmark_json("head"), indent=1))
    if result.regressions:
        print(f"regression: {', '.join(result.regressions)}", file=sys.stderr)
        return 1
    return 0


def _csv(kind):
    def parse(text):
        try:
            return [kind(float(v)) if kind is int else kind(v) for v in text.split(",") if v]
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected comma-separated {kind.__name__}s, got {text!r}") from None
    return parse


class CLIError(Exception):
    """A user error: reported as one line on stderr, exit code 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        raise CLIError(f"{self.prog}: {message}")


def _float_arg(name, allow_zero=False):
    """argparse type: a finite float > 0 (or >= 0), with an error that names the flag."""
    def parse(text):
        try:
            v = float(text)
        except ValueError:
            v = float("nan")
        if not ((v >= 0 if allow_zero else v > 0) and v < float("inf")):
            kind = "non-negative" if allow_zero else "positive"
            raise argparse.ArgumentTypeError(f"{name} must be a {kind} finite number, got {text!r}")
        return v
    return parse


def _positive_int_arg(name):
    """argparse type: a positive integer, with an error that names the flag."""
    def parse(text):
        from accelnet.validate import positive_int

        try:
            return positive_int(int(text), name)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{name} must be a positive integer, got {text!r}") from None
    return parse


def _model_kwargs(cfg: dict) -> dict:
    """Preset keywords from the training config; flags that do not apply to a preset are refused."""
    model = cfg["model"]
    kw = {}
    if cfg.get("dropout") is not None:
        if model not in ("multi_layer_net", "deep_convnet"):
            raise CLIError(f"--dropout applies to multi_layer_net and deep_convnet, not {model}")
        kw["dropout"] = cfg["dropout"]
    if cfg.get("activation") is not None:
        if model not in ("two_layer_net", "multi_layer_net"):
            raise CLIError(f"--activation applies to two_layer_net and multi_layer_net, not {model}")
        kw["activation"] = cfg["activation"]
    if cfg.get("batchnorm"):
        if model != "multi_layer_net":
            raise CLIError(f"--batchnorm applies to multi_layer_net, not {model}")
        kw["batchnorm"] = True
    if cfg.get("init") is not None:
        kw["init"] = cfg["init_std"] if cfg["init"] == "std" else cfg["init"]
    return kw


# Config keys a resume must keep (they decide the computation); the rest may change.
_FIXED_ON_RESUME = ("model", "optimizer", "lr", "batch_size", "weight_decay", "dropout", "batchnorm", "activation",
                    "init", "init_std", "dataset", "dtype", "seed", "schedule", "step_epochs", "gamma", "warmup_epochs",
                    "min_lr_factor", "augment")
_TRAIN_DEFAULTS = {"model": "simple_convnet", "optimizer": "adam", "lr": None, "batch_size": 100,
                   "weight_decay": 0.0, "dropout": None, "batchnorm": False, "activation": None, "init": None,
                   "init_std": 0.01,
                   "dataset": "mnist", "dtype": "float32", "seed": 0, "epochs": 20, "iterations": None,
                   "clip_norm": None, "schedule": "constant", "step_epochs": None, "gamma": None, "warmup_epochs": None,
                   "min_lr_factor": None, "augment": None, "eval_every": 1}
# Each schedule's parameters and their defaults (resolved when a run starts, then saved with it).
_SCHEDULE_PARAMS = {"step": {"step_epochs": None, "gamma": 0.1}, "cosine": {"min_lr_factor": 0.0},
                    "warmup-cosine": {"warmup_epochs": 1, "min_lr_factor": 0.0}, "constant": {}}


def _train_config(args, ckpt) -> dict:
    """The run's config: defaults, then the checkpoint's (on --resume), then the flags given."""
    given = {k: getattr(args, k) for k in _TRAIN_DEFAULTS if getattr(args, k) is not None}
    if args.batchnorm is False:
        given.pop("batchnorm", None)
    cfg = dict(_TRAIN_DEFAULTS)
    if ckpt is not None:
        saved = ckpt["meta"].get("config", {})
        for k, v in given.items():
            if k in _FIXED_ON_RESUME and k in saved and saved[k] != v:
                raise CLIError(f"--{k.replace('_', '-')} {v} differs from the checkpoint's {saved[k]}: "
                               f"a resumed run keeps its model, data and optimizer settings")
        cfg.update(saved)
        if "epochs" in given or "iterations" in given:  # a new end of the run replaces the saved one
            cfg["epochs"], cfg["iterations"] = _TRAIN_DEFAULTS["epochs"], None
    cfg.update(given)
    return cfg


def _schedule(args, cfg: dict, epochs: int, steps_per_epoch: int):
    """The learning-rate schedule of ``cfg`` over the run's steps (None: constant). Its parameters
    and its length are resolved at the run's start and saved in ``cfg``, so a resumed run (even
    one given a later end) follows the schedule it started with."""
    from accelnet.schedules import CosineDecay, StepDecay, Warmup

    name = cfg["schedule"]
    for key in ("step_epochs", "gamma", "warmup_epochs", "min_lr_factor"):
        if getattr(args, key) is not None and key not in _SCHEDULE_PARAMS[name]:
            users = [n for n, ps in _SCHEDULE_PARAMS.items() if key in ps]
            raise CLIError(f"--{key.replace('_', '-')} applies to --schedule {' or '.join(users)}, not {name}")
    for key, default in _SCHEDULE_PARAMS[name].items():
        if cfg[key] is None:
            cfg[key] = max(1, epochs // 3) if key == "step_epochs" else default
    if cfg.get("min_lr_factor") is not None and not 0 <= cfg["min_lr_factor"] <= 1:
        raise CLIError(f"--min-lr-factor must be in [0, 1], got {cfg['min_lr_factor']}")
    total = cfg.setdefault("schedule_steps", cfg["iterations"] or epochs * steps_per_epoch)
    if name == "step":
        return StepDecay(cfg["step_epochs"] * steps_per_epoch, cfg["gamma"])
    if name == "cosine":
        return CosineDecay(total, cfg["min_lr_factor"])
    if name == "warmup-cosine":
        warmup = cfg["warmup_epochs"] * steps_per_epoch
        if warmup >= total:
            raise CLIError(f"--warmup-epochs {cfg['warmup_epochs']} ({warmup} steps) leaves nothing of the run's "
                           f"{total} steps to decay over")
        return Warmup(warmup, CosineDecay(total - warmup, cfg["min_lr_factor"]))
    return None


def _world(device: str):
    """The communicator of this run and its device: one process, or every rank of ``mpiexec -n N
    accelnet train`` (MPI on the CPU, NCCL on GPUs, which picks each rank's GPU before any GPU
    work). Ranks other than 0 print nothing but their own failures."""
    from accelnet import distributed

    if distributed.launched_world()[1] == 1:
        return distributed.LOCAL, device
    if device == "auto":
        try:
            import cupy

            device = "gpu" if cupy.cuda.runtime.getDeviceCount() > 0 else "cpu"
        except Exception:  # no CuPy, no driver: the CPU
            device = "cpu"
    comm = distributed.init(device)
    if comm.rank != 0:
        sys.stdout = open(os.devnull, "w")
    return comm, device


def cmd_train(args) -> int:
    from accelnet.checkpoint import describe_checkpoint, load_checkpoint
    from accelnet.distributed import on_all_ranks, raised_on_all_ranks
    from accelnet.train import InsufficientMemory

    if args.epochs is not None and args.iterations is not None:
        raise CLIError("--epochs and --iterations both set where the run ends: give one of them")
    if args.resume and not args.checkpoint:
        raise CLIError("--resume needs --checkpoint PATH")
    comm, device = _world(args.device)
    ckpt = comm.on_root(lambda: load_checkpoint(args.checkpoint)) if args.resume else None
    def set_up():
        cfg = _train_config(args, ckpt)
        return (cfg, *_build_trainer(args, cfg, comm, device))

    # every rank sets up its part; a failure on any rank ends all of them with its message
    cfg, trainer, data = comm.collectively(set_up)
    model, opt = trainer.model, trainer.optimizer
    if ckpt is not None:
        with warnings.catch_warnings(record=True) as notes:
            warnings.simplefilter("always")
            trainer.resume(args.checkpoint)
        for note in notes:
            print(f"note: {note.message}", file=sys.stderr)  # rank 0's: the others do not warn
        if trainer.finished:
            end = f"--iterations {cfg['iterations']}" if cfg["iterations"] else f"--epochs {cfg['epochs']}"
            raise on_all_ranks(CLIError(
                f"nothing to train: {args.checkpoint} is at epoch {trainer.epoch}, step {trainer.step}, "
                f"which already reaches {end}; give a later end (--epochs or --iterations) to continue"))
    trainer.check_same_run({"config": cfg})
    end = cfg["iterations"] or trainer.epochs * len(trainer.batches)
    if ckpt is not None and cfg["schedule"] != "constant" and end > cfg["schedule_steps"]:
        print(f"note: the {cfg['schedule']} schedule covers the run's first {cfg['schedule_steps']:,} steps; the "
              f"{end - cfg['schedule_steps']:,} after them keep its final learning rate", file=sys.stderr)
    position = trainer.batches.position
    where = (f"step {trainer.step} (batch {position} of {len(trainer.batches)} in epoch {trainer.epoch + 1})"
             if position else f"epoch {trainer.epoch}")
    ranks = (f", {comm.size} ranks ({comm.engine}, {cfg['batch_size'] // comm.size} samples each"
             f"{', synchronized batch norm' if args.sync_batchnorm else ''})" if comm.size > 1 else "")
    print(f"{cfg['model']} on {data.name} ({len(data.x_train):,} train / {len(data.x_test):,} test), "
          f"{model.backend.name}, {model.dtype.name}, {opt!r}, batch {cfg['batch_size']}{ranks}, "
          + (f"{cfg['schedule']} schedule over {cfg['schedule_steps']:,} steps, " if cfg["schedule"] != "constant" else "")
          + (f"random shifts of up to {cfg['augment']} px, " if cfg["augment"] else "") + 
          f"{model.num_params:,} parameters" + (f", resumed at {where}" if ckpt else ""))
    header = f"{'epoch':>5}  {'step':>7}  {'loss':>8}  {'train acc':>9}  {'test acc':>8}  {'seconds':>8}  {'samples/s':>9}"
    sys.stdout.flush()
    _compile_notice(model, opt, comm.rank)
    print(header)

    def show(trainer, r):
        acc = lambda v, w: f"{v:>{w}.4f}" if v is not None else f"{'-':>{w}}"  # noqa: E731 (--eval-every)
        print(f"{r['epoch']:>5}  {r['step']:>7}  {r['loss']:>8.4f}  {acc(r['train_acc'], 9)}  {acc(r['test_acc'], 8)}  "
              f"{r['seconds']:>8.1f}  {r['samples_per_s']:>9,.0f}" + ("  (stopped inside the epoch)"
                                                                      if r.get("partial") else ""), flush=True)

    for r in trainer.history:
        show(trainer, r)
    trainer.callbacks.append(show)
    try:
        trainer.fit(meta={"config": cfg})
    except MemoryError as exc:
        mark = on_all_ranks if raised_on_all_ranks(exc) else (lambda e: e)
        if isinstance(exc, InsufficientMemory):
            raise mark(CLIError(f"accelnet: {exc} (--batch-size)")) from None
        kept = (f"the checkpoint {args.checkpoint} is intact ({describe_checkpoint(args.checkpoint)})"
                if args.checkpoint and os.path.exists(args.checkpoint) else "no checkpoint was written")
        raise mark(CLIError(f"accelnet: out of memory at step {trainer.step + 1} (batch size {cfg['batch_size']}): "
                            f"{kept}; try a smaller --batch-size")) from None
    final = trainer.history[-1]["test_acc"]
    print(f"final test accuracy: {final:.4f}")
    if args.plot and comm.rank == 0:
        from accelnet.plot import SKIPPED, have_matplotlib, training_curves

        if have_matplotlib():
            training_curves(trainer.history, args.plot, title=f"{cfg['model']} / {cfg['optimizer']} / {data.name}")
            print(f"plot written to {args.plot}")
        else:
            print(SKIPPED, file=sys.stderr)
    return 0


def _build_trainer(args, cfg: dict, comm, device: str):
    """The Trainer (and its data) of ``accelnet train``'s config on this rank."""
    from accelnet.augment import RandomShift
    from accelnet.backend import get_backend
    from accelnet.data import load
    from accelnet.optim import get_optimizer
    from accelnet.outputs import probe_writable
    from accelnet.presets import get_preset
    from accelnet.train import Trainer
    from accelnet.validate import within_samples

    if args.init_std is not None and cfg["init"] != "std":
        raise CLIError(f"--init-std applies with --init std, not with --init {cfg['init'] or '(the preset default)'}")
    if cfg["batch_size"] % comm.size:
        b, n = cfg["batch_size"], comm.size
        raise CLIError(f"--batch-size {b} (the global batch) does not split evenly over {n} ranks: use a multiple "
                       f"of {n}, e.g. {b - b % n or n}")
    backend = get_backend(device)  # a missing GPU fails before any data is read
    preset = get_preset(cfg["model"])
    model_kw = _model_kwargs(cfg)
    conv = cfg["model"] in ("simple_convnet", "deep_convnet")

    def read():
        return load(cfg["dataset"], args.data_dir, flatten=not conv, seed=cfg["seed"],
                    progress=not args.no_progress and comm.rank == 0)

    # rank 0 first: a missing file is downloaded once, not by every rank at the same time
    data = read() if comm.rank == 0 else None
    comm.bcast_obj(None)
    data = data or read()
    model = preset(backend=backend, dtype=cfg["dtype"], seed=cfg["seed"], **model_kw)
    within_samples(cfg["batch_size"], len(data.x_train), "--batch-size", cfg["dataset"])
    steps_per_epoch = -(-len(data.x_train) // cfg["batch_size"])
    epochs = cfg["epochs"]
    if cfg["iterations"]:
        epochs = -(-cfg["iterations"] // steps_per_epoch)
    opt_kw = {"weight_decay": cfg["weight_decay"], "clip_norm": cfg["clip_norm"],
              "schedule": _schedule(args, cfg, epochs, steps_per_epoch)}
    if cfg["lr"] is not None:
        opt_kw["lr"] = cfg["lr"]
    opt = get_optimizer(cfg["optimizer"], model, **opt_kw)
    if args.plot:
        probe_writable(args.plot, "--plot")
    trainer = Trainer(model, opt, data, batch_size=cfg["batch_size"], epochs=epochs, checkpoint=args.checkpoint,
                      history_path=args.history, progress=not args.no_progress, seed=cfg["seed"],
                      max_steps=cfg["iterations"], overwrite=args.overwrite, comm=comm,
                      sync_batchnorm=args.sync_batchnorm, check_every=args.check_every,
                      augment=RandomShift(cfg["augment"]) if cfg["augment"] else None, eval_every=cfg["eval_every"])
    return trainer, data


def _trained_model(args):
    """The model of ``--checkpoint``, rebuilt on ``--device``, and the checkpoint's training config."""
    from accelnet.backend import get_backend
    from accelnet.checkpoint import load_checkpoint
    from accelnet.saved_model import model_from

    ckpt = load_checkpoint(args.checkpoint)
    model = model_from(ckpt, args.checkpoint, backend=get_backend(args.device))
    return model, ckpt["meta"].get("config") or {}


def _compile_notice(model, optimizer=None, rank: int = 0) -> None:
    """Say so before the first run on this machine compiles the kernels (it takes a while)."""
    from accelnet.layers import Conv2d

    notice = model.backend.compile_notice(optimizer, any(isinstance(layer, Conv2d) for layer in model.layers))
    if notice and rank == 0:
        print(notice, file=sys.stderr, flush=True)


def _describe_trained(model, cfg: dict, path) -> str:
    what = cfg.get("model") or f"a {len(model.layers)}-layer Sequential"
    return f"{what} from {path} ({model.num_params:,} parameters, {model.backend.name}, {model.dtype.name})"


def cmd_evaluate(args) -> int:
    from accelnet.data import class_names, load
    from accelnet.evaluation import evaluate
    from accelnet.outputs import probe_writable

    if args.plot:
        probe_writable(args.plot, "--plot")
    model, cfg = _trained_model(args)
    dataset = args.dataset or cfg.get("dataset") or "mnist"
    data = load(dataset, args.data_dir, flatten=len(model.input_shape) == 1, seed=cfg.get("seed", 0),
                progress=not args.no_progress)
    if data.input_shape != model.input_shape:
        raise CLIError(f"the model takes samples of shape {model.input_shape}, {dataset} has {data.input_shape}")
    names = class_names(dataset) if model.output_shape == (10,) else None
    _compile_notice(model)
    result = evaluate(model, data.x_test, data.t_test, args.batch_size, names)
    print(f"{_describe_trained(model, cfg, args.checkpoint)} on the {len(data.x_test):,} {dataset} test images")
    print(result.report())
    if args.plot:
        from accelnet.plot import SKIPPED, confusion_matrix, have_matplotlib

        if have_matplotlib():
            confusion_matrix(result.matrix, args.plot, result.class_names,
                             title=f"{cfg.get('model', 'model')} on {dataset}: {result.accuracy:.2%}")
            print(f"confusion matrix written to {args.plot}")
        else:
            print(SKIPPED, file=sys.stderr)
    return 0


def cmd_predict(args) -> int:
    import numpy as np

    from accelnet.data import class_names
    from accelnet.inputs import InputError, read_inputs
    from accelnet.losses import SoftmaxCrossEntropy

    model, cfg = _trained_model(args)
    names = class_names(cfg.get("dataset", "mnist")) if model.output_shape == (10,) else None
    samples, labels, failed = [], [], 0
    for f in args.files:
        try:
            x = read_inputs(f, model.input_shape, invert=args.invert)
        except InputError as exc:
            print(f"accelnet predict: {exc}", file=sys.stderr)
            failed += 1
            continue
        samples.append(x)
        labels += [f] if len(x) == 1 else [f"{f}[{i}]" for i in range(len(x))]
    if samples:
        _compile_notice(model)
        scores = model.backend.to_numpy(model.predict(np.concatenate(samples), args.batch_size)).astype(np.float64)
        prob = SoftmaxCrossEntropy.probabilities(scores)
        width = max(5, *(len(label) for label in labels))
        print(f"{'input':<{width}}  class  probability")
        for label, p in zip(labels, prob):
            k = int(p.argmax())
            shown = f"{k}" + (f" {names[k]}" if names and names[k] != str(k) else "")
            print(f"{label:<{width}}  {shown:<5}  {p[k]:.4f}")
    if failed:
        rest = "the others were predicted" if samples else "nothing was predicted"
        print(f"accelnet predict: {failed} of {len(args.files)} file{'s' if len(args.files) > 1 else ''} could not be "
              f"read (above); {rest}", file=sys.stderr)
        return 1
    return 0


def cmd_export(args) -> int:
    import tempfile

    from accelnet.onnx_export import MISSING, export_onnx
    from accelnet.outputs import probe_writable

    try:
        import onnx  # noqa: F401
    except ImportError:
        raise CLIError(f"accelnet: {MISSING}") from None
    probe_writable(args.onnx, "--onnx")
    model, cfg = _trained_model(args)
    folder = os.path.dirname(os.path.abspath(args.onnx))
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{os.path.basename(args.onnx)}.", suffix=".tmp")
    os.close(fd)
    try:
        outputs = export_onnx(model, tmp, opset=args.opset)
        os.replace(tmp, args.onnx)  # an existing file is replaced only by a complete, checked graph
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    print(f"{_describe_trained(model, cfg, args.checkpoint)} written to {args.onnx} (ONNX opset {args.opset}; input "
          f"'input' float32 (N, {', '.join(map(str, model.input_shape))}) in [0, 1], output "
          + ", ".join(f"'{name}'" for name in outputs) + ")")
    return 0


def _optimizer_lrs(defaults: dict):
    """argparse type: 'sgd=0.95,adam=0.3' -> {'sgd': 0.95, 'adam': 0.3}; a name alone takes its lr in
    ``defaults`` (else the optimizer's own default)."""
    from accelnet.optim import OPTIMIZERS

    def parse(text):
        out = {}
        for item in filter(None, text.split(",")):
            name, _, lr = item.partition("=")
            if name not in OPTIMIZERS:
                raise argparse.ArgumentTypeError(f"unknown optimizer {name!r}: expected one of {sorted(OPTIMIZERS)}")
            out[name] = _float_arg(f"the lr of {name}")(lr) if lr else defaults.get(name, OPTIMIZERS[name]().base_lr)
        if not out:
            raise argparse.ArgumentTypeError("no optimizer given")
        return out
    return parse


def _point(text):
    try:
        x, y = (float(v) for v in text.split(","))
    except ValueError:
        x = y = float("nan")
    if not (math.isfinite(x) and math.isfinite(y)):
        raise argparse.ArgumentTypeError(f"expected two finite numbers X,Y, got {text!r}")
    return (x, y)


def _seed_arg(text):
    """argparse type: a seed is a non-negative integer (NumPy's SeedSequence takes no other)."""
    try:
        v = int(text)
    except ValueError:
        v = -1
    if v < 0:
        raise argparse.ArgumentTypeError(f"--seed must be a non-negative integer, got {text!r}")
    return v


def _add_compare(sub) -> None:
    """`accelnet compare WHAT` (the book's chapter 6 experiments) and `accelnet tune`."""
    from accelnet.compare import run
    from accelnet.experiments import MNIST_OPTIMIZER_DEFAULTS, TRAJECTORY_DEFAULTS

    def common(p, data=True):
        p.add_argument("--seed", type=_seed_arg, default=0, help="same seed, same numbers (default 0)")
        p.add_argument("--device", choices=["cpu", "gpu", "auto"], default="cpu", help="the backend: cpu (NumPy + Numba), gpu (CuPy + numba.cuda) or auto; backend= in Python")
        p.add_argument("--out", default="accelnet-results", help="folder for the CSV and PNG files")
        p.add_argument("--no-progress", action="store_true", help="no progress bars")
        if data:
            p.add_argument("--dataset", choices=["mnist", "fashion-mnist", "synthetic"], default="mnist")
            p.add_argument("--data-dir", help="folder holding mnist/ (else $ACCELNET_DATA, the cache)")
        p.set_defaults(func=run)

    c = sub.add_parser("compare", help="the book's chapter 6 experiments, as CSV and PNG")
    what = c.add_subparsers(dest="what", metavar="WHAT", parser_class=_Parser)
    what.required = True
    t = what.add_parser("trajectories", help="optimizers' paths on f(x, y) from (-7, 2) over its contour plot")
    t.add_argument("--function", default="x**2 / 20 + y**2", help="f(x, y) as a NumPy expression")
    t.add_argument("--start", type=_point, default=(-7.0, 2.0), metavar="X,Y")
    t.add_argument("--steps", type=_positive_int_arg("--steps"), default=30)
    t.add_argument("--optimizers", type=_optimizer_lrs(TRAJECTORY_DEFAULTS), metavar="NAME=LR,...",
                   help="default sgd=0.95,momentum=0.1,adagrad=1.5,rmsprop=0.1,adam=0.3")
    common(t, data=False)
    o = what.add_parser("optimizers", help="SGD/Momentum/AdaGrad/RMSprop/Adam loss curves on MNIST")
    o.add_argument("--optimizers", type=_optimizer_lrs(MNIST_OPTIMIZER_DEFAULTS), metavar="NAME=LR,...",
                   help="default sgd=0.01,momentum=0.01,adagrad=0.01,rmsprop=0.01,adam=0.001")
    o.add_argument("--iterations", type=_positive_int_arg("--iterations"), default=2000)
    o.add_argument("--batch-size", type=_positive_int_arg("--batch-size"), default=128)
    common(o)
    i = what.add_parser("init", help="std 0.01 vs Xavier vs He: loss curves and activation histograms")
    i.add_argument("--iterations", type=_positive_int_arg("--iterations"), default=2000)
    i.add_argument("--batch-size", type=_positive_int_arg("--batch-size"), default=128)
    common(i)
    b = what.add_parser("batchnorm", help="with vs without batch norm across initial weight scales")
    b.add_argument("--epochs", type=_positive_int_arg("--epochs"), default=20)
    b.add_argument("--train-size", type=_positive_int_arg("--train-size"), default=1000)
    b.add_argument("--scales", type=_positive_int_arg("--scales"), default=16, help="weight stds from 1 to 1e-4")
    common(b)
    r = what.add_parser("regularization", help="overfitting: none vs weight decay 0.1 vs dropout 0.15")
    r.add_argument("--epochs", type=_positive_int_arg("--epochs"), default=201)
    r.add_argument("--train-size", type=_positive_int_arg("--train-size"), default=300)
    common(r)

    tu = sub.add_parser("tune", help="random search of lr and weight decay on a validation split")
    tu.add_argument("--trials", type=_positive_int_arg("--trials"), default=100)
    tu.add_argument("--epochs", type=_positive_int_arg("--epochs"), default=50)
    tu.add_argument("--train-size", type=_positive_int_arg("--train-size"), default=500)
    common(tu)


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="accelnet", description="Train the book's networks on CPU or GPU.")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True

    from accelnet.data import DATASETS
    from accelnet.presets import PRESETS
    from accelnet.optim import OPTIMIZERS

    t = sub.add_parser("train", help="train a preset on MNIST, Fashion-MNIST or synthetic data",
                       description="Train one of the book's networks. Defaults: simple_convnet, Adam, MNIST, CPU.")
    t.add_argument("--model", choices=sorted(PRESETS), help="default simple_convnet")
    t.add_argument("--optimizer", choices=sorted(OPTIMIZERS), help="default adam")
    t.add_argument("--lr", type=_float_arg("--lr"), help="learning rate (default: the optimizer's, as the book)")
    t.add_argument("--batch-size", type=_positive_int_arg("--batch-size"), help="default 100")
    t.add_argument("--epochs", type=_positive_int_arg("--epochs"), help="total epochs (default 20)")
    t.add_argument("--iterations", type=_positive_int_arg("--iterations"), help="stop after this many steps instead")
    t.add_argument("--weight-decay", type=_float_arg("--weight-decay", allow_zero=True), help="L2 (decoupled for adamw)")
    t.add_argument("--clip-norm", type=_float_arg("--clip-norm"), help="clip gradients to this global norm")
    t.add_argument("--schedule", choices=["constant", "step", "cosine", "warmup-cosine"],
                   help="learning-rate schedule over the run's steps (default constant)")
    t.add_argument("--step-epochs", type=_positive_int_arg("--step-epochs"), metavar="EPOCHS",
                   help="step: multiply the lr by --gamma every EPOCHS epochs (default: a third of the run)")
    t.add_argument("--gamma", type=_float_arg("--gamma"), help="step: the factor (default 0.1)")
    t.add_argument("--warmup-epochs", type=_positive_int_arg("--warmup-epochs"), metavar="EPOCHS",
                   help="warmup-cosine: epochs of linear warm-up before the cosine (default 1)")
    t.add_argument("--min-lr-factor", type=_float_arg("--min-lr-factor", allow_zero=True), metavar="F",
                   help="cosine, warmup-cosine: the last lr as a fraction of --lr (default 0)")
    t.add_argument("--augment", type=_positive_int_arg("--augment"), nargs="?", const=2, metavar="PIXELS",
                   help="shift each training image by up to PIXELS (default 2) pixels each way, at random (seeded)")
    t.add_argument("--eval-every", type=_positive_int_arg("--eval-every"), metavar="EPOCHS",
                   help="measure train/test accuracy every EPOCHS epochs (default 1; always where the run stops)")
    t.add_argument("--dropout", type=_float_arg("--dropout", allow_zero=True), help="dropout ratio (multi_layer_net, deep_convnet)")
    t.add_argument("--batchnorm", action="store_true", default=False, help="batch norm (multi_layer_net)")
    t.add_argument("--activation", choices=["relu", "sigmoid", "tanh"],
                   help="hidden activation (two_layer_net: default sigmoid; multi_layer_net: default relu)")
    t.add_argument("--init", choices=["he", "xavier", "std"], help="weight init (default: the preset's)")
    t.add_argument("--init-std", type=_float_arg("--init-std"), help="std for --init std (default 0.01)")
    t.add_argument("--dataset", choices=sorted(DATASETS) + ["synthetic"], help="default mnist")
    t.add_argument("--data-dir", help="folder holding mnist/ and fashion-mnist/ (else $ACCELNET_DATA, the cache)")
    t.add_argument("--device", choices=["cpu", "gpu", "auto"], default="cpu", help="the backend: cpu (NumPy + Numba), gpu (CuPy + numba.cuda) or auto; backend= in Python")
    t.add_argument("--dtype", choices=["float32", "float64"])
    t.add_argument("--seed", type=_seed_arg)
    t.add_argument("--checkpoint", help="write a checkpoint here after every epoch (atomically)")
    t.add_argument("--resume", action="store_true", help="continue from --checkpoint")
    t.add_argument("--overwrite", action="store_true",
                   help="replace an existing --checkpoint and --history of another run (never a non-accelnet file)")
    t.add_argument("--history", help="append one JSON line per epoch to this file")
    t.add_argument("--plot", help="write loss/accuracy curves to this PNG")
    t.add_argument("--no-progress", action="store_true", help="no progress bars")
    t.add_argument("--sync-batchnorm", action="store_true",
                   help="under mpiexec: batch norm statistics over the global batch (default: each rank's own)")
    t.add_argument("--check-every", type=_positive_int_arg("--check-every"), metavar="STEPS",
                   help="under mpiexec: compare the ranks' parameters every STEPS steps too (always at epoch ends)")
    t.set_defaults(func=cmd_train)
    def trained(p, batch=True):
        p.add_argument("--checkpoint", required=True, help="a checkpoint of accelnet train (or accelnet.save_model)")
        p.add_argument("--device", choices=["cpu", "gpu", "auto"], default="cpu", help="the backend to run on")
        if batch:
            p.add_argument("--batch-size", type=_positive_int_arg("--batch-size"), default=1000,
                           help="samples per forward pass (default 1000)")

    e = sub.add_parser("evaluate", help="test accuracy, per-class accuracy and the confusion matrix of a checkpoint",
                       description="Evaluate a trained model on its dataset's test images.")
    trained(e)
    e.add_argument("--dataset", choices=sorted(DATASETS) + ["synthetic"],
                   help="default: the one it was trained on")
    e.add_argument("--data-dir", help="folder holding mnist/ and fashion-mnist/ (else $ACCELNET_DATA, the cache)")
    e.add_argument("--plot", help="write the confusion matrix to this PNG")
    e.add_argument("--no-progress", action="store_true", help="no download progress bar")
    e.set_defaults(func=cmd_evaluate)
    pr = sub.add_parser("predict", help="class and probability of images, .npy arrays or IDX files",
                        description="Predict with a trained model. Images are converted to grayscale, resized to "
                                    "the model's input and scaled to [0, 1]; integer arrays are scaled from 0-255.")
    trained(pr)
    pr.add_argument("files", nargs="+", metavar="FILE", help="PNG/JPEG/... images, .npy arrays or IDX files")
    pr.add_argument("--invert", action="store_true",
                    help="dark strokes on a light background (MNIST's digits are light on dark)")
    pr.set_defaults(func=cmd_predict)
    ex = sub.add_parser("export", help="write a checkpoint's model as an ONNX graph",
                        description="Export a trained model to ONNX (needs the export extra).")
    trained(ex, batch=False)
    ex.add_argument("--onnx", required=True, metavar="PATH", help="the .onnx file to write")
    ex.add_argument("--opset", type=_positive_int_arg("--opset"), default=17, help="ONNX opset (default 17)")
    ex.set_defaults(func=cmd_export)

    info = sub.add_parser("info", help="versions, available backends, GPU name, Numba threading layer")
    info.set_defaults(func=cmd_info)

    from accelnet.optim import OPTIMIZERS

    _add_compare(sub)

    b = sub.add_parser("bench", help="per-kernel and per-step throughput as tables (the bench/ suite's workloads)")
    b.add_argument("--device", choices=["cpu", "gpu"], default="cpu", help="the backend to time: cpu or gpu")
    b.add_argument("--only", type=_csv(str), metavar="GROUPS", help=f"comma-separated subset of {','.join(BENCH_GROUPS)}")
    b.add_argument("--sizes", type=_csv(int), metavar="N,N",
                   help="optimizer buffer sizes (default 1e5,1e6,1e7 on cpu; 1e7,1e8 on gpu)")
    b.add_argument("--optimizers", type=_csv(str), default=sorted(OPTIMIZERS), metavar="NAMES")
    b.add_argument("--batches", type=_csv(int), metavar="B,B",
                   help="batch sizes of the steps (default 100 on cpu; 100,1000 on gpu) and of predict "
                        "(default 1,1000)")
    b.add_argument("--min-time", type=_float_arg("--min-time", allow_zero=True), default=0.3,
                   help="seconds of timed calls per workload (default 0.3; for steps and predict, per side "
                        "and round)")
    b.add_argument("--rounds", type=_positive_int_arg("--rounds"), default=6,
                   help="rounds of the steps' and predict's interleaved comparison with PyTorch (default 6, the "
                        "fewest that give a 95%% interval)")
    b.set_defaults(func=cmd_bench)
    ab = b.add_subparsers(dest="bench_command", metavar="ab").add_parser(
        "ab", help="interleaved A/B of two git revisions with a statistical verdict (exit 1 on a regression)")
    ab.add_argument("base", help="the revision to compare against (a commit, branch or tag)")
    ab.add_argument("head", nargs="?", help="the revision under test (default: the working tree)")
    ab.add_argument("--repo", help="the git repository (default: the one holding the current directory)")
    ab.add_argument("--workloads", type=_csv(str), metavar="W,W",
                    help="step:PRESET[:BATCH], predict:PRESET[:BATCH] and OPTIMIZER:N entries (default: every preset's step, adam:1e6, adam:1e7)")
    ab.add_argument("--device", choices=["cpu", "gpu"], default="cpu", help="cpu, or gpu (timed with CUDA events)")
    ab.add_argument("--threshold", type=_float_arg("--threshold"), default=0.05,
                    help="a regression is a 95%% interval of HEAD/BASE above 1 + this (default 0.05)")
    ab.add_argument("--min-rounds", type=_positive_int_arg("--min-rounds"), default=8)
    ab.add_argument("--max-rounds", type=_positive_int_arg("--max-rounds"), default=20)
    ab.add_argument("--min-time", type=_float_arg("--min-time"), default=0.5,
                    help="seconds of timed calls per side, workload and round (default 0.5)")
    ab.add_argument("--budget", type=_float_arg("--budget"), metavar="SECONDS", help="stop starting rounds after this")
    ab.add_argument("--quiet-load", type=_float_arg("--quiet-load", allow_zero=True), default=0.05,
                    help="repeat a round in which other processes used more than this share of the CPUs (default 0.05)")
    ab.add_argument("--out", default="accelnet-ab", help="folder for ab.json, ab.md and pytest-benchmark JSON files")
    ab.add_argument("--cache", help="where built revisions are kept (default ~/.cache/accelnet/ab)")
    ab.set_defaults(func=cmd_bench_ab)
    return p


def main(argv=None) -> int:
    """Run a command; user errors print one line on stderr (exit 2), divergence exits 3.

    Under ``mpiexec``, an error every rank met is printed once, by rank 0, and every rank exits
    with its code; an error one rank met alone is printed with its rank and ends the whole job
    (MPI_Abort), so no rank waits forever for it.
    """
    from accelnet.backend import BackendUnavailable
    from accelnet.checkpoint import CheckpointError
    from accelnet.data import DataError
    from accelnet.distributed import DistributedError
    from accelnet.train import Diverged

    try:
        args = build_parser().parse_args(argv)
        return args.func(args)
    except Diverged as exc:
        return _report(exc, 3, f"accelnet: diverged: {exc}")
    except (CLIError, ValueError, DataError, CheckpointError, BackendUnavailable, DistributedError, OSError) as exc:
        msg = str(exc) if isinstance(exc, CLIError) else f"error: {exc}"
        return _report(exc, 2, f"accelnet: {msg}" if not msg.startswith("accelnet") else msg)
    except KeyboardInterrupt as exc:
        return _report(exc, 130, f"accelnet: interrupted{': ' + str(exc) if str(exc) else ''}")


def _report(exc: BaseException, code: int, line: str) -> int:
    from accelnet import distributed

    comm = distributed.world()
    if comm.size == 1:
        # launched ranks that failed before their world was set up met the same error: rank 0 says it
        if distributed.launched_world()[0] == 0:
            print(line, file=sys.stderr)
        return code
    if distributed.raised_on_all_ranks(exc):
        if comm.rank == 0:
            print(line, file=sys.stderr)
        return code
    print(f"accelnet: rank {comm.rank} of {comm.size}: {line.removeprefix('accelnet: ')}", file=sys.stderr)
    comm.abort(code)
    return code


if __name__ == "__main__":
    sys.exit(main())

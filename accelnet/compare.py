"""``accelnet compare ...`` and ``accelnet tune``: run an experiment, write its CSV (always)
and PNG (with matplotlib), print a summary. The numbers come from :mod:`accelnet.experiments`."""

from __future__ import annotations

import csv
import sys
from pathlib import Path

import numpy as np

from . import experiments as ex
from .data import load
from .outputs import probe_folder
from .plot import SKIPPED, have_matplotlib
from .validate import within_samples

__all__ = ["run"]


def _write_csv(path: Path, header: list, rows) -> None:
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)
    print(f"wrote {path}")


def _plot(args, fn, *a, **kw) -> None:
    """Call a plot.* function (its last positional argument is the PNG path), or note the skip once."""
    if have_matplotlib():
        fn(*a, **kw)
        print(f"wrote {a[-1]}")
    elif not getattr(args, "_warned", False):
        print(SKIPPED, file=sys.stderr)
        args._warned = True


def _table(header: list, rows: list) -> None:
    cells = [[f"{v:.4g}" if isinstance(v, float) else str(v) for v in r] for r in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) for i, h in enumerate(header)]
    print("  ".join(h.ljust(w) for h, w in zip(header, widths)))
    for r in cells:
        print("  ".join(v.ljust(w) for v, w in zip(r, widths)))


def _data(args):
    """The dataset, with the size flags checked against it (exit 2 naming the flag, not a silent cut)."""
    data = load(args.dataset, args.data_dir, flatten=True, seed=args.seed, progress=not args.no_progress)
    for flag in ("batch_size", "train_size"):
        if getattr(args, flag, None) is not None:
            within_samples(getattr(args, flag), len(data.x_train), f"--{flag.replace('_', '-')}", data.name)
    return data


def _loss_curves(args, stem: Path, c: ex.Curves, title: str, ylim) -> list:
    """Raw and smoothed loss per iteration to STEM.csv and the smoothed curves to STEM.png;
    returns [name, final smoothed loss] rows for the summary table."""
    from . import plot

    smooth = {k: ex.smooth_curve(v) for k, v in c.series.items()}
    names = list(c.series)
    _write_csv(stem.with_suffix(".csv"), ["iteration"] + names + [f"{n} smoothed" for n in names],
               [[x] + [c.series[n][i] for n in names] + [float(smooth[n][i]) for n in names]
                for i, x in enumerate(c.x)])
    _plot(args, plot.curves, c.x, smooth, stem.with_suffix(".png"), xlabel="iteration", ylabel="loss (smoothed)",
          title=title, ylim=ylim)
    return [[n, float(smooth[n][-1])] for n in names]


def trajectories(args, out: Path) -> None:
    from . import plot

    paths = ex.trajectories(args.optimizers or ex.TRAJECTORY_DEFAULTS, args.function, args.start, args.steps)
    f = ex.parse_function(args.function)
    with np.errstate(all="ignore"):
        values = {name: f(p[:, 0], p[:, 1]).astype(float) for name, p in paths.items()}  # f along each path
    _write_csv(out / "trajectories.csv", ["optimizer", "step", "x", "y", "f"],
               [[name, i, x, y, float(values[name][i])] for name, p in paths.items() for i, (x, y) in enumerate(p)])
    _plot(args, plot.trajectories, paths, f, out / "trajectories.png", title=f"f(x, y) = {args.function}")
    lrs = args.optimizers or ex.TRAJECTORY_DEFAULTS
    for name, v in values.items():
        if not np.isfinite(v).all():
            print(f"note: {name}'s path leaves where f is finite at step {int(np.argmin(np.isfinite(v)))} "
                  f"(lr {lrs[name]}): its values from there on are NaN or inf", file=sys.stderr)
    _table(["optimizer", "lr", "final x", "final y", "f(final)", "sign changes of y"],
           [[n, lrs[n], float(p[-1, 0]), float(p[-1, 1]), float(values[n][-1]),
             int(np.sum(np.diff(np.sign(p[:, 1])) != 0))] for n, p in paths.items()])


def optimizers(args, out: Path) -> None:
    c = ex.compare_optimizers(_data(args), args.optimizers, args.iterations, args.batch_size, backend=args.device,
                              seed=args.seed, progress=not args.no_progress)
    final = _loss_curves(args, out / "optimizers", c, "optimizers on MNIST (5-layer ReLU net, batch 128)", (0, 1))
    _table(["optimizer", "final loss (smoothed)"], final)


def init(args, out: Path) -> None:
    from . import plot

    c = ex.compare_init(_data(args), args.iterations, args.batch_size, backend=args.device, seed=args.seed,
                        progress=not args.no_progress)
    final = _loss_curves(args, out / "init", c, "weight init on MNIST (5-layer ReLU net, SGD)", (0, 2.5))
    rows = []
    for act in ("sigmoid", "relu"):
        hists = ex.activation_histograms(act, seed=args.seed)
        rows += [[act, label, layer + 1, float(a.mean()), float(a.std())] for label, acts in hists.items()
                 for layer, a in enumerate(acts)]
        _plot(args, plot.histograms, hists, out / f"init_histograms_{act}.png",
              title=f"activations of a 5-layer {act} net")
    _write_csv(out / "init_activations.csv", ["activation", "init", "layer", "mean", "std"], rows)
    _table(["init", "final loss (smoothed)"], final)


def batchnorm(args, out: Path) -> None:
    from . import plot

    scales = np.logspace(0, -4, num=args.scales)
    res = ex.compare_batchnorm(_data(args), scales, args.epochs, args.train_size, backend=args.device,
                               seed=args.seed, progress=not args.no_progress)
    _write_csv(out / "batchnorm.csv", ["weight_std", "epoch", "batchnorm_train_acc", "plain_train_acc"],
               [[s, e + 1, r["batchnorm"][e], r["plain"][e]] for s, r in res.items() for e in range(args.epochs)])
    _plot(args, plot.panels, {f"std={s:.2g}": {"batch norm": r["batchnorm"], "plain": r["plain"]}
                              for s, r in res.items()}, out / "batchnorm.png", xlabel="epoch",
          ylabel="train accuracy", title="with and without batch norm, by initial weight scale", ylim=(0, 1))
    _table(["weight std", "batch norm acc", "plain acc"],
           [[s, r["batchnorm"][-1], r["plain"][-1]] for s, r in res.items()])


def regularization(args, out: Path) -> None:
    from . import plot

    res = ex.compare_regularization(_data(args), args.epochs, args.train_size, backend=args.device, seed=args.seed,
                                    progress=not args.no_progress)
    _write_csv(out / "regularization.csv", ["case", "epoch", "train_acc", "test_acc"],
               [[c, e + 1, r["train"][e], r["test"][e]] for c, r in res.items() for e in range(len(r["train"]))])
    _plot(args, plot.panels, {c: {"train": r["train"], "test": r["test"]} for c, r in res.items()},
          out / "regularization.png", xlabel="epoch", ylabel="accuracy",
          title=f"overfitting {args.train_size} samples with a 7-layer net", max_cols=3, ylim=(0, 1))
    _table(["case", "train acc", "test acc", "gap"],
           [[c, r["train"][-1], r["test"][-1], r["train"][-1] - r["test"][-1]] for c, r in res.items()])


def tune(args, out: Path) -> None:
    from . import plot

    res = ex.random_search(_data(args), args.trials, args.epochs, args.train_size, backend=args.device,
                           seed=args.seed, progress=not args.no_progress)
    keys = ["trial", "lr", "weight_decay", "val_acc", "train_acc"]
    _write_csv(out / "tune.csv", keys, [[r[k] for k in keys] for r in res])
    _plot(args, plot.tune_scatter, res, out / "tune.png", title="random search (validation accuracy)")
    _table(["rank", "val acc", "train acc", "lr", "weight decay"],
           [[i + 1, r["val_acc"], r["train_acc"], r["lr"], r["weight_decay"]] for i, r in enumerate(res[:10])])


COMMANDS = {"trajectories": trajectories, "optimizers": optimizers, "init": init, "batchnorm": batchnorm,
            "regularization": regularization}


def run(args) -> int:
    """Entry point of ``accelnet compare WHAT`` and ``accelnet tune``."""
    from .backend import get_backend

    get_backend(args.device)  # a missing GPU fails before any work
    out = probe_folder(args.out, "--out")
    (tune if args.command == "tune" else COMMANDS[args.what])(args, out)
    return 0

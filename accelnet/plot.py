"""Plots (matplotlib is the optional ``plot`` extra): without it, callers write CSV and say so."""

from __future__ import annotations

__all__ = ["have_matplotlib", "SKIPPED", "training_curves", "confusion_matrix"]

SKIPPED = "plot skipped: matplotlib is not installed (pip install 'accelnet[plot]')"


def have_matplotlib() -> bool:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only, no display needed
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path, title: str = "", axes=None, used: int | None = None) -> None:
    """Hide the grid's unused panels, add the title, write the PNG and free the figure."""
    plt = _pyplot()
    if axes is not None:
        for ax in list(axes.flat)[used:]:
            ax.axis("off")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def training_curves(history: list[dict], path, title: str = "") -> None:
    """Loss and train/test accuracy per epoch, side by side, as a PNG."""
    plt = _pyplot()
    epochs = [r["epoch"] for r in history]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    ax1.plot(epochs, [r["loss"] for r in history], marker="o")
    ax1.set(xlabel="epoch", ylabel="training loss", title="loss")
    evaluated = [r for r in history if r.get("test_acc") is not None]  # --eval-every skips some epochs
    ax2.plot([r["epoch"] for r in evaluated], [r["train_acc"] for r in evaluated], marker="o", label="train")
    ax2.plot([r["epoch"] for r in evaluated], [r["test_acc"] for r in evaluated], marker="s", label="test")
    ax2.set(xlabel="epoch", ylabel="accuracy", title="accuracy")
    ax2.legend()
    from matplotlib.ticker import MaxNLocator

    for ax in (ax1, ax2):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    _save(fig, path, title)


def confusion_matrix(matrix, path, class_names, title: str = "") -> None:
    """The confusion matrix (rows: true class, columns: predicted) as a PNG heat map, each cell
    labelled with its count."""
    plt = _pyplot()
    k = len(class_names)
    fig, ax = plt.subplots(figsize=(1.0 + 0.6 * k, 0.8 + 0.6 * k))
    ax.imshow(matrix, cmap="Blues")
    top = matrix.max() or 1
    for i in range(k):
        for j in range(k):
            ax.text(j, i, f"{matrix[i, j]:,}", ha="center", va="center", fontsize=7,
                    color="white" if matrix[i, j] > top / 2 else "black")
    ax.set_xticks(range(k), [str(n) for n in class_names], rotation=45 if any(len(str(n)) > 2 for n in class_names)
                  else 0, ha="right" if any(len(str(n)) > 2 for n in class_names) else "center")
    ax.set_yticks(range(k), [str(n) for n in class_names])
    ax.set(xlabel="predicted class", ylabel="true class")
    _save(fig, path, title)


def _grid(n: int, max_cols: int = 5):
    cols = min(n, max_cols)
    return -(-n // cols), cols


def _contour_levels(zs):
    """12 contour levels over the finite values of ``zs``: geometric where f > 0 (the book's bowls),
    linear otherwise; None for a flat (or nowhere finite) surface, which has no contours to draw."""
    import numpy as np

    finite = zs[np.isfinite(zs)]
    if finite.size == 0 or finite.min() == finite.max():
        return None
    lo, hi = finite.min(), finite.max()
    if lo > 0 or hi > 1e-3 > lo >= 0:
        return np.geomspace(max(lo, 1e-3), hi, 12)
    return np.linspace(lo, hi, 12)


def trajectories(paths: dict, f, path, title: str = "") -> None:
    """Each optimizer's path drawn on the contour plot of f, one panel per optimizer (the book's figure 6-8)."""
    import numpy as np

    plt = _pyplot()
    xs, ys = np.meshgrid(np.linspace(-10, 10, 200), np.linspace(-5, 5, 200))
    zs = f(xs, ys)
    rows, cols = _grid(len(paths), max_cols=3)
    fig, axes = plt.subplots(rows, cols, figsize=(4 * cols, 3.2 * rows), squeeze=False)
    levels = _contour_levels(zs)
    for ax, (name, p) in zip(axes.flat, paths.items()):
        if levels is not None:
            ax.contour(xs, ys, zs, levels=levels, colors="0.6", linewidths=0.8)
        ax.plot(p[:, 0], p[:, 1], "o-", color="red", markersize=3, linewidth=1)
        ax.plot(0, 0, "+", color="black", markersize=10)
        ax.set(xlim=(-10, 10), ylim=(-5, 5), xlabel="x", ylabel="y", title=name)
    _save(fig, path, title, axes, len(paths))


def curves(x, series: dict, path, xlabel: str, ylabel: str, title: str = "", ylim=None) -> None:
    """Several named curves on one axis."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name, ys in series.items():
        ax.plot(x, ys, label=name, linewidth=1.2)
    ax.set(xlabel=xlabel, ylabel=ylabel, title=title)
    if ylim:
        ax.set_ylim(*ylim)
    ax.legend()
    _save(fig, path)


def histograms(hists: dict, path, title: str = "") -> None:
    """One row per init, one column per layer: the distribution of that layer's activations."""
    plt = _pyplot()
    rows, cols = len(hists), max(len(v) for v in hists.values())
    fig, axes = plt.subplots(rows, cols, figsize=(2.6 * cols, 2.2 * rows), squeeze=False, sharey="row")
    for r, (label, acts) in enumerate(hists.items()):
        for c, a in enumerate(acts):
            ax = axes[r, c]
            ax.hist(a, bins=30, range=(0, 1), color="tab:blue")
            ax.set_title(f"{label}: layer {c + 1}", fontsize=9)
            ax.tick_params(labelsize=7)
    _save(fig, path, title)


def panels(items: dict, path, xlabel: str, ylabel: str, title: str = "", max_cols: int = 4, ylim=None) -> None:
    """One panel per key of ``items``; each value is {line label: ys}."""
    plt = _pyplot()
    rows, cols = _grid(len(items), max_cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.4 * cols, 2.6 * rows), squeeze=False)
    from matplotlib.ticker import MaxNLocator

    for ax, (name, lines) in zip(axes.flat, items.items()):
        for label, ys in lines.items():
            ax.plot(range(1, len(ys) + 1), ys, label=label, linewidth=1.2)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_title(name, fontsize=9)
        ax.set_xlabel(xlabel, fontsize=8)
        ax.set_ylabel(ylabel, fontsize=8)
        ax.tick_params(labelsize=7)
        if ylim:
            ax.set_ylim(*ylim)
    axes.flat[0].legend(fontsize=7)
    _save(fig, path, title, axes, len(items))


def tune_scatter(results: list, path, title: str = "") -> None:
    """Learning rate vs weight decay of each trial, coloured by validation accuracy."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    sc = ax.scatter([r["lr"] for r in results], [r["weight_decay"] for r in results],
                    c=[r["val_acc"] for r in results], cmap="viridis", edgecolors="black", linewidths=0.4)
    ax.set(xscale="log", yscale="log", xlabel="learning rate", ylabel="weight decay", title=title)
    fig.colorbar(sc, ax=ax, label="validation accuracy")
    _save(fig, path)

"""Plots (matplotlib is the optional ``plot`` extra): without it, callers write CSV and say so."""

from __future__ import annotations

__all__ = ["have_matplotlib", "SKIPPED", "training_curves"]

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


def training_curves(history: list[dict], path, title: str = "") -> None:
    """Loss and train/test accuracy per epoch, side by side, as a PNG."""
    plt = _pyplot()
    epochs = [r["epoch"] for r in history]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    ax1.plot(epochs, [r["loss"] for r in history], marker="o")
    ax1.set(xlabel="epoch", ylabel="training loss", title="loss")
    ax2.plot(epochs, [r["train_acc"] for r in history], marker="o", label="train")
    ax2.plot(epochs, [r["test_acc"] for r in history], marker="s", label="test")
    ax2.set(xlabel="epoch", ylabel="accuracy", title="accuracy")
    ax2.legend()
    from matplotlib.ticker import MaxNLocator

    for ax in (ax1, ax2):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)

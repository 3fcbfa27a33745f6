"""A trained model on labelled data: accuracy, per-class accuracy and the confusion matrix."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["Evaluation", "evaluate"]


@dataclass
class Evaluation:
    """``matrix[i, j]``: the samples of true class i predicted as class j."""

    matrix: np.ndarray
    class_names: tuple

    @property
    def count(self) -> int:
        return int(self.matrix.sum())

    @property
    def correct(self) -> int:
        return int(np.trace(self.matrix))

    @property
    def accuracy(self) -> float:
        return self.correct / self.count

    @property
    def per_class(self) -> np.ndarray:
        """Each class's accuracy (recall); NaN for a class with no samples."""
        counts = self.matrix.sum(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.diag(self.matrix) / counts

    def report(self) -> str:
        """Accuracy, the per-class table and the confusion matrix, as text."""
        names = [str(n) for n in self.class_names]
        w = max(len(n) for n in names)
        lines = [f"test accuracy: {self.accuracy:.4f} ({self.correct:,} of {self.count:,})", "",
                 f"{'class':<{w}}  accuracy  correct / samples"]
        for name, acc, right, n in zip(names, self.per_class, np.diag(self.matrix), self.matrix.sum(axis=1)):
            lines.append(f"{name:<{w}}  {f'{acc:.4f}' if n else '-':>8}  {right:>7,} / {n:,}")
        cell = max(5, len(f"{self.matrix.max():,}") + 1)
        lines += ["", "confusion matrix (rows: true class, columns: predicted class)",
                  " " * w + "".join(f"{i:>{cell}}" for i in range(len(names)))]
        for name, row in zip(names, self.matrix):
            lines.append(f"{name:<{w}}" + "".join(f"{v:>{cell},}" for v in row))
        if any(len(n) > 2 for n in names):
            lines.append("columns: " + ", ".join(f"{i} {n}" for i, n in enumerate(names)))
        return "\n".join(lines)


def evaluate(model, x, t, batch_size: int = 1000, class_names=None) -> Evaluation:
    """Predict ``x`` in eval mode, batched, and count the outcomes against labels ``t`` (class
    indices or one-hot)."""
    t = model.class_indices(t, len(x), "evaluate")
    k = model.output_shape[0]
    pred = model.backend.to_numpy(model.predict(x, batch_size).argmax(axis=1)).astype(np.int64)
    matrix = np.bincount(t.astype(np.int64) * k + pred, minlength=k * k).reshape(k, k)
    names = tuple(class_names) if class_names is not None else tuple(str(i) for i in range(k))
    if len(names) != k:
        raise ValueError(f"evaluate: {len(names)} class names for a model with {k} classes")
    return Evaluation(matrix, names)

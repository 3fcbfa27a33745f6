"""Argument checks shared by the layers, the optimizers and the CLI: each names the argument and
what it must be, so bad input fails early with a message instead of deep inside NumPy."""

from __future__ import annotations

import math

import numpy as np


def is_number(v) -> bool:
    """A real Python or NumPy number (not a bool)."""
    return isinstance(v, (int, float, np.floating, np.integer)) and not isinstance(v, bool)


def number(name: str, v, low: float = 0.0, low_open: bool = True, high: float | None = None) -> float:
    """``v`` as a float if it is finite and above ``low`` (or at it, unless ``low_open``) and below ``high``."""
    ok = is_number(v) and math.isfinite(v)
    if ok:
        ok = (v > low if low_open else v >= low) and (high is None or v < high)
    if not ok:
        bound = f"{'>' if low_open else '>='} {low:g}" + (f" and < {high:g}" if high is not None else "")
        raise ValueError(f"{name} must be a finite number {bound}, got {v!r}")
    return float(v)


def positive_int(v, what: str) -> int:
    """``v`` as an int if it is a positive integer."""
    if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v < 1:
        raise ValueError(f"{what} must be a positive int, got {v!r}")
    return int(v)


def positive_pair(v, what: str) -> tuple[int, int]:
    """An int or a pair of ints, each positive, as a pair (kernel sizes)."""
    pair = (v, v) if isinstance(v, (int, np.integer)) else tuple(v)
    if len(pair) != 2 or not all(isinstance(p, (int, np.integer)) and p > 0 for p in pair):
        raise ValueError(f"{what} must be a positive int or a pair of them, got {v!r}")
    return int(pair[0]), int(pair[1])


def within_samples(value: int, n: int, flag: str, dataset: str) -> int:
    """``value`` (a batch size, a training subset) if ``dataset``'s ``n`` training samples can
    supply it: a larger one would silently shrink to the dataset."""
    if value > n:
        raise ValueError(f"{flag} {value} is larger than the {n} training samples of {dataset}")
    return value

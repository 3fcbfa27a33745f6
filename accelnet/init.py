"""Weight initializers (the book's chapter 6.2), drawn on the host in float64.

An initializer is ``f(rng, shape, fan_in) -> np.ndarray``. Drawing on the host and
casting afterwards gives CPU and GPU, float32 and float64, the same weights.
"""

from __future__ import annotations

import math
from typing import Callable

import numpy as np

Initializer = Callable[[np.random.Generator, tuple, int], np.ndarray]

__all__ = ["Initializer", "he", "xavier", "normal", "get_initializer", "INIT_NAMES"]


def he(rng: np.random.Generator, shape: tuple, fan_in: int) -> np.ndarray:
    """He: N(0, 2/fan_in), for ReLU layers."""
    return rng.standard_normal(shape) * math.sqrt(2.0 / fan_in)


def xavier(rng: np.random.Generator, shape: tuple, fan_in: int) -> np.ndarray:
    """Xavier as the book defines it: N(0, 1/fan_in), for sigmoid and tanh layers."""
    return rng.standard_normal(shape) * math.sqrt(1.0 / fan_in)


def normal(std: float) -> Initializer:
    """N(0, std^2) whatever the fan-in (the book's ``weight_init_std=0.01``)."""
    std = float(std)
    if not std > 0 or not math.isfinite(std):
        raise ValueError(f"init std must be a positive number, got {std!r}")

    def init(rng: np.random.Generator, shape: tuple, fan_in: int) -> np.ndarray:
        return rng.standard_normal(shape) * std

    init.__name__ = f"normal(std={std:g})"
    return init


# The book's MultiLayerNet also accepts the activation name for its matching init.
_BY_NAME = {"he": he, "relu": he, "xavier": xavier, "sigmoid": xavier, "tanh": xavier}
INIT_NAMES = ("he", "xavier", "std")


def get_initializer(init: str | float | Initializer, std: float = 0.01) -> Initializer:
    """Resolve ``"he"``, ``"xavier"``, ``"std"`` (normal with ``std``), a float std, or a callable."""
    if callable(init):
        return init
    if isinstance(init, (int, float)) and not isinstance(init, bool):
        return normal(init)
    if init == "std":
        return normal(std)
    if isinstance(init, str) and init.lower() in _BY_NAME:
        return _BY_NAME[init.lower()]
    raise ValueError(f"unknown init {init!r}: expected one of {INIT_NAMES}, a float std, or a callable")

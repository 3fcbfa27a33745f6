"""Learning-rate schedules: pure functions of a counter (steps or epochs) giving a factor
on the base learning rate, so an optimizer's state is just its counters."""

from __future__ import annotations

import math

__all__ = ["Schedule", "Constant", "StepDecay", "ExponentialDecay", "CosineDecay", "Warmup", "get_schedule"]


class Schedule:
    """``schedule(k)`` is the factor on the base lr after ``k`` steps (or epochs)."""

    def __call__(self, k: int) -> float:
        raise NotImplementedError

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in vars(self).items())
        return f"{type(self).__name__}({args})"


def _positive(name: str, v, integer: bool = False):
    ok = isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0 and math.isfinite(v)
    if not ok or (integer and int(v) != v):
        raise ValueError(f"{name} must be a positive {'int' if integer else 'number'}, got {v!r}")
    return int(v) if integer else float(v)


class Constant(Schedule):
    """Factor 1 throughout."""

    def __call__(self, k: int) -> float:
        return 1.0


class StepDecay(Schedule):
    """Multiply by ``gamma`` every ``step_size`` counts."""

    def __init__(self, step_size: int, gamma: float = 0.1):
        self.step_size = _positive("step_size", step_size, integer=True)
        self.gamma = _positive("gamma", gamma)

    def __call__(self, k: int) -> float:
        return self.gamma ** (k // self.step_size)


class ExponentialDecay(Schedule):
    """Multiply by ``gamma`` every count."""

    def __init__(self, gamma: float):
        self.gamma = _positive("gamma", gamma)

    def __call__(self, k: int) -> float:
        return self.gamma**k


class CosineDecay(Schedule):
    """Half a cosine from 1 down to ``min_factor`` over ``total`` counts, then flat."""

    def __init__(self, total: int, min_factor: float = 0.0):
        self.total = _positive("total", total, integer=True)
        if not 0 <= min_factor <= 1:
            raise ValueError(f"min_factor must be in [0, 1], got {min_factor!r}")
        self.min_factor = float(min_factor)

    def __call__(self, k: int) -> float:
        frac = min(k, self.total) / self.total
        return self.min_factor + (1 - self.min_factor) * 0.5 * (1 + math.cos(math.pi * frac))


class Warmup(Schedule):
    """Ramp linearly from 1/warmup to 1 over ``warmup`` counts, then follow ``after`` (restarted at 0)."""

    def __init__(self, warmup: int, after: Schedule | None = None):
        self.warmup = _positive("warmup", warmup, integer=True)
        self.after = after or Constant()

    def __call__(self, k: int) -> float:
        if k < self.warmup:
            return (k + 1) / self.warmup
        return self.after(k - self.warmup)


_NAMES = {"constant": Constant, "step": StepDecay, "exponential": ExponentialDecay, "cosine": CosineDecay,
          "warmup": Warmup}


def get_schedule(spec) -> Schedule:
    """A Schedule from an instance, None (constant), or a name with keyword args: ``("step", {"step_size": 10})``."""
    if spec is None:
        return Constant()
    if isinstance(spec, Schedule):
        return spec
    name, kwargs = (spec, {}) if isinstance(spec, str) else spec
    if name not in _NAMES:
        raise ValueError(f"unknown schedule {name!r}: expected one of {sorted(_NAMES)}")
    return _NAMES[name](**kwargs)

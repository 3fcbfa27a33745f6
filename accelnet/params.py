"""The parameter arena: every parameter of a model is a view into one flat buffer.

Gradients are views into a twin buffer of the same layout, so an optimizer step is
one kernel over N elements whatever the number of layers, and a data-parallel
all-reduce would be one call. Parameters are laid out in declaration order (the
layer order), never in a set's order, so sums and initial draws are reproducible.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np

from .backend import Backend


@dataclass
class ParamSpec:
    """One parameter's place in the arena."""

    owner: object  # the layer that receives the views
    local_name: str  # e.g. "W"
    name: str  # qualified, e.g. "linear1.W"
    shape: tuple
    init: Callable[[np.random.Generator], np.ndarray]
    offset: int = 0

    @property
    def size(self) -> int:
        return math.prod(self.shape)


class ParamArena:
    """Declares parameters, then allocates them as views of one buffer per model dtype."""

    def __init__(self, backend: Backend, dtype):
        self.backend = backend
        self.dtype = np.dtype(dtype)
        self.specs: list[ParamSpec] = []
        self.data = None  # flat parameters, xp array
        self.grad = None  # flat gradients, same layout

    def declare(self, owner, local_name: str, shape, init) -> None:
        """Reserve a parameter of ``shape``; ``init(rng)`` draws its initial value on the host."""
        if self.data is not None:
            raise RuntimeError("the arena is already allocated")
        name = f"{owner.name}.{local_name}"
        if any(s.name == name for s in self.specs):
            raise ValueError(f"duplicate parameter name {name!r}")
        self.specs.append(ParamSpec(owner, local_name, name, tuple(int(d) for d in shape), init))

    @property
    def size(self) -> int:
        """Number of scalar parameters."""
        return sum(s.size for s in self.specs)

    def allocate(self, rng: np.random.Generator) -> None:
        """Draw every initial value on the host in declaration order, move once, hand out views."""
        host = np.empty(self.size, dtype=self.dtype)
        offset = 0
        for spec in self.specs:
            spec.offset = offset
            value = np.asarray(spec.init(rng))
            if value.shape != spec.shape:
                raise ValueError(f"init of {spec.name} returned shape {value.shape}, expected {spec.shape}")
            host[offset : offset + spec.size] = value.ravel()
            offset += spec.size
        xp = self.backend.xp
        self.data = self.backend.to_device(host)
        self.grad = xp.zeros_like(self.data)
        for spec in self.specs:
            spec.owner.params[spec.local_name] = self.view(self.data, spec)
            spec.owner.grads[spec.local_name] = self.view(self.grad, spec)

    @staticmethod
    def view(flat, spec: ParamSpec):
        """``spec``'s slice of a flat buffer, shaped (a view: writes go to the buffer)."""
        return flat[spec.offset : spec.offset + spec.size].reshape(spec.shape)

    def named(self, flat) -> dict:
        """{qualified name: view} over ``flat`` (the params, the grads, or an optimizer state)."""
        return {spec.name: self.view(flat, spec) for spec in self.specs}

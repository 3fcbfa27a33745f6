"""The per-element optimizer formulas, written once and compiled twice: into the ``@njit`` loops
of ``cpu.py`` and the ``numba.cuda`` kernels of ``cuda.py`` (``update_loops.py`` writes the loop
around each formula).

Each formula takes one element of p and g, then of each state buffer it declares with
:func:`update` (in that order), then the host-side scalars the optimizer computes
(``Optimizer.scalars`` in ``accelnet/optim.py``), then ``gscale`` (clipping) and ``tiny``; it
returns the new p and state. Weight decay (``wd``, L2) and ``gscale`` are folded into the
gradient first. Operation for operation they are the book's formulas, so the fused kernels
match ``reference.py`` bit for bit where no reduction reorders sums.

State that decays geometrically (momentum's v, RMSprop's h, Adam's m and v) is flushed to zero
once it falls below ``tiny``, the dtype's smallest normal number: a unit whose gradient stays 0
(a dead ReLU) would otherwise decay into subnormals, which cost x86 ~100 cycles per operation
(Adam over such a buffer ran 10x slower). The change is below 1.2e-38 in float32.
"""

import math

import numpy as np

UPDATES: dict = {}  # formula name -> (formula, names of its state buffers)


def update(*state: str):
    """Declare an update formula and its state buffers (in the order it takes them)."""

    def declare(formula):
        UPDATES[formula.__name__] = (formula, state)
        return formula

    return declare


def check_update(rule: str, state: tuple) -> None:
    """That ``rule`` is a declared update and ``state`` holds as many buffers as it takes."""
    if rule not in UPDATES:
        raise ValueError(f"unknown update {rule!r}: expected one of {sorted(UPDATES)}")
    names = UPDATES[rule][1]
    if len(state) != len(names):
        raise ValueError(f"update {rule!r} takes {len(names)} state buffers {names}, got {len(state)}")


def tiny(dtype):
    """The ``tiny`` argument of the updates below: ``dtype``'s smallest normal number, as a scalar
    of that dtype (host side: the kernels' wrappers pass it in)."""
    return np.dtype(dtype).type(np.finfo(dtype).tiny)


@update()
def sgd(p, g, lr, wd, gscale, tiny):
    return (p - lr * (g * gscale + wd * p),)


@update("v")
def momentum(p, g, v, lr, mu, wd, gscale, tiny):
    v = mu * v - lr * (g * gscale + wd * p)
    v = v if abs(v) >= tiny else v - v  # (v - v: a zero of v's type; v * 0 would be float64)
    return p + v, v


@update("v")
def nesterov(p, g, v, lr, mu, mu2, lr_1mu, wd, gscale, tiny):
    # The book's order (common/optimizer.py): p moves with the previous v, then v is updated.
    # At a constant lr this is PyTorch's SGD(nesterov=True) with v = -lr * momentum_buffer.
    gi = g * gscale + wd * p
    p = p + mu2 * v
    p = p - lr_1mu * gi
    v = v * mu
    v = v - lr * gi
    v = v if abs(v) >= tiny else v - v
    return p, v


@update("h")
def adagrad(p, g, h, lr, eps, wd, gscale, tiny):
    gi = g * gscale + wd * p
    h = h + gi * gi
    return p - lr * gi / (math.sqrt(h) + eps), h


@update("h")
def rmsprop(p, g, h, lr, decay, one_minus_decay, eps, wd, gscale, tiny):
    gi = g * gscale + wd * p
    h = h * decay
    h = h + one_minus_decay * gi * gi
    h = h if h >= tiny else h - h
    return p - lr * gi / (math.sqrt(h) + eps), h


@update("m", "v")
def adam(p, g, m, v, lr_t, one_minus_b1, one_minus_b2, eps, wd, wd_decoupled, gscale, tiny):
    gi = g * gscale + wd * p
    m = m + one_minus_b1 * (gi - m)
    v = v + one_minus_b2 * (gi * gi - v)
    m = m if abs(m) >= tiny else m - m
    v = v if v >= tiny else v - v
    p = p - wd_decoupled * p
    return p - lr_t * m / (math.sqrt(v) + eps), m, v

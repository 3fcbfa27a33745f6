"""The per-element optimizer formulas, written once and compiled twice: inlined into the
``@njit`` loops of ``cpu.py`` and into the ``numba.cuda`` kernels of ``cuda.py``.

Operation for operation they are ``reference.py``'s formulas (the book's), so the fused
kernels match the oracle bit for bit where no reduction reorders sums. Each takes one
element of p, g and the state and returns the new values; ``wd`` (L2) and ``gscale``
(clipping) are folded into the gradient first.

State that decays geometrically (momentum's v, RMSprop's h, Adam's m and v) is flushed to zero
once it falls below ``tiny``, the dtype's smallest normal number: a unit whose gradient stays 0
(a dead ReLU) would otherwise decay into subnormals, which cost x86 ~100 cycles per operation
(Adam over such a buffer ran 10x slower). The change is below 1.2e-38 in float32.
"""

import math

import numpy as np


def tiny(dtype):
    """The ``tiny`` argument of the updates below: ``dtype``'s smallest normal number, as a scalar
    of that dtype (host side: the kernels' wrappers pass it in)."""
    return np.dtype(dtype).type(np.finfo(dtype).tiny)


def sgd(p, g, lr, wd, gscale):
    return p - lr * (g * gscale + wd * p)


def momentum(p, g, v, lr, mu, wd, gscale, tiny):
    v = mu * v - lr * (g * gscale + wd * p)
    v = v if abs(v) >= tiny else v - v  # (v - v: a zero of v's type; v * 0 would be float64)
    return p + v, v


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


def adagrad(p, g, h, lr, eps, wd, gscale):
    gi = g * gscale + wd * p
    h = h + gi * gi
    return p - lr * gi / (math.sqrt(h) + eps), h


def rmsprop(p, g, h, lr, decay, one_minus_decay, eps, wd, gscale, tiny):
    gi = g * gscale + wd * p
    h = h * decay
    h = h + one_minus_decay * gi * gi
    h = h if h >= tiny else h - h
    return p - lr * gi / (math.sqrt(h) + eps), h


def adam(p, g, m, v, lr_t, one_minus_b1, one_minus_b2, eps, wd, wd_decoupled, gscale, tiny):
    gi = g * gscale + wd * p
    m = m + one_minus_b1 * (gi - m)
    v = v + one_minus_b2 * (gi * gi - v)
    m = m if abs(m) >= tiny else m - m
    v = v if v >= tiny else v - v
    p = p - wd_decoupled * p
    return p - lr_t * m / (math.sqrt(v) + eps), m, v

"""The per-element optimizer formulas, written once and compiled twice: inlined into the
``@njit`` loops of ``cpu.py`` and into the ``numba.cuda`` kernels of ``cuda.py``.

Operation for operation they are ``reference.py``'s formulas (the book's), so the fused
kernels match the oracle bit for bit where no reduction reorders sums. Each takes one
element of p, g and the state and returns the new values; ``wd`` (L2) and ``gscale``
(clipping) are folded into the gradient first.
"""

import math


def sgd(p, g, lr, wd, gscale):
    return p - lr * (g * gscale + wd * p)


def momentum(p, g, v, lr, mu, wd, gscale):
    v = mu * v - lr * (g * gscale + wd * p)
    return p + v, v


def nesterov(p, g, v, lr, mu, mu2, lr_1mu, wd, gscale):
    gi = g * gscale + wd * p
    v = v * mu
    v = v - lr * gi
    p = p + mu2 * v
    return p - lr_1mu * gi, v


def adagrad(p, g, h, lr, eps, wd, gscale):
    gi = g * gscale + wd * p
    h = h + gi * gi
    return p - lr * gi / (math.sqrt(h) + eps), h


def rmsprop(p, g, h, lr, decay, one_minus_decay, eps, wd, gscale):
    gi = g * gscale + wd * p
    h = h * decay
    h = h + one_minus_decay * gi * gi
    return p - lr * gi / (math.sqrt(h) + eps), h


def adam(p, g, m, v, lr_t, one_minus_b1, one_minus_b2, eps, wd, wd_decoupled, gscale):
    gi = g * gscale + wd * p
    m = m + one_minus_b1 * (gi - m)
    v = v + one_minus_b2 * (gi * gi - v)
    p = p - wd_decoupled * p
    return p - lr_t * m / (math.sqrt(v) + eps), m, v

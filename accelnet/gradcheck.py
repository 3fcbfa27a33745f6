"""Gradient checking: backprop against central differences (the book's chapter 4 and 5.7)."""

from __future__ import annotations

from .xp import array_namespace

__all__ = ["numerical_gradient", "relative_error", "check_gradients"]


def numerical_gradient(f, x, h: float = 1e-4):
    """Central-difference gradient of the scalar ``f(x)`` with respect to array ``x`` (the book's).

    ``x`` is perturbed in place, one element at a time, and restored, so ``f`` may
    also ignore its argument and read ``x`` through a model.
    """
    xp = array_namespace(x)
    if not x.flags.c_contiguous:
        raise ValueError("numerical_gradient needs a C-contiguous array (perturbations must reach f)")
    flat = x.reshape(-1)
    call = lambda: float(f(x))  # noqa: E731
    grad = xp.zeros(x.shape, dtype=x.dtype)
    gflat = grad.reshape(-1)
    for i in range(flat.size):
        orig = flat[i].item()
        flat[i] = orig + h
        fp = call()
        flat[i] = orig - h
        fm = call()
        flat[i] = orig
        gflat[i] = (fp - fm) / (2 * h)
    return grad


def relative_error(analytic, numeric, floor: float = 1e-4) -> float:
    """max |a - n| over the gradient's scale (its largest magnitude, at least ``floor``).

    Element-wise ratios blow up on entries that are zero up to rounding, so the
    largest entry sets the scale. The floor covers gradients that are exactly zero
    in exact arithmetic (a bias feeding BatchNorm): there central differences
    return rounding noise (~1e-11 in float64), which is not an error.
    """
    xp = array_namespace(analytic)
    scale = max(float(xp.abs(analytic).max()), float(xp.abs(numeric).max()), floor)
    return float(xp.abs(analytic - numeric).max()) / scale


def check_gradients(model, loss=None, x=None, t=None, h: float = 1e-5, check_input: bool = True) -> dict:
    """Max relative error (see :func:`relative_error`) of backprop vs central differences,
    per parameter (and ``"input"`` for dL/dx). Use a float64 model.

    The model's RNG state is restored before every evaluation, so dropout draws the
    same mask each time; parameters, buffers and the RNG are restored at the end.
    """
    if x is None or t is None:
        raise ValueError("check_gradients needs a batch x and labels t")
    loss = model.loss_fn if loss is None else loss
    x = model.to_device(x)
    rng_state = model.rng.bit_generator.state
    saved = model.state_dict()

    def f(_=None):
        model.rng.bit_generator.state = rng_state
        return loss.forward(model.forward(x), t)

    try:
        f()
        dx = model.backward(loss.backward(), input_grad=check_input)
        analytic = {name: g.copy() for name, g in model.grads.items()}
        if check_input:
            analytic["input"] = dx.copy()
        errors = {}
        for name, p in model.params.items():
            errors[name] = relative_error(analytic[name], numerical_gradient(f, p, h))
            model.load_state_dict(saved)  # BatchNorm running stats moved during the probes
        if check_input:
            errors["input"] = relative_error(analytic["input"], numerical_gradient(f, x, h))
    finally:
        model.load_state_dict(saved)
        model.rng.bit_generator.state = rng_state
    return errors

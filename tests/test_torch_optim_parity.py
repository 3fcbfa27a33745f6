"""Optimizers against torch.optim, where the two define the same update."""

import numpy as np
import pytest

from accelnet.optim import SGD, AdaGrad, Adam, AdamW, Momentum, Nesterov, RMSprop

torch = pytest.importorskip("torch", reason="PyTorch is not installed (pip install 'accelnet[peer]')")

# (ours, torch's). Adam's eps sits inside the bias correction in the book's form and outside it in
# torch's, so it is made negligible there; Momentum's velocity is -lr times torch's, same trajectory.
CASES = {
    "sgd_weight_decay": (lambda: SGD(lr=0.1, weight_decay=0.01),
                         lambda p: torch.optim.SGD(p, lr=0.1, weight_decay=0.01)),
    "momentum": (lambda: Momentum(lr=0.05, momentum=0.9), lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9)),
    # The book's Nesterov is torch's nesterov=True at a constant lr (its v is -lr times torch's buffer).
    "nesterov": (lambda: Nesterov(lr=0.05, momentum=0.9),
                 lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9, nesterov=True)),
    "nesterov_weight_decay": (lambda: Nesterov(lr=0.05, momentum=0.9, weight_decay=0.01),
                              lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9, nesterov=True, weight_decay=0.01)),
    "adagrad": (lambda: AdaGrad(lr=0.1, eps=1e-10), lambda p: torch.optim.Adagrad(p, lr=0.1, eps=1e-10)),
    "rmsprop": (lambda: RMSprop(lr=0.01, decay_rate=0.99, eps=1e-8),
                lambda p: torch.optim.RMSprop(p, lr=0.01, alpha=0.99, eps=1e-8)),
    "adam": (lambda: Adam(lr=0.01, eps=1e-12), lambda p: torch.optim.Adam(p, lr=0.01, eps=1e-12)),
    "adam_weight_decay": (lambda: Adam(lr=0.01, eps=1e-12, weight_decay=0.1),
                          lambda p: torch.optim.Adam(p, lr=0.01, eps=1e-12, weight_decay=0.1)),
    "adamw": (lambda: AdamW(lr=0.01, eps=1e-12, weight_decay=0.1),
              lambda p: torch.optim.AdamW(p, lr=0.01, eps=1e-12, weight_decay=0.1)),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_matches_torch_optim_over_20_steps_in_float64(case):
    ours_f, theirs_f = CASES[case]
    r = np.random.default_rng(0)
    w = r.standard_normal(50)
    params = {"w": w.copy()}
    tw = torch.tensor(w.copy(), requires_grad=True)
    ours, theirs = ours_f(), theirs_f([tw])
    for _ in range(20):
        g = r.standard_normal(50)
        ours.update(params, {"w": g})
        tw.grad = torch.tensor(g)
        theirs.step()
    np.testing.assert_allclose(params["w"], tw.detach().numpy(), rtol=1e-9, atol=1e-12)

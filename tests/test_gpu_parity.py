"""CPU and GPU runs are the same computation: same initial weights (drawn on the host), same
batches, same formulas, different summation orders (cuBLAS and BLAS, gathers and loops). So
float32 results are compared through float64 truth: the other backend's float32 error must stay
within FACTOR times the CPU's own float32 error. Multi-step optimizer runs, where a chaotic
update amplifies rounding, compare in float64; training compares counts of correct samples.

Each comparison runs on the ``gpu`` entry of conftest.py's backend axis (skipped without CuPy and
a device) and, to prove its margin, on the CPU with the textbook kernels (``kernels/reference.py``:
another summation order) standing in for the GPU, over 10 seeds, within a third of the margin."""

import numpy as np
import pytest

from accelnet import Sequential
from accelnet.backend import Backend, get_backend
from accelnet.data import synthetic
from accelnet.kernels import reference
from accelnet.optim import OPTIMIZERS, get_optimizer
from accelnet.presets import get_preset
from accelnet.train import Trainer
from test_layers import GRADCHECK_CASES

FACTOR = 10  # the other backend's float32 error <= FACTOR x the CPU's float32 error (both against float64)
FLOOR = 2e-6  # ~16 float32 ulps: a CPU error below it counts as this (rounding noise, not a measure)
F64_RTOL = 1e-9  # 20 optimizer steps in float64
COUNT_TOL = 3  # correctly classified test samples, of 500, after 2 epochs
PROOF_SEEDS = range(10)
TEXTBOOK = Backend("cpu", np, reference)  # the CPU stand-in for a backend that sums in another order

PRESETS = ["two_layer_net", "multi_layer_net", "simple_convnet", "deep_convnet"]
LAYER_CASES = sorted(GRADCHECK_CASES)


_host = get_backend("cpu").to_numpy  # any array (NumPy or CuPy) as a host NumPy array


def _batch(model, n=8, seed=0):
    r = np.random.default_rng(seed)
    return r.random((n, *model.input_shape)), r.integers(0, model.output_shape[0], n)


def _results(make, backend, dtype, x, t) -> dict:
    """Forward output, loss and every gradient of one step, on the host."""
    model = make(backend, dtype)
    out = model.forward(model.to_device(x))
    loss = model.loss_fn.forward(out, t)
    model.backward()
    return {"output": _host(out), "loss": _host(loss), **{f"grad {k}": _host(g) for k, g in model.grads.items()}}


def _errors(res, truth) -> dict:
    """Max error of each result against float64 truth, relative to its largest magnitude; gradients
    relative to the model's largest gradient (one that vanishes in exact arithmetic, like a bias
    before BatchNorm, holds only rounding noise)."""
    gmax = max(float(np.abs(v).max()) for k, v in truth.items() if k.startswith("grad"))
    return {k: float(np.abs(res[k].astype(np.float64) - v).max())
            / max(float(np.abs(v).max()), gmax if k.startswith("grad") else 0.0, 1e-30) for k, v in truth.items()}


def _worst_error_ratio(make, other, seed=0) -> tuple[float, str]:
    """max over the step's results of (other's float32 error) / (the CPU's float32 error), both
    against the CPU in float64; with the result it happens on."""
    x, t = _batch(make("cpu", "float64"), seed=seed)
    truth = _results(make, "cpu", "float64", x, t)
    cpu = _errors(_results(make, "cpu", "float32", x, t), truth)
    oth = _errors(_results(make, other, "float32", x, t), truth)
    ratios = {k: oth[k] / max(cpu[k], FLOOR) for k in truth}
    worst = max(ratios, key=ratios.get)
    return ratios[worst], worst


def _layer_model(case):
    layers, shape = GRADCHECK_CASES[case]
    return lambda b, d: Sequential(layers(), shape, backend=b, dtype=d, seed=1)


def _preset_model(preset):
    return lambda b, d: get_preset(preset)(backend=b, dtype=d, seed=0)


def _params_after_20_steps(preset, name, backend, seed=0):
    model = get_preset(preset)(backend=backend, dtype="float64", seed=seed)
    opt = get_optimizer(name, model, lr=1e-3, weight_decay=1e-4, clip_norm=5.0)
    for step in range(1, 21):
        x, t = _batch(model, seed=1000 * seed + step)
        model.loss(model.to_device(x), t)
        model.backward()
        opt.step()
    return _host(model.arena.data)


def _correct_after_2_epochs(backend, data):
    model = get_preset("simple_convnet")(backend=backend, seed=0)
    Trainer(model, get_optimizer("adam", model), data, batch_size=100, epochs=2, progress=False).fit()
    return round(model.accuracy(data.x_test, data.t_test) * len(data.t_test))


# -- on the GPU -------------------------------------------------------------------------------------


@pytest.mark.backends("gpu")
@pytest.mark.parametrize("case", LAYER_CASES)
def test_layer_float32_error_is_within_a_small_multiple_of_the_cpus(case, backend_name):
    ratio, where = _worst_error_ratio(_layer_model(case), backend_name)
    assert ratio <= FACTOR, f"{where}: {ratio:.1f}x the CPU's float32 error"


@pytest.mark.backends("gpu")
@pytest.mark.parametrize("preset", PRESETS)
def test_preset_float32_error_is_within_a_small_multiple_of_the_cpus(preset, backend_name):
    ratio, where = _worst_error_ratio(_preset_model(preset), backend_name)
    assert ratio <= FACTOR, f"{where}: {ratio:.1f}x the CPU's float32 error"


@pytest.mark.backends("gpu")
@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
@pytest.mark.parametrize("preset", ["multi_layer_net", "simple_convnet"])
def test_parameters_after_20_steps_match_in_float64(preset, name, backend_name):
    np.testing.assert_allclose(_params_after_20_steps(preset, name, backend_name),
                               _params_after_20_steps(preset, name, "cpu"), rtol=F64_RTOL, atol=F64_RTOL)


@pytest.mark.backends("gpu")
def test_gpu_training_classifies_as_many_test_samples_as_the_cpus(backend_name):
    data = synthetic(2000, 500, seed=0)
    gpu, cpu = _correct_after_2_epochs(backend_name, data), _correct_after_2_epochs("cpu", data)
    assert abs(gpu - cpu) <= COUNT_TOL, (gpu, cpu)


@pytest.mark.backends("gpu")
def test_gpu_backend_uses_cupy_and_the_cuda_kernels(backend_name):
    from accelnet.backend import get_backend

    b = get_backend(backend_name)
    assert b.xp.__name__ == "cupy" and b.kernels.__name__ == "accelnet.kernels.cuda"


# -- the margins, proved on the CPU: the textbook kernels against the fused ones --------------------


@pytest.mark.parametrize("preset", PRESETS)
def test_float32_margin_holds_3x_between_textbook_and_fused_cpu_kernels_over_10_seeds(preset):
    worst = max(_worst_error_ratio(_preset_model(preset), TEXTBOOK, seed) for seed in PROOF_SEEDS)
    assert worst[0] <= FACTOR / 3, f"{worst[1]}: {worst[0]:.1f}x"


@pytest.mark.parametrize("case", ["conv2d_fused_relu_pool", "batchnorm_channels_train", "maxpool2d_overlapping",
                                  "avgpool2d", "dropout_train"])
def test_float32_layer_margin_holds_3x_between_textbook_and_fused_cpu_kernels_over_10_seeds(case):
    worst = max(_worst_error_ratio(_layer_model(case), TEXTBOOK, seed) for seed in PROOF_SEEDS)
    assert worst[0] <= FACTOR / 3, f"{worst[1]}: {worst[0]:.1f}x"


@pytest.mark.parametrize("name", ["rmsprop", "adam", "nesterov"])
def test_float64_margin_holds_3x_after_20_steps_between_textbook_and_fused_cpu_kernels(name):
    for seed in PROOF_SEEDS:
        a, b = _params_after_20_steps("multi_layer_net", name, TEXTBOOK, seed), \
            _params_after_20_steps("multi_layer_net", name, "cpu", seed)
        np.testing.assert_allclose(a, b, rtol=F64_RTOL / 3, atol=F64_RTOL / 3)


def test_count_margin_holds_between_textbook_and_fused_cpu_kernels():
    data = synthetic(2000, 500, seed=0)
    assert abs(_correct_after_2_epochs(TEXTBOOK, data) - _correct_after_2_epochs("cpu", data)) <= COUNT_TOL // 3

"""CPU and GPU runs are the same computation: same initial weights (drawn on the host), same
batches, same formulas. Forward outputs, gradients, and parameters after 1 and 20 steps agree
within rtol 1e-4 in float32 and 1e-10 in float64. Each test runs on the ``gpu`` entry of
conftest.py's backend axis (skipped without CuPy and a device) against the CPU."""

import numpy as np
import pytest

from accelnet import Sequential
from accelnet.presets import get_preset
from accelnet.optim import OPTIMIZERS, get_optimizer
from test_layers import GRADCHECK_CASES

pytestmark = pytest.mark.backends("gpu")

RTOL = {"float32": 1e-4, "float64": 1e-10}
ATOL = {"float32": 1e-6, "float64": 1e-12}


def _host(a):
    return a.get() if hasattr(a, "get") else np.asarray(a)


def _close(a, b, dtype, what):
    np.testing.assert_allclose(_host(a), _host(b), rtol=RTOL[dtype], atol=ATOL[dtype], err_msg=what)


def _pair(make, dtype, backend_name):
    return make("cpu", dtype), make(backend_name, dtype)


def _batch(model, n=8, seed=0):
    r = np.random.default_rng(seed)
    return r.random((n, *model.input_shape)), r.integers(0, model.output_shape[0], n)


def _forward_backward(model, x, t):
    out = model.forward(model.to_device(x))
    loss = model.loss_fn.forward(out, t)
    model.backward()
    return out, loss


def _check_forward_and_grads(cpu, gpu, dtype, x, t):
    out_c, loss_c = _forward_backward(cpu, x, t)
    out_g, loss_g = _forward_backward(gpu, x, t)
    _close(out_c, out_g, dtype, "forward output")
    _close(loss_c, loss_g, dtype, "loss")
    for k in cpu.grads:
        _close(cpu.grads[k], gpu.grads[k], dtype, f"gradient {k}")


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("case", sorted(GRADCHECK_CASES))
def test_layer_forward_and_gradients_match(case, dtype, backend_name):
    layers, shape = GRADCHECK_CASES[case]
    cpu, gpu = _pair(lambda b, d: Sequential(layers(), shape, backend=b, dtype=d, seed=1), dtype, backend_name)
    x, t = _batch(cpu)
    _check_forward_and_grads(cpu, gpu, dtype, x, t)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("preset", ["two_layer_net", "multi_layer_net", "simple_convnet", "deep_convnet"])
def test_preset_forward_and_gradients_match(preset, dtype, backend_name):
    cpu, gpu = _pair(lambda b, d: get_preset(preset)(backend=b, dtype=d, seed=0), dtype, backend_name)
    x, t = _batch(cpu)
    _check_forward_and_grads(cpu, gpu, dtype, x, t)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
@pytest.mark.parametrize("preset", ["multi_layer_net", "simple_convnet"])
def test_parameters_match_after_1_and_20_steps(preset, name, dtype, backend_name):
    cpu, gpu = _pair(lambda b, d: get_preset(preset)(backend=b, dtype=d, seed=0), dtype, backend_name)
    opts = [get_optimizer(name, m, lr=1e-3, weight_decay=1e-4, clip_norm=5.0) for m in (cpu, gpu)]
    for step in range(1, 21):
        x, t = _batch(cpu, seed=step)
        for m, o in zip((cpu, gpu), opts):
            m.loss(m.to_device(x), t)
            m.backward()
            o.step()
        if step in (1, 20):
            _close(cpu.arena.data, gpu.arena.data, dtype, f"parameters after {step} steps")
            for k, v in opts[0]._flat_state.items():
                _close(v, opts[1]._flat_state[k], dtype, f"optimizer state {k} after {step} steps")


@pytest.mark.parametrize("preset", ["simple_convnet"])
def test_gpu_training_reaches_the_cpu_accuracy_on_synthetic_data(preset, backend_name):
    from accelnet.data import synthetic
    from accelnet.train import Trainer

    data = synthetic(2000, 500, seed=0)
    accs = []
    for backend in ("cpu", backend_name):
        model = get_preset(preset)(backend=backend, seed=0)
        trainer = Trainer(model, get_optimizer("adam", model), data, batch_size=100, epochs=2, progress=False)
        accs.append(trainer.fit()[-1]["test_acc"])
    assert abs(accs[0] - accs[1]) <= 0.002, accs


def test_gpu_backend_uses_cupy_and_the_cuda_kernels(backend_name):
    from accelnet.backend import get_backend

    b = get_backend(backend_name)
    assert b.xp.__name__ == "cupy" and b.kernels.__name__ == "accelnet.kernels.cuda"

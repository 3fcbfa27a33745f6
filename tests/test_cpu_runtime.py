"""The CPU runtime: subnormals flush to zero inside accelnet's calls and Numba's workers, never in
the caller's own arithmetic afterwards; the opt-out; a subnormal-heavy step as fast as before."""

import os
import platform
import subprocess
import sys
import threading

import numpy as np
import pytest

from accelnet import cpu_runtime, get_backend
from accelnet.data import synthetic
from accelnet.kernels import cpu
from accelnet.presets import multi_layer_net, two_layer_net
from accelnet.optim import SGD, Adam, Momentum
from accelnet.train import Trainer
from accelnet.workloads import Workload, measure

TINY32 = np.finfo(np.float32).tiny

needs_ftz = pytest.mark.skipif(not cpu_runtime.flush_to_zero_available(),
                               reason="flush-to-zero is set on x86-64 Linux (glibc) only, unless opted out")


def _caller_keeps_subnormals() -> bool:
    """The calling thread's own NumPy still computes gradual underflow (the issue's three probes)."""
    return (float(np.float32(TINY32) * np.float32(0.5)) > 0 and float((np.array([1e-310]) * 1.0)[0]) > 0
            and float(np.exp(-720.0)) > 0)


def _subnormals(n):
    return np.full(n, TINY32 * 0.5, np.float32)


def _relu_keeps(x) -> int:
    """How many subnormal inputs ReLU passed: 0 where denormals-are-zero reads them as 0."""
    return int(cpu.relu(x).astype(bool).sum())


def test_starting_the_cpu_backend_leaves_the_callers_arithmetic_alone():
    get_backend("cpu")
    assert _caller_keeps_subnormals()


def test_subnormals_survive_in_the_callers_numpy_after_an_update():
    params = {"W": np.ones((3, 4)), "b": np.zeros(4, np.float32)}
    Adam(0.01).update(params, {"W": np.ones((3, 4)), "b": _subnormals(4)})
    assert _caller_keeps_subnormals()


def test_subnormals_survive_in_the_callers_numpy_after_a_training_step():
    model = two_layer_net(seed=0)
    opt = Momentum(model, lr=0.1)
    x = np.random.default_rng(0).random((8, 784), np.float32)
    model.loss(x, np.arange(8))
    model.backward()
    opt.step()
    assert _caller_keeps_subnormals()


def test_subnormals_survive_in_the_callers_numpy_after_fit():
    data = synthetic(64, 16, (20,), classes=3, seed=0)
    model = multi_layer_net(hidden_sizes=(8,), input_size=20, output_size=3, seed=0)
    Trainer(model, SGD(model, lr=0.1), data, batch_size=16, epochs=1, progress=False).fit()
    assert _caller_keeps_subnormals()


def test_the_caller_keeps_its_setting_when_a_call_raises():
    with pytest.raises(ValueError):
        SGD(0.1).update({"W": np.ones(3)}, {"W": np.ones(4)})
    assert _caller_keeps_subnormals()


@needs_ftz
def test_kernels_flush_subnormals_in_the_calling_thread_and_in_numbas_workers():
    get_backend("cpu")
    assert _relu_keeps(_subnormals(100)) == 0  # serial: the calling thread alone
    assert _relu_keeps(_subnormals(4 * cpu.PARALLEL_MIN)) == 0  # parallel: the workers too
    assert _caller_keeps_subnormals()


@needs_ftz
def test_denormals_flushed_scopes_nest_and_restore_on_exit():
    with cpu_runtime.denormals_flushed():
        with cpu_runtime.denormals_flushed():
            assert float(np.float32(TINY32) * np.float32(0.5)) == 0.0
        assert float(np.float32(TINY32) * np.float32(0.5)) == 0.0  # still inside the outer scope
    assert _caller_keeps_subnormals()


@needs_ftz
def test_a_thread_that_flushes_for_good_keeps_flushing_after_accelnet_calls():
    seen = []

    def run():
        assert cpu_runtime.flush_denormals_in_this_thread()
        Adam(0.01).update({"w": np.ones(3, np.float32)}, {"w": np.ones(3, np.float32)})
        seen.append(float(np.float32(TINY32) * np.float32(0.5)))

    t = threading.Thread(target=run)
    t.start()
    t.join()
    assert seen == [0.0]
    assert _caller_keeps_subnormals()  # the setting was that thread's alone


_OPT_OUT = """
import numpy as np
from accelnet import get_backend
from accelnet.kernels import cpu
get_backend("cpu")
x = np.full(cpu.PARALLEL_MIN * 2, np.finfo(np.float32).tiny * 0.5, np.float32)
print(int(cpu.relu(x).astype(bool).sum()), x.size)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux") or platform.machine() != "x86_64",
                    reason="flush-to-zero is set on x86-64 Linux only")
def test_opting_out_keeps_gradual_underflow_in_the_kernels():
    res = subprocess.run([sys.executable, "-c", _OPT_OUT], capture_output=True, text=True, timeout=300,
                         env={**os.environ, "ACCELNET_FLUSH_DENORMALS": "0"})
    assert res.returncode == 0, res.stderr
    kept, n = map(int, res.stdout.split())
    assert kept == n


def _median_ms(fn, reps):
    return 1e3 * measure(Workload("step", "subnormal step", fn), min_time=0, min_runs=reps, max_runs=reps,
                         warmup=0).median


@needs_ftz
def test_a_step_on_subnormal_gradients_is_as_fast_as_with_flush_to_zero_set_process_wide():
    """Scoped flushing against the old process-wide setting (emulated in a thread of its own),
    interleaved, on a model step whose inputs and hence weight gradients are subnormal-heavy."""
    model = two_layer_net(seed=0)
    opt = Adam(model, lr=1e-3)
    x = (np.random.default_rng(0).standard_normal((100, 784)) * 1e-36).astype(np.float32)
    t = np.random.default_rng(1).integers(0, 10, 100)

    def step():
        model.loss(x, t)
        model.backward()
        opt.step()

    def process_wide(out):
        cpu_runtime.flush_denormals_in_this_thread()
        step()
        out.append(_median_ms(step, 15))

    step()
    scoped, wide = [], []
    for _ in range(3):
        scoped.append(_median_ms(step, 15))
        th = threading.Thread(target=process_wide, args=(wide,))
        th.start()
        th.join()
    # the first layer's weight gradients (inputs ~1e-36 times ~1e-3) are all subnormal, so flushed
    assert np.count_nonzero(model.grads["linear1.W"]) == 0
    assert min(scoped) <= 1.3 * min(wide) + 0.05, (scoped, wide)

"""Optimizers: fused kernels vs the reference, the book's trajectories, state, clipping, schedules;
the model-step tests on every backend (conftest.py's ``backend_name``)."""

import math

import numpy as np
import pytest

import book_optimizer as book
from accelnet import Linear, ReLU, Sequential
from accelnet.kernels import cpu, reference
from accelnet.optim import (OPTIMIZERS, SGD, AdaGrad, Adam, AdamW, CosineDecay, ExponentialDecay, Momentum, Nesterov,
                            RMSprop, StepDecay, Warmup, get_optimizer)

NAMES = sorted(OPTIMIZERS)
# lr per optimizer so 100 steps move the parameters visibly without blowing up
LR = {"sgd": 0.05, "momentum": 0.02, "nesterov": 0.02, "adagrad": 0.05, "rmsprop": 0.005, "adam": 0.005,
      "adamw": 0.005}
RTOL = {np.float32: 1e-6, np.float64: 1e-12}


def _tensors(dtype, sizes, seed=0):
    r = np.random.default_rng(seed)
    return {f"p{i}": r.standard_normal(n).astype(dtype) for i, n in enumerate(sizes)}


def _run_book_interface(name, kernels, dtype, sizes, steps=100, **kw):
    params = _tensors(dtype, sizes)
    opt = get_optimizer(name, lr=LR[name], kernels=kernels, **kw)
    r = np.random.default_rng(1)
    for _ in range(steps):
        grads = {k: r.standard_normal(p.shape).astype(dtype) for k, p in params.items()}
        opt.update(params, grads)
    return params


REGIMES = {"plain": {}, "weight_decay": {"weight_decay": 0.01}, "clipping": {"clip_norm": 1.0},
           "both": {"weight_decay": 0.01, "clip_norm": 1.0}}


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("regime", sorted(REGIMES))
@pytest.mark.parametrize("layout", ["flat", "multi_tensor"])
@pytest.mark.parametrize("name", NAMES)
def test_fused_kernel_matches_reference_over_100_steps(name, layout, regime, dtype):
    sizes = [3000] if layout == "flat" else [7, 300, 1, 64, 1000, 5, 128]
    fused = _run_book_interface(name, cpu, dtype, sizes, **REGIMES[regime])
    ref = _run_book_interface(name, reference, dtype, sizes, **REGIMES[regime])
    start = _tensors(dtype, sizes)
    for k in fused:
        assert not np.allclose(fused[k], start[k])  # the run really moved the parameters
        np.testing.assert_allclose(fused[k], ref[k], rtol=RTOL[dtype], atol=RTOL[dtype] * 1e-2)


@pytest.mark.parametrize("name", NAMES)
def test_model_step_matches_the_book_interface_on_the_same_gradients(name, backend_name):
    model = Sequential([Linear(16), ReLU(), Linear(4)], (8,), backend=backend_name, seed=0)
    params = {k: v.copy() for k, v in model.params.items()}
    fused = get_optimizer(name, model, lr=LR[name], weight_decay=0.001)
    per_tensor = get_optimizer(name, lr=LR[name], weight_decay=0.001, kernels=reference)
    r = np.random.default_rng(0)
    for _ in range(20):
        model.arena.grad[...] = model.to_device(r.standard_normal(model.arena.grad.shape))
        per_tensor.update(params, {k: g.copy() for k, g in model.grads.items()})
        fused.step()
    # On the GPU the fused kernel's a * b + c is one FMA (NVVM contracts by default) where CuPy's separate
    # operations round twice: 20 steps of that drift by ~1e-7 (seen on an H200), far below a wrong formula's 1e-3.
    rtol, atol = (1e-6, 1e-9) if backend_name == "cpu" else (1e-5, 1e-6)
    for k, v in model.params.items():
        np.testing.assert_allclose(model.backend.to_numpy(v), model.backend.to_numpy(params[k]), rtol=rtol,
                                   atol=atol)


class CountingKernels:
    """Forwards to the CPU kernels and counts the calls."""

    def __init__(self):
        self.calls = []

    def __getattr__(self, name):
        fn = getattr(cpu, name)

        def counted(*a, **k):
            self.calls.append((name, a[0]) if name == "update" else name)  # update: with its rule
            return fn(*a, **k)

        return counted


@pytest.mark.parametrize("name", NAMES)
def test_model_step_is_one_kernel_call_whatever_the_number_of_layers(name):
    layers = [l for _ in range(10) for l in (Linear(8), ReLU())] + [Linear(2)]
    model = Sequential(layers, (8,))
    counter = CountingKernels()
    opt = get_optimizer(name, model, lr=0.01, kernels=counter)
    opt.step()
    assert counter.calls == [("update", name if name != "adamw" else "adam")]


# -- the book's chapter 6 ------------------------------------------------------------------------

def _trajectory(opt, steps=30):
    params = {"x": -7.0, "y": 2.0}
    grads = {"x": 0.0, "y": 0.0}
    path = []
    for _ in range(steps):
        path.append((params["x"], params["y"]))
        grads["x"], grads["y"] = params["x"] / 10.0, 2.0 * params["y"]
        opt.update(params, grads)
    return np.array(path + [(params["x"], params["y"])])


@pytest.mark.parametrize("ours, theirs", [
    (SGD(lr=0.95), book.SGD(lr=0.95)),
    (Momentum(lr=0.1), book.Momentum(lr=0.1)),
    (AdaGrad(lr=1.5), book.AdaGrad(lr=1.5)),
    (Adam(lr=0.3), book.Adam(lr=0.3)),
    (RMSprop(lr=0.1), book.RMSprop(lr=0.1)),
    (Nesterov(lr=0.1), book.Nesterov(lr=0.1)),
], ids=["SGD", "Momentum", "AdaGrad", "Adam", "RMSprop", "Nesterov"])
def test_book_interface_reproduces_the_books_chapter_6_trajectory(ours, theirs):
    np.testing.assert_allclose(_trajectory(ours), _trajectory(theirs), rtol=1e-15, atol=1e-300)


def test_book_interface_keeps_python_floats_as_floats():
    params = {"x": 1.0}
    SGD(lr=0.1).update(params, {"x": 2.0})
    assert type(params["x"]) is float and params["x"] == pytest.approx(0.8)


def test_book_interface_updates_arrays_in_place():
    w = np.ones((2, 3), np.float32)
    params = {"W": w}
    Adam().update(params, {"W": np.ones_like(w)})
    assert params["W"] is w and (w < 1).all()


# -- dtype discipline ------------------------------------------------------------------------------

@pytest.mark.parametrize("name", NAMES)
def test_float32_update_stays_float32_in_arrays_and_kernel_scalars(name):
    model = Sequential([Linear(4)], (3,))
    opt = get_optimizer(name, model, lr=0.01, weight_decay=0.01, clip_norm=10.0)
    model.arena.grad[...] = 1
    for _ in range(3):
        opt.step()
    assert model.arena.data.dtype == np.float32
    assert all(a.dtype == np.float32 for a in opt._flat_state.values())
    loop = cpu._UPDATES[opt.rule]
    for sig in loop.parallel.signatures + loop.serial.signatures:
        if sig[0].dtype.name == "float32":  # every scalar the float32 specialization takes is float32
            assert all(getattr(t, "name", "") in ("float32", "array(float32, 1d, C)") for t in sig), sig


def test_reference_adam_in_float32_never_promotes_to_float64():
    p, g, m, v = (np.ones(10, np.float32) for _ in range(4))
    reference.adam(p, g, m, v, np.float64(0.001) * 1.0, 0.1, 0.001, 1e-7, 0.0, 0.0, 1.0)  # even a NumPy float64 lr_t
    assert p.dtype == m.dtype == v.dtype == np.float32


# -- clipping, weight decay, schedules ------------------------------------------------------------

def test_clipping_rescales_to_the_global_norm():
    params = {"a": np.zeros(3), "b": np.zeros(1)}
    grads = {"a": np.array([3.0, 0.0, 0.0]), "b": np.array([4.0])}  # global norm 5
    opt = SGD(lr=1.0, clip_norm=1.0)
    opt.update(params, grads)
    assert opt.last_grad_norm == pytest.approx(5.0)
    np.testing.assert_allclose(params["a"], [-0.6, 0, 0], rtol=1e-6)
    np.testing.assert_allclose(params["b"], [-0.8], rtol=1e-6)


def test_clipping_leaves_small_gradients_alone():
    params = {"a": np.zeros(2)}
    SGD(lr=1.0, clip_norm=10.0).update(params, {"a": np.array([0.3, 0.4])})
    np.testing.assert_allclose(params["a"], [-0.3, -0.4])


def test_weight_decay_adds_l2_to_the_gradient():
    params = {"w": np.array([2.0])}
    SGD(lr=0.1, weight_decay=0.5).update(params, {"w": np.array([0.0])})
    assert params["w"][0] == pytest.approx(2.0 - 0.1 * 0.5 * 2.0)


def test_adamw_decays_decoupled_from_the_gradient():
    params = {"w": np.array([2.0])}
    AdamW(lr=0.1, weight_decay=0.5).update(params, {"w": np.array([0.0])})
    assert params["w"][0] == pytest.approx(2.0 * (1 - 0.1 * 0.5))


@pytest.mark.parametrize("schedule, expected", [
    (StepDecay(2, gamma=0.5), [1, 1, 0.5, 0.5, 0.25]),
    (ExponentialDecay(0.5), [1, 0.5, 0.25, 0.125, 0.0625]),
    (CosineDecay(4), [1, 0.5 + 0.5 * math.cos(math.pi / 4), 0.5, 0.5 - 0.5 * math.cos(math.pi / 4), 0]),
    (Warmup(2, after=ExponentialDecay(0.5)), [0.5, 1, 1, 0.5, 0.25]),
], ids=["step", "exponential", "cosine", "warmup"])
def test_schedule_factors_per_count(schedule, expected):
    np.testing.assert_allclose([schedule(k) for k in range(5)], expected, atol=1e-12)


def test_schedule_advances_per_step():
    opt = SGD(lr=1.0, schedule=ExponentialDecay(0.5))
    lrs = []
    for _ in range(3):
        lrs.append(opt.lr)
        opt.update({"w": np.zeros(1)}, {"w": np.zeros(1)})
    assert lrs == [1.0, 0.5, 0.25]


def test_schedule_advances_per_epoch():
    opt = SGD(lr=1.0, schedule=StepDecay(1, gamma=0.1), schedule_unit="epoch")
    opt.update({"w": np.zeros(1)}, {"w": np.zeros(1)})
    assert opt.lr == 1.0
    opt.epoch_end()
    assert opt.lr == pytest.approx(0.1)


# -- state -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", NAMES)
def test_state_dict_round_trips_exactly(name, backend_name):
    def fresh():
        model = Sequential([Linear(6), ReLU(), Linear(3)], (4,), backend=backend_name, seed=0)
        return model, get_optimizer(name, model, lr=LR[name], schedule=ExponentialDecay(0.99))

    def steps(model, opt, seed, n=5):
        r = np.random.default_rng(seed)
        for _ in range(n):
            model.arena.grad[...] = model.to_device(r.standard_normal(model.arena.grad.shape))
            opt.step()

    a, opt_a = fresh()
    steps(a, opt_a, 0)
    saved_model, saved_opt = a.state_dict(), opt_a.state_dict()
    steps(a, opt_a, 1)

    b, opt_b = fresh()
    b.load_state_dict(saved_model)
    opt_b.load_state_dict(saved_opt)
    steps(b, opt_b, 1)
    np.testing.assert_array_equal(a.backend.to_numpy(a.arena.data), b.backend.to_numpy(b.arena.data))
    assert opt_a.t == opt_b.t == 10 and opt_a.lr == opt_b.lr


def test_state_dict_is_a_copy():
    model = Sequential([Linear(2)], (2,))
    opt = Adam(model)
    model.arena.grad[...] = 1
    opt.step()
    sd = opt.state_dict()
    opt.step()
    assert not np.array_equal(sd["flat_state"]["m"], opt._flat_state["m"])


def test_a_book_interface_state_of_device_arrays_loads_as_its_host_copy(device_array):
    params = {"W": np.ones((2, 3)), "b": np.zeros(3)}
    a = Adam()
    a.update(params, {"W": np.full((2, 3), 0.5), "b": np.ones(3)})
    saved = a.state_dict()
    moved = {**saved, "key_state": {key: {k: device_array(v) for k, v in st.items()}  # from a GPU run, say
                                    for key, st in saved["key_state"].items()}}
    b = Adam()
    b.load_state_dict(moved)
    for key, st in saved["key_state"].items():
        for k, v in st.items():
            np.testing.assert_array_equal(b.state_dict()["key_state"][key][k], v)


def test_loading_another_optimizers_state_is_refused():
    with pytest.raises(ValueError, match="'SGD', not 'Adam'"):
        Adam().load_state_dict(SGD().state_dict())


def test_loading_state_of_another_model_size_is_refused():
    small, big = Sequential([Linear(2)], (2,)), Sequential([Linear(3)], (2,))
    opt = Adam(small)
    small.arena.grad[...] = 1
    opt.step()
    with pytest.raises(ValueError, match="shape"):
        Adam(big).load_state_dict(opt.state_dict())


# -- bad input ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("lr", [0, -1, float("nan"), float("inf"), "fast"])
def test_bad_learning_rate_is_named(lr):
    with pytest.raises(ValueError, match="lr must be"):
        SGD(lr=lr)


def test_a_bad_positional_lr_is_named_like_a_keyword_one():
    with pytest.raises(ValueError, match="lr must be"):
        SGD(-0.1)


def test_unknown_optimizer_is_named():
    with pytest.raises(ValueError, match="unknown optimizer 'lbfgs'"):
        get_optimizer("lbfgs")


def test_step_without_a_model_explains_both_interfaces():
    with pytest.raises(RuntimeError, match=r"update\(params, grads\)"):
        Adam().step()


def test_update_with_a_missing_gradient_is_named():
    with pytest.raises(ValueError, match=r"no gradient for \['b'\]"):
        SGD().update({"a": np.zeros(1), "b": np.zeros(1)}, {"a": np.zeros(1)})


def test_update_with_a_mismatched_gradient_is_named():
    with pytest.raises(ValueError, match=r"grads\['a'\] has 3 elements"):
        SGD().update({"a": np.zeros(2)}, {"a": np.zeros(3)})


def test_an_optimizer_class_without_a_declared_update_is_named():
    from accelnet.optim import Optimizer

    with pytest.raises(TypeError, match=r"Lion\.rule must name an update declared in kernels/elementwise.py"):
        type("Lion", (Optimizer,), {"rule": "lion"})

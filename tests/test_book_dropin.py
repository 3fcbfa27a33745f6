"""accelnet's optimizers as drop-ins for the book's common/optimizer.py: the book's update loop on a
MultiLayerNet-style dict of parameters gives bitwise the book's parameters and state (float64), the
constructors take the book's positional arguments, ``lr`` can be set between updates, the book's
state attributes read accelnet's state, and whatever the book updates in place is updated in place.

The oracle is ``book_optimizer.py``: the book's classes, arithmetic verbatim."""

import numpy as np
import pytest

import book_optimizer as book
from accelnet import Linear, ReLU, Sequential
from accelnet.optim import SGD, AdaGrad, Adam, Momentum, Nesterov, RMSprop

# (accelnet class, book class, the book's positional constructor arguments)
PAIRS = {
    "SGD": (SGD, book.SGD, (0.1,)),
    "Momentum": (Momentum, book.Momentum, (0.05, 0.8)),
    "Nesterov": (Nesterov, book.Nesterov, (0.05, 0.8)),
    "AdaGrad": (AdaGrad, book.AdaGrad, (0.1,)),
    "RMSprop": (RMSprop, book.RMSprop, (0.01, 0.9)),
    "Adam": (Adam, book.Adam, (0.01, 0.8, 0.99)),
}
STATE = {"SGD": (), "Momentum": ("v",), "Nesterov": ("v",), "AdaGrad": ("h",), "RMSprop": ("h",),
         "Adam": ("m", "v")}
SIZES = (20, 16, 16, 5)  # MultiLayerNet(input_size=20, hidden_size_list=[16, 16], output_size=5)


def _multi_layer_net_params(seed=0):
    r = np.random.default_rng(seed)
    params = {}
    for i, (a, b) in enumerate(zip(SIZES[:-1], SIZES[1:]), start=1):
        params[f"W{i}"] = r.standard_normal((a, b)) * np.sqrt(2.0 / a)
        params[f"b{i}"] = np.zeros(b)
    return params


def _grad_stream(params, steps, seed=1):
    r = np.random.default_rng(seed)
    for _ in range(steps):
        yield {k: r.standard_normal(v.shape) for k, v in params.items()}


def _copy(params):
    return {k: v.copy() for k, v in params.items()}


def _update_both(ours, theirs, p_ours, p_book, grads):
    """One update by each optimizer on its own copy of the same gradients."""
    ours.update(p_ours, _copy(grads))
    theirs.update(p_book, _copy(grads))


def _book_pair(name):
    """(ours, the book's, ours' params, the book's copy of them, the constructor args) for ``name``."""
    ours_cls, books_cls, args = PAIRS[name]
    p_ours = _multi_layer_net_params()
    return ours_cls(*args), books_cls(*args), p_ours, _copy(p_ours), args


def _assert_bitwise_the_books(name, ours, theirs, p_ours, p_book):
    """Parameters and every state buffer (the book's attribute names) equal bit for bit."""
    for k in p_book:
        np.testing.assert_array_equal(p_ours[k], p_book[k])
        for s in STATE[name]:
            np.testing.assert_array_equal(getattr(ours, s)[k], getattr(theirs, s)[k])


@pytest.mark.parametrize("name", sorted(PAIRS))
def test_the_books_update_loop_gives_bitwise_the_books_parameters_and_state(name):
    ours, theirs, p_ours, p_book, _ = _book_pair(name)
    arrays = {k: v for k, v in p_ours.items()}
    for grads in _grad_stream(p_ours, 50):
        _update_both(ours, theirs, p_ours, p_book, grads)
    for k in p_book:
        assert p_ours[k] is arrays[k]  # updated in place, as the book's layers require
    _assert_bitwise_the_books(name, ours, theirs, p_ours, p_book)


@pytest.mark.parametrize("name", sorted(PAIRS))
def test_a_models_fused_step_gives_bitwise_the_books_parameters(name):
    ours_cls, books_cls, args = PAIRS[name]
    model = Sequential([Linear(16), ReLU(), Linear(16), ReLU(), Linear(5)], (20,), dtype="float64", seed=0)
    ours, theirs = ours_cls(model, *args), books_cls(*args)
    p_book = _copy(model.params)
    for grads in _grad_stream(p_book, 50):
        for k, g in grads.items():
            model.grads[k][...] = g
        ours.step()
        theirs.update(p_book, grads)
    _assert_bitwise_the_books(name, ours, theirs, model.params, p_book)


@pytest.mark.parametrize("name", sorted(PAIRS))
def test_lr_set_between_updates_is_used_by_the_next_update(name):
    ours, theirs, p_ours, p_book, args = _book_pair(name)
    for i, grads in enumerate(_grad_stream(p_ours, 6)):
        if i == 3:
            ours.lr = theirs.lr = args[0] / 4  # the book's own schedules do this
        _update_both(ours, theirs, p_ours, p_book, grads)
    assert ours.lr == args[0] / 4
    for k in p_book:
        np.testing.assert_array_equal(p_ours[k], p_book[k])


def test_lr_set_between_steps_is_used_by_the_fused_path():
    model = Sequential([Linear(3)], (4,), dtype="float64", seed=0)
    opt = SGD(model, 0.1)
    before = model.arena.data.copy()
    model.arena.grad[...] = 1.0
    opt.lr = 0.5
    opt.step()
    np.testing.assert_array_equal(model.arena.data, before - 0.5)


@pytest.mark.parametrize("value", [0, -0.1, float("nan"), "0.1"])
def test_setting_a_bad_lr_is_named(value):
    opt = SGD(0.1)
    with pytest.raises(ValueError, match="lr must be"):
        opt.lr = value
    assert opt.lr == 0.1


def test_the_books_positional_arguments_set_the_books_hyperparameters():
    assert SGD(0.3).lr == 0.3
    m = Momentum(0.05, 0.8)
    assert (m.lr, m.momentum) == (0.05, 0.8)
    r = RMSprop(0.01, 0.9)
    assert (r.lr, r.decay_rate) == (0.01, 0.9)
    a = Adam(0.01, 0.8, 0.99)
    assert (a.lr, a.beta1, a.beta2) == (0.01, 0.8, 0.99)


def test_adams_iter_counts_updates_like_the_books():
    ours, theirs = Adam(), book.Adam()
    params = {"w": np.ones(3)}
    for _ in range(4):
        ours.update(params, {"w": np.ones(3)})
        theirs.update({"w": np.ones(3)}, {"w": np.ones(3)})
    assert ours.iter == theirs.iter == 4


@pytest.mark.parametrize("name", sorted(n for n in PAIRS if STATE[n]))
def test_state_attributes_are_none_before_the_first_update_like_the_books(name):
    ours_cls, books_cls, args = PAIRS[name]
    for s in STATE[name]:
        assert getattr(ours_cls(*args), s) is None and getattr(books_cls(*args), s) is None


def test_state_attributes_are_views_of_the_state_the_next_update_reads():
    ours, theirs = Momentum(0.1), book.Momentum(0.1)
    p_ours = _multi_layer_net_params()
    p_book = _copy(p_ours)
    grads = list(_grad_stream(p_ours, 4))
    for g in grads[:2]:
        _update_both(ours, theirs, p_ours, p_book, g)
    assert ours.v["W1"].shape == p_ours["W1"].shape
    ours.v["W1"][...] = 0.0  # client code that resets the velocity, as the book's state allows
    theirs.v["W1"][...] = 0.0
    for g in grads[2:]:
        _update_both(ours, theirs, p_ours, p_book, g)
    np.testing.assert_array_equal(p_ours["W1"], p_book["W1"])


@pytest.mark.parametrize("name", sorted(PAIRS))
def test_a_transposed_parameter_is_updated_in_place_like_the_books(name):
    ours_cls, books_cls, args = PAIRS[name]
    base = np.random.default_rng(0).standard_normal((5, 4))
    w_ours, w_book = base.copy().T, base.copy().T  # non-contiguous views
    ours, theirs = ours_cls(*args), books_cls(*args)
    for g in _grad_stream({"W": w_ours}, 5):
        _update_both(ours, theirs, {"W": w_ours}, {"W": w_book}, g)
    np.testing.assert_array_equal(w_ours, w_book)


def test_a_strided_slice_of_a_parameter_is_updated_in_place():
    w = np.ones(10)
    SGD(0.5).update({"w": w[::2]}, {"w": np.ones(5)})
    np.testing.assert_array_equal(w, [0.5, 1] * 5)


def test_float64_gradients_for_float32_parameters_are_refused_with_the_fix():
    with pytest.raises(ValueError, match=r"grads\['W'\] is float64 but params\['W'\] is float32.*astype"):
        SGD(0.1).update({"W": np.ones(3, np.float32)}, {"W": np.ones(3)})


@pytest.mark.parametrize("param, match", [
    (np.ones(3, np.float16), "must be float32 or float64, got float16"),
    (np.ones(3, np.int64), "must be float32 or float64, got int64"),
    ("1.0", "must be a float array or a number, got str"),
])
def test_parameters_of_an_unsupported_type_are_named(param, match):
    with pytest.raises(ValueError, match=match):
        SGD(0.1).update({"W": param}, {"W": np.ones(3)})


def test_a_read_only_parameter_is_named():
    w = np.ones(3)
    w.flags.writeable = False
    with pytest.raises(ValueError, match=r"params\['W'\] is read-only"):
        SGD(0.1).update({"W": w}, {"W": np.ones(3)})


def test_a_refused_update_changes_nothing():
    params = {"a": np.ones(3), "b": np.ones(3, np.float32)}
    opt = Adam(0.1)
    with pytest.raises(ValueError):
        opt.update(params, {"a": np.ones(3), "b": np.ones(3)})
    np.testing.assert_array_equal(params["a"], np.ones(3))
    assert opt.iter == 0 and opt.m is None


def test_numpy_scalar_parameters_and_gradients_update_like_numbers():
    params = {"x": np.float32(2.0), "y": 1.0}
    SGD(0.5).update(params, {"x": np.float32(1.0), "y": np.float64(1.0)})
    assert type(params["x"]) is np.float32 and params["x"] == 1.5
    assert type(params["y"]) is float and params["y"] == 0.5

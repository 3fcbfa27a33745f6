"""The book's chapter 6 experiments, each one deterministic function returning its numbers.

``accelnet compare ...`` and ``accelnet tune`` call these and write CSV (always) and PNG
(with matplotlib). Every run is seeded: same seed, same numbers, on CPU or GPU.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from .data import BatchIterator, Dataset, validation_split
from .gradcheck import numerical_gradient
from .layers import Linear, ReLU, Sigmoid
from .model import Sequential
from .presets import multi_layer_net
from .optim import get_optimizer

__all__ = ["TRAJECTORY_DEFAULTS", "MNIST_OPTIMIZER_DEFAULTS", "trajectories", "parse_function", "smooth_curve", "compare_optimizers",
           "compare_init", "activation_histograms", "compare_batchnorm", "compare_regularization",
           "random_search", "Curves"]


def _progress(total: int, desc: str, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, disable=not enabled, leave=False, dynamic_ncols=True)


# -- optimizer trajectories on f(x, y) (the book's optimizer_compare_naive.py) ------------------------------

TRAJECTORY_DEFAULTS = {"sgd": 0.95, "momentum": 0.1, "adagrad": 1.5, "rmsprop": 0.1, "adam": 0.3}
# The book's learning rates for its MNIST comparison (each optimizer's default in common/optimizer.py).
MNIST_OPTIMIZER_DEFAULTS = {"sgd": 0.01, "momentum": 0.01, "adagrad": 0.01, "rmsprop": 0.01, "adam": 0.001}
_SAFE = {name: getattr(np, name) for name in ("sin", "cos", "exp", "log", "sqrt", "abs", "tanh", "pi")}


def parse_function(expr: str):
    """``f(x, y)`` from an expression such as ``"x**2 / 20 + y**2"`` (NumPy functions allowed)."""
    try:
        code = compile(expr, "<function>", "eval")
    except SyntaxError as exc:
        raise ValueError(f"cannot parse function {expr!r}: {exc.msg}") from None
    unknown = [n for n in code.co_names if n not in _SAFE and n not in ("x", "y")]
    if unknown:
        raise ValueError(f"function {expr!r} uses unknown names {unknown}: only x, y and {sorted(_SAFE)}")

    def f(x, y):
        # + 0 * x + 0 * y: a function of neither (a constant) still gives one value per grid point
        return eval(code, {"__builtins__": {}}, {**_SAFE, "x": x, "y": y}) + 0 * x + 0 * y

    try:
        with np.errstate(all="ignore"):
            value = float(f(np.float64(1.0), np.float64(2.0)))
    except Exception as exc:
        raise ValueError(f"cannot evaluate function {expr!r}: {exc}") from None
    if not math.isfinite(value):
        raise ValueError(f"function {expr!r} is not finite at (1, 2)")
    return f


def trajectories(optimizers: dict | None = None, function: str = "x**2 / 20 + y**2", start=(-7.0, 2.0),
                 steps: int = 30) -> dict:
    """Each optimizer's path from ``start`` over ``steps`` updates, through the book's
    ``update(params, grads)`` with gradients by central differences. {name: (steps+1, 2) array}."""
    f = parse_function(function)
    with np.errstate(all="ignore"):
        at_start = float(f(np.float64(start[0]), np.float64(start[1])))
    if not math.isfinite(at_start):
        raise ValueError(f"function {function!r} is not finite at the start {tuple(start)}: choose another --start")
    paths = {}
    for name, lr in (optimizers or TRAJECTORY_DEFAULTS).items():
        opt = get_optimizer(name, lr=lr)
        params = {"x": float(start[0]), "y": float(start[1])}
        path = [(params["x"], params["y"])]
        for _ in range(steps):
            xy = np.array([params["x"], params["y"]])
            g = numerical_gradient(lambda v: f(v[0], v[1]), xy, h=1e-6)
            opt.update(params, {"x": float(g[0]), "y": float(g[1])})
            path.append((params["x"], params["y"]))
        paths[name] = np.array(path)
    return paths


# -- MNIST curves ---------------------------------------------------------------------------------------------

@dataclass
class Curves:
    """Named series over a shared x axis (iterations or epochs)."""

    x_label: str
    x: list = field(default_factory=list)
    series: dict = field(default_factory=dict)

    def rows(self):
        names = list(self.series)
        for i, xv in enumerate(self.x):
            yield [xv] + [self.series[n][i] for n in names]


def smooth_curve(values, window: int = 11):
    """The book's smooth_curve: a Kaiser-window moving average (beta 2), same length as the input."""
    values = np.asarray(values, dtype=np.float64)
    if len(values) < window:
        return values.copy()
    w = np.kaiser(window, 2)
    padded = np.r_[values[window - 1 : 0 : -1], values, values[-1:-window:-1]]
    return np.convolve(w / w.sum(), padded, mode="valid")[window // 2 : window // 2 + len(values)]


def _mnist_mlp(hidden, init, backend, seed, **kw):
    return multi_layer_net(hidden_sizes=hidden, init=init, backend=backend, seed=seed, **kw)


def _train_losses(model, optimizer, x, t, iterations: int, batch_size: int, seed: int, bar=None) -> list:
    """Loss after each of ``iterations`` random mini-batches (the book draws them with replacement)."""
    rng = np.random.default_rng(seed)
    xp = model.backend.xp
    losses = xp.zeros(iterations, dtype=model.dtype)
    for i in range(iterations):
        idx = rng.choice(len(x), batch_size)
        losses[i] = model.loss(model.to_device(x[idx]), model.backend.to_device(t[idx]))
        model.backward()
        optimizer.step()
        if bar is not None:
            bar.update(1)
    return [float(v) for v in model.backend.to_numpy(losses)]  # one device->host copy per run


def compare_optimizers(data: Dataset, optimizers: dict | None = None, iterations: int = 2000, batch_size: int = 128,
                       hidden=(100, 100, 100, 100), backend="cpu", seed: int = 0, progress: bool = True) -> Curves:
    """The book's optimizer_compare_mnist.py: the same 5-layer ReLU net trained by each optimizer."""
    optimizers = optimizers or MNIST_OPTIMIZER_DEFAULTS
    curves = Curves("iteration", list(range(1, iterations + 1)))
    with _progress(iterations * len(optimizers), "optimizers", progress) as bar:
        for name, lr in optimizers.items():
            model = _mnist_mlp(hidden, "he", backend, seed)
            curves.series[name] = _train_losses(model, get_optimizer(name, model, lr=lr), data.x_train,
                                                data.t_train, iterations, batch_size, seed, bar)
    return curves


INIT_CASES = {"std=0.01": 0.01, "xavier": "xavier", "he": "he"}


def compare_init(data: Dataset, iterations: int = 2000, batch_size: int = 128, hidden=(100, 100, 100, 100),
                 lr: float = 0.01, backend="cpu", seed: int = 0, progress: bool = True) -> Curves:
    """The book's weight_init_compare.py: std 0.01 vs Xavier vs He on the 5-layer ReLU net, SGD."""
    curves = Curves("iteration", list(range(1, iterations + 1)))
    with _progress(iterations * len(INIT_CASES), "init", progress) as bar:
        for label, init in INIT_CASES.items():
            model = _mnist_mlp(hidden, init, backend, seed)
            curves.series[label] = _train_losses(model, get_optimizer("sgd", model, lr=lr), data.x_train,
                                                 data.t_train, iterations, batch_size, seed, bar)
    return curves


def activation_histograms(activation: str = "sigmoid", inits=None, layers: int = 5, nodes: int = 100,
                          samples: int = 1000, seed: int = 0) -> dict:
    """The book's weight_init_activation_histogram.py: activations of each of ``layers`` layers for
    random N(0, 1) input. {init label: [layer activations, ...]} (host arrays)."""
    act = {"sigmoid": Sigmoid, "relu": ReLU}[activation]
    if inits is None:
        inits = {"std=1": 1.0, "std=0.01": 0.01, "xavier": "xavier"} if activation == "sigmoid" else \
            {"std=0.01": 0.01, "xavier": "xavier", "he": "he"}
    x = np.random.default_rng(seed).standard_normal((samples, nodes)).astype(np.float32)
    out = {}
    for label, init in inits.items():
        model = Sequential([layer for _ in range(layers) for layer in (Linear(nodes), act())], (nodes,),
                           init=init, seed=seed)
        model.eval()
        h, acts = model.to_device(x), []
        for layer in model.layers:
            h = layer.forward(h)
            if isinstance(layer, act):
                acts.append(model.backend.to_numpy(h).ravel().copy())
        out[label] = acts
    return out


def _accuracy_curve(model, optimizer, data: Dataset, epochs: int, batch_size: int, seed: int, bar=None,
                    test: bool = True):
    # Some settings diverge on purpose (plain nets at large weight scales): the accuracy shows it,
    # NumPy's overflow warnings would only clutter the output.
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        return _accuracy_curve_run(model, optimizer, data, epochs, batch_size, seed, bar, test)


def _accuracy_curve_run(model, optimizer, data, epochs, batch_size, seed, bar, test):
    batches = BatchIterator(data.x_train, data.t_train, batch_size, model.backend, model.dtype, seed=seed)
    train_acc, test_acc = [], []
    for _ in range(epochs):
        model.train()
        for x, t in batches:
            model.loss(x, t)
            model.backward()
            optimizer.step()
        train_acc.append(model.accuracy(data.x_train, data.t_train))
        if test:
            test_acc.append(model.accuracy(data.x_test, data.t_test))
        if bar is not None:
            bar.update(1)
    return train_acc, test_acc


def compare_batchnorm(data: Dataset, scales=None, epochs: int = 20, train_size: int = 1000, batch_size: int = 100,
                      lr: float = 0.01, hidden=(100, 100, 100, 100, 100), backend="cpu", seed: int = 0,
                      progress: bool = True) -> dict:
    """The book's batch_norm_test.py: train accuracy per epoch with and without batch norm, for
    each initial weight scale (std). {scale: {"batchnorm": [...], "plain": [...]}}."""
    scales = list(np.logspace(0, -4, num=16)) if scales is None else list(scales)
    small = Dataset(data.name, data.x_train[:train_size], data.t_train[:train_size], data.x_test[:1], data.t_test[:1])
    out = {}
    with _progress(len(scales) * 2 * epochs, "batchnorm", progress) as bar:
        for scale in scales:
            out[float(scale)] = {}
            for label, bn in (("batchnorm", True), ("plain", False)):
                model = _mnist_mlp(hidden, float(scale), backend, seed, batchnorm=bn)
                acc, _ = _accuracy_curve(model, get_optimizer("sgd", model, lr=lr), small, epochs, batch_size, seed,
                                         bar, test=False)
                out[float(scale)][label] = acc
    return out


REGULARIZATION_CASES = {"none": {}, "weight decay 0.1": {"weight_decay": 0.1}, "dropout 0.15": {"dropout": 0.15}}


def compare_regularization(data: Dataset, epochs: int = 201, train_size: int = 300, batch_size: int = 100,
                           lr: float = 0.01, hidden=(100,) * 6, backend="cpu", seed: int = 0,
                           progress: bool = True) -> dict:
    """The book's overfit_weight_decay.py and overfit_dropout.py: a 7-layer net on 300 samples, with no
    regularization, weight decay 0.1, or dropout 0.15. {case: {"train": [...], "test": [...]}}."""
    small = Dataset(data.name, data.x_train[:train_size], data.t_train[:train_size], data.x_test, data.t_test)
    out = {}
    with _progress(epochs * len(REGULARIZATION_CASES), "regularization", progress) as bar:
        for label, kw in REGULARIZATION_CASES.items():
            model = _mnist_mlp(hidden, "he", backend, seed, dropout=kw.get("dropout", 0.0))
            opt = get_optimizer("sgd", model, lr=lr, weight_decay=kw.get("weight_decay", 0.0))
            train, test = _accuracy_curve(model, opt, small, epochs, batch_size, seed, bar)
            out[label] = {"train": train, "test": test}
    return out


def random_search(data: Dataset, trials: int = 100, epochs: int = 50, train_size: int = 500,
                  validation: float = 0.2, lr_range=(-6, -2), wd_range=(-8, -4), batch_size: int = 100,
                  hidden=(100,) * 6, backend="cpu", seed: int = 0, progress: bool = True) -> list[dict]:
    """The book's hyperparameter_optimization.py: lr ~ 10^U(lr_range), weight decay ~ 10^U(wd_range),
    scored by accuracy on a validation split of the training data. Sorted best first."""
    x, t, xv, tv = validation_split(data.x_train[:train_size], data.t_train[:train_size], validation, seed)
    split = Dataset(data.name, x, t, xv, tv)
    rng = np.random.default_rng(seed)
    results = []
    with _progress(trials, "tune", progress) as bar:
        for trial in range(trials):
            lr = 10 ** rng.uniform(*lr_range)
            wd = 10 ** rng.uniform(*wd_range)
            model = _mnist_mlp(hidden, "he", backend, seed + trial)
            opt = get_optimizer("sgd", model, lr=lr, weight_decay=wd)
            train, val = _accuracy_curve(model, opt, split, epochs, batch_size, seed + trial)
            results.append({"trial": trial, "lr": lr, "weight_decay": wd, "val_acc": val[-1],
                            "train_acc": train[-1]})
            bar.update(1)
    return sorted(results, key=lambda r: -r["val_acc"])

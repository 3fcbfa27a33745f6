"""Optimizers: SGD, Momentum, Nesterov, AdaGrad, RMSprop, Adam, AdamW.

Two interfaces over the same kernels:

* ``Adam(model, lr=...)`` then ``step()``: one fused kernel launch over the model's flat
  parameter, gradient and state buffers, whatever the number of layers.
* ``Adam(lr=...)`` then ``update(params, grads)``: the book's interface on any dicts of
  arrays (or Python floats, as in its chapter 6 scripts), one kernel call per entry.

Each optimizer is declared once: its per-element formula and state buffers in
``kernels/elementwise.py``, its class here (hyperparameters, and ``scalars(lr)``: the host-side
numbers the formula takes, such as 1 - beta1 and Adam's bias correction). ``kernels.update``
runs it: one fused loop on the CPU, one launch on the GPU; ``kernels/reference.py`` holds the
textbook formulas the tests check them against.

Weight decay is L2 added to the gradient (the book's chapter 6.4), decoupled on AdamW;
``clip_norm`` rescales the gradient to that global norm; ``schedule`` scales ``lr``
per step or per epoch. ``state_dict()`` / ``load_state_dict()`` round-trip exactly.
"""

from __future__ import annotations

import functools
import math

import numpy as np

from .backend import backend_of, get_backend
from .kernels import elementwise
from .validate import is_number, number
from .schedules import CosineDecay, ExponentialDecay, Schedule, StepDecay, Warmup, get_schedule

__all__ = ["Optimizer", "SGD", "Momentum", "Nesterov", "AdaGrad", "RMSprop", "Adam", "AdamW", "OPTIMIZERS",
           "get_optimizer", "Schedule", "StepDecay", "ExponentialDecay", "CosineDecay", "Warmup"]


def _book_positional(init):
    """Wrap an optimizer's ``__init__(self, model=None, lr, ...)`` so that a number first means the
    book's ``(lr, ...)``: ``Momentum(0.1, 0.9)`` is ``Momentum(None, 0.1, 0.9)``."""

    @functools.wraps(init)
    def book_init(self, *args, **kw):
        if args and is_number(args[0]):
            args = (None, *args)
        init(self, *args, **kw)

    return book_init


class Optimizer:
    """Base class: counters, clipping, schedules, both interfaces and (de)serialization.

    Each optimizer also reads like the book's class: ``Adam(0.001)`` takes ``lr`` first (the
    book's positional order), ``opt.lr = 0.05`` between updates is honoured by the next one,
    and the book's state attributes (``v``, ``h``, ``m``, ``iter``) read accelnet's state.
    """

    rule: str = ""  # the update formula in kernels/elementwise.py
    state_names: tuple[str, ...] = ()  # its state buffers, e.g. ("m", "v"), as elementwise.py declares them

    def __init_subclass__(cls, **kw):
        super().__init_subclass__(**kw)
        if cls.rule not in elementwise.UPDATES:
            raise TypeError(f"{cls.__name__}.rule must name an update declared in kernels/elementwise.py "
                            f"({', '.join(sorted(elementwise.UPDATES))}), got {cls.rule!r}")
        cls.state_names = elementwise.UPDATES[cls.rule][1]
        init = cls.__dict__.get("__init__")
        if init is not None:
            cls.__init__ = _book_positional(init)
        for name in cls.state_names:  # the book's attribute for each state buffer
            if name not in cls.__dict__:
                doc = f"The book's ``{name}``: {{key: state view}}, None before the first update."
                setattr(cls, name, property(functools.partial(Optimizer._state_views, name=name), doc=doc))

    def __init__(self, model=None, lr: float = 0.01, *, weight_decay: float = 0.0, clip_norm: float | None = None,
                 schedule=None, schedule_unit: str = "step", kernels=None):
        self.arena = None if model is None else getattr(model, "arena", model)
        if self.arena is not None and not hasattr(self.arena, "grad"):
            raise ValueError(f"{type(self).__name__}: expected a Sequential or a ParamArena, got {type(model).__name__}")
        self.base_lr = number("lr", lr)
        self.weight_decay = number("weight_decay", weight_decay, low_open=False)
        self.clip_norm = None if clip_norm is None else number("clip_norm", clip_norm)
        self.schedule = get_schedule(schedule)
        if schedule_unit not in ("step", "epoch"):
            raise ValueError(f"schedule_unit must be 'step' or 'epoch', got {schedule_unit!r}")
        self.schedule_unit = schedule_unit
        self.kernels = kernels  # None: the backend's; accelnet.kernels.reference gives the textbook oracle
        self.t = 0  # steps taken
        self.epoch = 0  # epochs completed (advanced by epoch_end)
        self.last_grad_norm: float | None = None  # the global norm before clipping, when clipping
        self._flat_state: dict | None = None
        self._key_state: dict = {}
        self._key_shapes: dict = {}

    # -- the update rule (subclasses) ---------------------------------------------------
    def scalars(self, lr: float) -> tuple:
        """The host-side scalars ``rule`` takes after its state (Python floats; the kernels cast
        them to the parameters' dtype), for the update about to be step ``self.t``."""
        raise NotImplementedError

    def _apply(self, kernels, p, g, state: dict, lr: float, gscale: float) -> None:
        kernels.update(self.rule, p, g, tuple(state[name] for name in self.state_names), self.scalars(lr), gscale)

    def hyperparameters(self) -> dict:
        return {}

    # -- schedule --------------------------------------------------------------------------
    @property
    def lr(self) -> float:
        """The learning rate the next step uses; setting it (the book's ``opt.lr = ...``) sets the
        base rate that a schedule, if any, scales."""
        k = self.t if self.schedule_unit == "step" else self.epoch
        return self.base_lr * self.schedule(k)

    @lr.setter
    def lr(self, value) -> None:
        self.base_lr = number("lr", value)

    @property
    def iter(self) -> int:
        """The book's name (Adam's ``iter``) for the number of updates taken, ``t``."""
        return self.t

    def _state_views(self, name: str):
        """{key: the ``name`` state shaped like its parameter}: views of the book interface's
        state after ``update``, or of the flat state by parameter name after ``step``."""
        if self._flat_state is not None:
            return self.arena.named(self._flat_state[name])
        if not self._key_state:
            return None
        return {key: st[name].reshape(self._key_shapes.get(key, st[name].shape))
                for key, st in self._key_state.items()}

    def epoch_end(self) -> None:
        """Advance the epoch counter (for schedules per epoch)."""
        self.epoch += 1

    def _clip_scale(self, sum_sq: float) -> float:
        if self.clip_norm is None:
            return 1.0
        norm = math.sqrt(sum_sq)
        self.last_grad_norm = norm
        # torch.nn.utils.clip_grad_norm_'s rule; a non-finite norm passes through so the loss guard sees it.
        return min(1.0, self.clip_norm / (norm + 1e-6)) if math.isfinite(norm) else 1.0

    # -- interface 1: the model's flat arena --------------------------------------------------
    def step(self) -> None:
        """One fused update of every parameter from the gradients backward() wrote."""
        if self.arena is None:
            raise RuntimeError(f"{type(self).__name__} was made without a model: call update(params, grads), "
                               f"or construct it as {type(self).__name__}(model, lr=...)")
        p, g = self.arena.data, self.arena.grad
        if self._flat_state is None:
            xp = self.arena.backend.xp
            self._flat_state = {name: xp.zeros_like(p) for name in self.state_names}
        kernels = self.kernels or self.arena.backend.kernels
        lr = self.lr
        gscale = self._clip_scale(kernels.sum_squares(g)) if self.clip_norm is not None else 1.0
        self.t += 1
        self._apply(kernels, p, g, self._flat_state, lr, gscale)

    # -- interface 2: the book's update(params, grads) ------------------------------------------
    def update(self, params: dict, grads: dict) -> None:
        """The book's interface: update each ``params[key]`` from ``grads[key]`` (arrays in place,
        Python floats by rebinding the dict entry)."""
        missing = [k for k in params if k not in grads]
        if missing:
            raise ValueError(f"{type(self).__name__}.update: no gradient for {missing}")
        items = []
        for key, value in params.items():
            p, writeback = self._as_flat(key, value)
            g = self._grad_for(key, p, grads[key])
            items.append((key, value, p, g, writeback))
        lr = self.lr
        gscale = 1.0
        if self.clip_norm is not None:
            gscale = self._clip_scale(sum(self._kernels_for(g).sum_squares(g) for _, _, _, g, _ in items))
        self.t += 1
        for key, value, p, g, writeback in items:
            self._key_shapes[key] = np.shape(value)
            b = backend_of(p)
            state = self._key_state.get(key)
            if state is None:
                state = self._key_state[key] = {name: b.xp.zeros_like(p) for name in self.state_names}
            elif not all(b.is_array(a) for a in state.values()):  # loaded from a checkpoint on the host
                state = self._key_state[key] = {name: b.to_device(a, p.dtype).copy() for name, a in state.items()}
            self._apply(self._kernels_for(p), p, g, state, lr, gscale)
            if writeback == "number":
                params[key] = type(value)(p[0])
            elif writeback == "copy":
                value[...] = p.reshape(value.shape)

    def _kernels_for(self, a):
        return self.kernels or backend_of(a).kernels

    def _as_flat(self, key, value):
        """(flat parameter to update, how the result goes back: None (a view of ``value``),
        "number" (rebind the dict entry) or "copy" (copy into a non-contiguous ``value``))."""
        if is_number(value):
            return np.array([value], dtype=np.float64), "number"
        where = f"{type(self).__name__}.update: params[{key!r}]"
        if not hasattr(value, "dtype") or not hasattr(value, "reshape"):
            raise ValueError(f"{where} must be a float array or a number, got {type(value).__name__}")
        if value.dtype not in (np.float32, np.float64):
            raise ValueError(f"{where} must be float32 or float64, got {value.dtype}")
        if not getattr(value.flags, "writeable", True):  # CuPy arrays have no read-only flag
            raise ValueError(f"{where} is read-only: the update writes into it")
        if not value.flags.c_contiguous:  # a transposed or strided view: update a copy, write it back
            return backend_of(value).xp.ascontiguousarray(value).reshape(-1), "copy"
        return value.reshape(-1), None

    def _grad_for(self, key, p, g):
        where = f"{type(self).__name__}.update: grads[{key!r}]"
        if is_number(g):  # a Python or NumPy scalar is a number, as for the parameters
            g = np.asarray(g, dtype=p.dtype)
        elif not hasattr(g, "dtype"):
            raise ValueError(f"{where} must be an array or a number, got {type(g).__name__}")
        if backend_of(g) is not backend_of(p):
            raise ValueError(f"{where} is on the {backend_of(g).name} but params[{key!r}] is on the "
                             f"{backend_of(p).name}: move one of them")
        g = g.reshape(-1)
        if g.shape != p.shape:
            raise ValueError(f"{where} has {g.size} elements, params[{key!r}] has {p.size}")
        if g.dtype != p.dtype:
            raise ValueError(f"{where} is {g.dtype} but params[{key!r}] is {p.dtype}: pass gradients of the "
                             f"parameters' dtype, e.g. grads[{key!r}].astype({p.dtype.name!r}) or the "
                             f"parameters as {g.dtype}")
        return g if g.flags.c_contiguous else g.copy()

    # -- serialization ------------------------------------------------------------------
    def state_dict(self) -> dict:
        """Counters, hyperparameters and state buffers as host copies."""
        def host(d):
            return {name: backend_of(a).to_numpy(a).copy() for name, a in d.items()}

        return {
            "optimizer": type(self).__name__,
            "t": self.t,
            "epoch": self.epoch,
            "lr": self.base_lr,
            "weight_decay": self.weight_decay,
            "clip_norm": self.clip_norm,
            "hyperparameters": self.hyperparameters(),
            "flat_state": None if self._flat_state is None else host(self._flat_state),
            "key_state": {key: host(st) for key, st in self._key_state.items()},
            "key_shapes": {key: list(shape) for key, shape in self._key_shapes.items()},
        }

    _STATE_KEYS = ("optimizer", "t", "epoch", "lr", "weight_decay", "clip_norm", "hyperparameters", "flat_state",
                   "key_state")

    def check_state_dict(self, state: dict) -> None:
        """Raise ValueError, changing nothing, unless :meth:`load_state_dict` can restore ``state``."""
        name = type(self).__name__
        if not isinstance(state, dict) or state.get("optimizer") != name:
            found = state.get("optimizer") if isinstance(state, dict) else type(state).__name__
            raise ValueError(f"load_state_dict: the state is for {found!r}, not {name!r}")
        missing = [k for k in self._STATE_KEYS if k not in state]
        if missing:
            raise ValueError(f"load_state_dict: the {name} state lacks {missing}")
        flat = state["flat_state"]
        if flat is not None:
            if self.arena is None:
                raise ValueError("load_state_dict: the state holds a model's flat buffers; construct with the model")
            if set(flat) != set(self.state_names):
                raise ValueError(f"load_state_dict: the state holds buffers {sorted(flat)}, {name} keeps "
                                 f"{list(self.state_names)}")
            for k, a in flat.items():
                if np.shape(a) != tuple(self.arena.data.shape):
                    raise ValueError(f"load_state_dict: state {k!r} has shape {np.shape(a)}, "
                                     f"the model's arena has {tuple(self.arena.data.shape)}")

    def load_state_dict(self, state: dict) -> None:
        """Restore what :meth:`state_dict` saved; the optimizer type and buffer sizes must match
        (checked completely before anything changes)."""
        self.check_state_dict(state)
        flat = state["flat_state"]
        if flat is not None:
            b = self.arena.backend
            self._flat_state = {k: b.to_device(a, self.arena.dtype).copy() for k, a in flat.items()}
        else:
            self._flat_state = None
        host = get_backend("cpu").to_numpy  # also a CuPy array's host copy
        self._key_state = {key: {k: np.array(host(a)) for k, a in st.items()} for key, st in state["key_state"].items()}
        self._key_shapes = {key: tuple(shape) for key, shape in state.get("key_shapes", {}).items()}
        self.t, self.epoch = int(state["t"]), int(state["epoch"])
        self.base_lr = float(state["lr"])
        self.weight_decay = float(state["weight_decay"])
        self.clip_norm = state["clip_norm"]
        for k, v in state["hyperparameters"].items():
            setattr(self, k, v)

    def __repr__(self) -> str:
        hp = ", ".join(f"{k}={v:g}" for k, v in self.hyperparameters().items())
        extra = f", weight_decay={self.weight_decay:g}" if self.weight_decay else ""
        extra += f", clip_norm={self.clip_norm:g}" if self.clip_norm else ""
        return f"{type(self).__name__}(lr={self.base_lr:g}{', ' + hp if hp else ''}{extra})"


class SGD(Optimizer):
    """p -= lr * g."""

    rule = "sgd"

    def __init__(self, model=None, lr: float = 0.01, **kw):
        super().__init__(model, lr, **kw)

    def scalars(self, lr):
        return (lr, self.weight_decay)


class Momentum(Optimizer):
    """v = momentum * v - lr * g; p += v."""

    rule = "momentum"

    def __init__(self, model=None, lr: float = 0.01, momentum: float = 0.9, **kw):
        super().__init__(model, lr, **kw)
        self.momentum = number("momentum", momentum, low_open=False, high=1.0)

    def hyperparameters(self):
        return {"momentum": self.momentum}

    def scalars(self, lr):
        return (lr, self.momentum, self.weight_decay)


class Nesterov(Momentum):
    """Nesterov's accelerated gradient in the book's form (common/optimizer.py)."""

    rule = "nesterov"

    def scalars(self, lr):
        mu = self.momentum
        return (lr, mu, mu * mu, (1 + mu) * lr, self.weight_decay)


class AdaGrad(Optimizer):
    """h += g*g; p -= lr * g / (sqrt(h) + eps)."""

    rule = "adagrad"

    def __init__(self, model=None, lr: float = 0.01, eps: float = 1e-7, **kw):
        super().__init__(model, lr, **kw)
        self.eps = number("eps", eps)

    def hyperparameters(self):
        return {"eps": self.eps}

    def scalars(self, lr):
        return (lr, self.eps, self.weight_decay)


class RMSprop(Optimizer):
    """h = decay*h + (1 - decay)*g*g; p -= lr * g / (sqrt(h) + eps)."""

    rule = "rmsprop"

    def __init__(self, model=None, lr: float = 0.01, decay_rate: float = 0.99, eps: float = 1e-7, **kw):
        super().__init__(model, lr, **kw)
        self.decay_rate = number("decay_rate", decay_rate, low_open=False, high=1.0)
        self.eps = number("eps", eps)

    def hyperparameters(self):
        return {"decay_rate": self.decay_rate, "eps": self.eps}

    def scalars(self, lr):
        return (lr, self.decay_rate, 1 - self.decay_rate, self.eps, self.weight_decay)


class Adam(Optimizer):
    """Adam with the book's bias correction folded into lr_t = lr * sqrt(1-b2^t) / (1-b1^t)."""

    rule = "adam"
    decoupled = False

    def __init__(self, model=None, lr: float = 0.001, beta1: float = 0.9, beta2: float = 0.999, eps: float = 1e-7,
                 **kw):
        super().__init__(model, lr, **kw)
        self.beta1 = number("beta1", beta1, low_open=False, high=1.0)
        self.beta2 = number("beta2", beta2, low_open=False, high=1.0)
        self.eps = number("eps", eps)

    def hyperparameters(self):
        return {"beta1": self.beta1, "beta2": self.beta2, "eps": self.eps}

    def scalars(self, lr):
        t = self.t
        lr_t = lr * math.sqrt(1.0 - self.beta2**t) / (1.0 - self.beta1**t)  # a Python float: no float64 promotion
        wd, wd_decoupled = (0.0, lr * self.weight_decay) if self.decoupled else (self.weight_decay, 0.0)
        return (lr_t, 1 - self.beta1, 1 - self.beta2, self.eps, wd, wd_decoupled)


class AdamW(Adam):
    """Adam with decoupled weight decay (Loshchilov & Hutter): p -= lr * weight_decay * p each step."""

    decoupled = True

    def __init__(self, model=None, lr: float = 0.001, weight_decay: float = 0.01, **kw):
        super().__init__(model, lr, weight_decay=weight_decay, **kw)


OPTIMIZERS = {"sgd": SGD, "momentum": Momentum, "nesterov": Nesterov, "adagrad": AdaGrad, "rmsprop": RMSprop,
              "adam": Adam, "adamw": AdamW}


def get_optimizer(name: str, model=None, **kw) -> Optimizer:
    """Construct an optimizer by its lower-case name."""
    try:
        cls = OPTIMIZERS[name.lower()]
    except (KeyError, AttributeError):
        raise ValueError(f"unknown optimizer {name!r}: expected one of {sorted(OPTIMIZERS)}") from None
    return cls(model, **kw)

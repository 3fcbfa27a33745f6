"""The book's networks as presets. Each takes its sizes (for reduced tests) and the
``Sequential`` keywords (``backend``, ``dtype``, ``seed``, ``init``, ``loss``)."""

from __future__ import annotations

from .layers import BatchNorm, Conv2d, Dropout, Linear, MaxPool2d, ReLU, Sigmoid, Tanh
from .model import Sequential

__all__ = ["two_layer_net", "multi_layer_net", "simple_convnet", "deep_convnet", "PRESETS", "get_preset"]

_ACTIVATIONS = {"relu": ReLU, "sigmoid": Sigmoid, "tanh": Tanh}
# The book's MultiLayerNet picks the init matching the activation (weight_init_std='relu' / 'sigmoid').
_INIT_FOR = {"relu": "he", "sigmoid": "xavier", "tanh": "xavier"}


def _activation(name: str):
    try:
        return _ACTIVATIONS[name]
    except KeyError:
        raise ValueError(f"unknown activation {name!r}: expected one of {sorted(_ACTIVATIONS)}") from None


def two_layer_net(input_size: int = 784, hidden_size: int = 50, output_size: int = 10,
                  activation: str = "sigmoid", init=0.01, **kw) -> Sequential:
    """The book's TwoLayerNet: Linear - sigmoid - Linear, weights N(0, 0.01^2)."""
    act = _activation(activation)
    return Sequential([Linear(hidden_size), act(), Linear(output_size)], (input_size,), init=init, **kw)


def multi_layer_net(hidden_sizes=(100, 100, 100, 100, 100), activation: str = "relu", init=None,
                    batchnorm: bool = False, dropout: float = 0.0, input_size: int = 784,
                    output_size: int = 10, fused: bool = True, **kw) -> Sequential:
    """The book's MultiLayerNet(Extend): [Linear - (BatchNorm) - act - (Dropout)] x k - Linear.

    ``init=None`` picks He for ReLU and Xavier for sigmoid/tanh, as the book does. A ReLU right
    after its Linear is fused into it (``Linear(activation="relu")``); ``fused=False`` builds the
    book's separate layers.
    """
    act = _activation(activation)
    layers = []
    for size in hidden_sizes:
        if batchnorm:
            layers += [Linear(size), BatchNorm(), act()]
        else:
            layers += _linear_then(size, activation, fused)
        if dropout:
            layers.append(Dropout(dropout))
    layers.append(Linear(output_size))
    return Sequential(layers, (input_size,), init=_INIT_FOR[activation] if init is None else init, **kw)


def _linear_then(size, activation, fused):
    """Linear then its activation: one layer if ``fused`` and the activation is ReLU, else two."""
    if fused and activation == "relu":
        return [Linear(size, activation="relu")]
    return [Linear(size), _activation(activation)()]


def _conv_relu(filters, kernel_size, pad, pool, fused):
    """Conv2d, ReLU and (with ``pool``) a pool x pool max-pool: one layer if ``fused``, else the book's three."""
    if fused:
        return [Conv2d(filters, kernel_size, stride=1, pad=pad, activation="relu", pool=pool)]
    return [Conv2d(filters, kernel_size, stride=1, pad=pad), ReLU(), *([MaxPool2d(pool)] if pool else [])]


def simple_convnet(input_shape=(1, 28, 28), filters: int = 30, kernel_size: int = 5, hidden_size: int = 100,
                   output_size: int = 10, init="he", fused: bool = True, **kw) -> Sequential:
    """The book's SimpleConvNet (chapter 7): conv 30@5x5 - ReLU - maxpool 2 - Linear 100 - ReLU - Linear 10.
    The conv's ReLU and max-pool are fused into it (``Conv2d(activation="relu", pool=2)``), the
    hidden ReLU into its Linear; ``fused=False`` builds them as separate layers (the same
    function, for comparison).

    He init (the book's advice for ReLU, chapter 6.2) rather than its script's std 0.01: it
    reaches 97.6% after one epoch with Adam where 0.01 reaches 96.4%; ``init=0.01`` restores it.
    """
    layers = [*_conv_relu(filters, kernel_size, 0, 2, fused), *_linear_then(hidden_size, "relu", fused),
              Linear(output_size)]
    return Sequential(layers, input_shape, init=init, **kw)


def deep_convnet(input_shape=(1, 28, 28), channels=(16, 16, 32, 32, 64, 64), hidden_size: int = 50,
                 output_size: int = 10, dropout: float = 0.5, init="he", fused: bool = True, **kw) -> Sequential:
    """The book's DeepConvNet (chapter 8): six 3x3 convs with ReLU (pad 1, pad 2 on the fourth),
    a max-pool after each pair, Linear 50 - ReLU - Dropout - Linear 10 - Dropout. Each conv's ReLU,
    and the pool after each pair, are fused into the conv (``Conv2d(activation="relu", pool=2)``),
    the hidden ReLU into its Linear; ``fused=False`` builds them as separate layers."""
    if len(channels) != 6:
        raise ValueError(f"deep_convnet needs 6 conv channel counts, got {channels!r}")
    layers = [layer for i, ch in enumerate(channels)
              for layer in _conv_relu(ch, 3, 2 if i == 3 else 1, 2 if i % 2 else None, fused)]
    layers += [*_linear_then(hidden_size, "relu", fused), Dropout(dropout), Linear(output_size), Dropout(dropout)]
    return Sequential(layers, input_shape, init=init, **kw)


PRESETS = {
    "two_layer_net": two_layer_net,
    "multi_layer_net": multi_layer_net,
    "simple_convnet": simple_convnet,
    "deep_convnet": deep_convnet,
}


def get_preset(name: str):
    """The preset constructor called ``name``."""
    try:
        return PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown model {name!r}: expected one of {sorted(PRESETS)}") from None

"""Export a trained model to ONNX (the ``export`` extra: the onnx package builds the graph).

Each layer becomes its standard operators in inference form: Linear is Gemm (after a Flatten
when its input is an image), Gemm and Relu with activation="relu"; a fused Conv2d(activation=
"relu", pool=k) is Conv, Relu and MaxPool, BatchNorm is BatchNormalization with the running
statistics, Dropout is left out (evaluation is the identity). The graph takes ``input`` (N, *input_shape) float32 and gives
``scores`` (N, classes), plus ``probabilities`` (their softmax) for a cross-entropy model.
"""

from __future__ import annotations

import json

import numpy as np

from .layers import AvgPool2d, BatchNorm, Conv2d, Dropout, Flatten, Linear, MaxPool2d, ReLU, Sigmoid, Tanh
from .losses import SoftmaxCrossEntropy

__all__ = ["OPSET", "export_onnx", "MISSING"]

OPSET = 17  # every operator used here is in ONNX's default domain at opset 17 (ONNX 1.12, 2022)
MISSING = "export needs the onnx package: pip install 'accelnet[export]'"


def _onnx():
    try:
        import onnx
    except ImportError:
        raise ImportError(MISSING) from None
    return onnx


class _Graph:
    """Nodes and initializers appended layer by layer; ``x`` names the current tensor."""

    def __init__(self, onnx, model):
        self.onnx, self.model = onnx, model
        self.nodes, self.inits, self.x, self.rank = [], [], "input", 1 + len(model.input_shape)

    def weight(self, name: str, array) -> str:
        a = np.ascontiguousarray(self.model.backend.to_numpy(array), dtype=np.float32)
        self.inits.append(self.onnx.numpy_helper.from_array(a, name))
        return name

    def op(self, op: str, name: str, *inputs: str, **attrs) -> None:
        out = f"{name}_out"
        self.nodes.append(self.onnx.helper.make_node(op, [self.x, *inputs], [out], name=name, **attrs))
        self.x = out


def _layer(g: _Graph, layer) -> None:
    n, p, buf = layer.name, layer.params, layer.buffers
    if isinstance(layer, Linear):
        if g.rank > 2:
            g.op("Flatten", f"{n}.flatten", axis=1)
            g.rank = 2
        g.op("Gemm", n, g.weight(f"{n}.W", p["W"]), g.weight(f"{n}.b", p["b"]))
        if layer.activation == "relu":
            g.op("Relu", f"{n}.relu")
    elif isinstance(layer, Conv2d):
        (fh, fw), pad = layer.kernel_size, layer.pad
        g.op("Conv", n, g.weight(f"{n}.W", p["W"]), g.weight(f"{n}.b", p["b"]), kernel_shape=[fh, fw],
             strides=[layer.stride] * 2, pads=[pad] * 4)
        if layer.activation == "relu":
            g.op("Relu", f"{n}.relu")
        if layer.pool:
            g.op("MaxPool", f"{n}.pool", kernel_shape=[layer.pool] * 2, strides=[layer.pool] * 2)
    elif isinstance(layer, (MaxPool2d, AvgPool2d)):
        g.op("MaxPool" if isinstance(layer, MaxPool2d) else "AveragePool", n, kernel_shape=list(layer.kernel_size),
             strides=[layer.stride] * 2)
    elif isinstance(layer, BatchNorm):
        g.op("BatchNormalization", n, g.weight(f"{n}.gamma", p["gamma"]), g.weight(f"{n}.beta", p["beta"]),
             g.weight(f"{n}.running_mean", buf["running_mean"]), g.weight(f"{n}.running_var", buf["running_var"]),
             epsilon=layer.eps)
    elif isinstance(layer, (ReLU, Sigmoid, Tanh)):
        g.op({ReLU: "Relu", Sigmoid: "Sigmoid", Tanh: "Tanh"}[type(layer)], n)
    elif isinstance(layer, Flatten):
        g.op("Flatten", n, axis=1)
        g.rank = 2
    elif not isinstance(layer, Dropout):
        raise ValueError(f"export: layer {n!r} is a {type(layer).__name__}, which has no ONNX form here")


def export_onnx(model, path, opset: int = OPSET) -> list[str]:
    """Write ``model`` (any Sequential of accelnet's layers, in eval form) as an ONNX graph to
    ``path``, checked by ``onnx.checker`` before it is written; returns the graph's output names."""
    onnx = _onnx()
    from onnx import TensorProto, helper

    newest = onnx.defs.onnx_opset_version()
    if not (isinstance(opset, int) and 13 <= opset <= newest):
        raise ValueError(f"export: opset {opset!r} is outside 13-{newest} (13: Softmax over one axis; {newest}: the "
                         f"newest this onnx {onnx.__version__} knows)")

    from .saved_model import architecture

    g = _Graph(onnx, model)
    for layer in model.layers:
        _layer(g, layer)
    g.nodes.append(helper.make_node("Identity", [g.x], ["scores"], name="scores"))
    outputs = [helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["N", *model.output_shape])]
    if isinstance(model.loss_fn, SoftmaxCrossEntropy) and len(model.output_shape) == 1:
        g.nodes.append(helper.make_node("Softmax", ["scores"], ["probabilities"], name="probabilities", axis=1))
        outputs.append(helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["N", *model.output_shape]))
    graph = helper.make_graph(g.nodes, "accelnet", [helper.make_tensor_value_info(
        "input", TensorProto.FLOAT, ["N", *model.input_shape])], outputs, g.inits)
    from . import __version__

    onnx_model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], producer_name="accelnet",
                                   producer_version=__version__,
                                   doc_string="input: float32 images scaled to [0, 1] as accelnet's data loaders give "
                                              "(MNIST: white digits on black); scores: one row per image")
    helper.set_model_props(onnx_model, {"accelnet.architecture": json.dumps(architecture(model))})
    onnx.checker.check_model(onnx_model, full_check=True)
    onnx.save(onnx_model, str(path))
    return [o.name for o in outputs]

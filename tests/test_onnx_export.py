"""Exported ONNX graphs run in onnxruntime (a test oracle, like PyTorch) and give accelnet's
predictions on real MNIST images; each layer becomes its standard operators."""

import numpy as np
import pytest

from accelnet import AvgPool2d, BatchNorm, Conv2d, Dropout, Flatten, Linear, MaxPool2d, ReLU, Sequential, Sigmoid, Tanh
from accelnet.data import load
from accelnet.optim import get_optimizer
from accelnet.presets import PRESETS

onnx = pytest.importorskip("onnx", reason="the export extra (onnx) is not installed")
ort = pytest.importorskip("onnxruntime", reason="onnxruntime (a test oracle, the peer extra) is not installed")

from accelnet.onnx_export import OPSET, export_onnx  # noqa: E402

MODELS = {
    "two_layer_net": lambda: PRESETS["two_layer_net"](),
    "multi_layer_net": lambda: PRESETS["multi_layer_net"](),
    "multi_layer_net batchnorm dropout": lambda: PRESETS["multi_layer_net"](batchnorm=True, dropout=0.2),
    "simple_convnet": lambda: PRESETS["simple_convnet"](),
    "simple_convnet unfused": lambda: PRESETS["simple_convnet"](fused=False),
    "deep_convnet": lambda: PRESETS["deep_convnet"](),
    "every layer": lambda: Sequential([Conv2d(6, 3, pad=1), BatchNorm(), Tanh(), AvgPool2d(2), Conv2d(8, 3, stride=2),
                                       Sigmoid(), MaxPool2d(2, stride=1), Flatten(), Linear(32), ReLU(), Dropout(0.3),
                                       Linear(10)], (1, 28, 28)),
}


@pytest.fixture(scope="module")
def mnist(data_dir):
    return load("mnist", data_dir, flatten=False, progress=False)


def _trained(name, mnist):
    """The model after 20 Adam steps on real MNIST (weights and BatchNorm statistics as training leaves them)."""
    model = MODELS[name]()
    opt = get_optimizer("adam", model)
    for i in range(20):
        x = mnist.x_train[i * 50:(i + 1) * 50]
        model.loss(model.to_device(x.reshape(len(x), *model.input_shape)), mnist.t_train[i * 50:(i + 1) * 50])
        model.backward()
        opt.step()
    return model.eval()


def _run(path, x):
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return dict(zip([o.name for o in session.get_outputs()], session.run(None, {"input": x})))


@pytest.mark.parametrize("name", MODELS)
def test_the_exported_graph_predicts_what_accelnet_predicts_on_real_mnist(name, mnist, tmp_path):
    model = _trained(name, mnist)
    export_onnx(model, tmp_path / "m.onnx")
    x = mnist.x_test[:500].reshape(500, *model.input_shape)
    out = _run(tmp_path / "m.onnx", x)
    scores = model.predict(x)
    np.testing.assert_allclose(out["scores"], scores, rtol=1e-5, atol=1e-5)
    assert (out["scores"].argmax(1) == scores.argmax(1)).all()
    np.testing.assert_allclose(out["probabilities"].sum(1), 1, rtol=1e-6)


def test_a_fused_conv_becomes_conv_relu_and_maxpool_and_dropout_disappears(tmp_path):
    export_onnx(PRESETS["deep_convnet"](), tmp_path / "m.onnx")
    graph = onnx.load(str(tmp_path / "m.onnx"))
    ops = [n.op_type for n in graph.graph.node]
    assert ops[:5] == ["Conv", "Relu", "Conv", "Relu", "MaxPool"]
    assert ops.count("Conv") == 6 and ops.count("MaxPool") == 3 and "Dropout" not in ops
    assert ops[-4:] == ["Relu", "Gemm", "Identity", "Softmax"]
    assert graph.opset_import[0].version == OPSET == 17


def test_batchnorm_exports_in_inference_form(tmp_path):
    model = PRESETS["multi_layer_net"](hidden_sizes=(8,), batchnorm=True)
    export_onnx(model, tmp_path / "m.onnx")
    (bn,) = [n for n in onnx.load(str(tmp_path / "m.onnx")).graph.node if n.op_type == "BatchNormalization"]
    assert len(bn.output) == 1 and bn.input[3].endswith("running_mean")


def test_a_float64_model_exports_float32_weights(tmp_path, mnist):
    model = PRESETS["simple_convnet"](dtype="float64")
    export_onnx(model, tmp_path / "m.onnx")
    x = mnist.x_test[:50]
    np.testing.assert_allclose(_run(tmp_path / "m.onnx", x)["scores"], model.predict(x), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("opset", [11, 99])
def test_an_opset_out_of_range_is_refused(opset, tmp_path):
    with pytest.raises(ValueError, match=f"opset {opset} is outside 13-"):
        export_onnx(PRESETS["two_layer_net"](), tmp_path / "m.onnx", opset=opset)
    assert not (tmp_path / "m.onnx").exists()

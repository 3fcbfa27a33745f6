"""A checkpoint rebuilds its trained model from the file alone (``accelnet.load_model``): every
preset and any Sequential of accelnet's layers, on every backend, with a clear error otherwise."""

import json

import numpy as np
import pytest

import accelnet
from accelnet import AvgPool2d, BatchNorm, Conv2d, Dropout, Flatten, Linear, MaxPool2d, ReLU, Sequential, Sigmoid, Tanh
from accelnet.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from accelnet.data import synthetic
from accelnet.optim import get_optimizer
from accelnet.presets import PRESETS
from accelnet.saved_model import architecture, from_architecture
from accelnet.train import Trainer

PRESET_ARGS = [("two_layer_net", {}), ("multi_layer_net", {"batchnorm": True, "dropout": 0.3}),
               ("simple_convnet", {}), ("simple_convnet", {"fused": False}), ("deep_convnet", {})]


def _custom(**kw):
    layers = [Conv2d(4, 3, pad=1), BatchNorm(momentum=0.8, eps=1e-5), Tanh(), AvgPool2d(2), Conv2d(6, (3, 2), stride=2),
              Sigmoid(), MaxPool2d(2, stride=1), Flatten(), Linear(7, name="hidden"), ReLU(), Dropout(0.1), Linear(3)]
    return Sequential(layers, (2, 12, 12), init=0.1, loss="mse", **kw)


def _scramble_statistics(model):
    for k, v in model.buffers().items():  # as if trained: running statistics away from 0 and 1
        v[...] = model.backend.to_device(np.linspace(0.5, 1.5, v.size) * (0.1 if "mean" in k else 1), model.dtype)


@pytest.mark.parametrize("name,kw", PRESET_ARGS, ids=lambda v: str(v) if isinstance(v, str) else "")
def test_a_saved_preset_loads_with_the_same_predictions(name, kw, tmp_path, backend_name):
    model = PRESETS[name](seed=3, backend=backend_name, **kw)  # saved and loaded on one backend: exactly equal
    _scramble_statistics(model)
    accelnet.save_model(model, tmp_path / "m.npz")
    loaded = accelnet.load_model(tmp_path / "m.npz", backend=backend_name)
    x = np.random.default_rng(0).random((5, *model.input_shape), dtype=np.float32)
    assert [repr(layer) for layer in loaded.layers] == [repr(layer) for layer in model.layers]
    np.testing.assert_array_equal(loaded.backend.to_numpy(loaded.predict(x)), model.backend.to_numpy(model.predict(x)))
    assert not loaded.training


def test_any_sequential_of_accelnets_layers_round_trips(tmp_path):
    model = _custom(dtype="float64", seed=5)
    _scramble_statistics(model)
    accelnet.save_model(model, tmp_path / "m.npz")
    loaded = accelnet.load_model(tmp_path / "m.npz")
    assert loaded.dtype == np.float64 and type(loaded.loss_fn).__name__ == "MeanSquaredError"
    assert [layer.name for layer in loaded.layers] == [layer.name for layer in model.layers]
    x = np.random.default_rng(1).random((4, 2, 12, 12))
    np.testing.assert_array_equal(loaded.predict(x), model.predict(x))


def test_the_architecture_is_plain_json():
    arch = architecture(_custom())
    assert json.loads(json.dumps(arch)) == arch
    assert from_architecture(arch).num_params == _custom().num_params


def test_a_model_loads_in_another_dtype(tmp_path):
    model = PRESETS["two_layer_net"](seed=1)
    accelnet.save_model(model, tmp_path / "m.npz")
    loaded = accelnet.load_model(tmp_path / "m.npz", dtype="float64")
    assert loaded.dtype == np.float64
    x = np.random.default_rng(2).random((3, 784), dtype=np.float32)
    np.testing.assert_allclose(loaded.predict(x), model.predict(x), rtol=1e-5)


def test_a_trainers_checkpoint_records_the_architecture(tmp_path):
    data = synthetic(200, 50, input_shape=(784,), seed=0)
    model = PRESETS["multi_layer_net"](hidden_sizes=(20, 20), batchnorm=True)
    trainer = Trainer(model, get_optimizer("adam", model), data, batch_size=50, epochs=1, progress=False,
                      checkpoint=tmp_path / "run.npz")
    trainer.fit()
    loaded = accelnet.load_model(tmp_path / "run.npz")
    np.testing.assert_array_equal(loaded.predict(data.x_test), model.predict(data.x_test))


def test_a_checkpoint_without_an_architecture_says_how_to_load_it(tmp_path):
    save_checkpoint(tmp_path / "old.npz", {"model": PRESETS["two_layer_net"]().state_dict()}, {"config": {}})
    with pytest.raises(CheckpointError, match=r"records no architecture .*load_state_dict"):
        accelnet.load_model(tmp_path / "old.npz")


def test_a_model_with_a_layer_of_its_own_saves_but_cannot_load(tmp_path):
    class Square(accelnet.Layer):
        def _forward(self, x):
            self._x = x
            return x * x

        def _backward(self, dout):
            return 2 * self._x * dout

    model = Sequential([Linear(4), Square(), Linear(2)], (3,))
    with pytest.raises(ValueError, match="is a Square, not one of accelnet's layers"):
        accelnet.save_model(model, tmp_path / "m.npz")
    trainer = Trainer(model, get_optimizer("sgd", model), synthetic(20, 10, input_shape=(3,), classes=2), batch_size=10,
                      epochs=1, progress=False, checkpoint=tmp_path / "run.npz")
    trainer.fit()  # training still checkpoints
    with pytest.raises(CheckpointError, match="is a Square, not one of accelnet's layers"):
        accelnet.load_model(tmp_path / "run.npz")


def test_weights_that_do_not_fit_the_architecture_are_one_error(tmp_path):
    model = PRESETS["two_layer_net"]()
    accelnet.save_model(model, tmp_path / "m.npz")
    ckpt = load_checkpoint(tmp_path / "m.npz")
    ckpt["state"]["model"]["linear1.W"] = np.zeros((3, 3), np.float32)
    save_checkpoint(tmp_path / "bad.npz", ckpt["state"], ckpt["meta"])
    with pytest.raises(CheckpointError, match=r"cannot rebuild its model: .*linear1.W has shape \(3, 3\)"):
        accelnet.load_model(tmp_path / "bad.npz")


def test_an_unknown_layer_type_in_the_file_is_one_error(tmp_path):
    model = PRESETS["two_layer_net"]()
    arch = architecture(model)
    arch["layers"][1]["type"] = "Swish"
    save_checkpoint(tmp_path / "m.npz", {"model": model.state_dict()}, {"architecture": arch})
    with pytest.raises(CheckpointError, match="layer 1 has type 'Swish', not one of accelnet's"):
        accelnet.load_model(tmp_path / "m.npz")


@pytest.mark.parametrize("kw,message", [({"dtype": "float16"}, "float16"), ({"backend": "tpu"}, "tpu")])
def test_a_bad_backend_or_dtype_is_the_callers_error_not_the_files(kw, message, tmp_path):
    accelnet.save_model(PRESETS["two_layer_net"](), tmp_path / "m.npz")
    with pytest.raises(ValueError, match=message) as err:
        accelnet.load_model(tmp_path / "m.npz", **kw)
    assert not isinstance(err.value, CheckpointError)

"""What can be checked before the first step is: the data (counts, emptiness, shapes, finiteness),
the memory the run needs against what the device has, and the advice after a divergence names
the likely cause. A MemoryError during training is one line and exit 2, the checkpoint intact."""

import re

import numpy as np
import pytest

from accelnet.backend import Backend, get_backend
from accelnet.cli import main
from cli_output import error_lines
from accelnet.data import Dataset, synthetic
from accelnet.model import Sequential
from accelnet.optim import SGD, Adam
from accelnet.presets import multi_layer_net, simple_convnet
from accelnet.train import Diverged, InsufficientMemory, Trainer

T = ["train", "--model", "two_layer_net", "--dataset", "synthetic", "--no-progress"]


def test_the_step_memory_estimate_is_within_25_percent_of_a_measured_step_at_batch_1000():
    model = simple_convnet(seed=0)
    estimate = model.step_bytes(1000)
    r = np.random.default_rng(1)
    x, t = r.random((1000, 1, 28, 28)), r.integers(0, 10, 1000)

    def step():
        model.loss(model.to_device(x), t)
        model.backward()

    step()  # the batch's first-call allocations, as in training
    measured = get_backend("cpu").peak_bytes(step)
    assert 0.75 * measured <= estimate <= 1.25 * measured, (estimate, measured)


def test_the_memory_estimate_leaves_the_model_as_it_was():
    model = multi_layer_net(hidden_sizes=(16,), input_size=20, output_size=3, batchnorm=True, dropout=0.3, seed=0)
    before = model.state_dict()
    rng = model.rng.bit_generator.state
    model.eval()
    model.step_bytes(300)
    assert not model.training and model.rng.bit_generator.state == rng
    for k, v in model.state_dict().items():
        np.testing.assert_array_equal(v, before[k])


def _starved(monkeypatch, available):
    monkeypatch.setattr(Backend, "available_bytes", lambda self: available)


def _refused(monkeypatch):
    """A simple_convnet run at batch 2000 with half the memory it needs: (data, model, the refusal)."""
    data = synthetic(2000, 100, (1, 28, 28), seed=0)
    model = simple_convnet(seed=0)
    trainer = Trainer(model, Adam(model), data, batch_size=2000, epochs=1, progress=False)
    _starved(monkeypatch, trainer.memory_estimate() // 2)
    with pytest.raises(InsufficientMemory) as exc:
        trainer.fit()
    assert trainer.step == 0
    return data, model, str(exc.value)


def test_a_run_that_does_not_fit_in_memory_is_refused_before_the_first_step(monkeypatch):
    message = _refused(monkeypatch)[2]
    assert re.search(r"batch size 2000 needs about .* GiB .* batch size \d+ or less fits", message), message


def test_the_batch_size_suggested_fits(monkeypatch):
    data, model, message = _refused(monkeypatch)
    fits = int(re.search(r"batch size (\d+) or less fits", message).group(1))
    smaller = Trainer(model, Adam(model), data, batch_size=fits, epochs=1, progress=False, max_steps=1)
    smaller.fit()
    assert smaller.step == 1


def test_cli_too_large_a_batch_is_one_line_naming_the_flag(monkeypatch, capsys):
    _starved(monkeypatch, 10 * 2**20)
    assert main(["train", "--model", "simple_convnet", "--dataset", "synthetic", "--no-progress",
                 "--batch-size", "6000", "--epochs", "1"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(error_lines(err)) == 1 and "batch size 6000 needs about" in err and "--batch-size" in err


def test_a_memory_error_in_training_is_one_line_and_leaves_the_checkpoint(tmp_path, monkeypatch, capsys):
    ckpt = tmp_path / "c.npz"
    assert main([*T, "--epochs", "1", "--checkpoint", str(ckpt)]) == 0
    before = ckpt.read_bytes()
    calls = {"n": 0}
    backward = Sequential.backward

    def failing(self, *a, **kw):
        calls["n"] += 1
        if calls["n"] > 10:
            raise MemoryError("Unable to allocate 11.2 GiB")
        return backward(self, *a, **kw)

    monkeypatch.setattr(Sequential, "backward", failing)
    capsys.readouterr()
    assert main([*T, "--epochs", "3", "--checkpoint", str(ckpt), "--resume"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(error_lines(err)) == 1 and "out of memory at step" in err and "intact (epoch 1, step 60)" in err
    assert ckpt.read_bytes() == before


@pytest.mark.parametrize("change, message", [
    (lambda d: {**d, "t_test": d["t_test"][:-1]}, "x_test has 16 samples but t_test has 15"),
    (lambda d: {**d, "x_test": d["x_test"][:0], "t_test": d["t_test"][:0]}, "the test set is empty"),
    (lambda d: {**d, "x_train": d["x_train"][:0], "t_train": d["t_train"][:0]}, "the train set is empty"),
    (lambda d: {**d, "x_test": d["x_test"][:, :50]}, r"train samples have shape \(100,\) but test samples \(50,\)"),
    (lambda d: {**d, "x_train": (d["x_train"] * 255).astype(np.uint8)}, "x_train must hold floats"),
    (lambda d: {**d, "t_train": -d["t_train"] - 1}, "negative class index"),
])
def test_a_dataset_that_training_would_trip_over_is_refused_at_construction(change, message):
    d = synthetic(64, 16, (100,), classes=4, seed=0)
    arrays = change({"x_train": d.x_train, "t_train": d.t_train, "x_test": d.x_test, "t_test": d.t_test})
    with pytest.raises(ValueError, match=message):
        Dataset("case", **arrays)


def test_divergence_from_huge_inputs_advises_scaling_the_data_not_the_lr():
    data = synthetic(64, 16, (100,), classes=4, seed=0)
    data.x_train[5] *= 1e25
    model = multi_layer_net(hidden_sizes=(16,), input_size=100, output_size=4, batchnorm=True, seed=0)
    with pytest.raises(Diverged) as exc:
        Trainer(model, SGD(model, lr=0.01), data, batch_size=64, epochs=1, progress=False).fit()
    assert "scale it to about [0, 1]" in str(exc.value) and "learning rate" not in str(exc.value)


def test_divergence_from_a_large_lr_advises_a_smaller_lr():
    data = synthetic(600, 100, (784,), seed=0)
    model = multi_layer_net(seed=0)
    with pytest.raises(Diverged, match=r"smaller learning rate \(--lr; now 100\)"):
        Trainer(model, SGD(model, lr=100.0), data, batch_size=32, epochs=2, progress=False).fit()


def test_a_run_start_removes_the_temp_files_of_dead_writers_even_if_it_never_saves(tmp_path, monkeypatch):
    import socket
    import subprocess
    import sys

    dead = int(subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                              text=True).stdout)
    debris = tmp_path / f".c.npz.{socket.gethostname()}-{dead}.abc.tmp"
    debris.write_bytes(b"half a checkpoint")
    data = synthetic(2000, 100, (1, 28, 28), seed=0)
    model = simple_convnet(seed=0)
    trainer = Trainer(model, Adam(model), data, batch_size=2000, epochs=1, progress=False,
                      checkpoint=tmp_path / "c.npz")
    _starved(monkeypatch, 1)
    with pytest.raises(InsufficientMemory):
        trainer.fit()
    assert not debris.exists() and not (tmp_path / "c.npz").exists()

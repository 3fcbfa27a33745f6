"""``accelnet train``'s schedule, augmentation and evaluation options: what each does, that a
checkpoint keeps them, and one line for a flag that does not apply."""

import json

import numpy as np
import pytest

from accelnet.augment import RandomShift
from accelnet.backend import get_backend
from accelnet.checkpoint import load_checkpoint
from accelnet.cli import main
from cli_output import error_lines
from accelnet.train import Trainer

QUICK = ["--dataset", "synthetic", "--no-progress", "--model", "simple_convnet"]


def _history(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def _train(tmp_path, name, *flags):
    assert main(["train", *QUICK, "--history", str(tmp_path / f"{name}.jsonl"),
                 "--checkpoint", str(tmp_path / f"{name}.npz"), *flags]) == 0
    return _history(tmp_path / f"{name}.jsonl"), load_checkpoint(tmp_path / f"{name}.npz")["state"]


def _one_line_error(capsys, argv):
    assert main(argv) == 2
    lines = error_lines(capsys.readouterr().err)
    assert len(lines) == 1, lines
    return lines[0]


def test_a_step_schedule_multiplies_the_lr_by_gamma_every_step_epochs(tmp_path):
    history, _ = _train(tmp_path, "step", "--epochs", "4", "--lr", "0.01", "--schedule", "step", "--step-epochs", "2",
                        "--gamma", "0.5")
    assert [r["lr"] for r in history] == pytest.approx([0.01, 0.005, 0.005, 0.0025])


def test_a_cosine_schedule_ends_at_its_floor_and_warmup_rises_first(tmp_path):
    cosine, _ = _train(tmp_path, "cos", "--epochs", "3", "--lr", "0.01", "--schedule", "cosine", "--min-lr-factor",
                       "0.1")
    assert cosine[-1]["lr"] == pytest.approx(0.001) and cosine[0]["lr"] < 0.01
    warm, state = _train(tmp_path, "warm", "--epochs", "3", "--lr", "0.01", "--schedule", "warmup-cosine")
    assert warm[0]["lr"] == pytest.approx(0.01) and warm[-1]["lr"] == pytest.approx(0.0, abs=1e-12)


@pytest.mark.parametrize("flags,message", [
    (["--schedule", "cosine", "--gamma", "0.5"], "--gamma applies to --schedule step, not cosine"),
    (["--step-epochs", "2"], "--step-epochs applies to --schedule step, not constant"),
    (["--schedule", "warmup-cosine", "--warmup-epochs", "2"], "--warmup-epochs 2 (120 steps) leaves nothing of the "
                                                              "run's 120 steps"),
    (["--schedule", "cosine", "--min-lr-factor", "2"], "--min-lr-factor must be in [0, 1], got 2.0"),
    (["--augment", "0"], "--augment must be a positive integer"),
])
def test_an_option_that_does_not_apply_is_one_error(flags, message, capsys):
    assert message in _one_line_error(capsys, ["train", *QUICK, "--epochs", "2", *flags])


def test_a_run_stopped_mid_epoch_resumes_with_its_schedule_and_shifts_exactly(tmp_path, monkeypatch):
    flags = ["--epochs", "4", "--schedule", "warmup-cosine", "--augment", "--lr", "0.003"]
    _, straight = _train(tmp_path, "straight", *flags)
    augmented = Trainer._augmented

    def ctrl_c_at_step_150(self, x):
        if self.step == 150:
            self._signal = 2  # as the SIGINT handler does
        return augmented(self, x)

    monkeypatch.setattr(Trainer, "_augmented", ctrl_c_at_step_150)
    assert main(["train", *QUICK, *flags, "--checkpoint", str(tmp_path / "split.npz")]) == 130
    monkeypatch.undo()
    saved = load_checkpoint(tmp_path / "split.npz")
    assert saved["state"]["step"] == 151 and saved["meta"]["config"]["schedule_steps"] == 240
    assert main(["train", "--no-progress", "--checkpoint", str(tmp_path / "split.npz"), "--resume"]) == 0
    resumed = load_checkpoint(tmp_path / "split.npz")["state"]
    for k, v in straight["model"].items():
        np.testing.assert_array_equal(resumed["model"][k], v, err_msg=k)


def test_shifts_are_the_same_for_the_same_seed_and_change_training(tmp_path):
    _, a = _train(tmp_path, "a", "--epochs", "1", "--augment")
    _, b = _train(tmp_path, "b", "--epochs", "1", "--augment")
    _, plain = _train(tmp_path, "plain", "--epochs", "1")
    _, other = _train(tmp_path, "other", "--epochs", "1", "--augment", "--seed", "1")
    w = "conv2d1.W"
    np.testing.assert_array_equal(a["model"][w], b["model"][w])
    assert not np.array_equal(a["model"][w], plain["model"][w])
    assert not np.array_equal(a["model"][w], other["model"][w])


def test_eval_every_measures_accuracy_every_n_epochs_and_at_the_end(tmp_path, capsys):
    history, _ = _train(tmp_path, "ev", "--epochs", "5", "--eval-every", "2")
    assert [r["test_acc"] is not None for r in history] == [False, True, False, True, True]
    assert [r["train_acc"] is not None for r in history] == [False, True, False, True, True]
    out = capsys.readouterr().out
    assert "final test accuracy" in out and "        -" in out


def test_random_shift_moves_each_image_by_at_most_its_pixels():
    shift, backend = RandomShift(2), get_backend("cpu")
    draws = shift.draw(np.random.default_rng(0), 1000)
    assert draws.shape == (2, 1000) and draws.min() == -2 and draws.max() == 2
    x = np.zeros((3, 1, 8, 8), np.float32)
    x[:, 0, 4, 4] = 1
    out = shift(x, np.array([[1, -2, 0], [0, 1, -1]]), backend)
    assert [tuple(np.argwhere(o[0])[0]) for o in out] == [(5, 4), (2, 5), (4, 3)]


def test_random_shift_treats_flattened_square_images_as_images():
    x = np.arange(2 * 16, dtype=np.float32).reshape(2, 16)
    out = RandomShift(1)(x, np.array([[1, 0], [0, 0]]), get_backend("cpu"))
    assert out.shape == (2, 16) and (out[0, :4] == 0).all() and (out[0, 4:] == x[0, :12]).all()
    np.testing.assert_array_equal(out[1], x[1])


def test_random_shift_refuses_samples_that_are_not_images():
    with pytest.raises(ValueError, match=r"random shifts need image samples .* not \(10,\)"):
        RandomShift(2).check((10,))

"""Resume is exact after any stop: the checkpoint records the position inside the epoch, the
epoch's shuffle state and its running loss, so a run stopped after step k and resumed equals the
uninterrupted run bitwise; --epochs/--iterations given with --resume set the new end."""

import os
import signal
import subprocess
import sys
import time

import numpy as np

from accelnet.checkpoint import load_checkpoint
from accelnet.cli import main
from cli_output import error_lines
from accelnet.data import synthetic
from accelnet.optim import Adam
from accelnet.presets import multi_layer_net
from accelnet.train import Trainer

T = ["train", "--model", "two_layer_net", "--dataset", "synthetic", "--no-progress"]


def _trainer(**kw):
    data = synthetic(600, 200, (100,), classes=4, noise=0.3, seed=0)
    model = multi_layer_net(hidden_sizes=(16, 16), input_size=100, output_size=4, batchnorm=True, dropout=0.2,
                            seed=0)
    return Trainer(model, Adam(model, lr=1e-3), data, batch_size=32, epochs=5, progress=False, **kw)


def _weights(path):
    return load_checkpoint(path)["state"]["model"]


def _assert_same_weights(a, b):
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)


def test_30_then_60_steps_equal_90_straight_bitwise(tmp_path):
    straight = _trainer(max_steps=90)
    straight.fit()
    _trainer(max_steps=30, checkpoint=tmp_path / "c.npz").fit()
    resumed = _trainer(max_steps=90, checkpoint=tmp_path / "c.npz")
    resumed.resume()
    assert (resumed.step, resumed.epoch, resumed.batches.position) == (30, 1, 30 - 19)
    resumed.fit()
    np.testing.assert_array_equal(resumed.model.arena.data, straight.model.arena.data)
    _assert_same_weights(resumed.model.state_dict(), straight.model.state_dict())
    complete = [r["loss"] for r in straight.history if not r.get("partial")]
    assert [r["loss"] for r in resumed.history if not r.get("partial")] == complete


def test_a_run_stopped_part_way_continues_in_the_same_process_exactly():
    straight = _trainer(max_steps=70)
    straight.fit()
    t = _trainer(max_steps=25)
    t.fit()
    t.max_steps = 70
    t.fit()
    np.testing.assert_array_equal(t.model.arena.data, straight.model.arena.data)


def test_a_stop_after_the_last_batch_of_an_epoch_counts_that_epoch_complete(tmp_path):
    t = _trainer(max_steps=19, checkpoint=tmp_path / "c.npz")  # 600 samples / 32 = 19 batches
    t.fit()
    state = load_checkpoint(tmp_path / "c.npz")["state"]
    assert (state["epoch"], state["step"], state["position"]) == (1, 19, 0)
    assert not t.history[-1].get("partial")


def test_a_mid_epoch_stop_is_recorded_as_a_partial_epoch():
    t = _trainer(max_steps=25)
    t.fit()
    assert t.epoch == 1 and t.history[-1]["partial"] and t.history[-1]["step"] == 25


def test_cli_iterations_30_then_90_with_resume_equal_90_straight(tmp_path, capsys):
    assert main([*T, "--iterations", "90", "--checkpoint", str(tmp_path / "straight.npz")]) == 0
    assert main([*T, "--iterations", "30", "--checkpoint", str(tmp_path / "split.npz")]) == 0
    assert main([*T, "--iterations", "90", "--checkpoint", str(tmp_path / "split.npz"), "--resume"]) == 0
    assert "resumed at step 30 (batch 30 of 60 in epoch 1)" in capsys.readouterr().out
    _assert_same_weights(_weights(tmp_path / "straight.npz"), _weights(tmp_path / "split.npz"))


def test_cli_epochs_given_with_resume_set_the_new_end(tmp_path, capsys):
    ckpt = str(tmp_path / "c.npz")
    assert main([*T, "--iterations", "30", "--checkpoint", ckpt]) == 0
    assert main([*T, "--epochs", "3", "--checkpoint", ckpt, "--resume"]) == 0
    state = load_checkpoint(ckpt)["state"]
    assert (state["epoch"], state["step"], state["position"]) == (3, 3 * 60, 0)  # 6000 samples, batch 100


def test_cli_resume_of_a_finished_run_says_there_is_nothing_to_train(tmp_path, capsys):
    ckpt = str(tmp_path / "c.npz")
    assert main([*T, "--epochs", "1", "--checkpoint", ckpt]) == 0
    capsys.readouterr()
    assert main([*T, "--epochs", "1", "--checkpoint", ckpt, "--resume"]) == 2
    err = capsys.readouterr().err.strip()
    assert "nothing to train" in err and "already reaches --epochs 1" in err and len(error_lines(err)) == 1


def test_sigint_stops_after_a_whole_step_and_the_resumed_run_is_exact(tmp_path):
    """A real Ctrl-C in a real process: the checkpoint holds the last whole step; resuming to the same
    end gives the uninterrupted run's weights."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    ckpt, hist = tmp_path / "c.npz", tmp_path / "h.jsonl"
    run = [sys.executable, "-m", "accelnet.cli", *T, "--epochs", "40", "--checkpoint", str(ckpt)]
    proc = subprocess.Popen([*run, "--history", str(hist)], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while not (hist.exists() and hist.read_text().count("\n") >= 2):
        assert proc.poll() is None and time.time() < deadline, proc.communicate()
        time.sleep(0.02)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "interrupted" in err and "continue with --resume" in err
    stopped = load_checkpoint(ckpt)["state"]
    assert stopped["epoch"] < 40
    resumed = subprocess.run([*run, "--resume"], env=env, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    straight = subprocess.run([sys.executable, "-m", "accelnet.cli", *T, "--epochs", "40", "--checkpoint",
                               str(tmp_path / "straight.npz")], capture_output=True, text=True, timeout=300)
    assert straight.returncode == 0, straight.stderr
    _assert_same_weights(_weights(tmp_path / "straight.npz"), _weights(ckpt))


def test_a_trainer_fit_again_continues_its_own_checkpoint_and_history(tmp_path):
    t = _trainer(max_steps=25, checkpoint=tmp_path / "c.npz", history_path=tmp_path / "h.jsonl")
    t.fit()
    t.max_steps = 40
    t.fit()
    assert load_checkpoint(tmp_path / "c.npz")["state"]["step"] == 40
    assert len((tmp_path / "h.jsonl").read_text().splitlines()) == len(t.history)

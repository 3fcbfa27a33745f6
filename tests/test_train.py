"""Trainer: history, exact resume, the divergence guard, atomic checkpoints (with a real kill);
training and resume on every backend (conftest.py's ``backend_name``)."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from accelnet.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from accelnet.data import Dataset, synthetic
from accelnet.presets import multi_layer_net
from accelnet.optim import SGD, Adam
from accelnet.train import Diverged, Trainer


def _setup(epochs=2, lr=1e-3, opt=Adam, batchnorm=True, backend="cpu", **kw):
    data = synthetic(600, 200, (100,), classes=4, noise=0.3, seed=0)
    model = multi_layer_net(hidden_sizes=(16, 16), input_size=100, output_size=4, batchnorm=batchnorm,
                            dropout=0.2, seed=0, backend=backend)
    return Trainer(model, opt(model, lr=lr), data, batch_size=32, epochs=epochs, progress=False, **kw)


def test_history_records_loss_accuracies_time_and_throughput(tmp_path, backend_name):
    t = _setup(epochs=3, history_path=tmp_path / "h.jsonl", backend=backend_name)
    history = t.fit()
    assert [r["epoch"] for r in history] == [1, 2, 3] and history[-1]["step"] == 3 * 19
    assert history[-1]["loss"] < history[0]["loss"]
    assert history[-1]["test_acc"] > 0.5
    assert all(r["seconds"] > 0 and r["samples_per_s"] > 0 for r in history)
    lines = [json.loads(line) for line in (tmp_path / "h.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in lines] == [1, 2, 3]


def test_callbacks_see_every_epoch_and_can_stop_training():
    seen = []

    def cb(trainer, record):
        seen.append(record["epoch"])
        trainer.stop = record["epoch"] == 2

    _setup(epochs=5, callbacks=[cb]).fit()
    assert seen == [1, 2]


def test_max_steps_ends_training_mid_epoch_without_counting_that_epoch_complete():
    t = _setup(epochs=5, max_steps=25)
    t.fit()
    assert t.step == 25 and t.epoch == 1 and t.batches.position == 25 - 19
    assert t.history[-1]["partial"] and t.history[-1]["epoch"] == 2 and t.history[-1]["step"] == 25


def test_resume_after_2_epochs_gives_bitwise_the_parameters_of_4_uninterrupted(tmp_path, backend_name):
    straight = _setup(epochs=4, backend=backend_name)
    straight.fit()

    first = _setup(epochs=2, checkpoint=tmp_path / "c.npz", backend=backend_name)
    first.fit()
    resumed = _setup(epochs=4, checkpoint=tmp_path / "c.npz", backend=backend_name)
    resumed.resume()
    assert resumed.epoch == 2
    resumed.fit()

    host = resumed.model.backend.to_numpy
    np.testing.assert_array_equal(host(resumed.model.arena.data), host(straight.model.arena.data))
    for k, v in straight.model.state_dict().items():
        np.testing.assert_array_equal(resumed.model.state_dict()[k], v)
    assert [r["loss"] for r in resumed.history] == [r["loss"] for r in straight.history]


def _mlp_trainer(lr, checkpoint, epochs, **kw):
    data = synthetic(600, 100, (784,), seed=0)
    model = multi_layer_net(seed=0)  # the book's 5 x 100 ReLU net
    return Trainer(model, SGD(model, lr=lr), data, batch_size=32, epochs=epochs, checkpoint=checkpoint,
                   progress=False, **kw)


def test_nan_loss_stops_training_and_leaves_the_last_good_checkpoint(tmp_path):
    ckpt = tmp_path / "c.npz"
    _mlp_trainer(0.01, ckpt, 1).fit()
    good = ckpt.read_bytes()
    with pytest.raises(Diverged, match=r"loss became nan .* the last good checkpoint, .*c.npz, is untouched"):
        _mlp_trainer(100.0, ckpt, 2, overwrite=True).fit()
    assert ckpt.read_bytes() == good
    assert load_checkpoint(ckpt)["state"]["epoch"] == 1


def test_checkpoint_round_trips_nested_state(tmp_path):
    state = {"a": np.arange(3.0), "nested": {"b": np.ones((2, 2), np.float32), "n": 3, "s": "x"},
             "list": [1.5, {"c": np.zeros(1)}], "rng": np.random.default_rng(0).bit_generator.state}
    save_checkpoint(tmp_path / "c.npz", state, {"config": {"model": "m"}})
    back = load_checkpoint(tmp_path / "c.npz")
    np.testing.assert_array_equal(back["state"]["nested"]["b"], state["nested"]["b"])
    assert back["state"]["rng"] == state["rng"] and back["meta"]["config"]["model"] == "m"
    assert back["state"]["list"][0] == 1.5


def test_a_garbage_checkpoint_is_named(tmp_path):
    (tmp_path / "c.npz").write_bytes(b"not a zip")
    with pytest.raises(CheckpointError, match="not a readable accelnet checkpoint"):
        load_checkpoint(tmp_path / "c.npz")
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "missing.npz")


KILLED_WRITER = textwrap.dedent("""
    import sys, time
    import numpy as np
    import accelnet.checkpoint as ck

    path, marker = sys.argv[1], sys.argv[2]
    ck.save_checkpoint(path, {"w": np.full(1000, 1.0)}, {"version": 1})

    def stalled_savez(f, **arrays):  # write half of a real checkpoint, then hang mid-write
        f.write(b"PK" + b"x" * 100_000)
        f.flush()
        open(marker, "w").close()
        time.sleep(60)

    ck.np.savez = stalled_savez
    ck.save_checkpoint(path, {"w": np.full(1000, 2.0)}, {"version": 2})
""")


def _kill_a_writer_mid_save(tmp_path):
    """A process saves version 1, then is killed while saving version 2; returns the path."""
    path, marker = tmp_path / "c.npz", tmp_path / "writing"
    proc = subprocess.Popen([sys.executable, "-c", KILLED_WRITER, str(path), str(marker)])
    try:
        deadline = time.time() + 60
        while not marker.exists():
            assert proc.poll() is None and time.time() < deadline, "the writer never reached its second save"
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    return path


def test_a_process_killed_while_writing_leaves_the_previous_checkpoint_loadable(tmp_path):
    back = load_checkpoint(_kill_a_writer_mid_save(tmp_path))
    assert back["meta"] == {"version": 1}
    np.testing.assert_array_equal(back["state"]["w"], np.full(1000, 1.0))


def test_the_next_save_removes_the_temp_file_a_killed_writer_left(tmp_path):
    path = _kill_a_writer_mid_save(tmp_path)
    debris = list(tmp_path.glob(".c.npz.*.tmp"))
    assert len(debris) == 1  # the killed writer's
    save_checkpoint(path, {"w": np.zeros(3)})
    assert not list(tmp_path.glob(".c.npz.*.tmp"))


def test_temp_files_of_live_writers_and_other_hosts_are_left_alone(tmp_path):
    import socket

    from accelnet.checkpoint import remove_stale_temp_files

    path = tmp_path / "c.npz"
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    host = socket.gethostname()
    files = {name: tmp_path / name for name in (f".c.npz.{host}-{int(dead.stdout)}.abc.tmp",  # writer gone
                                                 f".c.npz.{host}-{os.getpid()}.def.tmp",  # this live process
                                                 ".c.npz.otherhost-1.ghi.tmp",  # another host's writer
                                                 ".c.npz.jkl.tmp")}  # an older version's: writer unknown
    for f in files.values():
        f.write_bytes(b"partial")
    assert remove_stale_temp_files(path) == [files[f".c.npz.{host}-{int(dead.stdout)}.abc.tmp"]]
    assert sorted(p.name for p in tmp_path.glob("*.tmp")) == sorted(list(files)[1:])


def test_data_of_the_wrong_shape_is_refused():
    model = multi_layer_net(hidden_sizes=(4,), input_size=10, output_size=2)
    with pytest.raises(ValueError, match=r"samples have shape \(20,\) but the model expects \(10,\)"):
        Trainer(model, Adam(model), synthetic(10, 10, (20,), classes=2), progress=False)


def test_a_batchnorm_statistic_that_became_infinite_stops_training_before_it_is_saved(tmp_path):
    data = synthetic(64, 16, (100,), classes=4, seed=0)
    data.x_train[5] *= 1e25  # finite in float32; its batch's variance overflows
    model = multi_layer_net(hidden_sizes=(16,), input_size=100, output_size=4, batchnorm=True, seed=0)
    trainer = Trainer(model, SGD(model, lr=0.01), data, batch_size=64, epochs=1, progress=False,
                      checkpoint=tmp_path / "c.npz")
    with pytest.raises(Diverged, match=r"batchnorm1\.running_var became non-finite"):
        trainer.fit()
    assert not (tmp_path / "c.npz").exists()


def test_data_holding_nan_is_refused_naming_the_sample():
    data = synthetic(64, 16, (100,), classes=4, seed=0)
    data.x_train[7, 3] = np.nan
    with pytest.raises(ValueError, match="x_train holds NaN or inf, first in sample 7"):
        Dataset(data.name, data.x_train, data.t_train, data.x_test, data.t_test)


def test_a_state_holding_nan_is_refused_at_load():
    model = multi_layer_net(hidden_sizes=(16,), input_size=100, output_size=4, seed=0)
    state = model.state_dict()
    state["linear2.W"][0, 0] = np.nan
    with pytest.raises(ValueError, match=r"linear2\.W holds NaN or inf"):
        model.load_state_dict(state)

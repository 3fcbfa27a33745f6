"""A checkpoint and a history belong to one run: an existing checkpoint is continued only with
--resume and replaced only with --overwrite, a file that is not an accelnet checkpoint is never
replaced, one run at a time holds each file (a lock the kernel drops when the holder dies), and
history lines carry the run's id."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from accelnet.checkpoint import load_checkpoint
from accelnet.cli import main
from cli_output import error_lines

T = ["train", "--model", "two_layer_net", "--dataset", "synthetic", "--no-progress"]


def _error(capsys, argv):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(error_lines(err)) == 1, err
    return err


def test_an_existing_checkpoint_is_not_replaced_without_overwrite(tmp_path, capsys):
    ckpt = tmp_path / "ow.npz"
    assert main([*T, "--epochs", "2", "--checkpoint", str(ckpt)]) == 0
    before = ckpt.read_bytes()
    err = _error(capsys, [*T, "--epochs", "1", "--checkpoint", str(ckpt)])
    assert "already holds a run (epoch 2, step 120)" in err and "--resume" in err and "--overwrite" in err
    assert ckpt.read_bytes() == before


def test_overwrite_replaces_an_existing_checkpoint(tmp_path):
    ckpt = tmp_path / "ow.npz"
    assert main([*T, "--epochs", "2", "--checkpoint", str(ckpt)]) == 0
    assert main([*T, "--epochs", "1", "--checkpoint", str(ckpt), "--overwrite"]) == 0
    assert load_checkpoint(ckpt)["state"]["epoch"] == 1


@pytest.mark.parametrize("flags", [[], ["--overwrite"]])
def test_a_file_that_is_not_a_checkpoint_is_never_replaced(tmp_path, capsys, flags):
    notes = tmp_path / "notes.txt"
    notes.write_text("my notes\n")
    err = _error(capsys, [*T, "--iterations", "5", "--checkpoint", str(notes), *flags])
    assert "is not an accelnet checkpoint" in err and "refusing to replace it" in err
    assert notes.read_text() == "my notes\n"


HOLDER = textwrap.dedent("""
    import sys, time
    from accelnet.outputs import OutputLock
    OutputLock(sys.argv[1], "otherrun1234", "checkpoint").acquire()
    print("locked", flush=True)
    time.sleep(120)
""")


def _hold_lock(path):
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(path)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "locked"
    return proc


@pytest.mark.parametrize("flag", ["--checkpoint", "--history"])
def test_a_second_run_on_a_locked_output_exits_2_at_start_naming_the_holder(tmp_path, capsys, flag):
    path = tmp_path / "out"
    holder = _hold_lock(path)
    try:
        err = _error(capsys, [*T, "--epochs", "1", flag, str(path)])
    finally:
        holder.kill()
        holder.wait()
    assert "is in use by another run (run otherrun1234, pid" in err
    assert not path.exists()


def test_a_killed_holder_leaves_no_lock_behind(tmp_path):
    ckpt = tmp_path / "c.npz"
    holder = _hold_lock(ckpt)
    os.kill(holder.pid, signal.SIGKILL)
    holder.wait()
    assert main([*T, "--epochs", "1", "--checkpoint", str(ckpt)]) == 0


def test_two_runs_started_at_once_on_one_checkpoint_one_wins_the_other_exits_2(tmp_path):
    ckpt = tmp_path / "c.npz"
    cmd = [sys.executable, "-m", "accelnet.cli", *T, "--epochs", "3", "--checkpoint", str(ckpt)]
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    results = [(p.wait(timeout=300), p.communicate()[1]) for p in procs]
    codes = sorted(code for code, _ in results)
    assert codes == [0, 2], results
    loser = next(err for code, err in results if code == 2)
    assert "in use by another run" in loser or "already holds a run" in loser
    assert load_checkpoint(ckpt)["state"]["epoch"] == 3


def test_the_lock_is_released_when_the_run_ends(tmp_path):
    ckpt = tmp_path / "c.npz"
    assert main([*T, "--epochs", "1", "--checkpoint", str(ckpt)]) == 0
    assert not list(tmp_path.glob(".*.lock"))
    assert main([*T, "--epochs", "2", "--checkpoint", str(ckpt), "--resume"]) == 0


def test_history_lines_carry_the_run_id_and_a_resumed_run_keeps_it(tmp_path):
    ckpt, hist = tmp_path / "c.npz", tmp_path / "h.jsonl"
    assert main([*T, "--epochs", "1", "--checkpoint", str(ckpt), "--history", str(hist)]) == 0
    assert main([*T, "--epochs", "2", "--checkpoint", str(ckpt), "--history", str(hist), "--resume"]) == 0
    runs = [json.loads(line)["run"] for line in hist.read_text().splitlines()]
    assert len(runs) == 2 and runs[0] == runs[1] == load_checkpoint(ckpt)["state"]["run_id"]


def test_a_new_run_does_not_append_to_another_runs_history(tmp_path, capsys):
    hist = tmp_path / "h.jsonl"
    assert main([*T, "--epochs", "1", "--history", str(hist)]) == 0
    before = hist.read_text()
    err = _error(capsys, [*T, "--epochs", "1", "--history", str(hist)])
    assert "holds another run's records" in err and "--overwrite" in err
    assert hist.read_text() == before


def test_overwrite_starts_the_history_afresh(tmp_path):
    hist = tmp_path / "h.jsonl"
    assert main([*T, "--epochs", "2", "--history", str(hist)]) == 0
    assert main([*T, "--epochs", "1", "--history", str(hist), "--overwrite"]) == 0
    assert len(hist.read_text().splitlines()) == 1


def test_an_unwritable_checkpoint_folder_is_reported_before_the_first_step(tmp_path, capsys):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    err = _error(capsys, [*T, "--epochs", "1", "--checkpoint", str(blocker / "sub" / "c.npz")])
    assert "is not writable" in err or "cannot write" in err
    assert "final test accuracy" not in capsys.readouterr().out


def test_an_unwritable_history_folder_is_reported_before_the_first_step(tmp_path, capsys):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    out_before = time.time()
    err = _error(capsys, [*T, "--epochs", "50", "--history", str(blocker / "h.jsonl")])
    assert "history" in err and time.time() - out_before < 60


def test_a_missing_history_folder_is_created(tmp_path):
    hist = tmp_path / "new" / "deeper" / "h.jsonl"
    assert main([*T, "--epochs", "1", "--history", str(hist)]) == 0
    assert len(hist.read_text().splitlines()) == 1

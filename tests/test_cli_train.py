"""`accelnet train` as a user runs it: results, resume, divergence, and one-line errors."""

import re
import subprocess
import sys

import numpy as np
import pytest

from accelnet import data
from accelnet.backend import gpu_status
from accelnet.checkpoint import load_checkpoint
from accelnet.cli import main
from cli_output import error_lines

QUICK = ["--dataset", "synthetic", "--no-progress"]


def _one_line_error(capsys, argv, code=2):
    assert main(argv) == code
    err = capsys.readouterr().err
    lines = error_lines(err)
    assert len(lines) == 1, err
    return lines[0]


def test_train_prints_a_table_and_the_final_accuracy(capsys, tmp_path):
    assert main(["train", "--model", "two_layer_net", "--epochs", "2", *QUICK, "--history", str(tmp_path / "h")]) == 0
    out = capsys.readouterr().out
    assert re.search(r"^\s+2\s+\d+\s+[\d.]+\s+[\d.]+\s+[\d.]+", out, re.M)
    assert re.search(r"final test accuracy: [01]\.\d{4}", out)
    assert len((tmp_path / "h").read_text().splitlines()) == 2


def test_resume_continues_exactly_where_it_stopped(capsys, tmp_path):
    args = ["train", "--model", "multi_layer_net", "--dropout", "0.2", "--batchnorm", *QUICK]
    assert main([*args, "--epochs", "4", "--checkpoint", str(tmp_path / "straight.npz")]) == 0
    assert main([*args, "--epochs", "2", "--checkpoint", str(tmp_path / "split.npz")]) == 0
    assert main(["train", "--epochs", "4", "--checkpoint", str(tmp_path / "split.npz"), "--resume",
                 "--no-progress"]) == 0
    assert "resumed at epoch 2" in capsys.readouterr().out
    a = load_checkpoint(tmp_path / "straight.npz")["state"]["model"]
    b = load_checkpoint(tmp_path / "split.npz")["state"]["model"]
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])


def test_resume_refuses_a_different_model(capsys, tmp_path):
    assert main(["train", "--model", "two_layer_net", "--epochs", "1", *QUICK, "--checkpoint",
                 str(tmp_path / "c.npz")]) == 0
    line = _one_line_error(capsys, ["train", "--model", "deep_convnet", "--checkpoint", str(tmp_path / "c.npz"),
                                    "--resume", "--epochs", "2"])
    assert "--model deep_convnet differs from the checkpoint's two_layer_net" in line


def test_divergence_exits_non_zero_with_a_message_and_keeps_the_checkpoint(capsys, tmp_path):
    ckpt = tmp_path / "c.npz"
    base = ["train", "--model", "multi_layer_net", "--optimizer", "sgd", "--epochs", "1", *QUICK,
            "--checkpoint", str(ckpt)]
    assert main(base) == 0
    before = ckpt.read_bytes()
    line = _one_line_error(capsys, [*base, "--lr", "100", "--overwrite"], code=3)
    assert "diverged: loss became nan" in line and "Try a smaller learning rate (--lr; now 100)" in line
    assert ckpt.read_bytes() == before
    assert load_checkpoint(ckpt)["state"]["epoch"] == 1


@pytest.mark.parametrize("argv, expected", [
    (["train", "--model", "resnet"], "invalid choice: 'resnet'"),
    (["train", "--optimizer", "lbfgs"], "invalid choice: 'lbfgs'"),
    (["train", "--lr", "-0.1"], "--lr must be a positive finite number, got '-0.1'"),
    (["train", "--lr", "fast"], "--lr must be a positive finite number, got 'fast'"),
    (["train", "--batch-size", "0"], "--batch-size must be a positive integer"),
    (["train", "--model", "two_layer_net", "--dropout", "0.5"], "--dropout applies to multi_layer_net"),
    (["train", "--resume"], "--resume needs --checkpoint"),
    (["train", "--epochs", "2", "--iterations", "5", *QUICK], "--epochs and --iterations both set"),
    (["train", "--init-std", "0.1", *QUICK], "--init-std applies with --init std"),
    (["train", "--init", "he", "--init-std", "0.1", *QUICK], "--init-std applies with --init std, not with --init he"),
    (["train", "--model", "two_layer_net", "--batch-size", "100000", *QUICK],
     "--batch-size 100000 is larger than the 6000 training samples"),
    (["train", "--seed", "-1"], "--seed must be a non-negative integer, got '-1'"),
    (["compare", "trajectories", "--start", "nan,nan"], "expected two finite numbers X,Y, got 'nan,nan'"),
    (["compare", "trajectories", "--seed", "-1"], "--seed must be a non-negative integer"),
], ids=["model", "optimizer", "negative-lr", "text-lr", "batch-size", "dropout", "resume", "epochs-and-iterations",
        "init-std-alone", "init-std-with-he", "batch-above-data", "negative-seed", "nan-start", "compare-seed"])
def test_bad_arguments_give_one_line_and_exit_2(capsys, argv, expected):
    assert expected in _one_line_error(capsys, argv)


@pytest.mark.skipif(gpu_status()[0], reason="a GPU is present")
def test_gpu_unavailable_gives_one_line_naming_what_to_do(capsys):
    # without CuPy: the extra to install; with CuPy but no driver: check it (tests/test_gpu_readiness.py)
    line = _one_line_error(capsys, ["train", "--device", "gpu", *QUICK])
    assert "pip install 'accelnet[gpu-cu12]'" in line or "nvidia-smi" in line


def test_missing_data_gives_one_line_saying_where_to_put_it(capsys, tmp_path, monkeypatch):
    monkeypatch.delenv("ACCELNET_DATA", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setitem(data.DATASETS, "mnist", {**data.DATASETS["mnist"], "mirrors": [(tmp_path / "no").as_uri() + "/"]})
    line = _one_line_error(capsys, ["train", "--data-dir", str(tmp_path / "empty"), "--no-progress"])
    assert "mnist not found. Put its four files" in line


def test_a_corrupted_data_file_gives_one_line_naming_it(capsys, tmp_path, data_dir, monkeypatch):
    import shutil

    monkeypatch.delenv("ACCELNET_DATA", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    shutil.copytree(data_dir / "mnist", tmp_path / "mnist")
    bad = tmp_path / "mnist" / "t10k-labels-idx1-ubyte.gz"
    raw = bytearray(bad.read_bytes())
    raw[100] ^= 0xFF
    bad.write_bytes(bytes(raw))
    line = _one_line_error(capsys, ["train", "--data-dir", str(tmp_path), "--no-progress"])
    assert "t10k-labels-idx1-ubyte.gz: SHA-256" in line and "corrupted" in line


def test_one_epoch_of_simple_convnet_on_real_mnist_reaches_97_percent(data_dir):
    res = subprocess.run([sys.executable, "-m", "accelnet.cli", "train", "--epochs", "1", "--no-progress",
                          "--data-dir", str(data_dir)], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    acc = float(re.search(r"final test accuracy: ([\d.]+)", res.stdout).group(1))
    print(res.stdout)
    assert acc >= 0.97


def test_plot_writes_a_png_of_the_curves(capsys, tmp_path):
    pytest.importorskip("matplotlib", reason="matplotlib is not installed (pip install 'accelnet[plot]')")
    png = tmp_path / "curves.png"
    assert main(["train", "--model", "two_layer_net", "--epochs", "2", *QUICK, "--plot", str(png)]) == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000
    assert f"plot written to {png}" in capsys.readouterr().out


def test_plot_without_matplotlib_is_skipped_with_a_note(capsys, tmp_path, monkeypatch):
    import accelnet.plot

    monkeypatch.setattr(accelnet.plot, "have_matplotlib", lambda: False)
    png = tmp_path / "curves.png"
    assert main(["train", "--model", "two_layer_net", "--epochs", "1", *QUICK, "--plot", str(png)]) == 0
    assert not png.exists()
    assert "plot skipped: matplotlib is not installed" in capsys.readouterr().err

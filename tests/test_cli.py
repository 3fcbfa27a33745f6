import importlib.util
import subprocess
import sys

import pytest

from accelnet.cli import main
from accelnet.presets import PRESETS


def test_info_lists_versions_backends_and_threading_layer(capsys):
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    for word in ("accelnet", "numpy", "numba", "cpu", "gpu", "threading"):
        assert word in out


def test_info_names_the_threading_layer_and_the_cpu_settings():
    # its own process: the threading layer is only known once a parallel kernel has run
    res = subprocess.run([sys.executable, "-m", "accelnet.cli", "info"], capture_output=True, text=True)
    lines = dict(line.split(None, 1) for line in res.stdout.splitlines() if line.startswith("threading"))
    assert "unknown" not in lines["threading"] and "threads" in lines["threading"]
    assert "cpu settings" in res.stdout and "flush-to-zero" in res.stdout


def test_console_entry_point_runs_as_a_module():
    res = subprocess.run([sys.executable, "-m", "accelnet.cli", "info"], capture_output=True, text=True)
    assert res.returncode == 0 and "threading" in res.stdout


def test_unknown_command_exits_non_zero():
    res = subprocess.run([sys.executable, "-m", "accelnet.cli", "frobnicate"], capture_output=True, text=True)
    assert res.returncode != 0 and "invalid choice" in res.stderr


@pytest.mark.parametrize("argv, flag", [
    (["--only", "foo"], "--only"),
    (["--only", ","], "--only"),
    (["--optimizers", "lbfgs"], "--optimizers"),
    (["--sizes", "0"], "--sizes"),
    (["--sizes", "1e12"], "--sizes"),
    (["--batches", "0"], "--batches"),
    (["--min-time", "-1"], "--min-time"),
])
def test_bench_names_a_bad_flag_in_one_line_before_running(argv, flag, capsys):
    assert main(["bench", *argv]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and flag in err[0]


def test_bench_convs_prints_each_conv_pass_against_the_in_run_sgemm_rate(capsys):
    assert main(["bench", "--only", "convs", "--min-time", "0.01"]) == 0
    out = capsys.readouterr().out
    assert "against a float32 1024^3 sgemm measured in the same run" in out
    assert "fwd % sgemm" in out and "dW % sgemm" in out and "dx % sgemm" in out
    assert sum(line.startswith(("1->16", "16->16", "16->32", "32->32", "32->64", "64->64"))
               for line in out.splitlines()) == 6


def test_bench_predict_prints_every_preset_at_each_batch_beside_pytorch(capsys):
    assert main(["bench", "--only", "predict", "--batches", "2", "--min-time", "0.01", "--rounds", "1"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("Inference: model.predict on a host batch, eval mode")
    rows = [line.split() for line in out.splitlines() if line.startswith(tuple(PRESETS))]
    assert [r[0] for r in rows] == list(PRESETS) and all(r[1] == "2" for r in rows)
    torch = importlib.util.find_spec("torch") is not None
    assert ("accelnet / torch" in out) == torch and all(len(r) == (7 if torch else 4) for r in rows)
    assert ("interleaved with accelnet's, 1 rounds" in out) == torch

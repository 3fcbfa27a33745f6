import subprocess
import sys

from accelnet.cli import main


def test_info_lists_versions_backends_and_threading_layer(capsys):
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    for word in ("accelnet", "numpy", "numba", "cpu", "gpu", "threading"):
        assert word in out


def test_console_entry_point_runs_as_a_module():
    res = subprocess.run([sys.executable, "-m", "accelnet.cli", "info"], capture_output=True, text=True)
    assert res.returncode == 0 and "threading" in res.stdout


def test_unknown_command_exits_non_zero():
    res = subprocess.run([sys.executable, "-m", "accelnet.cli", "frobnicate"], capture_output=True, text=True)
    assert res.returncode != 0 and "invalid choice" in res.stderr

"""After training, as a user runs it: ``accelnet evaluate``, ``predict`` and ``export`` on a
checkpoint of ``accelnet train``, with one line per bad input."""

import re
import sys

import numpy as np
import pytest

import accelnet
from accelnet.cli import main
from cli_output import error_lines
from accelnet.data import synthetic, write_idx

QUICK = ["--dataset", "synthetic", "--no-progress"]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A simple_convnet checkpoint after one epoch on the synthetic data, and its final test accuracy."""
    folder = tmp_path_factory.mktemp("run")
    path = folder / "run.npz"
    assert main(["train", "--model", "simple_convnet", "--epochs", "1", "--seed", "4", "--checkpoint", str(path),
                 *QUICK]) == 0
    return path


def test_evaluate_reports_the_accuracy_training_ended_with(run, capsys):
    from accelnet.checkpoint import load_checkpoint

    final = load_checkpoint(run)["state"]["history"][-1]["test_acc"]
    assert main(["evaluate", "--checkpoint", str(run)]) == 0
    out = capsys.readouterr().out
    assert "simple_convnet from" in out and "synthetic test images" in out
    assert f"test accuracy: {final:.4f}" in out


def test_evaluate_prints_per_class_accuracy_and_the_confusion_matrix(run, capsys):
    assert main(["evaluate", "--checkpoint", str(run)]) == 0
    out = capsys.readouterr().out
    rows = re.findall(r"^(\d)\s+([\d.]+)\s+([\d,]+) / ([\d,]+)$", out, re.M)
    assert [r[0] for r in rows] == [str(i) for i in range(10)]
    matrix = [[int(v.replace(",", "")) for v in line.split()[1:]] for line in
              out.split("predicted class)\n", 1)[1].splitlines()[1:11]]
    assert sum(map(sum, matrix)) == 1000 and [m[i] for i, m in enumerate(matrix)] == [int(r[2]) for r in rows]


def test_evaluate_plots_the_confusion_matrix(run, tmp_path, capsys):
    pytest.importorskip("matplotlib", reason="the plot extra is not installed")
    assert main(["evaluate", "--checkpoint", str(run), "--plot", str(tmp_path / "cm.png")]) == 0
    assert (tmp_path / "cm.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_evaluate_on_data_of_another_shape_is_one_error(tmp_path, capsys):
    model = accelnet.Sequential([accelnet.Linear(10)], (5,))
    accelnet.save_model(model, tmp_path / "m.npz")
    assert main(["evaluate", "--checkpoint", str(tmp_path / "m.npz"), "--dataset", "synthetic"]) == 2
    (line,) = error_lines(capsys.readouterr().err)
    assert "the model takes samples of shape (5,), synthetic has (784,)" in line


@pytest.mark.parametrize("command", [["evaluate"], ["predict", "x.npy"], ["export", "--onnx", "m.onnx"]])
def test_a_missing_checkpoint_is_one_error(command, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main([command[0], "--checkpoint", "nope.npz", *command[1:]]) == 2
    (line,) = error_lines(capsys.readouterr().err)
    assert "checkpoint nope.npz does not exist" in line


def _inputs(folder):
    """Files of four kinds holding synthetic test images 0-4, and their labels."""
    from PIL import Image

    data = synthetic(input_shape=(1, 28, 28), seed=4)
    pixels = (data.x_test[:5, 0] * 255).round().astype(np.uint8)
    Image.fromarray(pixels[0]).save(folder / "a.png")
    Image.fromarray(255 - pixels[1]).save(folder / "b_dark_on_light.png")
    np.save(folder / "c.npy", data.x_test[2:4])  # floats in [0, 1], with the channel axis
    write_idx(folder / "d.idx.gz", pixels[4:5])
    return data.x_test[:5], data.t_test[:5]


def _predicted(out):
    return {m[0]: int(m[1]) for m in re.findall(r"^(\S+)\s+(\d+)\s+[01]\.\d{4}$", out, re.M)}


def test_predict_classifies_images_arrays_and_idx_files_in_one_batch(run, tmp_path, capsys):
    pytest.importorskip("PIL", reason="the images extra (Pillow) is not installed")
    x, _ = _inputs(tmp_path)
    expected = accelnet.load_model(run).predict(x).argmax(1)
    files = [str(tmp_path / f) for f in ("a.png", "c.npy", "d.idx.gz")]
    assert main(["predict", "--checkpoint", str(run), *files]) == 0
    got = _predicted(capsys.readouterr().out)
    assert got == {files[0]: expected[0], f"{files[1]}[0]": expected[2], f"{files[1]}[1]": expected[3],
                   files[2]: expected[4]}


def test_predict_inverts_dark_on_light_pictures_on_request(run, tmp_path, capsys):
    pytest.importorskip("PIL", reason="the images extra (Pillow) is not installed")
    x, _ = _inputs(tmp_path)
    assert main(["predict", "--checkpoint", str(run), "--invert", str(tmp_path / "b_dark_on_light.png")]) == 0
    assert list(_predicted(capsys.readouterr().out).values()) == [accelnet.load_model(run).predict(x[1:2]).argmax()]


def test_predict_reports_each_bad_file_in_one_line_and_predicts_the_rest(run, tmp_path, capsys):
    (tmp_path / "junk.png").write_bytes(b"not an image")
    np.save(tmp_path / "wrong.npy", np.zeros((3, 5)))
    np.save(tmp_path / "good.npy", np.zeros((28, 28), np.uint8))
    (tmp_path / "text.csv").write_text("1,2,3\n")
    files = [str(tmp_path / f) for f in ("junk.png", "wrong.npy", "good.npy", "missing.npy", "text.csv")]
    assert main(["predict", "--checkpoint", str(run), *files]) == 1
    captured = capsys.readouterr()
    lines = error_lines(captured.err)
    assert len(lines) == 5 and "4 of 5 files could not be read (above); the others were predicted" in lines[-1]
    assert "junk.png: not a readable image" in lines[0] and "wrong.npy: shape (3, 5) is neither" in lines[1]
    assert "missing.npy: no such file" in lines[2] and "text.csv: not an image (by its suffix), a .npy" in lines[3]
    assert list(_predicted(captured.out)) == [files[2]]


def test_export_writes_a_graph_onnxruntime_runs(run, tmp_path, capsys):
    pytest.importorskip("onnx", reason="the export extra is not installed")
    ort = pytest.importorskip("onnxruntime", reason="onnxruntime (the peer extra) is not installed")
    assert main(["export", "--checkpoint", str(run), "--onnx", str(tmp_path / "m.onnx")]) == 0
    out = capsys.readouterr().out
    assert "written to" in out and "ONNX opset 17" in out
    x = synthetic(input_shape=(1, 28, 28), seed=4).x_test[:20]
    scores = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"]).run(
        ["scores"], {"input": x})[0]
    np.testing.assert_allclose(scores, accelnet.load_model(run).predict(x), rtol=1e-5, atol=1e-5)


def test_a_failed_export_leaves_an_existing_file_alone(run, tmp_path, capsys):
    pytest.importorskip("onnx", reason="the export extra is not installed")
    (tmp_path / "m.onnx").write_bytes(b"previous")
    assert main(["export", "--checkpoint", str(run), "--onnx", str(tmp_path / "m.onnx"), "--opset", "9"]) == 2
    (line,) = error_lines(capsys.readouterr().err)
    assert "opset 9 is outside 13-" in line
    assert (tmp_path / "m.onnx").read_bytes() == b"previous" and len(list(tmp_path.iterdir())) == 1


def test_export_without_onnx_names_the_extra(run, tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnx", None)
    assert main(["export", "--checkpoint", str(run), "--onnx", str(tmp_path / "m.onnx")]) == 2
    (line,) = error_lines(capsys.readouterr().err)
    assert "pip install 'accelnet[export]'" in line


def _first_run(argv, tmp_path, cache):
    """``accelnet ARGV`` in a fresh process whose Numba cache is ``cache``: (stdout, stderr)."""
    import os
    import subprocess

    env = {**os.environ, "NUMBA_CACHE_DIR": str(cache)}
    done = subprocess.run([sys.executable, "-m", "accelnet.cli", *argv], capture_output=True, text=True, env=env,
                          cwd=tmp_path, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout, done.stderr


def test_the_first_run_on_a_machine_says_it_compiles_before_training_and_later_runs_do_not(tmp_path):
    argv = ["train", "--model", "two_layer_net", "--iterations", "5", *QUICK]
    out, err = _first_run(argv, tmp_path, tmp_path / "numba")
    assert "compiling accelnet's kernels for this CPU (the first run only: about 2-10 s" in err
    out, err = _first_run(argv, tmp_path, tmp_path / "numba")
    assert "compiling" not in err


def test_a_convolutional_model_warns_of_its_longer_compile(tmp_path):
    import os
    import subprocess

    code = ("from accelnet.backend import get_backend; from accelnet.presets import simple_convnet; "
            "from accelnet.optim import Adam; m = simple_convnet(); print(get_backend('cpu').compile_notice(Adam(m), True))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "NUMBA_CACHE_DIR": str(tmp_path / "numba")})
    assert "about 10-40 s" in done.stdout, done.stderr[-2000:]

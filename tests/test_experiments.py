"""The book's chapter 6 experiments: the numbers behind each picture say what the book says."""

import numpy as np
import pytest

from accelnet import experiments as ex
from accelnet.cli import main
from accelnet.data import load


@pytest.fixture(scope="module")
def mnist(data_dir):
    return load("mnist", data_dir, download=False, progress=False)


def _sign_changes(path):
    return int(np.sum(np.diff(np.sign(path[:, 1])) != 0))


def test_sgd_zigzags_across_the_valley_while_the_others_do_not():
    paths = ex.trajectories()
    assert _sign_changes(paths["sgd"]) == 30  # y flips sign at every step: y <- y - 0.95 * 2y = -0.9 y
    for name in ("momentum", "adagrad", "rmsprop", "adam"):
        assert _sign_changes(paths[name]) <= 4, name


def test_every_optimizer_gets_closer_to_the_minimum():
    f = ex.parse_function("x**2 / 20 + y**2")
    for name, p in ex.trajectories().items():
        assert f(*p[-1]) < 0.1 * f(*p[0]), name


def test_trajectories_take_any_function_and_start():
    p = ex.trajectories({"sgd": 0.1}, "(x - 1)**2 + (y + 2)**2", start=(0.0, 0.0), steps=100)["sgd"]
    np.testing.assert_allclose(p[-1], [1.0, -2.0], atol=1e-6)


@pytest.mark.parametrize("expr, match", [("x +", "cannot parse"), ("os.system('x')", "unknown names"),
                                         ("log(x - 1)", "not finite")])
def test_bad_functions_are_named(expr, match):
    with pytest.raises(ValueError, match=match):
        ex.parse_function(expr)


def test_smooth_curve_keeps_length_and_smooths():
    noisy = np.r_[np.ones(50), np.zeros(50)] + np.random.default_rng(0).normal(0, 0.3, 100)
    s = ex.smooth_curve(noisy)
    assert len(s) == 100 and np.std(np.diff(s)) < np.std(np.diff(noisy)) / 3


def test_sgd_ends_with_the_highest_loss_on_mnist(mnist):
    c = ex.compare_optimizers(mnist, {"sgd": 0.01, "momentum": 0.01, "adagrad": 0.01, "adam": 0.001},
                              iterations=300, progress=False)
    final = {k: ex.smooth_curve(v)[-1] for k, v in c.series.items()}
    assert max(final, key=final.get) == "sgd", final


def test_he_init_trains_the_relu_net_where_std_001_does_not(mnist):
    c = ex.compare_init(mnist, iterations=300, progress=False)
    final = {k: ex.smooth_curve(v)[-1] for k, v in c.series.items()}
    assert final["std=0.01"] > 2.25  # still log(10): nothing learned
    assert final["he"] < 1.0 and final["he"] < final["xavier"]


def test_sigmoid_activations_polarize_with_std_1_bunch_with_001_and_spread_with_xavier():
    sig = ex.activation_histograms("sigmoid")
    last = {k: v[-1] for k, v in sig.items()}
    assert np.mean((last["std=1"] < 0.1) | (last["std=1"] > 0.9)) > 0.5  # near 0 and 1: vanishing gradients
    assert np.std(last["std=0.01"]) < 0.03  # all near 0.5: the units act alike
    assert np.std(last["xavier"]) > 0.1


def test_relu_activations_vanish_with_001_shrink_with_xavier_and_hold_with_he():
    relu = {k: [float(np.mean(a)) for a in v] for k, v in ex.activation_histograms("relu").items()}
    assert relu["std=0.01"][-1] < 1e-3
    assert relu["xavier"][-1] < 0.5 * relu["xavier"][0]
    assert 0.5 < relu["he"][-1] / relu["he"][0] < 2


def test_batchnorm_learns_faster_at_most_weight_scales(mnist):
    res = ex.compare_batchnorm(mnist, scales=[1.0, 0.05, 0.002, 1e-4], epochs=10, progress=False)
    wins = sum(r["batchnorm"][-1] > r["plain"][-1] for r in res.values())
    assert wins >= 3, {s: (r["batchnorm"][-1], r["plain"][-1]) for s, r in res.items()}


def test_weight_decay_and_dropout_narrow_the_train_test_gap(mnist):
    res = ex.compare_regularization(mnist, epochs=60, progress=False)
    gap = {k: r["train"][-1] - r["test"][-1] for k, r in res.items()}
    assert gap["weight decay 0.1"] < gap["none"] and gap["dropout 0.15"] < gap["none"], gap


def test_random_search_is_sorted_seeded_and_in_range():
    from accelnet.data import synthetic

    data = synthetic(300, 50, (784,), seed=0)
    a = ex.random_search(data, trials=4, epochs=2, train_size=200, progress=False)
    b = ex.random_search(data, trials=4, epochs=2, train_size=200, progress=False)
    assert a == b
    assert [r["val_acc"] for r in a] == sorted((r["val_acc"] for r in a), reverse=True)
    assert all(1e-6 <= r["lr"] <= 1e-2 and 1e-8 <= r["weight_decay"] <= 1e-4 for r in a)


# -- the commands, at tiny sizes: files written, numbers sane, same seed same numbers ----------------

TINY = {
    "trajectories": (["compare", "trajectories", "--steps", "5"], ["trajectories.csv"], ["trajectories.png"]),
    "optimizers": (["compare", "optimizers", "--iterations", "20", "--dataset", "synthetic"], ["optimizers.csv"],
                   ["optimizers.png"]),
    "init": (["compare", "init", "--iterations", "20", "--dataset", "synthetic"], ["init.csv", "init_activations.csv"],
             ["init.png", "init_histograms_sigmoid.png", "init_histograms_relu.png"]),
    "batchnorm": (["compare", "batchnorm", "--epochs", "2", "--scales", "2", "--train-size", "200", "--dataset",
                   "synthetic"], ["batchnorm.csv"], ["batchnorm.png"]),
    "regularization": (["compare", "regularization", "--epochs", "3", "--dataset", "synthetic"],
                       ["regularization.csv"], ["regularization.png"]),
    "tune": (["tune", "--trials", "3", "--epochs", "2", "--train-size", "200", "--dataset", "synthetic"],
             ["tune.csv"], ["tune.png"]),
}


def _read_csv(path):
    import csv

    with open(path) as f:
        return list(csv.reader(f))


@pytest.mark.parametrize("name", sorted(TINY))
def test_command_writes_csv_and_png_deterministically(name, tmp_path, capsys):
    argv, csvs, pngs = TINY[name]
    for run in ("a", "b"):
        assert main([*argv, "--out", str(tmp_path / run), "--no-progress", "--seed", "3"]) == 0
    for f in csvs:
        rows = _read_csv(tmp_path / "a" / f)
        assert len(rows) > 1
        assert rows == _read_csv(tmp_path / "b" / f)  # same seed, same numbers
        numbers = [float(v) for r in rows[1:] for v in r if v.replace(".", "", 1).replace("e-", "").isdigit()]
        assert all(np.isfinite(numbers))
    pytest.importorskip("matplotlib")
    for f in pngs:
        assert (tmp_path / "a" / f).read_bytes()[:4] == b"\x89PNG"


def test_without_matplotlib_commands_write_csv_and_say_the_plot_was_skipped(tmp_path, capsys, monkeypatch):
    import accelnet.compare

    monkeypatch.setattr(accelnet.compare, "have_matplotlib", lambda: False)
    assert main(["compare", "trajectories", "--out", str(tmp_path), "--no-progress"]) == 0
    assert (tmp_path / "trajectories.csv").exists() and not (tmp_path / "trajectories.png").exists()
    assert "plot skipped" in capsys.readouterr().err


def test_a_different_seed_gives_different_numbers(tmp_path):
    for seed in ("1", "2"):
        assert main(["compare", "optimizers", "--iterations", "10", "--dataset", "synthetic", "--optimizers", "sgd",
                     "--out", str(tmp_path / seed), "--no-progress", "--seed", seed]) == 0
    assert _read_csv(tmp_path / "1" / "optimizers.csv") != _read_csv(tmp_path / "2" / "optimizers.csv")


def test_bad_optimizer_spec_is_one_line(capsys):
    assert main(["compare", "trajectories", "--optimizers", "sgd=fast"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "the lr of sgd must be a positive finite number" in err[0]


def test_a_bare_optimizer_name_takes_the_books_lr_for_that_experiment():
    from accelnet.cli import build_parser

    traj = build_parser().parse_args(["compare", "trajectories", "--optimizers", "sgd,adam=0.5"])
    mnist = build_parser().parse_args(["compare", "optimizers", "--optimizers", "sgd,nesterov"])
    assert traj.optimizers == {"sgd": 0.95, "adam": 0.5}
    assert mnist.optimizers == {"sgd": 0.01, "nesterov": 0.01}

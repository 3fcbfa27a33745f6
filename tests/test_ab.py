"""``accelnet bench ab``: the statistics of its verdict, the foreign-load probe, and one real A/B
of this repository against itself (built from git, timed in fresh processes)."""

import json
import math
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from accelnet import ab
from accelnet.cli import main

ROOT = Path(__file__).resolve().parents[1]
has_git = shutil.which("git") is not None and (ROOT / ".git").exists()


@pytest.mark.parametrize("n,c", [(6, 1), (10, 9), (20, 53)])
def test_the_interval_cuts_the_walsh_averages_at_the_signed_rank_critical_value(n, c):
    # C from Hollander & Wolfe's table of the signed-rank statistic, two-sided 95%
    walsh = sorted((i + j) / 2 for i in range(n) for j in range(i, n))
    assert ab.signed_rank_interval(list(range(n))) == (walsh[c - 1], walsh[len(walsh) - c])


def test_fewer_than_six_rounds_give_no_interval_and_no_verdict():
    assert ab.signed_rank_interval([1.0, 1.1, 1.2, 1.3, 1.4]) == (-math.inf, math.inf)
    assert _result([1.5, 1.6, 1.7, 1.5, 1.6]).regressions == []


def test_the_interval_covers_the_centre_95_percent_of_the_time():
    rng = random.Random(0)
    covered = 0
    for _ in range(2000):
        lo, hi = ab.signed_rank_interval([rng.gauss(0.1, 0.05) for _ in range(12)])
        covered += lo <= 0.1 <= hi
    assert 0.93 <= covered / 2000 <= 0.97


def test_the_hodges_lehmann_estimate_ignores_one_wild_round():
    assert ab.hodges_lehmann([1.0, 1.01, 0.99, 1.0, 1.02, 0.98, 5.0]) == pytest.approx(1.005, abs=0.01)


@pytest.mark.parametrize("low,high,expected", [(1.06, 1.2, "regression"), (1.04, 1.2, "slower"), (0.8, 0.94, "improvement"),
                                               (0.8, 0.96, "faster"), (0.97, 1.03, "same"), (0.99, 1.2, "same")])
def test_the_verdict_needs_the_whole_interval_past_the_threshold(low, high, expected):
    assert ab.verdict(low, high, 0.05) == expected


def _result(ratios, threshold=0.05):
    r = ab.ABResult("base", "head", ["w"], threshold)
    r.rounds = [{"base": {"w": 1.0}, "head": {"w": x}, "load": [0, 0], "quiet": True} for x in ratios]
    return r


def test_a_steady_ten_percent_slowdown_is_a_regression_and_noise_is_not():
    rng = random.Random(1)
    slow = _result([1.10 * math.exp(rng.gauss(0, 0.02)) for _ in range(10)])
    same = _result([math.exp(rng.gauss(0, 0.02)) for _ in range(10)])
    assert slow.regressions == ["w"] and slow.summary("w")["ratio"] == pytest.approx(1.1, rel=0.03)
    assert same.regressions == [] and same.summary("w")["verdict"] == "same"


def test_each_side_is_written_in_pytest_benchmarks_format():
    doc = _result([1.1, 1.2, 1.0]).pytest_benchmark_json("head")
    (bench,) = doc["benchmarks"]
    assert bench["name"] == "w" and bench["stats"]["rounds"] == 3 and bench["stats"]["median"] == 1.1
    assert {"machine_info", "commit_info", "datetime", "version"} <= set(doc)


@pytest.mark.skipif(not Path("/proc/stat").exists(), reason="reads /proc/stat (Linux)")
def test_a_busy_process_is_seen_as_foreign_load():
    _, idle = ab.foreign_load(lambda: time.sleep(0.5))
    spin = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.2)
        _, busy = ab.foreign_load(lambda: time.sleep(1.0))
    finally:
        spin.kill()
        spin.wait()
    cpus = __import__("os").cpu_count()
    assert busy >= 0.7 / cpus and busy > idle


@pytest.mark.skipif(not has_git, reason="needs git and this repository's history")
def test_an_unknown_revision_is_one_error(capsys):
    assert main(["bench", "ab", "no-such-revision", "--repo", str(ROOT)]) == 2
    assert "'no-such-revision' is not a commit of the repository" in capsys.readouterr().err


@pytest.mark.parametrize("spec", ["step:resnet", "adam:lots", "step:deep_convnet:0", "lion:1e6", "predict:resnet:1",
                                  "predict:two_layer_net:x"])
def test_a_workload_that_does_not_exist_is_one_error(spec, capsys):
    assert main(["bench", "ab", "HEAD", "--repo", str(ROOT), "--workloads", spec]) == 2
    assert f"workload {spec!r}: expected step:PRESET[:BATCH]" in capsys.readouterr().err


def test_outside_a_git_repository_is_one_error(tmp_path, capsys):
    assert main(["bench", "ab", "HEAD", "--repo", str(tmp_path)]) == 2
    assert "is not in a git repository with commits (--repo)" in capsys.readouterr().err


@pytest.mark.skipif(not has_git, reason="needs git and this repository's history")
def test_an_ab_run_of_head_against_the_working_tree_writes_its_reports(tmp_path):
    out = tmp_path / "out"
    done = subprocess.run([sys.executable, "-m", "accelnet.cli", "bench", "ab", "HEAD", "--repo", str(ROOT),
                           "--workloads", "adam:1e4,step:two_layer_net:10,predict:two_layer_net:3", "--min-rounds", "2", "--max-rounds", "2",
                           "--min-time", "0.01", "--out", str(out), "--cache", str(tmp_path / "cache")],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    doc = json.loads((out / "ab.json").read_text())
    assert len(doc["rounds"]) == 2 and [s["workload"] for s in doc["summaries"]] == [
        "adam:1e4", "step:two_layer_net:10", "predict:two_layer_net:3"]
    assert doc["base"].startswith("HEAD (") and doc["head"] == "working tree"
    assert "| adam:1e4 |" in (out / "ab.md").read_text()
    compare = subprocess.run([str(Path(sys.executable).with_name("pytest-benchmark")), "compare", str(out / "base.json"),
                              str(out / "head.json")], capture_output=True, text=True)
    assert compare.returncode == 0 and "adam:1e4" in compare.stdout, compare.stderr


def test_a_run_stops_at_max_rounds_at_its_budget_or_once_every_workload_is_decided():
    rng = random.Random(2)
    slow = _result([1.2 * math.exp(rng.gauss(0, 0.01)) for _ in range(8)])
    assert ab.finished(slow, min_rounds=8, max_rounds=20, budget_s=None)  # decided: clearly a regression
    assert not ab.finished(slow, min_rounds=9, max_rounds=20, budget_s=None)  # not before min_rounds
    unsure = _result([1.02, 1.08, 1.03, 1.07, 1.05, 1.04, 1.06, 1.05])  # astride the threshold
    assert not ab.finished(unsure, 8, 20, None)
    assert ab.finished(unsure, 8, 8, None)
    unsure.seconds = 301.0
    assert ab.finished(unsure, 8, 20, budget_s=300)


def test_the_false_alarm_replay_cuts_a_stream_where_the_stopping_rule_stops():
    import sys as _sys

    _sys.path.insert(0, str(ROOT / "bench"))
    import ab_false_alarms

    rng = random.Random(3)
    rounds = [{"base": {"w": 1.0}, "head": {"w": math.exp(rng.gauss(0, 0.01))}, "load": 0.0, "quiet": True,
               "seconds": 5.0} for _ in range(50)]
    doc = {"workloads": ["w"], "rounds": rounds}
    runs = ab_false_alarms.consecutive(doc, 0.05, (8, 20, None))
    assert [len(r.rounds) for r in runs] == [8] * 6  # each decided 'same' at its 8th round; 2 left over
    assert not any(r.regressions for r in runs)
    res = ab_false_alarms.resampled(doc, 0.05, (8, 20, None), 20, slow={"w": 1.3})
    assert all(r.regressions == ["w"] for r in res)

"""``accelnet bench ab`` with its default settings never flags one revision against itself and
always flags a real ~10% slowdown of deep_convnet's step (10 runs each; about 20 minutes)."""

import shutil
from pathlib import Path

import pytest

import ab_power

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(shutil.which("git") is None or not (Path(ab_power.ROOT) / ".git").exists(),
                                 reason="needs git and this repository's history")]


@pytest.fixture(scope="module")
def runs():
    return ab_power.power(runs=10, passes=(8,))


def test_a_revision_against_itself_is_never_a_regression(runs):
    verdicts = [s["verdict"] for run in runs["A/A"] for s in run]
    assert verdicts.count("regression") == 0, ab_power.report(runs)


def test_eight_extra_passes_over_the_activations_are_a_regression_every_time(runs):
    summaries = [s for run in runs["A/B +8 passes"] for s in run]
    assert all(s["verdict"] == "regression" for s in summaries), ab_power.report(runs)
    assert all(1.05 < s["ratio"] < 1.2 for s in summaries)  # the slowdown is the ~10% it is meant to be

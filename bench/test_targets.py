"""The optimizer issue's speed targets, as ratios measured in one run (`pytest bench -m slow`)."""

import pytest

from accelnet import workloads

pytestmark = pytest.mark.slow


def _best(w, rounds=3):
    return min(workloads.measure(w, min_time=0.3).median for _ in range(rounds))


def test_fused_adam_at_1e7_moves_at_least_85_percent_of_triad_bandwidth():
    n = 10**7
    triad, inplace = workloads.triad(n), workloads.triad(n, inplace=True)
    adam = workloads.optimizer_update("adam", n)
    gbps = adam.nbytes / _best(adam)
    frac = gbps / (triad.nbytes / _best(triad))
    frac_inplace = gbps / (inplace.nbytes / _best(inplace))
    print(f"fused Adam at 1e7: {gbps / 1e9:.1f} GB/s, {frac:.0%} of the STREAM triad, {frac_inplace:.0%} of the "
          f"in-place triad")
    assert frac >= 0.85


def test_fused_adam_over_1e5_params_in_20_tensors_is_5x_faster_than_the_reference():
    fused = _best(workloads.optimizer_update("adam", 10**5, "flat", "fused"))
    ref = _best(workloads.optimizer_update("adam", 10**5, "tensors", "reference"))
    print(f"fused flat {fused * 1e6:.0f} us vs reference over 20 tensors {ref * 1e6:.0f} us: {ref / fused:.1f}x")
    assert ref / fused >= 5


def test_every_3x3_conv_with_16_or_more_input_channels_runs_each_pass_at_75_percent_of_sgemm():
    """Issue 18's target: deep_convnet's convolutions (what runs in CPU training: direct, fused)
    at >= 75% of the float32 sgemm rate measured in the same run, in effective GFLOP/s."""
    rate, rows = workloads.conv_rates(100, "cpu", min_time=0.5)
    shares = {f"{r['conv']} {p}": r[f"{p} % sgemm"] for r in rows if not r["conv"].startswith("1->")
              for p in ("fwd", "dW", "dx") if f"{p} % sgemm" in r}
    print(f"sgemm {rate:.0f} GFLOP/s; " + ", ".join(f"{k}: {v:.0f}%" for k, v in shares.items()))
    assert len(shares) == 15 and min(shares.values()) >= 75, shares

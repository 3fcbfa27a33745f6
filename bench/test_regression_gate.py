"""The CI regression gate: ratios measured in the same run, never absolute times."""

from accelnet import workloads


def _interleaved_best(a, b, rounds=5):
    """Median-of-runs for each workload, taking the best of interleaved rounds (noise only slows)."""
    ta, tb = [], []
    for _ in range(rounds):
        ta.append(workloads.measure(a, min_time=0.05).median)
        tb.append(workloads.measure(b, min_time=0.05).median)
    return min(ta), min(tb)


def test_fused_adam_is_at_least_3x_faster_than_the_reference():
    n = 10**6
    fused, ref = _interleaved_best(workloads.optimizer_update("adam", n, "flat", "fused"),
                                   workloads.optimizer_update("adam", n, "flat", "reference"))
    speedup = ref / fused
    print(f"fused Adam at N=1e6: {fused * 1e3:.3f} ms, reference {ref * 1e3:.3f} ms, {speedup:.1f}x")
    assert speedup >= 3.0, f"fused Adam only {speedup:.2f}x faster than the reference (gate: 3x)"

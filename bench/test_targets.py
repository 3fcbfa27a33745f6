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


@pytest.mark.parametrize("kernel", ["im2col", "col2im"])
def test_kernel_at_simple_convnet_shape_is_4x_faster_than_the_reference(kernel):
    make = getattr(workloads, kernel)
    fused = _best(make("simple_convnet.conv1", "fused"))
    ref = _best(make("simple_convnet.conv1", "reference"))
    print(f"{kernel} (100, 1, 28, 28) k5: {fused * 1e3:.2f} ms vs reference {ref * 1e3:.2f} ms: {ref / fused:.1f}x")
    assert ref / fused >= 4

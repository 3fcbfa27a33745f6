"""The profiling scripts run and report every part (tiny batches: a smoke test, not a timing)."""

import profile_convs
import profile_step


def test_profile_convs_times_each_of_deep_convnets_convs():
    rows = profile_convs.profile(batch=2, reps=1)
    assert [r["conv"].split()[0] for r in rows] == ["1->16", "16->16", "16->32", "32->32", "32->64", "64->64"]
    assert all(r["forward_ms"] > 0 and r["backward_ms"] > 0 and r["gflop"] > 0 for r in rows)


def test_profile_step_unfused_shows_the_relu_and_pool_layers_the_fused_net_folds_in():
    fused = [part for part, _, _ in profile_step.profile("deep_convnet", batch=2, steps=1, warmup=1)]
    split = [part for part, _, _ in profile_step.profile("deep_convnet", batch=2, steps=1, warmup=1, fused=False)]
    assert not any(p.startswith("maxpool") for p in fused)
    assert sum(p.startswith("maxpool") for p in split) == 3 and sum(p.startswith("relu") for p in split) == 7
    assert fused[-2:] == split[-2:] == ["loss", "adam"]


def test_profile_subnormals_times_both_settings():
    import profile_subnormals

    res = profile_subnormals.profile("two_layer_net", rounds=1, steps=1)
    assert set(res) == {"scoped", "thread-wide"} and all(v > 0 for v in res.values())

"""The profiling scripts run and report every part (tiny batches: a smoke test, not a timing)."""

import re

import pytest

import profile_convs
import profile_step


def test_profile_convs_rates_each_pass_of_deep_convnets_convs_against_sgemm(capsys):
    profile_convs.main(["--batch", "4", "--min-time", "0.01"])
    out = capsys.readouterr().out
    assert re.search(r"^sgemm \(float32, 1024\^3, in this run\): \d+ GFLOP/s$", out, re.M)
    assert "fwd % sgemm" in out and "dW % sgemm" in out and "dx % sgemm" in out
    rows = [line.split() for line in out.splitlines() if re.match(r"\d+->\d+ ", line)]
    assert [r[0] for r in rows] == ["1->16", "16->16", "16->32", "32->32", "32->64", "64->64"]
    assert len(rows[0]) == 4 + 6  # the first conv computes no dL/dx: forward and weight gradient only


def test_profile_step_unfused_shows_the_relu_and_pool_layers_the_fused_net_folds_in():
    fused = [part for part, _, _ in profile_step.profile("deep_convnet", batch=2, steps=1, warmup=1)]
    split = [part for part, _, _ in profile_step.profile("deep_convnet", batch=2, steps=1, warmup=1, fused=False)]
    assert not any(p.startswith(("maxpool", "relu")) for p in fused)
    assert sum(p.startswith("maxpool") for p in split) == 3 and sum(p.startswith("relu") for p in split) == 7
    assert fused[-2:] == split[-2:] == ["loss", "adam"]


def test_profile_step_host_reports_synced_and_unsynced_step_times_and_the_top_functions(capsys):
    profile_step.main(["two_layer_net", "--batch", "4", "--steps", "3", "--host"])
    out = capsys.readouterr().out
    assert re.search(r"two_layer_net, batch 4, cpu: [\d.]+ ms per step synchronized, [\d.]+ ms unsynchronized", out)
    assert "tottime" in out and "backward" in out  # cProfile's table, the model's functions in it


def test_profile_step_refuses_unfused_for_a_preset_with_nothing_fused(capsys):
    with pytest.raises(SystemExit):
        profile_step.main(["two_layer_net", "--unfused"])
    assert "--unfused: two_layer_net has nothing fused" in capsys.readouterr().err


def test_profile_subnormals_times_both_settings():
    import profile_subnormals

    res = profile_subnormals.profile("two_layer_net", rounds=1, steps=1)
    assert set(res) == {"scoped", "thread-wide"} and all(v > 0 for v in res.values())


def test_profile_peer_faults_times_pytorch_fresh_and_after_a_bigger_batch(capsys):
    pytest.importorskip("torch", reason="PyTorch is not installed (pip install 'accelnet[peer]')")
    import profile_peer_faults

    profile_peer_faults.main(["--preset", "two_layer_net", "--batch", "2", "--first", "4", "--runs", "1"])
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2 and "fresh process" in lines[0] and "after batch 4" in lines[1]
    assert all(re.search(r"\d+\.\d ms, \d+ page faults per step$", line) for line in lines)


def test_gpu_check_writes_every_part_of_its_report(tmp_path):
    """The GPU check's code runs (on the CPU, tiny sizes, synthetic data) and reports each part."""
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).with_name("gpu_check.py")
    res = subprocess.run([sys.executable, str(script), str(tmp_path), "--backend", "cpu", "--quick"],
                         capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    report = (tmp_path / "gpu_check.md").read_text()
    for part in ("## accelnet info", "## pytest", "## Benchmarks", "## Two epochs of simple_convnet",
                 "## The host's side of a step", "## Targets"):
        assert part in report
    assert "failed:" not in report, report
    assert "| adam (fused) |" in report and "| deep_convnet | 8 |" in report and "| cpu | 1 |" in report
    assert "ms per step synchronized" in report and "tottime" in report
    assert report.count("| met |") + report.count("| NOT met |") == 5, report


def test_distributed_scaling_reports_every_preset_for_one_and_two_ranks(tmp_path, capsys):
    import importlib.util
    import json

    import pytest

    import distributed_scaling

    if importlib.util.find_spec("mpi4py") is None:
        pytest.skip("mpi4py is not installed: pip install 'accelnet[mpi]'")
    distributed_scaling.main(["--runs", "1", "--steps", "1", "--batch", "4", "--json", str(tmp_path / "runs.json")])
    table = capsys.readouterr().out
    assert all(f"| {name} |" in table for name in distributed_scaling.PRESETS)
    runs = json.loads((tmp_path / "runs.json").read_text())
    assert sorted(runs) == ["1", "2"] and runs["2"][0]["ranks"] == 2
    distributed_scaling.main(["--model", str(tmp_path / "runs.json")])
    model = capsys.readouterr().out
    assert all(f"| {name} |" in model for name in distributed_scaling.PRESETS) and "4 nodes x 8 GPUs" in model


def test_laptop_cpu_holds_accelnet_and_pytorch_to_avx2_and_reports_every_preset(capsys):
    import laptop_cpu

    laptop_cpu.main(["--runs", "1", "--batches", "2", "--rounds", "1"])  # exits naming the setting that did not take
    out = capsys.readouterr().out
    assert "'openblas': 'Haswell'" in out and "'vector_bytes': 32" in out
    rows = [line for line in out.splitlines() if line.startswith("| ") and "| 2 |" in line]
    assert len(rows) == (4 if "'torch': 'AVX2'" in out else 0)


def test_laptop_cpu_names_a_setting_that_did_not_take():
    import pytest

    import laptop_cpu

    with pytest.raises(SystemExit, match="'openblas': 'SkylakeX'"):
        laptop_cpu.check_isa({"openblas": "SkylakeX", "numba_cpu": "haswell", "vector_bytes": 32, "torch": "AVX2"})


def test_profile_winograd_times_each_winograd_conv_against_the_direct_kernels(capsys):
    import profile_winograd

    profile_winograd.main(["--batches", "2", "--reps", "1"])
    rows = [line.split() for line in capsys.readouterr().out.splitlines() if re.match(r"\d+->\d+ ", line)]
    assert [r[0] for r in rows] == ["16->16", "16->32", "32->32", "32->64", "64->64"]
    assert all(re.fullmatch(r"\d+\.\d\d", r[-3]) and r[-2] == "/" for r in rows)


def test_winograd_error_prints_both_inputs(capsys, monkeypatch):
    import winograd_error

    from accelnet import workloads

    calls = []
    monkeypatch.setattr(workloads, "conv_errors", lambda inputs, batch, data: calls.append(inputs) or [
        {"conv": "16->16 28x28 pad 1", "pass": "forward", "direct": 2e-7, "winograd": 1.5e-7, "ratio": 0.75}])
    winograd_error.main(["--batch", "2"])
    assert calls == ["random", "mnist"] and capsys.readouterr().out.count("16->16 28x28 pad 1") == 2


def test_profile_products_times_each_product_three_ways_and_names_what_matmul_picks(capsys):
    import profile_products

    profile_products.main(["--batches", "100", "--repeat", "1"])
    out = capsys.readouterr().out
    assert "| 100x784 @ 784x100 | 15.68 |" in out and "| gemm |" in out and "| OpenBLAS 1 |" in out


def test_profile_products_compares_gemm_thresholds_in_whole_steps(capsys):
    import profile_products

    profile_products.main(["--gemm", "inf,1e6", "--presets", "two_layer_net", "--batches", "100", "--repeat", "1"])
    out = capsys.readouterr().out
    assert "| inf MFLOP | 1 MFLOP |" in out and re.search(r"\| two_layer_net \| 100 \| [\d.]+ ms \| [\d.]+x \|", out)


def test_profile_register_block_times_every_block_and_checks_their_products():
    import profile_register_block

    rows = profile_register_block.measure(m=48, k=16, n=64, repeats=1, calls=2)
    assert [r["block"] for r in rows] == ["8 x 2", "6 x 2", "4 x 2"] and all(r["GFLOP/s"][0] > 0 for r in rows)

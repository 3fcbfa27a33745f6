"""Data-parallel training under a real ``mpiexec`` (the mpich wheel's) with 2 ranks: the same
parameters as one process, synchronized batch norm, sharded evaluation, exact resume, resume on
another number of ranks, faults. Each test launches real processes; they skip when mpi4py or
mpiexec is not installed (``pip install 'accelnet[mpi]'``)."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import distributed_cases
from accelnet import distributed
from accelnet.checkpoint import describe_checkpoint, load_checkpoint
from accelnet.data import BatchIterator

MPIEXEC = shutil.which("mpiexec", path=str(Path(sys.executable).parent)) or shutil.which("mpiexec")
needs_mpi = pytest.mark.skipif(importlib.util.find_spec("mpi4py") is None or MPIEXEC is None,
                               reason="mpi4py and mpiexec are not installed: pip install 'accelnet[mpi]'")
CASES_SCRIPT = Path(distributed_cases.__file__)


def _env(data_dir) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PMI_", "MPI_LOCAL", "OMPI_", "PMIX_"))}
    env["ACCELNET_DATA"] = str(data_dir)
    return env


def mpiexec(n: int, args, data_dir, timeout: float = 300, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([MPIEXEC, "-n", str(n), *map(str, args)], capture_output=True, text=True, timeout=timeout,
                          env=_env(data_dir), **kw)


def train(n: int, data_dir, *flags, **kw) -> subprocess.CompletedProcess:
    """``mpiexec -n n accelnet train FLAGS`` (no progress bars)."""
    return mpiexec(n, [sys.executable, "-m", "accelnet.cli", "train", "--no-progress", *flags], data_dir, **kw)


def _params(path) -> dict:
    return load_checkpoint(path)["state"]["model"]


# -- the same computation as one process -----------------------------------------------------

@pytest.fixture(scope="module")
def two_ranks(data_dir, tmp_path_factory):
    """Every case of distributed_cases.py run once by 2 ranks: {case: results}."""
    if importlib.util.find_spec("mpi4py") is None or MPIEXEC is None:
        pytest.skip("mpi4py and mpiexec are not installed: pip install 'accelnet[mpi]'")
    out = tmp_path_factory.mktemp("two_ranks")
    done = mpiexec(2, [sys.executable, CASES_SCRIPT, out], data_dir)
    assert done.returncode == 0, done.stderr[-3000:]
    results = {case[0]: dict(np.load(out / f"{case[0]}.npz")) for case in distributed_cases.CASES}
    results["replica_mismatch"] = (out / "replica_mismatch.txt").read_text().split("\n")
    results["dropout_masks"] = (out / "dropout_masks.txt").read_text().split("\n")
    return results


@pytest.fixture(scope="module")
def one_process(data_dir):
    os.environ.setdefault("ACCELNET_DATA", str(data_dir))
    return {case[0]: distributed_cases.run_case(case) for case in distributed_cases.CASES}


PARITY = [c[0] for c in distributed_cases.CASES if not c[0].startswith("sync_batchnorm")]


@needs_mpi
@pytest.mark.parametrize("case", PARITY)
def test_two_ranks_with_global_batch_100_equal_one_process_after_20_steps(case, two_ranks, one_process):
    atol = 1e-12 if case.endswith("float64") else 1e-5
    np.testing.assert_allclose(two_ranks[case]["params"], one_process[case]["params"], rtol=0, atol=atol)


@needs_mpi
def test_sync_batchnorm_on_two_ranks_equals_batchnorm_in_one_process(two_ranks, one_process):
    case = "sync_batchnorm-float64"
    np.testing.assert_allclose(two_ranks[case]["params"], one_process[case]["params"], rtol=0, atol=1e-12)


@needs_mpi
@pytest.mark.parametrize("case", [c[0] for c in distributed_cases.CASES])
def test_sharded_evaluation_equals_one_process(case, two_ranks, one_process):
    assert float(two_ranks[case]["test_acc"]) == one_process[case]["test_acc"]


@needs_mpi
@pytest.mark.parametrize("case", ["two_layer_net-float64", "simple_convnet-float64"])
def test_the_loss_two_ranks_record_is_the_global_batch_loss(case, two_ranks, one_process):
    assert float(two_ranks[case]["loss"]) == pytest.approx(one_process[case]["loss"], rel=1e-12)


@needs_mpi
def test_dropout_masks_differ_by_rank(two_ranks):
    masks = two_ranks["dropout_masks"]
    assert len(masks) == 2 and masks[0] != masks[1]


@needs_mpi
def test_a_replica_that_drifted_is_reported_on_every_rank(two_ranks):
    messages = two_ranks["replica_mismatch"]
    assert len(messages) == 2 and all("replicas differ" in m and "rank 1 holds" in m for m in messages)


# -- the command line -----------------------------------------------------------------------

MLP = ("--model", "multi_layer_net", "--dtype", "float64")


@needs_mpi
def test_rank_0_alone_prints_and_writes_the_checkpoint_and_history(tmp_path, data_dir):
    ck, hist = tmp_path / "run.npz", tmp_path / "history.jsonl"
    done = train(2, data_dir, "--model", "two_layer_net", "--iterations", "40", "--checkpoint", ck, "--history", hist)
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("final test accuracy") == 1 and "2 ranks (mpi, 50 samples each)" in done.stdout
    (line,) = hist.read_text().splitlines()
    assert isinstance(json.loads(line)["loss"], float)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["history.jsonl", "run.npz"]
    assert load_checkpoint(ck)["state"]["world_size"] == 2


@needs_mpi
def test_a_resumed_two_rank_run_is_bitwise_the_uninterrupted_one(tmp_path, data_dir):
    # dropout and per-rank batch norm: each rank's RNG and statistics are part of the checkpoint
    flags = (*MLP, "--dropout", "0.2", "--batchnorm")
    straight, split = tmp_path / "straight.npz", tmp_path / "split.npz"
    assert train(2, data_dir, *flags, "--iterations", "90", "--checkpoint", straight).returncode == 0
    assert train(2, data_dir, *flags, "--iterations", "30", "--checkpoint", split).returncode == 0
    done = train(2, data_dir, *flags, "--iterations", "90", "--checkpoint", split, "--resume")
    assert done.returncode == 0, done.stderr
    a, b = load_checkpoint(straight)["state"], load_checkpoint(split)["state"]
    assert all(np.array_equal(a["model"][k], b["model"][k]) for k in a["model"])
    assert a["history"][-1]["loss"] == b["history"][-1]["loss"]


@needs_mpi
@pytest.mark.parametrize("first,then", [(2, 1), (1, 2)])
def test_resuming_on_another_number_of_ranks_continues_the_run_with_a_note(first, then, tmp_path, data_dir):
    flags = (*MLP, "--batchnorm", "--sync-batchnorm")
    straight, split = tmp_path / "straight.npz", tmp_path / "split.npz"
    assert train(first, data_dir, *flags, "--iterations", "60", "--checkpoint", straight).returncode == 0
    assert train(first, data_dir, *flags, "--iterations", "20", "--checkpoint", split).returncode == 0
    done = train(then, data_dir, *flags, "--iterations", "60", "--checkpoint", split, "--resume")
    assert done.returncode == 0, done.stderr
    assert f"note: resumed on {then} rank{'s' if then > 1 else ''} from a checkpoint written by {first}" in done.stderr
    a, b = _params(straight), _params(split)
    assert max(float(np.abs(a[k] - b[k]).max()) for k in a) < 1e-10


@needs_mpi
def test_a_global_batch_that_does_not_split_over_the_ranks_is_one_error(data_dir):
    done = train(2, data_dir, "--model", "two_layer_net", "--batch-size", "99", "--iterations", "5")
    assert done.returncode == 2
    assert done.stderr.strip() == ("accelnet: --batch-size 99 (the global batch) does not split evenly over 2 "
                                   "ranks: use a multiple of 2, e.g. 98")


@needs_mpi
def test_ranks_started_with_different_configurations_are_stopped_at_start(data_dir, tmp_path):
    cli = [sys.executable, "-m", "accelnet.cli", "train", "--no-progress", "--model", "two_layer_net", "--iterations",
           "5", "--checkpoint", tmp_path / "run.npz"]
    done = mpiexec(1, [*cli, "--lr", "0.1", ":", "-n", "1", *cli, "--lr", "0.2"], data_dir)
    assert done.returncode == 2
    assert "the ranks were started with different runs: rank 1 has --lr 0.2 where rank 0 has 0.1" in done.stderr
    assert done.stderr.count("accelnet:") == 1 and not (tmp_path / "run.npz").exists()


def _rank_pid(rank: int, marker: str) -> int | None:
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if marker.encode() in cmdline and f"PMI_RANK={rank}".encode() in environ and b"accelnet.cli" in cmdline:
            return int(pid)
    return None


def _start_until_checkpoint(data_dir, ck):
    proc = subprocess.Popen([MPIEXEC, "-n", "2", sys.executable, "-m", "accelnet.cli", "train", "--no-progress",
                             "--model", "two_layer_net", "--epochs", "1000", "--checkpoint", str(ck)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env(data_dir))
    deadline = time.time() + 120
    while not ck.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    assert ck.exists(), proc.communicate()[1] if proc.poll() is not None else "no checkpoint within 120 s"
    return proc


@needs_mpi
@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="finds the rank's process in /proc (Linux)")
def test_a_killed_rank_ends_the_job_within_60_s_and_the_checkpoint_resumes(tmp_path, data_dir):
    ck = tmp_path / "run.npz"
    proc = _start_until_checkpoint(data_dir, ck)
    pid = _rank_pid(1, str(ck))
    assert pid is not None
    time.sleep(0.2)  # mid-epoch
    start = time.time()
    os.kill(pid, signal.SIGKILL)
    try:
        proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        pytest.fail("the job still ran 60 s after one of its ranks was killed")
    assert proc.returncode != 0 and time.time() - start < 60
    at = describe_checkpoint(ck)  # intact
    epoch = load_checkpoint(ck)["state"]["epoch"]
    done = train(2, data_dir, "--model", "two_layer_net", "--epochs", str(epoch + 1), "--checkpoint", ck, "--resume")
    assert done.returncode == 0, done.stderr
    assert f"resumed at epoch {epoch}" in done.stdout and at


@needs_mpi
def test_ctrl_c_to_mpiexec_stops_every_rank_at_the_same_step_with_a_checkpoint(tmp_path, data_dir):
    ck = tmp_path / "run.npz"
    proc = _start_until_checkpoint(data_dir, ck)
    time.sleep(0.2)
    proc.send_signal(signal.SIGINT)  # mpiexec forwards it to the ranks
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130
    assert err.count("accelnet: interrupted: stopped by signal") == 1
    # the ranks agree to stop at a loss read-back (every 20 steps) or an epoch end (600 steps)
    assert load_checkpoint(ck)["state"]["step"] % 20 == 0


# -- without a launcher or an engine ------------------------------------------------------------

def test_without_a_launcher_init_is_the_single_process_world(monkeypatch):
    for k in ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "PMIX_SIZE"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setattr(distributed, "_WORLD", None)
    assert distributed.init("cpu") is distributed.LOCAL


def test_launched_ranks_without_mpi4py_name_the_extra(monkeypatch):
    monkeypatch.setenv("PMI_RANK", "0")
    monkeypatch.setenv("PMI_SIZE", "2")
    monkeypatch.setattr(distributed, "_WORLD", None)
    monkeypatch.setattr(distributed.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(distributed.DistributedUnavailable, match=r"2 ranks, but mpi4py is not installed: "
                                                                  r"pip install 'accelnet\[mpi\]'"):
        distributed.init("cpu")


def test_launched_gpu_ranks_without_nccl_name_the_extra(monkeypatch):
    import types

    monkeypatch.setenv("PMI_RANK", "0")
    monkeypatch.setenv("PMI_SIZE", "2")
    monkeypatch.setattr(distributed, "_WORLD", None)
    monkeypatch.setattr(distributed.importlib.util, "find_spec", lambda name: object())
    cupy = types.ModuleType("cupy")
    cupy.cuda = types.ModuleType("cupy.cuda")
    cupy.cuda.nccl = types.SimpleNamespace(available=False)
    monkeypatch.setitem(sys.modules, "cupy", cupy)
    monkeypatch.setitem(sys.modules, "cupy.cuda", cupy.cuda)
    with pytest.raises(distributed.DistributedUnavailable, match=r"needs NCCL.*accelnet\[nccl-cu12\]"):
        distributed.init("gpu")


def test_more_ranks_than_gpus_on_a_node_is_an_error():
    assert distributed.gpu_for_rank(1, 2, 2) == 1
    with pytest.raises(distributed.DistributedUnavailable, match="3 ranks on this node but 2 GPUs"):
        distributed.gpu_for_rank(0, 3, 2)


@pytest.mark.parametrize("env,world", [
    ({"PMI_RANK": "1", "PMI_SIZE": "4", "MPI_LOCALRANKID": "1", "MPI_LOCALNRANKS": "2"}, (1, 4, 1, 2)),
    ({"OMPI_COMM_WORLD_RANK": "3", "OMPI_COMM_WORLD_SIZE": "4", "OMPI_COMM_WORLD_LOCAL_RANK": "1",
      "OMPI_COMM_WORLD_LOCAL_SIZE": "2"}, (3, 4, 1, 2)),
    ({}, (0, 1, 0, 1)),
])
def test_the_world_is_read_from_the_launchers_environment(env, world):
    assert distributed.launched_world(env) == world


# -- shards ---------------------------------------------------------------------------------------

def test_the_ranks_shards_make_up_the_single_process_batches_in_order():
    x, t = np.arange(1050, dtype=np.float32).reshape(-1, 1), np.arange(1050)
    single = [b for _, b in BatchIterator(x, t, 100, seed=3)]
    shards = [[b for _, b in BatchIterator(x, t, 100, seed=3, rank=r, world=4)] for r in range(4)]
    assert all(len(s) == len(single) == 11 for s in shards)
    for i, batch in enumerate(single):
        np.testing.assert_array_equal(np.concatenate([s[i] for s in shards]), batch)
    assert [len(s[-1]) for s in shards] == [13, 13, 12, 12]


def test_a_last_batch_smaller_than_the_number_of_ranks_is_dropped():
    x, t = np.zeros((1003, 1), np.float32), np.zeros(1003, np.int64)
    assert len(BatchIterator(x, t, 100, world=4)) == 10
    assert len(BatchIterator(x, t, 100, world=2)) == 11


def test_a_global_batch_that_does_not_split_evenly_is_refused():
    with pytest.raises(ValueError, match="global batch size 100 does not split evenly over 3 ranks"):
        BatchIterator(np.zeros((10, 1), np.float32), np.zeros(10, np.int64), 100, world=3)


# -- NCCL -------------------------------------------------------------------------------------------

class _FakeNccl:
    """Records the NCCL calls a communicator makes (the constants are NCCL's own values)."""
    NCCL_FLOAT32, NCCL_FLOAT64, NCCL_INT64, NCCL_SUM = 7, 8, 4, 0

    def __init__(self):
        self.calls = []

    def get_unique_id(self):
        return b"id"

    def NcclCommunicator(self, size, uid, rank):  # noqa: N802 - CuPy's name
        nccl = self

        class Comm:
            def allReduce(self, *args):  # noqa: N802
                nccl.calls.append(("allReduce", *args))

            def bcast(self, *args):
                nccl.calls.append(("bcast", *args))

        self.calls.append(("init", size, uid, rank))
        return Comm()


def _fake_cupy(gpus: int, used: list):
    import types

    stream = types.SimpleNamespace(ptr=1234)
    cuda = types.SimpleNamespace(runtime=types.SimpleNamespace(getDeviceCount=lambda: gpus),
                                 Device=lambda i: types.SimpleNamespace(use=lambda: used.append(i)),
                                 get_current_stream=lambda: stream)
    return types.SimpleNamespace(cuda=cuda)


def _device_array(dtype, n, ptr=99):
    import types

    return types.SimpleNamespace(dtype=np.dtype(dtype), size=n, data=types.SimpleNamespace(ptr=ptr),
                                 flags=types.SimpleNamespace(c_contiguous=True))


@needs_mpi
def test_the_nccl_communicator_reduces_the_buffer_in_place_on_cupys_stream():
    from mpi4py import MPI

    nccl, used = _FakeNccl(), []
    comm = distributed.NCCLCommunicator(MPI.COMM_SELF, cupy=_fake_cupy(1, used), nccl=nccl)
    comm.allreduce(_device_array("float32", 10))
    comm.broadcast(_device_array("float64", 3, ptr=7))
    assert used == [0] and nccl.calls[0] == ("init", 1, b"id", 0)
    assert nccl.calls[1:] == [("allReduce", 99, 99, 10, 7, 0, 1234), ("bcast", 7, 3, 8, 0, 1234)]
    with pytest.raises(ValueError, match="NCCL collectives take C-contiguous arrays"):
        comm.allreduce(_device_array("int8", 3))


def _nccl_ready() -> tuple[bool, str]:
    from accelnet.backend import gpu_status

    ok, reason = gpu_status()
    if not ok:
        return False, f"no GPU: {reason}"
    from cupy.cuda import nccl

    if not getattr(nccl, "available", True):
        return False, f"NCCL not loadable: {distributed.NCCL_HINT}"
    if importlib.util.find_spec("mpi4py") is None:
        return False, "mpi4py is not installed"
    return True, ""


@pytest.mark.gpu
def test_a_one_rank_nccl_communicator_reduces_and_broadcasts_on_the_gpu():
    ok, reason = _nccl_ready()
    if not ok:
        pytest.skip(reason)
    import cupy
    from mpi4py import MPI

    comm = distributed.NCCLCommunicator(MPI.COMM_SELF)
    for dtype in ("float32", "float64"):
        a = cupy.arange(1000, dtype=dtype)
        comm.allreduce(a)
        comm.broadcast(a)
        cupy.cuda.get_current_stream().synchronize()
        assert cupy.array_equal(a, cupy.arange(1000, dtype=dtype))


@pytest.mark.gpu
def test_two_gpu_ranks_equal_one_cpu_process(tmp_path, data_dir):
    ok, reason = _nccl_ready()
    if not ok:
        pytest.skip(reason)
    import cupy

    if cupy.cuda.runtime.getDeviceCount() < 2 or MPIEXEC is None:
        pytest.skip("needs 2 GPUs and mpiexec")
    flags = ("--model", "simple_convnet", "--dtype", "float64", "--iterations", "20")
    gpu, cpu = tmp_path / "gpu.npz", tmp_path / "cpu.npz"
    done = train(2, data_dir, *flags, "--device", "gpu", "--checkpoint", gpu)
    assert done.returncode == 0 and "(nccl," in done.stdout, done.stderr
    assert train(1, data_dir, *flags, "--checkpoint", cpu).returncode == 0
    a, b = _params(gpu), _params(cpu)
    assert max(float(np.abs(a[k] - b[k]).max()) for k in a) < 1e-9


def test_sync_batchnorm_on_a_model_without_batchnorm_is_refused():
    from accelnet.data import synthetic
    from accelnet.optim import SGD
    from accelnet.presets import two_layer_net
    from accelnet.train import Trainer

    model = two_layer_net()
    with pytest.raises(ValueError, match="sync_batchnorm .* applies to models with BatchNorm layers"):
        Trainer(model, SGD(model), synthetic(n_train=100, n_test=10, flatten=True), sync_batchnorm=True)


def _one_rank_comm(device: str):
    from mpi4py import MPI

    return distributed.NCCLCommunicator(MPI.COMM_SELF) if device == "gpu" else distributed.MPICommunicator(MPI.COMM_SELF)


@pytest.mark.parametrize("device", ["cpu", pytest.param("gpu", marks=pytest.mark.gpu)])
def test_a_one_rank_communicator_takes_the_data_parallel_path_and_trains_as_one_process(device, data_dir):
    """Every call of a data-parallel step (the all-reduce of the gradient buffer, synchronized
    batch norm, sharded evaluation, the checksums) on a real communicator of one rank."""
    if importlib.util.find_spec("mpi4py") is None:
        pytest.skip("mpi4py is not installed: pip install 'accelnet[mpi]'")
    if device == "gpu":
        ok, reason = _nccl_ready()
        if not ok:
            pytest.skip(reason)
    os.environ.setdefault("ACCELNET_DATA", str(data_dir))
    from accelnet.optim import Adam
    from accelnet.presets import multi_layer_net
    from accelnet.train import Trainer

    data = distributed_cases.load_data(False)
    runs = []
    for comm in (None, _one_rank_comm(device)):
        model = multi_layer_net(batchnorm=True, dtype="float64", seed=0, backend=device)
        trainer = Trainer(model, Adam(model), data, max_steps=20, progress=False, comm=comm,
                          sync_batchnorm=comm is not None, train_eval_samples=1000, check_every=5)
        trainer.fit()
        assert trainer.parallel == (comm is not None)
        runs.append((model.backend.to_numpy(model.arena.data), trainer.history[-1]))
    (one, h1), (comm_run, h2) = runs
    np.testing.assert_allclose(comm_run, one, rtol=0, atol=1e-12)
    assert h1["test_acc"] == h2["test_acc"] and h1["loss"] == pytest.approx(h2["loss"], rel=1e-12)

"""Per-step time of each preset (forward, backward, Adam) and inference (``model.predict``) at
each batch size, and PyTorch eager as the peer.

All accelnet cases are defined before the PyTorch ones, so they run first: PyTorch's
OpenMP workers keep spinning after it runs and would slow whatever is timed next.
"""

import pytest

from accelnet import workloads
from accelnet.presets import PRESETS
from benchutil import run

STEP_BATCHES = [1, 10, 100, 1000]
PREDICT_BATCHES = [1, 1000]  # latency of one sample, throughput of a large batch

needs_torch = pytest.mark.usefixtures("torch_peer")


@pytest.fixture
def torch_peer():
    pytest.importorskip("torch", reason="PyTorch is not installed (pip install 'accelnet[peer]')")


@pytest.mark.parametrize("batch", STEP_BATCHES)
@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_step_accelnet(benchmark, preset, batch, backend_name):
    run(benchmark, workloads.train_step(preset, batch, backend=backend_name))


@pytest.mark.parametrize("batch", PREDICT_BATCHES)
@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_predict_accelnet(benchmark, preset, batch, backend_name):
    run(benchmark, workloads.predict(preset, batch, backend=backend_name))


@needs_torch
@pytest.mark.parametrize("batch", STEP_BATCHES)
@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_step_torch_peer(benchmark, preset, batch):
    run(benchmark, workloads.peer_train_step(preset, batch))


@needs_torch
@pytest.mark.parametrize("batch", PREDICT_BATCHES)
@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_predict_torch_peer(benchmark, preset, batch):
    run(benchmark, workloads.peer_predict(preset, batch))

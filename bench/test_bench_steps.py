"""Per-step time of each preset (forward, backward, Adam), and PyTorch eager as the peer.

All accelnet cases are defined before the PyTorch ones, so they run first: PyTorch's
OpenMP workers keep spinning after it runs and would slow whatever is timed next.
"""

import pytest

from accelnet import workloads
from accelnet.presets import PRESETS
from benchutil import run


@pytest.mark.parametrize("batch", [100, 1000])
@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_step_accelnet(benchmark, preset, batch, backend_name):
    if batch == 1000 and backend_name == "cpu":
        pytest.skip("batch 1000 is a GPU size")
    run(benchmark, workloads.train_step(preset, batch, backend=backend_name))


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_step_torch_peer(benchmark, preset):
    pytest.importorskip("torch", reason="PyTorch is not installed (pip install 'accelnet[peer]')")
    run(benchmark, workloads.peer_train_step(preset, 100))

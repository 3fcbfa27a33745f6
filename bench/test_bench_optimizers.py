"""Every optimizer update at N = 1e5, 1e6, 1e7: one flat buffer vs ~20 tensors, fused vs reference."""

import pytest

from accelnet import workloads
from benchutil import run


@pytest.mark.parametrize("impl", ["fused", "reference"])
@pytest.mark.parametrize("layout", ["flat", "tensors"])
@pytest.mark.parametrize("n", [10**5, 10**6, 10**7], ids=["1e5", "1e6", "1e7"])
@pytest.mark.parametrize("name", sorted(workloads.OPTIMIZER_STREAMS))
def test_optimizer_update(benchmark, name, n, layout, impl, backend_name):
    run(benchmark, workloads.optimizer_update(name, n, layout, impl, backend=backend_name))


@pytest.mark.parametrize("n", [10**5, 10**6, 10**7], ids=["1e5", "1e6", "1e7"])
@pytest.mark.parametrize("inplace", [False, True], ids=["stream", "inplace"])
def test_triad(benchmark, n, inplace, backend_name):
    run(benchmark, workloads.triad(n, backend_name, inplace=inplace))


@pytest.mark.parametrize("n", [10**7], ids=["1e7"])
def test_copy(benchmark, n, backend_name):
    run(benchmark, workloads.copy(n, backend_name))


@pytest.mark.gpu
@pytest.mark.backends("gpu")
@pytest.mark.parametrize("name", ["adam", "sgd"])
def test_gpu_update_at_1e8_and_copy_bandwidth(benchmark, name, backend_name):
    """The GPU sizes: N = 1e8 (400 MB per array), read against test_copy's bandwidth."""
    run(benchmark, workloads.optimizer_update(name, 10**8, "flat", "fused", backend=backend_name))

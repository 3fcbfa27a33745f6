"""Every optimizer update at N = 1e5, 1e6, 1e7: one flat buffer vs ~20 tensors, fused vs reference."""

import pytest

from accelnet import bench
from benchutil import BACKENDS, run


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("impl", ["fused", "reference"])
@pytest.mark.parametrize("layout", ["flat", "tensors"])
@pytest.mark.parametrize("n", [10**5, 10**6, 10**7], ids=["1e5", "1e6", "1e7"])
@pytest.mark.parametrize("name", sorted(bench.OPTIMIZER_STREAMS))
def test_optimizer_update(benchmark, name, n, layout, impl, backend):
    run(benchmark, bench.optimizer_update(name, n, layout, impl, backend=backend))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("n", [10**5, 10**6, 10**7], ids=["1e5", "1e6", "1e7"])
@pytest.mark.parametrize("inplace", [False, True], ids=["stream", "inplace"])
def test_triad(benchmark, n, inplace, backend):
    run(benchmark, bench.triad(n, backend, inplace=inplace))

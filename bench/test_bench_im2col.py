"""im2col and col2im at the conv shapes of simple_convnet and deep_convnet."""

import pytest

from accelnet import workloads
from benchutil import run

CASES = [c[0] for c in workloads.CONV_SHAPES]


@pytest.mark.parametrize("impl", ["fused", "reference"])
@pytest.mark.parametrize("case", CASES)
def test_im2col(benchmark, case, impl, backend_name):
    run(benchmark, workloads.im2col(case, impl, backend_name))


@pytest.mark.parametrize("impl", ["fused", "reference"])
@pytest.mark.parametrize("case", CASES)
def test_col2im(benchmark, case, impl, backend_name):
    run(benchmark, workloads.col2im(case, impl, backend_name))

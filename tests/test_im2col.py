"""im2col / col2im: the fused kernels equal the reference, and col2im is im2col's adjoint (every
kernel module: conftest.py's ``kernels`` and ``any_kernels`` axes)."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from accelnet.kernels import reference


@st.composite
def conv_geometry(draw):
    n, c = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    fh, fw = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    stride, pad = draw(st.integers(1, 3)), draw(st.integers(0, 2))
    h = draw(st.integers(max(1, fh - 2 * pad), 9))
    w = draw(st.integers(max(1, fw - 2 * pad), 9))
    return (n, c, h, w), fh, fw, stride, pad


@settings(max_examples=60, deadline=None)
@given(geom=conv_geometry(), seed=st.integers(0, 2**31))
def test_col2im_is_the_adjoint_of_im2col(any_kernels, geom, seed):
    shape, fh, fw, stride, pad = geom
    r = np.random.default_rng(seed)
    x = r.standard_normal(shape)
    col = any_kernels.im2col(x, fh, fw, stride, pad)
    y = r.standard_normal(col.shape)
    lhs = float(np.vdot(col, y))
    rhs = float(np.vdot(x, any_kernels.col2im(y, shape, fh, fw, stride, pad)))
    assert abs(lhs - rhs) <= 1e-10 * max(1.0, abs(lhs))


@settings(max_examples=60, deadline=None)
@given(geom=conv_geometry(), seed=st.integers(0, 2**31))
def test_fused_kernels_equal_the_reference(kernels, geom, seed):
    shape, fh, fw, stride, pad = geom
    x = np.random.default_rng(seed).standard_normal(shape)
    col = reference.im2col(x, fh, fw, stride, pad)
    np.testing.assert_array_equal(kernels.im2col(x, fh, fw, stride, pad), col)
    np.testing.assert_allclose(kernels.col2im(col, shape, fh, fw, stride, pad),
                               reference.col2im(col, shape, fh, fw, stride, pad), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_kernels_keep_the_dtype(any_kernels, dtype):
    x = np.ones((2, 3, 5, 5), dtype)
    col = any_kernels.im2col(x, 3, 3, 1, 1)
    assert col.dtype == dtype
    assert any_kernels.col2im(col, x.shape, 3, 3, 1, 1).dtype == dtype


def test_im2col_writes_into_a_given_buffer(any_kernels):
    x = np.random.default_rng(0).standard_normal((2, 3, 6, 6)).astype(np.float32)
    out = np.full((2 * 4 * 4, 27), np.nan, np.float32)
    res = any_kernels.im2col(x, 3, 3, 1, 0, out=out)
    assert res is out and np.isfinite(out).all()


def test_im2col_rejects_a_buffer_of_the_wrong_shape(any_kernels):
    with pytest.raises(ValueError, match="out must"):
        any_kernels.im2col(np.zeros((1, 1, 4, 4), np.float32), 2, 2, 1, 0, out=np.zeros((3, 3), np.float32))


def test_im2col_matches_the_books_layout(any_kernels):
    x = np.arange(16, dtype=np.float64).reshape(1, 1, 4, 4)
    col = any_kernels.im2col(x, 2, 2, 2, 0)
    np.testing.assert_array_equal(col, [[0, 1, 4, 5], [2, 3, 6, 7], [8, 9, 12, 13], [10, 11, 14, 15]])


# -- pooling kernels (parity with the reference: tests/test_kernel_parity.py) ----------------------


def test_maxpool_propagates_nan(any_kernels):
    x = np.zeros((1, 1, 2, 2), np.float32)
    x[0, 0, 1, 0] = np.nan
    out, _ = any_kernels.maxpool2d(x, 2, 2, 2)
    assert np.isnan(out).all()

"""Every fused kernel module against the reference, one test body for all of them (the ``kernels``
axis of conftest.py): the Numba CPU kernels always, the numba.cuda kernels when
NUMBA_ENABLE_CUDASIM=1 (tests/test_cuda_simulator.py runs this file that way in a process of its
own). Sizes are small enough for the simulator."""

import re

import numpy as np
import pytest

from accelnet.kernels import reference as ref
from accelnet.kernels.contracts import argmax_dtype
from accelnet.optim import OPTIMIZERS, Nesterov, get_optimizer


UPDATES = sorted(OPTIMIZERS)  # every optimizer, with weight decay and clipping folded in


def _run_update(k, opt, p, g, state, gscale):
    """One update through kernel module ``k``, with the scalars ``opt`` computes for its next step."""
    opt.t += 1
    k.update(opt.rule, p, g, tuple(state), opt.scalars(opt.lr), gscale)


def test_every_declared_update_has_a_parity_case_and_a_reference_formula():
    from accelnet.kernels import elementwise

    assert {get_optimizer(n).rule for n in UPDATES} == set(elementwise.UPDATES)
    assert set(ref._FORMULAS) == set(elementwise.UPDATES)


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("name", UPDATES)
def test_update_kernel_matches_the_reference_over_5_steps(kernels, name, dtype):
    ours, theirs = (get_optimizer(name, lr=0.01, weight_decay=0.01) for _ in range(2))
    r = np.random.default_rng(0)
    n = 300  # more than one block of 256 threads: the grid-stride loop is exercised
    p1 = r.standard_normal(n).astype(dtype)
    p2 = p1.copy()
    s1 = [np.zeros(n, dtype) for _ in ours.state_names]
    s2 = [np.zeros(n, dtype) for _ in ours.state_names]
    for _ in range(5):
        g = r.standard_normal(n).astype(dtype)
        _run_update(kernels, ours, p1, g, s1, 0.5)
        _run_update(ref, theirs, p2, g, s2, 0.5)
    tol = 1e-6 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(p1, p2, rtol=tol, atol=tol)
    for a, b in zip(s1, s2):
        np.testing.assert_allclose(a, b, rtol=tol, atol=tol)


def test_an_unknown_update_or_a_wrong_state_count_is_named(kernels):
    p = np.zeros(3)
    with pytest.raises(ValueError, match="unknown update 'lamb'"):
        kernels.update("lamb", p, p.copy(), (), ())
    with pytest.raises(ValueError, match=r"update 'adam' takes 2 state buffers \('m', 'v'\), got 1"):
        kernels.update("adam", p, p.copy(), (p.copy(),), (0.1, 0.1, 0.1, 1e-7, 0.0, 0.0))


def _books_nesterov(p, g, v, lr, mu, wd, gscale):
    """The book's common/optimizer.py Nesterov, written out (p moves with the previous v)."""
    g = g * gscale + wd * p
    p += mu * mu * v
    p -= (1 + mu) * lr * g
    v *= mu
    v -= lr * g


def test_nesterov_is_the_books_formula_over_a_random_gradient_stream(any_kernels):
    k = any_kernels
    r = np.random.default_rng(3)
    p1 = r.standard_normal(300)
    p2, v1, v2 = p1.copy(), np.zeros(300), np.zeros(300)
    for step in range(30):
        g = r.standard_normal(300)
        lr, mu, wd, gscale = 0.05, 0.9, (0.01 if step % 2 else 0.0), (0.5 if step % 3 else 1.0)
        _run_update(k, Nesterov(lr=lr, momentum=mu, weight_decay=wd), p1, g, [v1], gscale)
        _books_nesterov(p2, g, v2, lr, mu, wd, gscale)
    np.testing.assert_allclose(p1, p2, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(v1, v2, rtol=1e-12, atol=1e-12)


def test_nesterov_first_steps_on_a_constant_gradient_are_the_books(any_kernels):
    k = any_kernels
    p, v, seen = np.ones(1), np.zeros(1), []
    opt = Nesterov(lr=0.1, momentum=0.9)
    for _ in range(3):
        _run_update(k, opt, p, np.ones(1), [v], 1.0)
        seen.append(float(p[0]))
    np.testing.assert_allclose(seen, [0.81, 0.539, 0.1951], rtol=1e-12)


def test_sum_squares_matches_the_reference(kernels):
    g = np.random.default_rng(1).standard_normal(700).astype(np.float32)
    assert kernels.sum_squares(g) == pytest.approx(ref.sum_squares(g), rel=1e-12)


def test_triad(kernels):
    r = np.random.default_rng(2)
    a, b, c = (r.standard_normal(50).astype(np.float32) for _ in range(3))
    kernels.triad(a, b, c, 2.0)
    np.testing.assert_allclose(a, b + np.float32(2.0) * c, rtol=1e-6)


@pytest.mark.parametrize("shape, k, stride, pad", [((2, 2, 5, 5), 3, 1, 1), ((1, 3, 6, 5), 2, 2, 0),
                                                   ((2, 1, 7, 7), 3, 2, 2)])
def test_im2col_and_col2im_match_the_reference(kernels, shape, k, stride, pad):
    x = np.random.default_rng(3).standard_normal(shape)
    col = kernels.im2col(x, k, k, stride, pad)
    np.testing.assert_array_equal(col, ref.im2col(x, k, k, stride, pad))
    np.testing.assert_allclose(kernels.col2im(col, shape, k, k, stride, pad), ref.col2im(col, shape, k, k, stride, pad),
                               rtol=1e-12)


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("size, ph, pw, stride", [(6, 2, 2, 2), (5, 2, 2, 2), (5, 3, 3, 2), (42, 2, 2, 2)],
                         ids=["tiling", "edge-left-over", "overlapping", "rows-wider-than-a-vector"])
def test_pooling_kernels_match_the_reference(kernels, size, ph, pw, stride, dtype):
    r = np.random.default_rng(4)
    x = r.standard_normal((2, 2, size, size)).astype(dtype)
    out, am = kernels.maxpool2d(x, ph, pw, stride)
    rout, ram = ref.maxpool2d(x, ph, pw, stride)
    np.testing.assert_array_equal(out, rout)
    np.testing.assert_array_equal(am, ram)
    assert am.dtype == ram.dtype == argmax_dtype(ph, pw)  # one contract in every module
    dout = r.standard_normal(out.shape).astype(dtype)
    tol = 1e-6 if dtype == np.float32 else 1e-12
    np.testing.assert_array_equal(kernels.maxpool2d_backward(dout, am, x.shape, ph, pw, stride),
                                  ref.maxpool2d_backward(dout, ram, x.shape, ph, pw, stride))
    np.testing.assert_allclose(kernels.avgpool2d(x, ph, pw, stride), ref.avgpool2d(x, ph, pw, stride), rtol=tol,
                               atol=tol)
    np.testing.assert_allclose(kernels.avgpool2d_backward(dout, x.shape, ph, pw, stride),
                               ref.avgpool2d_backward(dout, x.shape, ph, pw, stride), rtol=tol, atol=tol)


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
def test_shift2d_matches_the_reference_for_every_shift_and_beyond_the_image(kernels, dtype):
    r = np.random.default_rng(6)
    x = r.standard_normal((12, 2, 5, 7)).astype(dtype)
    dy = np.array([0, 1, -1, 2, -2, 0, 0, 3, -4, 5, -7, 1])  # 5 and -7: the whole image shifted out
    dx = np.array([0, 0, 0, 1, -1, 2, -2, -3, 4, 0, 1, 7])
    out = kernels.shift2d(x, dy, dx)
    np.testing.assert_array_equal(out, ref.shift2d(x, dy, dx))
    np.testing.assert_array_equal(out[0], x[0])
    np.testing.assert_array_equal(out[1, :, 1:], x[1, :, :-1])
    assert (out[1, :, 0] == 0).all() and (out[9] == 0).all() and (out[10] == 0).all()


def test_conv_layout_kernels_match_the_reference(kernels):
    r = np.random.default_rng(5)
    rows, b = r.standard_normal((2 * 3 * 4, 5)), r.standard_normal(5)
    out1, out2 = np.empty((2, 5, 3, 4)), np.empty((2, 5, 3, 4))
    np.testing.assert_allclose(kernels.rows_to_nchw(rows, b, out1), ref.rows_to_nchw(rows, b, out2), rtol=1e-15)
    np.testing.assert_array_equal(kernels.nchw_to_rows(out1), ref.nchw_to_rows(out1))


CONVS = [  # (x shape, filters, kernel, stride, pad): 3x3 and 5x5, channel counts off the 4-block, strides 1 and 2
    ((3, 2, 7, 6), 5, 3, 1, 1),
    ((2, 1, 8, 8), 3, 5, 1, 0),
    ((2, 3, 6, 6), 4, 3, 1, 2),
    ((2, 2, 7, 7), 6, 3, 2, 1),
    ((9, 1, 4, 5), 2, 2, 1, 0),  # more images than the weight-gradient chunks
    ((3, 3, 2, 3), 9, 1, 1, 0),  # planes shorter than a vector: reads past them must see zeros
    ((4, 11, 5, 4), 17, 3, 1, 1),  # channel counts off the 8-channel register blocks
    ((3, 8, 6, 7), 5, 3, 1, 1),  # input channels in whole 8-channel blocks
    ((3, 8, 6, 5), 6, 5, 1, 2),  # 5 taps a kernel row: 3 + 2, the weight gradient block's third dropped
    ((2, 3, 5, 6), 4, 3, 1, 3),  # pad past the kernel's extent: the input gradient crops the gradient's border
    ((2, 16, 5, 5), 16, 3, 1, 1),  # 16 channels, odd sizes: the CPU's direct kernels, not Winograd
]


def _conv_case(shape, f, k, dtype, seed=3):
    r = np.random.default_rng(seed)
    x = r.standard_normal(shape).astype(dtype)
    w = r.standard_normal((f, shape[1], k, k)).astype(dtype)
    b = r.standard_normal(f).astype(dtype)
    return r, x, w, b


def _assert_grad_close(got, want, dtype):
    """Float32 gradients to 1e-5 and a millionth of their largest magnitude: a weight gradient sums
    N*OH*OW terms, whose rounding grows with the sum's size, not with each element's."""
    tol = 1e-5 if dtype == np.float32 else 1e-12
    atol = tol + (1e-6 * float(np.abs(want).max()) if dtype == np.float32 else 0.0)
    np.testing.assert_allclose(got, want, rtol=tol, atol=atol)


def _grads_of(k, dout, ctx, w, b, need_dx=True):
    """(dx, dw, db) from kernel module ``k``'s conv2d_backward."""
    dw, db = np.empty_like(w), np.empty_like(b)
    dx = k.conv2d_backward(dout, ctx, dw, db, need_dx)
    return dx, dw, db


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("shape, f, k, stride, pad", CONVS)
def test_conv2d_forward_matches_the_reference(kernels, shape, f, k, stride, pad, dtype):
    _, x, w, b = _conv_case(shape, f, k, dtype)
    tol = 1e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(kernels.conv2d(x, w, b, stride, pad)[0], ref.conv2d(x, w, b, stride, pad)[0],
                               rtol=tol, atol=tol)


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("shape, f, k, stride, pad", CONVS)
def test_conv2d_backward_matches_the_reference(kernels, shape, f, k, stride, pad, dtype):
    r, x, w, b = _conv_case(shape, f, k, dtype)
    y, ctx = kernels.conv2d(x, w, b, stride, pad)
    y_ref, ctx_ref = ref.conv2d(x, w, b, stride, pad)
    dout = r.standard_normal(y.shape).astype(dtype)
    for got, want in zip(_grads_of(kernels, dout, ctx, w, b), _grads_of(ref, dout, ctx_ref, w, b)):
        _assert_grad_close(got, want, dtype)


def _ref_conv_then(x, w, b, stride, pad, relu, pool):
    """The reference conv, then the reference ReLU and max-pool as separate steps:
    (y, pre-pool output, argmax, backward(dout) -> (dx, dw, db))."""
    pre, ctx = ref.conv2d(x, w, b, stride, pad)
    act = ref.relu(pre) if relu else pre
    y, am = ref.maxpool2d(act, pool, pool, pool) if pool else (act, None)

    def backward(dout):
        d = ref.maxpool2d_backward(dout, am, act.shape, pool, pool, pool) if pool else dout
        return _grads_of(ref, d * (pre > 0) if relu else d, ctx, w, b)

    return y, am, backward


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("shape, f, k, stride, pad", CONVS)
def test_conv2d_with_fused_relu_matches_the_reference_conv_then_relu(any_kernels, shape, f, k, stride, pad, dtype):
    kernels = any_kernels
    r, x, w, b = _conv_case(shape, f, k, dtype)
    want, _, backward = _ref_conv_then(x, w, b, stride, pad, relu=True, pool=None)
    y, ctx = kernels.conv2d(x, w, b, stride, pad, relu=True)
    tol = 1e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(y, want, rtol=tol, atol=tol)
    dout = r.standard_normal(y.shape).astype(dtype)
    for got, want in zip(_grads_of(kernels, dout, ctx, w, b), backward(dout)):
        _assert_grad_close(got, want, dtype)


POOLED_CONVS = [  # (x shape, filters, kernel, stride, pad)
    ((3, 2, 7, 6), 5, 3, 1, 1),  # outputs off the pool's multiple: the last row/column is in no window
    ((2, 2, 7, 7), 6, 3, 2, 1),  # strided: im2col + GEMM, then the pool kernels
    ((2, 11, 6, 5), 17, 3, 1, 1),  # channel counts off the 8-channel register blocks
    ((2, 8, 6, 6), 9, 3, 1, 1),  # input channels in whole 8-channel blocks
    ((9, 1, 4, 5), 2, 2, 1, 0),  # more images than the weight-gradient chunks
]


@pytest.mark.parametrize("pool, relu", [(2, True), (2, False), (3, True)], ids=["pool2-relu", "pool2", "pool3-relu"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("shape, f, k, stride, pad", POOLED_CONVS)
def test_conv2d_with_fused_pool_matches_the_reference_conv_then_maxpool(any_kernels, shape, f, k, stride, pad, dtype,
                                                                        pool, relu):
    kernels = any_kernels
    r, x, w, b = _conv_case(shape, f, k, dtype)
    want, want_arg, backward = _ref_conv_then(x, w, b, stride, pad, relu, pool)
    y, ctx = kernels.conv2d(x, w, b, stride, pad, relu=relu, pool=pool)
    tol = 1e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(y, want, rtol=tol, atol=tol)
    np.testing.assert_array_equal(ctx.argmax, want_arg)
    assert ctx.argmax.dtype == argmax_dtype(pool, pool)
    dout = r.standard_normal(y.shape).astype(dtype)
    for got, want in zip(_grads_of(kernels, dout, ctx, w, b), backward(dout)):
        _assert_grad_close(got, want, dtype)


WINOGRAD_CONVS = [  # (x shape, filters, pad, pool): >= 16 channels, even sizes, >= 512 tiles: the CPU's Winograd
    ((6, 16, 16, 24), 20, 1, None),  # output channels off the 8-blocks
    ((128, 17, 4, 4), 16, 2, None),  # several images' tiles end to end per task; pad 2
    ((43, 16, 8, 6), 17, 1, 2),  # each tile a pool window
    ((2, 16, 36, 40), 8, 1, 2),  # tile rows longer than a vector; pooled tiles in vectors across tile rows
    ((2, 16, 34, 36), 8, 1, None),
]


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("shape, f, pad, pool", WINOGRAD_CONVS)
def test_cpu_conv2d_where_winograd_runs_matches_the_reference_conv_then_relu_and_pool(shape, f, pad, pool, dtype):
    from accelnet.kernels import cpu, cpu_conv

    n, c, h, w_ = shape
    assert cpu_conv.winograd_pays(n, c, h + 2 * pad - 2, w_ + 2 * pad - 2)  # the case reaches Winograd
    r, x, w, b = _conv_case(shape, f, 3, dtype)
    want, want_arg, backward = _ref_conv_then(x, w, b, 1, pad, relu=True, pool=pool)
    y, ctx = cpu.conv2d(x, w, b, 1, pad, relu=True, pool=pool)
    tol = 1e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(y, want, rtol=tol, atol=tol)
    if pool:
        np.testing.assert_array_equal(ctx.argmax, want_arg)
    dout = r.standard_normal(y.shape).astype(dtype)
    for got, want in zip(_grads_of(cpu, dout, ctx, w, b), backward(dout)):
        _assert_grad_close(got, want, dtype)


def test_conv2d_fused_pool_keeps_nan_at_the_first_nan_of_each_window(kernels):
    _, x, w, b = _conv_case((2, 2, 6, 6), 3, 3, np.float32)
    x[0, 0, 2, 2] = np.nan  # reaches conv outputs rows/cols 1..3: pooled cells (0..1, 0..1)
    y, ctx = kernels.conv2d(x, w, b, 1, 1, relu=True, pool=2)
    assert np.isnan(y[0, :, :2, :2]).all() and not np.isnan(y[1]).any()
    _, want_arg = ref.maxpool2d(ref.conv2d(x, w, b, 1, 1, relu=True)[0], 2, 2, 2)
    np.testing.assert_array_equal(ctx.argmax, want_arg)


@pytest.mark.parametrize("pool", [None, 2])
def test_conv2d_backward_names_a_dout_that_is_not_the_forward_outputs_shape(kernels, pool):
    _, x, w, b = _conv_case((2, 2, 6, 6), 3, 3, np.float32)
    y, ctx = kernels.conv2d(x, w, b, 1, 1, pool=pool)
    dout = np.ones((2, 3, 6, 6) if pool else (2, 3, 3, 3), np.float32)
    with pytest.raises(ValueError, match=rf"dout must have shape {re.escape(str(y.shape))}"):
        kernels.conv2d_backward(dout, ctx, np.empty_like(w), np.empty_like(b))


def test_conv2d_fused_relu_keeps_nan(kernels):
    _, x, w, b = _conv_case((2, 2, 5, 5), 3, 3, np.float32)
    x[0, 0, 2, 2] = np.nan
    y, _ = kernels.conv2d(x, w, b, 1, 1, relu=True)
    assert np.isnan(y[0, :, 1:4, 1:4]).all() and not np.isnan(y[1]).any()


def test_cpu_conv_weight_gradient_sums_over_several_image_groups_per_chunk():
    # float64 20x20 images: an 8-channel block of one image's gradient and one channel's tap columns
    # fill the L1 budget (cpu_conv.GROUP_L1_BYTES), so each group is one image and each chunk of 2-3 images sums groups
    from accelnet.kernels import cpu

    r, x, w, b = _conv_case((17, 1, 20, 20), 2, 3, np.float64)
    dout = r.standard_normal((17, 2, 20, 20))
    got = _grads_of(cpu, dout, cpu.conv2d(x, w, b, 1, 1)[1], w, b)
    for got, want in zip(got, _grads_of(ref, dout, ref.conv2d(x, w, b, 1, 1)[1], w, b)):
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)


def test_conv2d_backward_without_dx_writes_the_same_weight_gradients(kernels):
    r, x, w, b = _conv_case((3, 2, 6, 6), 5, 3, np.float64)
    dout = r.standard_normal((3, 5, 6, 6))
    _, ctx = kernels.conv2d(x, w, b, 1, 1)
    _, dw1, db1 = _grads_of(kernels, dout, ctx, w, b, need_dx=True)
    dx2, dw2, db2 = _grads_of(kernels, dout, ctx, w, b, need_dx=False)
    assert dx2 is None
    np.testing.assert_array_equal(dw1, dw2)
    np.testing.assert_array_equal(db1, db2)


def test_conv2d_is_deterministic(kernels):
    r, x, w, b = _conv_case((9, 3, 6, 6), 5, 3, np.float32)
    dout = r.standard_normal((9, 5, 6, 6)).astype(np.float32)
    runs = []
    for _ in range(2):
        y, ctx = kernels.conv2d(x, w, b, 1, 1)
        runs.append((y.copy(), *_grads_of(kernels, dout, ctx, w, b)))
    for a, b2 in zip(*runs):
        np.testing.assert_array_equal(a, b2)


def test_conv2d_rejects_mismatched_channels(kernels):
    _, x, w, b = _conv_case((2, 3, 5, 5), 4, 3, np.float32)
    with pytest.raises(ValueError, match="input channels"):
        kernels.conv2d(x, w[:, :2], b, 1, 1)


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
def test_relu_kernels_match_the_reference(kernels, dtype):
    r = np.random.default_rng(4)
    x = r.standard_normal((3, 4, 5, 7)).astype(dtype)
    x[0, 0, 0, :4] = [np.nan, -np.inf, 0.0, -0.0]
    dout = r.standard_normal(x.shape).astype(dtype)
    with np.errstate(invalid="ignore"):  # -inf * 0
        y = kernels.relu(x)
        np.testing.assert_array_equal(y, ref.relu(x))
        assert np.array_equal(np.signbit(y), np.signbit(ref.relu(x)))  # -0.0 where x * 0 gives it
    np.testing.assert_array_equal(kernels.relu_backward(dout, y), ref.relu_backward(dout, y))


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("relu", [False, True], ids=["bias", "bias-relu"])
@pytest.mark.parametrize("shape", [(3, 1), (1, 7), None], ids=["column", "row", "parallel"])
def test_add_bias_matches_the_reference_in_place(kernels, shape, relu, dtype):
    # None: rows enough for the CPU's parallel loop (few under the CUDA simulator, which is slow)
    shape = shape or (getattr(kernels, "PARALLEL_MIN", 1000) // 120 + 1, 120)
    r = np.random.default_rng(6)
    z, b = r.standard_normal(shape).astype(dtype), r.standard_normal(shape[1]).astype(dtype)
    if shape[1] >= 4:
        z[0, :4] = [np.nan, -np.inf, np.inf, -b[3]]  # the last sums to 0.0
    got = z.copy()
    with np.errstate(invalid="ignore"):  # -inf * 0
        want = ref.add_bias(z, b, relu=relu)
        assert kernels.add_bias(got, b, relu=relu) is got
    np.testing.assert_array_equal(got, want)
    assert np.array_equal(np.signbit(got), np.signbit(want))


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("relu", [False, True], ids=["bias", "bias-relu"])
@pytest.mark.parametrize("size", ["small", "large"])
def test_linear_matches_the_reference(kernels, size, relu, dtype):
    # large: the CPU's own gemm with the bias and ReLU applied as it stores (few rows elsewhere:
    # the CUDA simulator is slow); 100 columns: whole vectors and a remainder
    m = 2 * getattr(kernels, "GEMM_MIN_LENGTH", 4) if size == "large" else 3
    r = np.random.default_rng(7)
    x, w = r.standard_normal((m, m)).astype(dtype), r.standard_normal((m, 100)).astype(dtype)
    b = r.standard_normal(100).astype(dtype)
    x[1, 0] = np.nan  # a NaN input makes its row NaN, through the ReLU too
    with np.errstate(invalid="ignore"):
        got, want = kernels.linear(x, w, b, relu=relu), ref.linear(x, w, b, relu=relu)
    tol = 1e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(got, want, rtol=tol, atol=tol * np.sqrt(m) * np.nanmax(np.abs(want)))
    assert np.isnan(got[1]).all()


def test_linear_names_a_bias_of_the_wrong_length(kernels):
    m = 2 * getattr(kernels, "GEMM_MIN_LENGTH", 4)
    with pytest.raises(ValueError, match="add_bias: z must be a C-contiguous"):
        kernels.linear(np.ones((m, m), np.float32), np.ones((m, 100), np.float32), np.ones(99, np.float32))


@pytest.mark.parametrize("z, b", [(np.zeros((4, 3)), np.zeros(4)), (np.zeros(3), np.zeros(3)),
                                  (np.zeros((3, 4)).T, np.zeros(3))], ids=["bias-length", "1-d", "transposed"])
def test_add_bias_names_a_wrong_shape_or_layout(kernels, z, b):
    with pytest.raises(ValueError, match="add_bias: z must be a C-contiguous"):
        kernels.add_bias(z, b)


def test_relu_backward_names_an_output_of_another_shape(kernels):
    with pytest.raises(ValueError, match="relu_backward: y must have dout's shape"):
        kernels.relu_backward(np.zeros((2, 3)), np.zeros((3, 2)))


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("shape", [(1000, 100), (3, 1), (1, 7)])
def test_column_sums_match_the_reference(kernels, shape, dtype):
    a = np.random.default_rng(5).standard_normal(shape).astype(dtype)
    got, want = np.empty(shape[1], dtype), np.empty(shape[1], dtype)
    kernels.column_sums(a, got)
    tol = 1e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(got, ref.column_sums(a, want), rtol=tol, atol=tol * np.sqrt(shape[0]))


def test_column_sums_keep_nan(kernels):
    a = np.ones((4, 3))
    a[2, 1] = np.nan
    out = kernels.column_sums(a, np.empty(3))
    assert out[0] == out[2] == 4 and np.isnan(out[1])


def test_relu_keeps_nan_so_divergence_reaches_the_loss(kernels):
    out = kernels.relu(np.array([np.nan, -1.0, 2.0]))
    assert np.isnan(out[0]) and out[1] == 0 and out[2] == 2


DECAYING = ["momentum", "nesterov", "rmsprop", "adam"]  # no weight decay, a zero gradient: the state only decays


@pytest.mark.parametrize("name", sorted(DECAYING))
def test_decaying_state_is_flushed_to_zero_not_left_subnormal(kernels, name):
    # a unit whose gradient stays 0 (a dead ReLU): its state decays geometrically; subnormal
    # floats would make every later update of it ~100x slower on x86
    tiny = np.finfo(np.float32).tiny
    g = np.zeros(4, np.float32)
    for module in (kernels, ref):
        opt = get_optimizer(name, lr=0.01)
        p = np.ones(4, np.float32)
        # just above tiny: one step of decay (x0.9 to x0.999) takes every state below it
        state = [np.full(4, np.float32(tiny) * np.float32(1.0005), np.float32) for _ in opt.state_names]
        for _ in range(3):
            _run_update(module, opt, p, g, state, 1.0)
            for s in state:
                assert not ((s != 0) & (np.abs(s) < tiny)).any(), f"{module.__name__}: subnormal state {s}"
    # (Under the CPU backend's flush-to-zero the decrement itself flushes and the state stays at
    # ~tiny: also never subnormal. This file alone, or the CUDA simulator, runs without it.)


@pytest.mark.parametrize("ph, stride", [(2, 2), (3, 1)], ids=["2x2-fast-path", "general"])
def test_maxpool_lets_the_first_nan_win_like_the_reference(kernels, ph, stride):
    x = np.random.default_rng(6).standard_normal((1, 2, 6, 6))
    x[0, 0, 1, 1] = x[0, 1, 0, 1] = np.nan
    x[0, 1, 1, 0] = np.inf
    out, am = kernels.maxpool2d(x, ph, ph, stride)
    rout, ram = ref.maxpool2d(x, ph, ph, stride)
    np.testing.assert_array_equal(out, rout)
    np.testing.assert_array_equal(am, ram)


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("shape", [(1, 10), (7, 3), None], ids=["one-row", "rows", "parallel"])
def test_softmax_cross_entropy_matches_the_reference(kernels, shape, dtype):
    # None: rows enough for the CPU's parallel loop (few under the CUDA simulator, which is slow)
    shape = shape or (getattr(kernels, "PARALLEL_MIN", 100) // 10 + 1, 10)
    r = np.random.default_rng(7)
    y = (r.standard_normal(shape) * 30).astype(dtype)  # large scores: the log-sum-exp must stay finite
    t = r.integers(0, shape[1], shape[0])
    p, p_ref = np.empty_like(y), np.empty_like(y)
    loss, want = kernels.softmax_cross_entropy(y, t, p), ref.softmax_cross_entropy(y, t, p_ref)
    tol = 1e-5 if dtype == np.float32 else 1e-12
    assert float(loss) == pytest.approx(float(want), rel=tol)
    np.testing.assert_allclose(p, p_ref, rtol=tol, atol=tol)
    np.testing.assert_allclose(kernels.softmax_cross_entropy_backward(p, t, 0.25),
                               ref.softmax_cross_entropy_backward(p_ref, t, 0.25), rtol=tol, atol=tol)


def test_softmax_cross_entropy_of_a_nan_score_is_nan(kernels):
    y = np.array([[1.0, np.nan, 0.0], [0.0, 1.0, 2.0]])
    p = np.empty_like(y)
    assert np.isnan(float(kernels.softmax_cross_entropy(y, np.array([0, 2]), p)))
    assert np.isnan(p[0]).all() and np.isfinite(p[1]).all()


@pytest.mark.parametrize("y, t", [(np.zeros((2, 3)), np.zeros(3, int)), (np.zeros(3), np.zeros(3, int))],
                         ids=["labels-length", "1-d-scores"])
def test_softmax_cross_entropy_names_mismatched_shapes(kernels, y, t):
    with pytest.raises(ValueError, match="softmax_cross_entropy: expected scores"):
        kernels.softmax_cross_entropy(y, t, np.empty_like(y))


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("shape", [(1, 50), (7, 300)], ids=["one-loop", "numpy"])  # about the CPU's SIGMOID_LOOP_MAX
def test_sigmoid_matches_the_reference_and_saturates_without_overflow(kernels, shape, dtype):
    x = np.random.default_rng(0).standard_normal(shape).astype(dtype) * 4
    x[0, :3] = [-1000, 1000, np.nan]
    got = kernels.sigmoid(x)
    want = 1 / (1 + np.exp(-x[0, 3:].astype(np.float64)))
    tol = 2e-6 if dtype == np.float32 else 1e-14
    np.testing.assert_allclose(got[0, 3:], want, rtol=tol, atol=tol)
    assert got[0, 0] == 0 and got[0, 1] == 1 and np.isnan(got[0, 2]) and got.dtype == dtype

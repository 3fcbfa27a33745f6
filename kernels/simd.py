"""Explicit SIMD vectors for Numba kernels: a ``Vec`` value is one LLVM vector register.

Why: Numba's auto-vectorizer follows LLVM's tuning for the host, which on AVX-512 Intel CPUs
prefers 256-bit vectors, and it only keeps sums in registers when it can prove the loop
simple. A convolution's register block (8 output channels x 2 vectors of positions, summed over
every tap) needs both: here each sum is a ``Vec`` SSA value, so it lives in a register by
construction, and a vector is as wide as the host's registers (64 bytes with AVX-512, 32 with
AVX/AVX2, 16 otherwise; ``ACCELNET_SIMD_BYTES`` forces one, for tests). Explicit vector types
are legal at any width in LLVM IR (a wider one is split into the registers there are), so any
width runs anywhere; the width sets the lane count, and with it the order in which the kernels'
float sums are added, so float32 results differ between widths in the last bits.

The functions: ``vload(a, i)`` / ``vstore(a, i, v)`` (LANES elements from flat index i of a
C-contiguous array, unaligned), ``vsplat(x)`` (x in every lane), ``vfma(a, b, c)`` (a*b + c,
one rounding), ``vsplat_at(a, i)`` (a[i] in every lane, read without Python's negative-index
wraparound), ``vsum(v)`` (the lanes added), ``vsums_add(a, i, vs)`` (several vectors' lane
sums added into a run of ``a``), ``lanes(dtype)`` (elements per vector; in a kernel, a
compile-time constant), ``vhalf(v)`` (v's first half as a vector of half the width) and
``vsplat_like(x, v)`` (x in every lane of a vector of v's width). For rows that end inside a
vector: ``vload_first(a, i, n, z)`` / ``vstore_first(a, i, v, n)`` (only the first n lanes read
or written, converted between a's dtype and the vector's). For pooling and Winograd's tiles:
``vload_pairs`` / ``vstore_pairs`` (2*LANES elements as the even and the odd ones), ``vadd`` /
``vsub``, ``vgate(v, y)`` (v * (y > 0): the ReLU and its mask), ``vmax_arg`` (a running max with
its index, as MaxPool2d takes it) and ``vpick(a, t, v)`` (v where a == t, else 0).
"""

from __future__ import annotations

import os

import llvmlite.binding as llvm
import numpy as np
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic, models, overload, register_model


def _vector_bytes() -> int:
    forced = os.environ.get("ACCELNET_SIMD_BYTES")
    if forced:  # tests run the kernels as an AVX2 (32) or SSE (16) machine would
        if forced not in ("16", "32", "64"):
            raise ValueError(f"ACCELNET_SIMD_BYTES must be 16, 32 or 64, got {forced!r}")
        return int(forced)
    try:
        features = llvm.get_host_cpu_features()
    except RuntimeError:  # not every platform reports its features
        return 16
    if features.get("avx512f"):
        return 64
    return 32 if features.get("avx") else 16


VECTOR_BYTES = _vector_bytes()  # kernels built at a forced width are cached apart (numba_cache.py)

# CPUs whose name alone (NUMBA_CPU_NAME with NUMBA_CPU_FEATURES empty) brings AVX-512
_AVX512_NAMES = ("avx512", "knl", "knm", "cannonlake", "icelake", "tigerlake", "rocketlake", "cascadelake",
                 "cooperlake", "sapphirerapids", "graniterapids", "emeraldrapids", "znver4", "znver5")


def _vector_registers() -> int:
    """Vector registers of the CPU Numba compiles for: 32 with AVX-512 (and on AArch64), else 16.

    The register blocks are sized by it: 16 sums and the vectors that feed them need 19, so where
    there are 16 they spill to the stack (an AVX2 laptop) and the kernels take blocks of 8 sums."""
    from numba.core import config

    if llvm.get_process_triple().startswith(("aarch64", "arm64")):
        return 32
    name, features = config.CPU_NAME, config.CPU_FEATURES
    if features is None:  # Numba compiles with the host's features, even for a forced CPU name
        try:
            features = llvm.get_host_cpu_features().flatten()
        except RuntimeError:
            return 16
    if features:
        return 32 if "+avx512f" in features.split(",") else 16
    name = (name or llvm.get_host_cpu_name()).lower()
    return 32 if any(n in name for n in _AVX512_NAMES) else 16


VECTOR_REGISTERS = _vector_registers()
WIDE_BLOCKS = VECTOR_REGISTERS >= 32  # the 8 x 2 register blocks fit (else 4 x 2, twice)


class Vec(types.Type):
    """LANES elements of ``dtype`` in one vector register (or ``lanes``: see :func:`vhalf`)."""

    def __init__(self, dtype, lanes=None):
        self.dtype = dtype
        self.lanes = lanes or VECTOR_BYTES // (dtype.bitwidth // 8)
        super().__init__(name=f"Vec({dtype} x {self.lanes})")


@register_model(Vec)
class _VecModel(models.PrimitiveModel):
    def __init__(self, dmm, fe_type):
        elem = dmm.lookup(fe_type.dtype).get_value_type()
        super().__init__(dmm, fe_type, ir.VectorType(elem, fe_type.lanes))


def _element_pointer(context, builder, arytype, ary, index, vtype):
    data = context.make_array(arytype)(context, builder, ary).data
    return builder.bitcast(builder.gep(data, [index]), vtype.as_pointer())


def _check_array(a, kinds=(types.Float,)):
    if not (isinstance(a, types.Array) and a.layout == "C" and isinstance(a.dtype, kinds)):
        raise TypeError(f"simd: expected a C-contiguous {' or '.join(k.__name__.lower() for k in kinds)} array, "
                        f"got {a}")


def _check_vectors(what, *vs):
    if not (isinstance(vs[0], Vec) and all(v == vs[0] for v in vs)):
        raise TypeError(f"simd: {what} needs equal vectors, got {', '.join(map(str, vs))}")


def _lane_indices(idx):
    """Constant <len x i32> of the lane indices ``idx`` (a shuffle's mask)."""
    idx = list(idx)
    return ir.Constant(ir.VectorType(ir.IntType(32), len(idx)), idx)


def _splat(builder, vt, x):
    """LLVM vector of type vt with scalar x in every lane."""
    one = builder.insert_element(ir.Constant(vt, ir.Undefined), x, ir.Constant(ir.IntType(32), 0))
    return builder.shuffle_vector(one, ir.Constant(vt, ir.Undefined), _lane_indices([0] * vt.count))


def _first_lanes(context, builder, n, ntype, count):
    """<count x i1>: lane k is on where k < n."""
    limit = _splat(builder, ir.VectorType(ir.IntType(32), count), context.cast(builder, n, ntype, types.int32))
    return builder.icmp_signed("<", _lane_indices(range(count)), limit)


def _first_lanes_at(context, builder, sig, args, dtype, count, n_arg):
    """For a masked access of ``count`` lanes of array args[0] at flat index args[1], the first
    args[n_arg] of them: (<count x dtype> type, lane mask, pointer)."""
    st = ir.VectorType(context.get_value_type(dtype), count)
    mask = _first_lanes(context, builder, args[n_arg], sig.args[n_arg], count)
    return st, mask, _element_pointer(context, builder, sig.args[0], args[0], args[1], st)


def _convert(builder, v, src, dst, to):
    """LLVM vector v of numba dtype src -> numba dtype dst (LLVM vector type ``to``)."""
    if src == dst:
        return v
    if isinstance(src, types.Float) and isinstance(dst, types.Float):
        return (builder.fpext if dst.bitwidth > src.bitwidth else builder.fptrunc)(v, to)
    if isinstance(src, types.Float):
        return (builder.fptosi if dst.signed else builder.fptoui)(v, to)
    return (builder.sitofp if src.signed else builder.uitofp)(v, to)


def _masked(builder, op, a_dtype, count, fnty, args):
    """Call llvm.masked.{op} on <count x a_dtype>."""
    suffix = f"v{count}{'f' if isinstance(a_dtype, types.Float) else 'i'}{a_dtype.bitwidth}"
    fn = cgutils.get_or_insert_function(builder.module, fnty, f"llvm.masked.{op}.{suffix}.p0{suffix}")
    return builder.call(fn, args)


@intrinsic
def vload(typingctx, a, i):
    """The LANES elements of C-contiguous ``a`` starting at flat index ``i``."""
    _check_array(a)
    vt = Vec(a.dtype)

    def codegen(context, builder, sig, args):
        ptr = _element_pointer(context, builder, sig.args[0], args[0], args[1], context.get_value_type(vt))
        return builder.load(ptr, align=a.dtype.bitwidth // 8)

    return vt(a, i), codegen


@intrinsic
def vstore(typingctx, a, i, v):
    """Store vector ``v`` at flat index ``i`` of C-contiguous ``a``."""
    _check_array(a)
    if not (isinstance(v, Vec) and v.dtype == a.dtype):
        raise TypeError(f"simd: cannot store {v} into {a}")

    def codegen(context, builder, sig, args):
        ptr = _element_pointer(context, builder, sig.args[0], args[0], args[1], args[2].type)
        builder.store(args[2], ptr, align=a.dtype.bitwidth // 8)
        return context.get_dummy_value()

    return types.none(a, i, v), codegen


@intrinsic
def vsplat(typingctx, x):
    """A vector with ``x`` in every lane (a broadcast load when x comes from memory)."""
    if not isinstance(x, types.Float):
        raise TypeError(f"simd: vsplat needs a float, got {x}")
    vt = Vec(x)

    def codegen(context, builder, sig, args):
        ll_vt = context.get_value_type(vt)
        one = builder.insert_element(ir.Constant(ll_vt, ir.Undefined), args[0], ir.Constant(ir.IntType(32), 0))
        zeros = ir.Constant(ir.VectorType(ir.IntType(32), vt.lanes), [0] * vt.lanes)
        return builder.shuffle_vector(one, one, zeros)

    return vt(x), codegen


@intrinsic
def vsplat_at(typingctx, a, i):
    """``vsplat(a[i])`` for flat index ``i >= 0`` of C-contiguous ``a``, as one broadcast load: an
    index LLVM cannot prove non-negative makes ``a[i]`` test it and wrap around first (4
    instructions per element, as many as the block's FMAs, in the convolutions' inner loops)."""
    _check_array(a)
    vt = Vec(a.dtype)

    def codegen(context, builder, sig, args):
        et = context.get_value_type(a.dtype)
        x = builder.load(_element_pointer(context, builder, sig.args[0], args[0], args[1], et),
                         align=a.dtype.bitwidth // 8)
        return _splat(builder, context.get_value_type(vt), x)

    return vt(a, i), codegen


@intrinsic
def vsplat_like(typingctx, x, like):
    """A vector of ``like``'s type (of :func:`vhalf`'s width, say) with ``x`` in every lane."""
    if not (isinstance(like, Vec) and x == like.dtype):
        raise TypeError(f"simd: vsplat_like needs a {getattr(like, 'dtype', 'float')} and a vector of it, got {x} "
                        f"and {like}")

    def codegen(context, builder, sig, args):
        return _splat(builder, context.get_value_type(like), args[0])

    return like(x, like), codegen


@intrinsic
def vhalf(typingctx, v):
    """The first half of v's lanes as a vector of half the width. For a remainder of at most LANES/2
    elements: on CPUs that run a 512-bit operation as two 256-bit halves (AMD Zen 4), a half-width
    one costs half."""
    if not (isinstance(v, Vec) and v.lanes >= 2):
        raise TypeError(f"simd: vhalf needs a vector of 2 or more lanes, got {v}")
    half = Vec(v.dtype, v.lanes // 2)

    def codegen(context, builder, sig, args):
        return builder.shuffle_vector(args[0], args[0], _lane_indices(range(half.lanes)))

    return half(v), codegen


@intrinsic
def vfma(typingctx, a, b, c):
    """a * b + c lane by lane with one rounding (llvm.fma: a vfmadd instruction on x86)."""
    if not (isinstance(c, Vec) and a == b == c):
        raise TypeError(f"simd: vfma needs three equal vectors, got {a}, {b}, {c}")

    def codegen(context, builder, sig, args):
        t = args[0].type
        name = f"llvm.fma.v{t.count}{'f32' if c.dtype.bitwidth == 32 else 'f64'}"
        fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(t, [t, t, t]), name)
        return builder.call(fn, args)

    return c(a, b, c), codegen


def lanes(dtype) -> int:
    """Elements of ``dtype`` per vector."""
    return VECTOR_BYTES // np.dtype(dtype).itemsize


@overload(lanes)
def _lanes_in_kernels(dtype):
    """In a kernel ``lanes(a.dtype)`` is a compile-time constant, so a loop stepping by it counts
    its trips with a shift: a step passed in costs a division per loop, which LLVM cannot hoist
    (it could trap), and the per-row loops paid it on every row."""
    t = getattr(dtype, "dtype", None) or getattr(dtype, "instance_type", None)
    if not isinstance(t, (types.Float, types.Integer)):
        return None
    n = VECTOR_BYTES // (t.bitwidth // 8)
    return lambda dtype: n


@intrinsic
def vsum(typingctx, v):
    """The sum of v's lanes (a fixed tree order, so the same on every call)."""
    if not isinstance(v, Vec):
        raise TypeError(f"simd: vsum needs a vector, got {v}")

    def codegen(context, builder, sig, args):
        t = args[0].type
        suffix = "f32" if v.dtype.bitwidth == 32 else "f64"
        fnty = ir.FunctionType(t.element, [t.element, t])
        fn = cgutils.get_or_insert_function(builder.module, fnty, f"llvm.vector.reduce.fadd.v{t.count}{suffix}")
        return builder.call(fn, [ir.Constant(t.element, 0.0), args[0]], fastmath=("reassoc",))

    return v.dtype(v), codegen


def _lane_sums(builder, vs):
    """LLVM vectors ``vs`` (k of them, k a power of 2) -> one <k x T> vector of their lane sums, in
    order: pairs are merged by shuffles, each merge halving the lanes every input holds (the
    transpose-and-add tree), so k sums cost about 3k shuffles and adds rather than k reductions."""
    count = vs[0].type.count
    width, groups = count, [(v, 1) for v in vs]  # (vector, inputs in it); each input holds `width` lanes
    while len(groups) > 1 and width > 1:
        h, merged = width // 2, []
        for (a, m), (b, _) in zip(groups[::2], groups[1::2]):
            left = [blk * width + j for blk in range(m) for j in range(h)]
            left += [count + x for x in left]
            x = builder.shuffle_vector(a, b, _lane_indices(left))
            y = builder.shuffle_vector(a, b, _lane_indices(x + h for x in left))
            merged.append((builder.fadd(x, y), 2 * m))
        groups, width = merged, h
    if len(groups) == 1:  # one vector, `width` lanes per input left: add them within it
        v, m = groups[0]
        while width > 1:
            h = width // 2
            left = [blk * width + j for blk in range(m) for j in range(h)]
            v = builder.fadd(builder.shuffle_vector(v, v, _lane_indices(left)),
                             builder.shuffle_vector(v, v, _lane_indices(x + h for x in left)))
            width = h
        return v
    vs = [v for v, _ in groups]  # one lane per input: concatenate
    while len(vs) > 1:
        n = vs[0].type.count
        vs = [builder.shuffle_vector(a, b, _lane_indices(range(2 * n))) for a, b in zip(vs[::2], vs[1::2])]
    return vs[0]


@intrinsic
def vsums_add(typingctx, a, i, vs):
    """``a[i + r] += vsum(vs[r])`` for each of the k vectors of tuple ``vs`` (k a power of 2): k
    reductions at once (:func:`_lane_sums`), one k-element load and store. The sums' order is
    fixed, as in :func:`vsum`, though not the same order."""
    _check_array(a)
    k = len(vs) if isinstance(vs, types.UniTuple) else 0
    if not (k and isinstance(vs.dtype, Vec) and vs.dtype.dtype == a.dtype and k & (k - 1) == 0):
        raise TypeError(f"simd: vsums_add needs a tuple of 2**j vectors of {a.dtype}, got {vs}")

    def codegen(context, builder, sig, args):
        sums = _lane_sums(builder, [builder.extract_value(args[2], r) for r in range(k)])
        ptr = _element_pointer(context, builder, sig.args[0], args[0], args[1], sums.type)
        align = a.dtype.bitwidth // 8
        builder.store(builder.fadd(builder.load(ptr, align=align), sums), ptr, align=align)
        return context.get_dummy_value()

    return types.none(a, i, vs), codegen


def _transposed(builder, rows):
    """LLVM vectors ``rows`` (k of k lanes, k a power of 2) -> the k columns of the matrix they
    form: log2(k) rounds of two-input shuffles, each swapping the off-diagonal blocks of a size."""
    k, step = len(rows), 1
    while step < k:
        new = list(rows)
        for i in range(k):
            if (i // step) % 2 == 0:
                a, b = rows[i], rows[i + step]
                new[i] = builder.shuffle_vector(a, b, _lane_indices(
                    x if (x // step) % 2 == 0 else k + x - step for x in range(k)))
                new[i + step] = builder.shuffle_vector(a, b, _lane_indices(
                    x + step if (x // step) % 2 == 0 else k + x for x in range(k)))
        rows, step = new, 2 * step
    return rows


@intrinsic
def vload_columns(typingctx, a, i, stride, rows, n, z):
    """LANES vectors: vector j holds element j of each of LANES rows of C-contiguous ``a``, row r
    the ``n`` elements from flat index i + r*stride (the first ``rows`` rows; z's lanes for the
    others, and for a column j >= n): a LANES x LANES block read as rows, transposed in registers.
    Nothing past the rows' n elements is read."""
    _check_array(a)
    if not (isinstance(z, Vec) and z.dtype == a.dtype):
        raise TypeError(f"simd: vload_columns needs a vector of {a.dtype} for the missing lanes, got {z}")
    k = z.lanes
    if k & (k - 1):
        raise TypeError(f"simd: vload_columns needs a power-of-2 lane count, got {z}")

    def codegen(context, builder, sig, args):
        st = ir.VectorType(context.get_value_type(a.dtype), k)
        first = _first_lanes(context, builder, args[4], sig.args[4], k)
        i64 = ir.IntType(64)
        base = context.cast(builder, args[1], sig.args[1], types.int64)
        step = context.cast(builder, args[2], sig.args[2], types.int64)
        nrows = context.cast(builder, args[3], sig.args[3], types.int64)
        fnty = ir.FunctionType(st, [st.as_pointer(), ir.IntType(32), first.type, st])
        loaded = []
        for r in range(k):
            on = builder.icmp_signed("<", ir.Constant(i64, r), nrows)
            mask = builder.and_(first, _splat(builder, ir.VectorType(ir.IntType(1), k), on))
            idx = builder.add(base, builder.mul(step, ir.Constant(i64, r)))
            ptr = _element_pointer(context, builder, sig.args[0], args[0], idx, st)
            loaded.append(_masked(builder, "load", a.dtype, k, fnty, [ptr, ir.Constant(ir.IntType(32), 1), mask,
                                                                        args[5]]))
        return context.make_tuple(builder, sig.return_type, _transposed(builder, loaded))

    return types.UniTuple(z, k)(a, i, stride, rows, n, z), codegen


@intrinsic
def vload_pairs(typingctx, a, i):
    """The 2*LANES elements of ``a`` from flat index ``i`` as (even ones, odd ones): the left and
    right pixels of consecutive 2-wide windows."""
    _check_array(a)
    vt = Vec(a.dtype)

    def codegen(context, builder, sig, args):
        ll_vt = context.get_value_type(vt)
        ptr = _element_pointer(context, builder, sig.args[0], args[0], args[1], ll_vt)
        lo = builder.load(ptr, align=a.dtype.bitwidth // 8)
        hi = builder.load(builder.gep(ptr, [ir.Constant(ir.IntType(64), 1)]), align=a.dtype.bitwidth // 8)
        n = vt.lanes
        even = builder.shuffle_vector(lo, hi, _lane_indices(range(0, 2 * n, 2)))
        odd = builder.shuffle_vector(lo, hi, _lane_indices(range(1, 2 * n, 2)))
        return context.make_tuple(builder, sig.return_type, [even, odd])

    return types.UniTuple(vt, 2)(a, i), codegen


@intrinsic
def vadd(typingctx, a, b):
    """a + b lane by lane."""
    _check_vectors("vadd", a, b)

    def codegen(context, builder, sig, args):
        return builder.fadd(args[0], args[1])

    return a(a, b), codegen


@intrinsic
def vsub(typingctx, a, b):
    """a - b lane by lane."""
    _check_vectors("vsub", a, b)

    def codegen(context, builder, sig, args):
        return builder.fsub(args[0], args[1])

    return a(a, b), codegen


@intrinsic
def vgate(typingctx, v, y):
    """v * (y > 0) lane by lane: with y = v the ReLU layer's formula (NaN stays NaN, negatives
    become -0.0), with y a ReLU's output its backward."""
    _check_vectors("vgate", v, y)

    def codegen(context, builder, sig, args):
        t = args[0].type
        positive = builder.fcmp_ordered(">", args[1], ir.Constant(t, [0.0] * t.count))
        return builder.fmul(args[0], builder.uitofp(positive, t))

    return v(v, y), codegen


@intrinsic
def vpick(typingctx, a, t, v):
    """v where a == t, else 0, lane by lane: a window's gradient at its argmax ``a``."""
    _check_vectors("vpick", a, v)

    def codegen(context, builder, sig, args):
        vt = args[0].type
        hit = builder.fcmp_ordered("==", args[0], _splat(builder, vt, context.cast(builder, args[1], sig.args[1],
                                                                                    a.dtype)))
        return builder.select(hit, args[2], ir.Constant(vt, [0.0] * vt.count))

    return v(a, t, v), codegen


@intrinsic
def vmax_arg(typingctx, m, arg, v, t):
    """One step of a running max over a window, lane by lane: where m is not NaN and v > m or v is
    NaN, (m, arg) becomes (v, t), so the first maximum, or the first NaN, wins (as MaxPool2d).
    ``arg`` holds window-local indices as floats; ``t`` is v's index."""
    _check_vectors("vmax_arg", m, arg, v)
    if not isinstance(t, (types.Float, types.Integer)):
        raise TypeError(f"simd: vmax_arg needs a number for the index, got {t}")

    def codegen(context, builder, sig, args):
        m_, arg_, v_, t_ = args
        vt = m_.type
        tvec = _splat(builder, vt, context.cast(builder, t_, sig.args[3], m.dtype))
        m_ordered = builder.fcmp_ordered("ord", m_, m_)
        greater_or_nan = builder.fcmp_unordered(">", v_, m_)  # true when v > m or either is NaN
        take = builder.and_(m_ordered, greater_or_nan)
        return context.make_tuple(builder, sig.return_type,
                                  [builder.select(take, v_, m_), builder.select(take, tvec, arg_)])

    return types.UniTuple(m, 2)(m, arg, v, t), codegen


@intrinsic
def vstore_first(typingctx, a, i, v, n):
    """Store the first ``n`` lanes of ``v`` (0 <= n <= LANES) at flat index ``i`` of C-contiguous
    ``a``, converted to a's dtype (float, or integer for indices); nothing past them is written."""
    _check_array(a, (types.Float, types.Integer))
    if not isinstance(v, Vec):
        raise TypeError(f"simd: vstore_first needs a vector, got {v}")

    def codegen(context, builder, sig, args):
        count = args[2].type.count
        st, mask, ptr = _first_lanes_at(context, builder, sig, args, a.dtype, count, n_arg=3)
        fnty = ir.FunctionType(ir.VoidType(), [st, st.as_pointer(), ir.IntType(32), mask.type])
        _masked(builder, "store", a.dtype, count, fnty,
                [_convert(builder, args[2], v.dtype, a.dtype, st), ptr, ir.Constant(ir.IntType(32), 1), mask])
        return context.get_dummy_value()

    return types.none(a, i, v, n), codegen


@intrinsic
def vload_first(typingctx, a, i, n, z):
    """The first ``n`` lanes (0 <= n <= LANES) from flat index ``i`` of C-contiguous ``a``,
    converted to z's dtype, and z's lanes after them; nothing past them is read."""
    _check_array(a, (types.Float, types.Integer))
    if not isinstance(z, Vec):
        raise TypeError(f"simd: vload_first needs a vector for the lanes past n, got {z}")

    def codegen(context, builder, sig, args):
        count = args[3].type.count
        st, mask, ptr = _first_lanes_at(context, builder, sig, args, a.dtype, count, n_arg=2)
        fnty = ir.FunctionType(st, [st.as_pointer(), ir.IntType(32), mask.type, st])
        raw = _masked(builder, "load", a.dtype, count, fnty, [ptr, ir.Constant(ir.IntType(32), 1), mask,
                                                               ir.Constant(st, None)])
        return builder.select(mask, _convert(builder, raw, a.dtype, z.dtype, args[3].type), args[3])

    return z(a, i, n, z), codegen


@intrinsic
def vstore_pairs(typingctx, a, i, even, odd, n):
    """Interleave ``even`` and ``odd`` (the inverse of :func:`vload_pairs`) and store the first
    2*n elements at flat index ``i`` of C-contiguous ``a``; nothing past them is written."""
    _check_array(a)
    _check_vectors("vstore_pairs", even, odd)
    if even.dtype != a.dtype:
        raise TypeError(f"simd: cannot store {even} into {a}")

    def codegen(context, builder, sig, args):
        count = args[2].type.count
        both = builder.shuffle_vector(args[2], args[3], _lane_indices(k // 2 + (k % 2) * count
                                                                      for k in range(2 * count)))
        n2 = builder.mul(context.cast(builder, args[4], sig.args[4], types.int32), ir.Constant(ir.IntType(32), 2))
        mask = _first_lanes(context, builder, n2, types.int32, 2 * count)
        ptr = _element_pointer(context, builder, sig.args[0], args[0], args[1], both.type)
        fnty = ir.FunctionType(ir.VoidType(), [both.type, both.type.as_pointer(), ir.IntType(32), mask.type])
        _masked(builder, "store", a.dtype, 2 * count, fnty, [both, ptr, ir.Constant(ir.IntType(32), 1), mask])
        return context.get_dummy_value()

    return types.none(a, i, even, odd, n), codegen

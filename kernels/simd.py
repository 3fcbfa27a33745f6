"""Explicit SIMD vectors for Numba kernels: a ``Vec`` value is one LLVM vector register.

Why: Numba's auto-vectorizer follows LLVM's tuning for the host, which on AVX-512 Intel CPUs
prefers 256-bit vectors, and it only keeps sums in registers when it can prove the loop
simple. A convolution's register block (8 output channels x 2 vectors of positions, summed over
every tap) needs both: here each sum is a ``Vec`` SSA value, so it lives in a register by
construction, and a vector is as wide as the host's registers (64 bytes with AVX-512, 32 with
AVX/AVX2, 16 otherwise). Explicit vector types are legal at any width in LLVM IR: on another
CPU they are split into narrower registers, so the results never depend on the machine.

The functions: ``vload(a, i)`` / ``vstore(a, i, v)`` (LANES elements from flat index i of a
C-contiguous array, unaligned), ``vsplat(x)`` (x in every lane), ``vfma(a, b, c)`` (a*b + c,
one rounding), ``vsum(v)`` (the lanes added), ``lanes(dtype)`` (elements per vector).
"""

from __future__ import annotations

import llvmlite.binding as llvm
import numpy as np
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic, models, register_model


def _vector_bytes() -> int:
    try:
        features = llvm.get_host_cpu_features()
    except RuntimeError:  # not every platform reports its features
        return 16
    if features.get("avx512f"):
        return 64
    return 32 if features.get("avx") else 16


VECTOR_BYTES = _vector_bytes()


class Vec(types.Type):
    """LANES elements of ``dtype`` in one vector register."""

    def __init__(self, dtype):
        self.dtype = dtype
        self.lanes = VECTOR_BYTES // (dtype.bitwidth // 8)
        super().__init__(name=f"Vec({dtype} x {self.lanes})")


@register_model(Vec)
class _VecModel(models.PrimitiveModel):
    def __init__(self, dmm, fe_type):
        elem = dmm.lookup(fe_type.dtype).get_value_type()
        super().__init__(dmm, fe_type, ir.VectorType(elem, fe_type.lanes))


def _element_pointer(context, builder, arytype, ary, index, vtype):
    data = context.make_array(arytype)(context, builder, ary).data
    return builder.bitcast(builder.gep(data, [index]), vtype.as_pointer())


def _check_array(a):
    if not (isinstance(a, types.Array) and a.layout == "C" and isinstance(a.dtype, types.Float)):
        raise TypeError(f"simd: expected a C-contiguous float array, got {a}")


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

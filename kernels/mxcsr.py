"""The x86-64 SSE control register (MXCSR), set from compiled code: ``swap(mask, bits)``.

``accelnet.cpu_runtime`` uses it to flush subnormals to zero only for the duration of an accelnet
call. Two instructions (stmxcsr, ldmxcsr) in a Numba function: a tenth of the cost of glibc's
fegetenv/fesetenv through ctypes (README, "Thread pools"), and on any x86-64 OS.
"""

from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic


@intrinsic
def _swap_bits(typingctx, mask, bits):
    def codegen(context, builder, signature, args):
        mask, bits = args
        i8p = ir.IntType(8).as_pointer()
        fnty = ir.FunctionType(ir.VoidType(), [i8p])
        st = cgutils.get_or_insert_function(builder.module, fnty, "llvm.x86.sse.stmxcsr")
        ld = cgutils.get_or_insert_function(builder.module, fnty, "llvm.x86.sse.ldmxcsr")
        slot = cgutils.alloca_once(builder, ir.IntType(32))
        builder.call(st, [builder.bitcast(slot, i8p)])
        old = builder.load(slot)
        builder.store(builder.or_(builder.and_(old, builder.not_(mask)), builder.and_(bits, mask)), slot)
        builder.call(ld, [builder.bitcast(slot, i8p)])
        return old

    return types.uint32(types.uint32, types.uint32), codegen


@njit(cache=True)
def swap(mask, bits):
    """Set the ``mask`` bits of this thread's MXCSR to ``bits``; returns the MXCSR before."""
    return _swap_bits(types.uint32(mask), types.uint32(bits))

"""The register blocks fit the vector registers of the CPU the kernels are compiled for: the
innermost loop of each product and convolution kernel keeps its sums in registers, with no vector
stored to or reloaded from the stack. (With AVX2's 16 registers the 8 x 2 blocks spilled: 10 stack
accesses per 16 FMAs; ``simd.WIDE_BLOCKS`` picks 4 x 2 blocks there.) tests/test_simd_widths.py
reruns this file compiled for Haswell's own features."""

from __future__ import annotations

import platform
import re

import pytest
from numba import njit, types

from accelnet.kernels import cpu_conv, cpu_gemm, cpu_winograd, simd

pytestmark = pytest.mark.skipif(platform.machine() not in ("x86_64", "AMD64"), reason="reads x86 assembly")

F, I, B = types.float32[::1], types.int64, types.boolean
KERNELS = {  # the kernel this target runs, and argument types to compile it for
    "tile_products": (cpu_winograd.tile_products, (F, I, I, I, F, I, I, F)),
    "grad_products": (cpu_winograd.grad_products, (F, I, F, I, I, I, I, F)),
    "correlate": (cpu_conv._correlate, (F, I, I, I, I, F, I, I, I, I, I, B, I, F, I)),
    "weight_grad": (cpu_conv._weight_grad, (F, I, I, F, I, I, I, I, I, I, I, F)),
    "gemm": (cpu_gemm._rows_x2 if simd.WIDE_BLOCKS else cpu_gemm._rows4_x2,
             (types.float32[:, ::1], I, I, F, I, I, I, F, F, B)),
}


def _innermost_loop(asm: str) -> str:
    """The single-block loop (a label, then code up to a jump back to it, no label between) with
    the most FMAs: the inner loop of a register block."""
    best = ""
    for block in re.split(r"^(?=\.LBB\w+:$)", asm, flags=re.M):
        label = re.match(r"(\.LBB\w+):", block)
        back = label and re.search(rf"^\s+j\w+\s+{re.escape(label.group(1))}$", block, re.M)
        if back and block.count("vfmadd") > best.count("vfmadd"):
            best = block[: back.end()]
    return best


@pytest.mark.parametrize("name", KERNELS)
def test_a_kernels_innermost_loop_keeps_its_sums_in_registers(name):
    kernel, argtypes = KERNELS[name]
    # a fresh, uncached copy: Numba shows no assembly for kernels loaded from its cache
    compiled = njit(types.none(*argtypes), fastmath={"contract"}, error_model="numpy")(kernel.py_func)
    loop = _innermost_loop(next(iter(compiled.inspect_asm().values())))
    assert loop.count("vfmadd") >= 8, f"no FMA loop found in {name}'s assembly"
    spills = [line.strip() for line in loop.splitlines()
              if "(%rsp)" in line and re.search(r"%[xyz]mm", line)]
    assert not spills, (f"{name} moves vectors through the stack in its innermost loop at "
                        f"{simd.VECTOR_REGISTERS} vector registers: {spills[:4]}")

"""A product's register block against the target's vector registers: C = A @ B (float32) summed in
8 x 2 vectors, the block of the CPU product kernels where 32 vector registers exist, in 6 x 2 and
in 4 x 2, blocks that fit 16 (12 or 8 sums, 2 loaded vectors, a broadcast; the kernels take 4 x 2
there: ``simd.WIDE_BLOCKS``), in GFLOP/s as this process's Numba target compiles them.

    python bench/profile_register_block.py [--avx2] [--repeats 3]

``--avx2`` runs it compiled as an AVX2 CPU would (32-byte vectors, Haswell's own features: 16
vector registers), where the 8 x 2 block's 19 live vectors spill (issue 18, item 3).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

import numpy as np

from laptop_cpu import AVX2  # the AVX2 laptop's settings, one definition


def _products():
    """{"8 x 2": gemm, "6 x 2": gemm, "4 x 2": gemm}: C = A @ B for m a multiple of the rows, n of 2
    vectors."""
    from numba import njit, prange

    from accelnet.kernels import simd
    from accelnet.kernels.simd import vfma, vload, vsplat, vstore

    @njit(fastmath={"contract"}, parallel=True)
    def rows8(a, b, c):
        lanes = simd.lanes(c.dtype)
        (m, k), n = a.shape, b.shape[1]
        z = vsplat(c.dtype.type(0))
        for blk in prange(m // 8):
            i = 8 * blk
            for j in range(0, n, 2 * lanes):
                c00 = c01 = c10 = c11 = c20 = c21 = c30 = c31 = z
                c40 = c41 = c50 = c51 = c60 = c61 = c70 = c71 = z
                for kk in range(k):
                    b0, b1 = vload(b, kk * n + j), vload(b, kk * n + j + lanes)
                    x0, x1, x2, x3 = vsplat(a[i, kk]), vsplat(a[i + 1, kk]), vsplat(a[i + 2, kk]), \
                        vsplat(a[i + 3, kk])
                    x4, x5, x6, x7 = vsplat(a[i + 4, kk]), vsplat(a[i + 5, kk]), vsplat(a[i + 6, kk]), \
                        vsplat(a[i + 7, kk])
                    c00, c01, c10, c11 = vfma(x0, b0, c00), vfma(x0, b1, c01), vfma(x1, b0, c10), vfma(x1, b1, c11)
                    c20, c21, c30, c31 = vfma(x2, b0, c20), vfma(x2, b1, c21), vfma(x3, b0, c30), vfma(x3, b1, c31)
                    c40, c41, c50, c51 = vfma(x4, b0, c40), vfma(x4, b1, c41), vfma(x5, b0, c50), vfma(x5, b1, c51)
                    c60, c61, c70, c71 = vfma(x6, b0, c60), vfma(x6, b1, c61), vfma(x7, b0, c70), vfma(x7, b1, c71)
                for q, (v0, v1) in enumerate(((c00, c01), (c10, c11), (c20, c21), (c30, c31),
                                              (c40, c41), (c50, c51), (c60, c61), (c70, c71))):
                    vstore(c, (i + q) * n + j, v0)
                    vstore(c, (i + q) * n + j + lanes, v1)

    @njit(fastmath={"contract"}, parallel=True)
    def rows6(a, b, c):
        lanes = simd.lanes(c.dtype)
        (m, k), n = a.shape, b.shape[1]
        z = vsplat(c.dtype.type(0))
        for blk in prange(m // 6):
            i = 6 * blk
            for j in range(0, n, 2 * lanes):
                c00 = c01 = c10 = c11 = c20 = c21 = c30 = c31 = c40 = c41 = c50 = c51 = z
                for kk in range(k):
                    b0, b1 = vload(b, kk * n + j), vload(b, kk * n + j + lanes)
                    x0, x1, x2 = vsplat(a[i, kk]), vsplat(a[i + 1, kk]), vsplat(a[i + 2, kk])
                    x3, x4, x5 = vsplat(a[i + 3, kk]), vsplat(a[i + 4, kk]), vsplat(a[i + 5, kk])
                    c00, c01, c10, c11 = vfma(x0, b0, c00), vfma(x0, b1, c01), vfma(x1, b0, c10), vfma(x1, b1, c11)
                    c20, c21, c30, c31 = vfma(x2, b0, c20), vfma(x2, b1, c21), vfma(x3, b0, c30), vfma(x3, b1, c31)
                    c40, c41, c50, c51 = vfma(x4, b0, c40), vfma(x4, b1, c41), vfma(x5, b0, c50), vfma(x5, b1, c51)
                for q, (v0, v1) in enumerate(((c00, c01), (c10, c11), (c20, c21), (c30, c31), (c40, c41), (c50, c51))):
                    vstore(c, (i + q) * n + j, v0)
                    vstore(c, (i + q) * n + j + lanes, v1)

    @njit(fastmath={"contract"}, parallel=True)
    def rows4(a, b, c):
        lanes = simd.lanes(c.dtype)
        (m, k), n = a.shape, b.shape[1]
        z = vsplat(c.dtype.type(0))
        for blk in prange(m // 4):
            i = 4 * blk
            for j in range(0, n, 2 * lanes):
                c00 = c01 = c10 = c11 = c20 = c21 = c30 = c31 = z
                for kk in range(k):
                    b0, b1 = vload(b, kk * n + j), vload(b, kk * n + j + lanes)
                    x0, x1, x2, x3 = vsplat(a[i, kk]), vsplat(a[i + 1, kk]), vsplat(a[i + 2, kk]), \
                        vsplat(a[i + 3, kk])
                    c00, c01, c10, c11 = vfma(x0, b0, c00), vfma(x0, b1, c01), vfma(x1, b0, c10), vfma(x1, b1, c11)
                    c20, c21, c30, c31 = vfma(x2, b0, c20), vfma(x2, b1, c21), vfma(x3, b0, c30), vfma(x3, b1, c31)
                for q, (v0, v1) in enumerate(((c00, c01), (c10, c11), (c20, c21), (c30, c31))):
                    vstore(c, (i + q) * n + j, v0)
                    vstore(c, (i + q) * n + j + lanes, v1)

    return {"8 x 2": rows8, "6 x 2": rows6, "4 x 2": rows4}


def measure(m: int = 960, k: int = 784, n: int = 64, repeats: int = 3, calls: int = 200) -> list[dict]:
    """Each block's GFLOP/s (median of ``calls`` calls), ``repeats`` times alternately; checked against NumPy."""
    import accelnet  # noqa: F401 - thread-pool defaults (README, "Thread pools")
    from accelnet.kernels import simd
    from numba.core import config

    rng = np.random.default_rng(0)
    a, b = rng.random((m, k), dtype=np.float32), rng.random((k, n), dtype=np.float32)
    rows = []
    for name, gemm in _products().items():
        c = np.empty((m, n), np.float32)
        gemm(a, b, c)
        np.testing.assert_allclose(c, a @ b, rtol=1e-4)
        rows.append({"block": name, "gemm": gemm, "c": c, "rates": []})
    for _ in range(repeats):
        for r in rows:
            ts = []
            for _ in range(calls):
                t0 = time.perf_counter()
                r["gemm"](a, b, r["c"])
                ts.append(time.perf_counter() - t0)
            r["rates"].append(2 * m * k * n / float(np.median(ts)) / 1e9)
    target = f"{config.CPU_NAME or 'host'} CPU, features {'own' if config.CPU_FEATURES == '' else 'host'}"
    return [{"block": r["block"], "GFLOP/s": r["rates"], "vector bytes": simd.VECTOR_BYTES, "target": target}
            for r in rows]


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--avx2", action="store_true", help="compiled as an AVX2 CPU would (a fresh process)")
    p.add_argument("--repeats", type=int, default=3)
    a = p.parse_args(argv)
    if a.avx2:
        cmd = [sys.executable, os.path.abspath(__file__), "--repeats", str(a.repeats)]
        sys.exit(subprocess.run(cmd, env={**os.environ, **AVX2}).returncode)
    for r in measure(repeats=a.repeats):
        print(f"{r['block']} block, {r['vector bytes']}-byte vectors ({r['target']}): "
              + ", ".join(f"{x:.0f}" for x in r["GFLOP/s"]) + " GFLOP/s")


if __name__ == "__main__":
    main()

"""Every numba.cuda kernel, compiled to PTX for sm_90 with float32 arrays, has no float64
instruction: an int literal in float arithmetic (``x * 0``, ``1 if m else 0``) silently promotes
it to float64, which runs at a fraction of the float32 rate. Needs NVVM (``numba-cuda[cu12]``),
not a GPU."""

import pytest

numba_cuda = pytest.importorskip("numba.cuda", reason="numba-cuda is not installed (pip install 'accelnet[dev]')")
from numba import boolean, float32, float64, int64, uint8  # noqa: E402
from numba.cuda.dispatcher import CUDADispatcher  # noqa: E402

from accelnet.kernels import cuda as kcuda  # noqa: E402
from accelnet.kernels import elementwise  # noqa: E402


def _nvvm_available() -> bool:
    try:
        numba_cuda.compile_ptx(lambda a: None, (float32[::1],), cc=(9, 0))
    except Exception:  # NVVM/NVRTC libraries not found
        return False
    return True


pytestmark = pytest.mark.skipif(not _nvvm_available(),
                                reason="NVVM is not installed (pip install 'numba-cuda[cu12]', in accelnet[dev])")

F, I = float32, int64
V, M, P = F[::1], F[:, ::1], F[:, :, :, ::1]  # flat, matrix, image batch
SIGNATURES = {
    "_triad": (V, V, V, F),
    "_im2col": (P, I, I, I, I, I, I, M),
    "_col2im": (M, I, I, I, I, I, I, F, P),
    "_maxpool2d": (P, I, I, I, P, uint8[:, :, :, ::1]),
    "_maxpool2d_backward": (P, uint8[:, :, :, ::1], I, I, I, F, P),
    "_avgpool2d": (P, I, I, I, F, F, P),
    "_avgpool2d_backward": (P, I, I, I, F, F, P),
    "_shift2d": (P, I[::1], I[::1], F, P),
    "_relu": (V, F, V),
    "_relu_backward": (V, V, F, V),
    "_add_bias": (V, V, boolean, F),
    "_rows_to_nchw": (M, V, P),
    "_softmax_cross_entropy": (M, I[::1], F, M, V),
    "_softmax_cross_entropy_backward": (M, I[::1], F, F, M),
    "_nchw_to_rows": (P, M),
    # the squared gradient norm accumulates in float64 on purpose (a sum of up to 1e8 squares)
    "_sum_squares_partial": (V, float64[::1]),
}
FLOAT64_BY_DESIGN = {"_sum_squares_partial"}


def _update_signature(name):
    formula, state = elementwise.UPDATES[name]
    n_scalars = formula.__code__.co_argcount - 2 - len(state)  # the scalars, gscale and tiny
    return (V, V, *[V] * len(state), *[F] * n_scalars)


KERNELS = {name: (k, SIGNATURES[name]) for name, k in vars(kcuda).items()
           if isinstance(k, CUDADispatcher) and not k.targetoptions.get("device") and name in SIGNATURES}
KERNELS.update({f"update:{name}": (k, _update_signature(name)) for name, k in kcuda._UPDATES.items()})


def test_every_kernel_has_a_float32_signature_here():
    kernels = {name for name, k in vars(kcuda).items()
               if isinstance(k, CUDADispatcher) and not k.targetoptions.get("device")}
    assert kernels == set(SIGNATURES)


class _Hopper:
    """Stands in for the current device: numba-cuda asks it for the compute capability when a
    kernel calls a device function, which needs no GPU to compile."""

    compute_capability = (9, 0)


@pytest.mark.parametrize("name", sorted(KERNELS))
def test_float32_kernel_compiles_without_float64_instructions(name, monkeypatch):
    import numba.cuda.dispatcher

    monkeypatch.setattr(numba.cuda.dispatcher, "get_current_device", lambda: _Hopper())
    kernel, sig = KERNELS[name]
    ptx, _ = numba_cuda.compile_ptx(kernel.py_func, sig, cc=(9, 0))
    f64 = [line.strip() for line in ptx.splitlines() if ".f64" in line]
    if name in FLOAT64_BY_DESIGN:
        assert f64, "the float64 accumulator is gone: update FLOAT64_BY_DESIGN"
    else:
        assert not f64, f"{len(f64)} float64 instructions, e.g. {f64[:3]}"

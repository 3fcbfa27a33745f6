"""GPU kernels with the reference signatures.

Until the numba.cuda kernels land (the GPU issue), the reference ``xp`` formulas
run on CuPy arrays unchanged.
"""

from .reference import (  # noqa: F401
    adagrad, adam, avgpool2d, avgpool2d_backward, col2im, im2col, maxpool2d, maxpool2d_backward, momentum, nesterov,
    nchw_to_rows, rmsprop, rows_to_nchw, sgd, sum_squares, triad,
)

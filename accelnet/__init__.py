"""accelnet: the layers and optimizers of *Deep Learning from Scratch*, fast on CPU
(NumPy + Numba) and one flag away from an NVIDIA GPU (CuPy + numba.cuda)."""

import os as _os
import sys as _sys

# OpenBLAS workers spin ~0.1 s after each matrix product and starve the Numba kernel that
# follows (20-40x slower optimizer steps on 2 cores). The timeout is read when NumPy loads
# OpenBLAS, so it can only be set here when accelnet is imported first (the `accelnet` CLI
# always is); a value the user set wins. See accelnet.backend for the Numba side.
if "numpy" not in _sys.modules:
    _os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "4")

from .backend import Backend, BackendUnavailable, get_backend
from .gradcheck import check_gradients, numerical_gradient
from .layers import AvgPool2d, BatchNorm, Conv2d, Dropout, Flatten, Layer, Linear, MaxPool2d, ReLU, Sigmoid, Tanh
from .losses import MeanSquaredError, SoftmaxCrossEntropy
from .model import Sequential
from .models import deep_convnet, multi_layer_net, simple_convnet, two_layer_net

__version__ = "0.1.0"

__all__ = [
    "Backend", "BackendUnavailable", "get_backend",
    "check_gradients", "numerical_gradient",
    "AvgPool2d", "BatchNorm", "Conv2d", "Dropout", "Flatten", "Layer", "Linear", "MaxPool2d", "ReLU", "Sigmoid", "Tanh",
    "MeanSquaredError", "SoftmaxCrossEntropy",
    "Sequential",
    "deep_convnet", "multi_layer_net", "simple_convnet", "two_layer_net",
]

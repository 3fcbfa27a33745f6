"""accelnet: the layers and optimizers of *Deep Learning from Scratch*, fast on CPU
(NumPy + Numba) and one flag away from an NVIDIA GPU (CuPy + numba.cuda)."""

# Before NumPy loads OpenBLAS (the `accelnet` CLI always imports accelnet first): see cpu_runtime.
from . import cpu_runtime as _cpu_runtime

_cpu_runtime.preset_openblas_timeout()
_cpu_runtime.preset_threads_per_rank()

from .backend import Backend, BackendUnavailable, get_backend
from .gradcheck import check_gradients, numerical_gradient
from .layers import AvgPool2d, BatchNorm, Conv2d, Dropout, Flatten, Layer, Linear, MaxPool2d, ReLU, Sigmoid, Tanh
from .losses import MeanSquaredError, SoftmaxCrossEntropy
from .model import Sequential
from .presets import deep_convnet, multi_layer_net, simple_convnet, two_layer_net
from .saved_model import load_model, save_model

__version__ = "0.1.0"

__all__ = [
    "Backend", "BackendUnavailable", "get_backend",
    "check_gradients", "numerical_gradient",
    "AvgPool2d", "BatchNorm", "Conv2d", "Dropout", "Flatten", "Layer", "Linear", "MaxPool2d", "ReLU", "Sigmoid", "Tanh",
    "MeanSquaredError", "SoftmaxCrossEntropy",
    "Sequential",
    "deep_convnet", "multi_layer_net", "simple_convnet", "two_layer_net",
    "load_model", "save_model",
]

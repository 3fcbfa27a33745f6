"""What ``accelnet predict`` reads: image files (PNG, JPEG, ... through Pillow, the ``images``
extra), NumPy ``.npy`` arrays and IDX files (gzip or raw), each made into samples of the model's
input shape with the preprocessing of training (README, "After training")."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from .data import DataError, read_idx

__all__ = ["InputError", "read_inputs", "IMAGE_SUFFIXES"]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")


class InputError(ValueError):
    """A file that cannot be read as input to the model; the message names the file and why."""


def _scaled(a: np.ndarray, path) -> np.ndarray:
    """Integer pixels (0-255) scaled to [0, 1] as the data loaders do; floats taken as they are."""
    if a.dtype.kind in "iu":
        if a.size and (a.min() < 0 or a.max() > 255):
            raise InputError(f"{path}: integer pixels must be 0-255, got {a.min()}..{a.max()}")
        return a.astype(np.float32) / 255.0
    if a.dtype.kind == "f":
        if not np.isfinite(a).all():
            raise InputError(f"{path}: holds NaN or inf")
        return a.astype(np.float32)
    if a.dtype.kind == "b":
        return a.astype(np.float32)
    raise InputError(f"{path}: dtype {a.dtype} is not pixels (expected uint8 0-255 or floats in [0, 1])")


def _as_samples(a: np.ndarray, input_shape: tuple, path) -> np.ndarray:
    """``a`` as (N, *input_shape): one sample, a batch, or either with the sample flattened, for
    one-channel images without the channel axis, and for a model on flattened square images as
    (H, W) images."""
    size = math.prod(input_shape)
    if a.ndim and a.size % size == 0 and (a.shape == input_shape or a.shape[1:] == input_shape
                                         or a.shape[-1:] == (size,) and a.ndim <= 2
                                         or len(input_shape) == 3 and input_shape[0] == 1
                                         and a.shape[-2:] == input_shape[1:] and a.ndim <= 3
                                         or len(input_shape) == 1 and 2 <= a.ndim <= 3  # square images
                                         and a.shape[-2] == a.shape[-1] and a.shape[-1] ** 2 == size):
        return a.reshape(-1, *input_shape)
    raise InputError(f"{path}: shape {a.shape} is neither one sample nor a batch of samples of shape "
                     f"{input_shape} (flattened to {size} values, or without the channel axis, also accepted)")


def _read_image(path: Path, input_shape: tuple, invert: bool) -> np.ndarray:
    try:
        from PIL import Image, UnidentifiedImageError
    except ImportError:
        raise InputError(f"{path}: reading images needs Pillow: pip install 'accelnet[images]'") from None
    channels = input_shape[0] if len(input_shape) == 3 else 1
    if channels not in (1, 3):
        raise InputError(f"{path}: the model takes {channels}-channel input; images give 1 (grayscale) or 3 (RGB)")
    h, w = (input_shape[1], input_shape[2]) if len(input_shape) == 3 else (None, None)
    if h is None:  # a model on flattened images: square ones
        side = math.isqrt(math.prod(input_shape))
        if side * side != math.prod(input_shape):
            raise InputError(f"{path}: the model takes {input_shape} vectors, not images")
        h = w = side
    try:
        with Image.open(path) as img:
            img = img.convert("L" if channels == 1 else "RGB")
            if img.size != (w, h):
                img = img.resize((w, h), Image.Resampling.LANCZOS)
            a = np.asarray(img, dtype=np.float32) / 255.0
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise InputError(f"{path}: not a readable image ({exc})") from None
    if invert:
        a = 1.0 - a
    a = a.transpose(2, 0, 1) if a.ndim == 3 else a
    return a.reshape(1, *input_shape)


def read_inputs(path, input_shape: tuple, invert: bool = False) -> np.ndarray:
    """The samples in file ``path`` as float32 (N, *input_shape) in [0, 1]. Images are converted
    to grayscale (RGB for a 3-channel model) and resized to the model's input size; ``invert``
    turns dark-on-light pictures into MNIST's light-on-dark. :class:`InputError` says what is
    wrong with a file."""
    path = Path(path)
    if path.is_dir():
        raise InputError(f"{path}: is a folder, not a file (pass its files, e.g. {path / '*.png'})")
    if not path.is_file():
        raise InputError(f"{path}: no such file")
    name = path.name.lower()
    if name.endswith(IMAGE_SUFFIXES):
        return _read_image(path, tuple(input_shape), invert)
    if name.endswith(".npy"):
        try:
            a = np.load(path, allow_pickle=False)
        except (OSError, ValueError, EOFError) as exc:
            raise InputError(f"{path}: not a readable .npy array ({exc})") from None
    else:
        try:
            a = read_idx(path)
        except DataError as exc:
            raise InputError(f"{path}: not an image (by its suffix), a .npy array or an IDX file: "
                             f"{str(exc).removeprefix(str(path) + ': ')}") from None
    x = _as_samples(_scaled(np.asarray(a), path), tuple(input_shape), path)
    return 1.0 - x if invert else x

"""Training-data augmentation on the device: random shifts of each image by a few pixels.

The shifts are drawn on the host from a stream keyed by the run's seed and the step (so a
resumed run, or a data-parallel one, draws the very same shifts), and only those 2N integers
travel to the device: the images are shifted where they already are, by ``kernels.shift2d``.
"""

from __future__ import annotations

import math

import numpy as np

from .validate import positive_int

__all__ = ["RandomShift"]


class RandomShift:
    """Move each training image up to ``pixels`` rows and columns either way (uniform and
    independent), zeros shifted in. A model on flattened square images (784 = 28 x 28) is shifted
    as images too."""

    def __init__(self, pixels: int = 2):
        self.pixels = positive_int(pixels, "RandomShift pixels")

    def check(self, input_shape: tuple) -> None:
        """ValueError unless samples of ``input_shape`` are images this can shift."""
        if self._image_shape(input_shape) is None:
            raise ValueError(f"random shifts need image samples (C, H, W) or flattened square images, not "
                             f"{tuple(input_shape)}")

    @staticmethod
    def _image_shape(input_shape: tuple):
        if len(input_shape) == 3:
            return tuple(input_shape)
        side = math.isqrt(input_shape[0]) if len(input_shape) == 1 else 0
        return (1, side, side) if side and side * side == input_shape[0] else None

    def draw(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """The shifts of ``n`` samples: (2, n) ints in [-pixels, pixels], rows then columns."""
        return rng.integers(-self.pixels, self.pixels + 1, size=(2, n))

    def __call__(self, x, shifts: np.ndarray, backend):
        """``x`` (N, *input_shape) on ``backend``'s device, each sample shifted by its column of ``shifts``."""
        xp = backend.xp
        images = x.reshape(len(x), *self._image_shape(x.shape[1:]))
        out = backend.kernels.shift2d(images, xp.asarray(shifts[0]), xp.asarray(shifts[1]))
        return out.reshape(x.shape)

    def __repr__(self) -> str:
        return f"RandomShift({self.pixels})"

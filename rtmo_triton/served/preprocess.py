"""What ``rtmo_preprocess`` computes for one batch of encoded images."""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..spec import ENGINE_INPUT_DTYPE
from .image_io import ImageError, decode_bgr
from .letterbox import letterbox


def preprocess(
    data: bytes, input_size: int, max_pixels: int, out: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Encoded image → [3,S,S] engine input (into ``out`` if given) and FP32 affine."""
    chw, box = letterbox(decode_bgr(data, max_pixels), input_size, out)
    return chw, box.as_array()


def preprocess_batch(
    images: Sequence[bytes], input_size: int, max_pixels: int
) -> tuple[np.ndarray, np.ndarray]:
    """All rows of one request; the first bad image fails the request, naming its row."""
    inputs = np.empty((len(images), 3, input_size, input_size), ENGINE_INPUT_DTYPE)
    affines = []
    for i, data in enumerate(images):
        try:
            _, affine = preprocess(data, input_size, max_pixels, out=inputs[i])
        except ImageError as exc:
            raise ImageError(f"image {i}: {exc}" if len(images) > 1 else str(exc)) from None
        affines.append(affine)
    return inputs, np.stack(affines)

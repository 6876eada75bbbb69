"""Encoded image bytes → BGR uint8, refusing what would hurt the server before decoding.

The decoded pixels must be exactly what the reference saw
(``cv2.imdecode(IMREAD_COLOR)``): grey images are replicated to three
channels, alpha is dropped and 16-bit samples are scaled to 8 bits, all by
that one flag. Pillow only reads the header, so a 100-megapixel bomb is
refused from its declared size without allocating it.
"""
from __future__ import annotations

import io
import warnings

import cv2
import numpy as np
from PIL import Image

FORMATS = ("JPEG", "PNG", "BMP", "WEBP", "TIFF")
"""Container formats accepted by the ensemble (Pillow's names)."""


class ImageError(ValueError):
    """An image that cannot be served; the message is returned to the client."""


def image_size(data: bytes) -> tuple[int, int]:
    """Declared (width, height) from the header, without decoding the pixels."""
    if not data:
        raise ImageError("empty image: the request carried 0 bytes")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as im:
                fmt, size = im.format, im.size
    except Image.DecompressionBombError as exc:
        raise ImageError(f"image refused: {exc}") from None
    except Exception:
        head = data[:8].hex(" ")
        raise ImageError(
            f"not a decodable image ({len(data)} bytes starting {head}); "
            f"expected one of {', '.join(FORMATS)}"
        ) from None
    if fmt not in FORMATS:
        raise ImageError(f"unsupported image format {fmt}; expected one of {', '.join(FORMATS)}")
    return size


def decode_bgr(data: bytes, max_pixels: int) -> np.ndarray:
    """HxWx3 BGR uint8, as the reference decodes it; ``ImageError`` names what is wrong."""
    w, h = image_size(data)
    if w * h > max_pixels:
        raise ImageError(f"image of {w}x{h} = {w * h:,} pixels exceeds the limit of {max_pixels:,} pixels")
    if w == 0 or h == 0:
        raise ImageError(f"image has no pixels ({w}x{h})")
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if image is None:
        raise ImageError(f"{w}x{h} image header read but its pixels could not be decoded (truncated?)")
    return image


# Pillow's own bomb guard would fire before ours with a less useful message.
Image.MAX_IMAGE_PIXELS = None

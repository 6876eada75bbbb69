"""Encoded image bytes → BGR uint8, refusing what would hurt the server before decoding.

The decoded pixels must be exactly what the reference saw
(``cv2.imdecode(IMREAD_COLOR)``): grey images are replicated to three
channels, alpha is dropped, 16-bit samples are scaled to 8 bits and EXIF
orientation is applied, all by that one flag. Pillow only reads the header,
so a 100-megapixel bomb is refused from its declared size without
allocating it (Pillow's own guard is lifted only while it reads a header).

JPEGs without an orientation tag, the common case, are decoded by
simplejpeg (libjpeg-turbo): the same decoder arithmetic, bit-identical
output (tested), about twice as fast as OpenCV's bundled build here.
"""
from __future__ import annotations

import io
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import cv2
import numpy as np
import simplejpeg
from PIL import Image

from .errors import RequestError

FORMATS = ("JPEG", "PNG", "BMP", "WEBP", "TIFF")
"""Container formats accepted by the ensemble (Pillow's names)."""
ORIENTATION = 0x0112
"""EXIF tag OpenCV applies when decoding with IMREAD_COLOR."""


class ImageError(RequestError):
    """An image that cannot be served; the message is returned to the client."""


@dataclass(frozen=True)
class Header:
    format: str
    width: int
    height: int
    plain_jpeg: bool
    """A JPEG in RGB or grey with no EXIF rotation: simplejpeg decodes it exactly."""


@contextmanager
def _header_only() -> Iterator[None]:
    """Lift Pillow's bomb guard while it reads a header (no pixels are allocated), so ``decode_bgr``
    refuses oversized images with its own limit and message; restored at once for everyone else."""
    guard, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None
    try:
        yield
    finally:
        Image.MAX_IMAGE_PIXELS = guard


def read_header(data: bytes) -> Header:
    """Format and declared size from the header, without decoding the pixels."""
    if not data:
        raise ImageError("empty image: the request carried 0 bytes")
    try:
        with _header_only():
            with Image.open(io.BytesIO(data)) as im:
                fmt, (w, h) = im.format, im.size
                plain = fmt == "JPEG" and im.mode in ("RGB", "L") and im.getexif().get(ORIENTATION, 1) == 1
    except Exception:
        head = data[:8].hex(" ")
        raise ImageError(
            f"not a decodable image ({len(data)} bytes starting {head}); "
            f"expected one of {', '.join(FORMATS)}"
        ) from None
    if fmt not in FORMATS:
        raise ImageError(f"unsupported image format {fmt}; expected one of {', '.join(FORMATS)}")
    return Header(fmt, w, h, plain)


def checked_header(data: bytes, max_pixels: int) -> Header:
    """The header of an image the server will decode: refused here if too large or empty."""
    header = read_header(data)
    w, h = header.width, header.height
    if w * h > max_pixels:
        raise ImageError(f"image of {w}x{h} = {w * h:,} pixels exceeds the limit of {max_pixels:,} pixels")
    if w == 0 or h == 0:
        raise ImageError(f"image has no pixels ({w}x{h})")
    return header


def decode_bgr(data: bytes, max_pixels: int, header: Header | None = None) -> np.ndarray:
    """HxWx3 BGR uint8, as the reference decodes it; ``ImageError`` names what is wrong.
    ``header``: this image's ``checked_header``, when the caller has read it already."""
    header = header or checked_header(data, max_pixels)
    w, h = header.width, header.height
    if header.plain_jpeg:
        try:
            return simplejpeg.decode_jpeg(data, colorspace="BGR")
        except ValueError:
            pass  # corrupt data: let OpenCV decide, as the reference would
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if image is None:
        raise ImageError(f"{w}x{h} image header read but its pixels could not be decoded (truncated?)")
    return image


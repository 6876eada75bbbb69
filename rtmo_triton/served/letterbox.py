"""Centred letterbox: the one affine warp RTMO was trained and evaluated with.

The reference resizes and pads in a single ``cv2.warpAffine`` (bilinear,
constant border). A resize-then-paste letterbox lands pixels on a different
sampling grid and differs by hundreds of grey levels at the edges, so the
warp is reproduced exactly, matrix included.

Only the rectangle the picture reaches is warped: the rest of the square is
the constant border, which ``warpAffine`` would spend as long on as on the
picture. Moving the destination origin by whole pixels leaves every sampled
position unchanged, so the output equals the full-frame warp bit for bit
(tested against it on hundreds of sizes).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from ..spec import AFFINE_FIELDS, ENGINE_INPUT_DTYPE, PAD_VALUE

REFERENCE_OPENCV_MAJOR = 4


def opencv_difference() -> str | None:
    """Why this OpenCV's letterbox may not equal the reference's, or None.

    Parity with mmpose rests on OpenCV 4's bilinear ``warpAffine`` (4.11-4.14 equal the reference bit
    for bit; the repository's packages pin a 4.x). OpenCV 5.0 rounds differently: on the fixtures, 4-13 %
    of a letterboxed input's values moved by up to 5 grey levels. The poses stay valid, not bit-equal.
    """
    major = int(cv2.__version__.split(".")[0])
    if major == REFERENCE_OPENCV_MAJOR:
        return None
    return (f"OpenCV {cv2.__version__}'s bilinear warpAffine differs from OpenCV {REFERENCE_OPENCV_MAJOR}'s, "
            "which mmpose's reference used: letterboxed inputs move by a few grey levels (5.0: up to 5 on "
            "4-13 % of values) and people may differ slightly from mmpose's. The repository's packages pin "
            f"OpenCV {REFERENCE_OPENCV_MAJOR}; this server's interpreter provides another (PYTHONS=none?)")


@dataclass(frozen=True)
class Letterbox:
    """Maps original-image pixels to model-input pixels: p_in = p * scale + offset."""

    scale: float
    offset_x: float
    offset_y: float
    orig_w: int
    orig_h: int
    input_size: int

    def as_array(self) -> np.ndarray:
        """The FP32 vector (fields ``spec.AFFINE_FIELDS``) handed to the decoder."""
        return np.array([getattr(self, f) for f in AFFINE_FIELDS], np.float32)


def letterbox_matrix(orig_w: int, orig_h: int, size: int) -> tuple[np.ndarray, Letterbox]:
    """Affine matrix of the centred letterbox, computed as the reference does.

    The reference builds it with ``cv2.getAffineTransform`` from three float32
    point pairs: the centre, the point half the padded square's side (in
    source pixels) to its left, and that point moved as far down. Solving
    from the same float32 points gives the same double matrix to the last
    bit, which ``warpAffine``'s fixed-point sampling needs (a closed-form
    matrix can differ in the last bit and move pixels).
    """
    fit_w = min(size, size * orig_w / orig_h)
    half_src = orig_w * size / fit_w * 0.5
    half = size * 0.5
    cx, cy = orig_w / 2, orig_h / 2
    src = np.array([[cx, cy], [cx - half_src, cy], [cx - half_src, cy + half_src]], np.float32)
    dst = np.array([[half, half], [0.0, half], [0.0, size]], np.float32)
    m = cv2.getAffineTransform(src, dst)
    box = Letterbox(float(m[0, 0]), float(m[0, 2]), float(m[1, 2]), orig_w, orig_h, size)
    return m, box


def picture_rect(box: Letterbox) -> tuple[int, int, int, int]:
    """(x0, y0, x1, y1) of the output square that bilinear samples of the picture can reach.

    The margin covers the interpolation footprint (one source pixel, ``scale``
    output pixels) so the rectangle's edge pixels blend with the border as in
    the full-frame warp; everything outside is exactly ``PAD_VALUE``.
    """
    size, margin = box.input_size, math.ceil(box.scale) + 1
    return (max(math.floor(box.offset_x) - margin, 0), max(math.floor(box.offset_y) - margin, 0),
            min(math.ceil(box.offset_x + box.scale * box.orig_w) + margin, size),
            min(math.ceil(box.offset_y + box.scale * box.orig_h) + margin, size))


def warp_plan(orig_w: int, orig_h: int, size: int) -> tuple[np.ndarray, Letterbox, tuple[int, int, int, int]]:
    """The matrix to warp only ``picture_rect`` with (the letterbox matrix moved to the rectangle's
    origin), the mapping, and the rectangle: what every letterbox here, OpenCV's or torch's, warps."""
    m, box = letterbox_matrix(orig_w, orig_h, size)
    rect = picture_rect(box)
    shifted = m.copy()
    shifted[:, 2] -= rect[:2]
    return shifted, box, rect


def letterbox(
    image_bgr: np.ndarray, size: int, out: np.ndarray | None = None
) -> tuple[np.ndarray, Letterbox]:
    """BGR uint8 HxWx3 → 3xSxS engine input (BGR, 0..255, no normalisation) and its mapping.

    The input is ``spec.ENGINE_INPUT_DTYPE`` (uint8: the warp's output holds
    exactly the values the reference feeds as float). ``out`` (3xSxS, e.g. a
    row of a batch) receives the channel-first copy directly.
    """
    h, w = image_bgr.shape[:2]
    shifted, box, (x0, y0, x1, y1) = warp_plan(w, h, size)
    warped = cv2.warpAffine(
        image_bgr, shifted, (x1 - x0, y1 - y0), flags=cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_CONSTANT, borderValue=(PAD_VALUE,) * 3,
    )
    if out is None:
        out = np.empty((3, size, size), ENGINE_INPUT_DTYPE)
    out[:, :y0] = PAD_VALUE
    out[:, y1:] = PAD_VALUE
    out[:, y0:y1, :x0] = PAD_VALUE
    out[:, y0:y1, x1:] = PAD_VALUE
    np.copyto(out[:, y0:y1, x0:x1], warped.transpose(2, 0, 1))
    return out, box

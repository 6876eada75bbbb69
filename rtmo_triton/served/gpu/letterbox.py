"""The letterbox in PyTorch: OpenCV 4's fixed-point bilinear ``warpAffine``, bit for bit.

Parity with mmpose needs the engine input to equal ``cv2.warpAffine(INTER_LINEAR, BORDER_CONSTANT)``
to the last grey level (``served/letterbox.py`` says why). A float bilinear sample rounds differently,
so the warp is redone in OpenCV 4's integer arithmetic, vectorised for any device:

* the forward matrix is inverted in double, in OpenCV's order of operations;
* each output pixel's source position is the sum of a per-row and a per-column fixed-point term
  (``AB_BITS`` fractional bits, rounded half to even like ``cvRound``), shifted down to
  ``INTER_BITS`` fractional bits: an integer pixel and a 1/32 sub-pixel phase per axis;
* the four neighbours are blended with integer weights and rounded once; neighbours outside the
  picture take the border value.

The per-row and per-column terms are float64 tensors made by single-operation kernels (no fused
multiply-add can change their last bit); everything after them is integer.
"""
from __future__ import annotations

import numpy as np
import torch

from ...spec import ENGINE_INPUT_DTYPE, PAD_VALUE
from ..letterbox import Letterbox, warp_plan

AB_BITS = 10
"""Fractional bits of warpAffine's source positions before they are cut to the interpolation table."""
INTER_BITS = 5
"""Fractional bits that select the bilinear weights: 32 sub-pixel phases per axis."""
INTER_TAB_SIZE = 1 << INTER_BITS
ROUND_DELTA = (1 << AB_BITS) // INTER_TAB_SIZE // 2
"""Half of one phase, so the shift to ``INTER_BITS`` rounds to the nearest phase."""
WEIGHT_BITS = 2 * INTER_BITS
"""The bilinear weights (32 - f) * (32 - g) ... sum to 1 << WEIGHT_BITS.

OpenCV's table holds them times 32 (15 bits, ``INTER_REMAP_COEF_SCALE``) and rounds by adding
1 << 14 and shifting by 15: exactly the same as adding 1 << 9 and shifting by 10 here. Its int16
table cannot hold the weight 32768 of phase (0, 0): it stores 32767 and moves the remaining 1 to
another tap. For 8-bit pixels that never changes a value (it shifts the sum by at most 255, well
inside the 16384 of rounding headroom), so the exact products are used.
"""
SOURCE_PAD = 2
"""Border pixels around the source: clamping positions to [-2, size] then finds border values for
every neighbour outside the picture, whole footprint or part of it, as BORDER_CONSTANT does."""
ENGINE_INPUT_TORCH_DTYPE = getattr(torch, ENGINE_INPUT_DTYPE)


def inverse_affine(matrix: np.ndarray) -> tuple[float, float, float, float, float, float]:
    """(a00, a01, b0, a10, a11, b1): the destination→source map, computed as warpAffine computes it.

    The last bit of these doubles moves sampled positions, so the operations and their order are
    OpenCV's (a zero determinant gives the zero map, as there).
    """
    m00, m01, m02, m10, m11, m12 = (float(v) for v in np.asarray(matrix, np.float64).reshape(6))
    d = m00 * m11 - m01 * m10
    d = 1.0 / d if d != 0 else 0.0
    a00, a01, a10, a11 = m11 * d, m01 * -d, m10 * -d, m00 * d
    b0 = -a00 * m02 - a01 * m12
    b1 = -a10 * m02 - a11 * m12
    return a00, a01, b0, a10, a11, b1


def _fixed(values: torch.Tensor) -> torch.Tensor:
    """float64 positions already scaled by 1 << AB_BITS → int64, rounded half to even (cvRound)."""
    return torch.round(values).to(torch.int64)


def _source_positions(
    matrix: np.ndarray, width: int, height: int, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(sx, sy, fx, fy), each height x width int64: integer source pixel and 1/32 phase per axis."""
    a00, a01, b0, a10, a11, b1 = inverse_affine(matrix)
    scale = float(1 << AB_BITS)
    xs = torch.arange(width, dtype=torch.float64, device=device)
    ys = torch.arange(height, dtype=torch.float64, device=device)
    # (a * x) * scale and (a * y + b) * scale, one rounding per operation as in OpenCV's C++
    adelta, bdelta = _fixed(xs * a00 * scale), _fixed(xs * a10 * scale)
    x0 = _fixed((ys * a01 + b0) * scale) + ROUND_DELTA
    y0 = _fixed((ys * a11 + b1) * scale) + ROUND_DELTA
    shift = AB_BITS - INTER_BITS
    x = (x0[:, None] + adelta[None, :]) >> shift
    y = (y0[:, None] + bdelta[None, :]) >> shift
    phase = INTER_TAB_SIZE - 1
    return x >> INTER_BITS, y >> INTER_BITS, x & phase, y & phase


def _warp_chw(image: torch.Tensor, matrix: np.ndarray, *, width: int, height: int, border: int
              ) -> torch.Tensor:
    """The warp of an HxWxC uint8 image as C x height x width uint8 (channel-first, as the engine
    takes it, so the letterbox writes it without a transpose)."""
    if image.dim() != 3 or image.dtype != torch.uint8:
        raise ValueError(f"expected an HxWxC uint8 image, got {tuple(image.shape)} {image.dtype}")
    if not 0 <= border <= 255:
        raise ValueError(f"border value {border} is not a uint8")
    h, w, c = image.shape
    pad, device = SOURCE_PAD, image.device
    padded = torch.full((c, h + 2 * pad, w + 2 * pad), border, dtype=torch.uint8, device=device)
    padded[:, pad:pad + h, pad:pad + w] = image.permute(2, 0, 1)
    flat = padded.reshape(c, -1)
    row = w + 2 * pad

    sx, sy, fx, fy = _source_positions(matrix, width, height, device)
    index = (sy.clamp(-pad, h) + pad) * row + sx.clamp(-pad, w) + pad
    index = index.reshape(-1)

    def neighbour(offset: int) -> torch.Tensor:
        return flat[:, index + offset].to(torch.int32)

    fx = fx.reshape(-1).to(torch.int32)
    fy = fy.reshape(-1).to(torch.int32)
    top = neighbour(0) * (INTER_TAB_SIZE - fx) + neighbour(1) * fx
    bottom = neighbour(row) * (INTER_TAB_SIZE - fx) + neighbour(row + 1) * fx
    value = (top * (INTER_TAB_SIZE - fy) + bottom * fy + (1 << (WEIGHT_BITS - 1))) >> WEIGHT_BITS
    return value.clamp_(0, 255).to(torch.uint8).reshape(c, height, width)


def warp_affine_linear(image: torch.Tensor, matrix: np.ndarray, *, width: int, height: int,
                       border: int) -> torch.Tensor:
    """``cv2.warpAffine(image, matrix, (width, height), INTER_LINEAR, BORDER_CONSTANT, border)``
    on a tensor of any device, equal to OpenCV 4's output bit for bit.

    ``image`` is HxWxC uint8 (any C), ``matrix`` the forward 2x3 map as warpAffine takes it; the
    result is height x width x C uint8 on the image's device. Sources up to 32766 pixels a side
    (OpenCV keeps positions in int16).
    """
    return _warp_chw(image, matrix, width=width, height=height, border=border).permute(1, 2, 0).contiguous()


def letterbox(image: torch.Tensor, size: int, *, out: torch.Tensor | None = None
              ) -> tuple[torch.Tensor, Letterbox]:
    """BGR uint8 HxWx3 tensor → 3xSxS engine input and its mapping, equal to the CPU ``letterbox``.

    The same ``warp_plan`` (matrix, picture rectangle, translated warp) as ``served/letterbox.py``, so
    the two agree bit for bit by construction; everything outside the rectangle is ``PAD_VALUE``. ``out``
    (3xSxS ``ENGINE_INPUT_DTYPE``, e.g. a row of a batch on the image's device) receives it in place.
    """
    if image.dim() != 3 or image.shape[2] != 3:
        raise ValueError(f"expected an HxWx3 BGR image, got {tuple(image.shape)}")
    h, w = image.shape[:2]
    shifted, box, (x0, y0, x1, y1) = warp_plan(w, h, size)
    if out is None:
        out = torch.empty((3, size, size), dtype=ENGINE_INPUT_TORCH_DTYPE, device=image.device)
    elif out.shape != (3, size, size) or out.dtype != ENGINE_INPUT_TORCH_DTYPE:
        raise ValueError(f"out must be 3x{size}x{size} {ENGINE_INPUT_DTYPE}, "
                         f"got {tuple(out.shape)} {out.dtype}")
    out.fill_(PAD_VALUE)
    out[:, y0:y1, x0:x1] = _warp_chw(image, shifted, width=x1 - x0, height=y1 - y0, border=PAD_VALUE)
    return out, box

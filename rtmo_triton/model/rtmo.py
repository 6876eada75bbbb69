"""The RTMO network (backbone, neck, head) and its raw, per-level outputs."""
from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor, nn

from ..spec import FEATMAP_STRIDES, NUM_KEYPOINTS, VARIANTS, Variant
from .backbone import CSPDarknet
from .head import RTMOHead
from .neck import HybridEncoder


class HeadMaps(NamedTuple):
    """Per-level raw maps, stride 16 first: logits before any sigmoid."""

    cls: list[Tensor]
    box: list[Tensor]
    vis: list[Tensor]
    pose: list[Tensor]


class RTMO(nn.Module):
    def __init__(self, variant: Variant, num_keypoints: int = NUM_KEYPOINTS, fused: bool = False) -> None:
        super().__init__()
        self.variant = variant
        self.num_keypoints = num_keypoints
        self.backbone = CSPDarknet(variant.widen, variant.deepen)
        self.neck = HybridEncoder(
            self.backbone.out_channels, variant.widen, variant.deepen,
            variant.pose_vec_channels, fused,
        )
        self.head = RTMOHead(variant.widen, num_keypoints, variant.pose_vec_channels, fused)

    def forward(self, x: Tensor) -> HeadMaps:
        return HeadMaps(*self.head.head_module(self.neck(self.backbone(x))))


def build_rtmo(variant: str, num_keypoints: int = NUM_KEYPOINTS, fused: bool = False) -> RTMO:
    if variant not in VARIANTS:
        raise ValueError(f"unknown RTMO variant {variant!r}; expected one of {sorted(VARIANTS)}")
    return RTMO(VARIANTS[variant], num_keypoints, fused).eval()


def cell_priors(input_size: int, device: torch.device | None = None) -> tuple[Tensor, Tensor]:
    """Centres (x, y) of every head cell and its stride, stride-16 cells first, row-major."""
    centres, strides = [], []
    for s in FEATMAP_STRIDES:
        n = input_size // s
        idx = torch.arange(n, dtype=torch.float32, device=device) * s + (s - 1) / 2
        gy, gx = torch.meshgrid(idx, idx, indexing="ij")
        centres.append(torch.stack((gx.reshape(-1), gy.reshape(-1)), dim=-1))
        strides.append(torch.full((n * n,), float(s), device=device))
    return torch.cat(centres), torch.cat(strides)


def flatten_levels(maps: list[Tensor]) -> Tensor:
    """[B, C, h, w] per level -> [B, cells, C]."""
    return torch.cat([m.flatten(2).transpose(1, 2) for m in maps], dim=1)


def decode_boxes(deltas: Tensor, priors: Tensor, strides: Tensor) -> Tensor:
    """(dx, dy, log w, log h) in stride units -> x1, y1, x2, y2 in input pixels."""
    s = strides.unsqueeze(-1)
    xy = deltas[..., :2] * s + priors
    wh = deltas[..., 2:].exp() * s
    return torch.cat((xy - wh / 2, xy + wh / 2), dim=-1)


def padded_box_cs(boxes: Tensor, padding: float) -> Tensor:
    """xyxy -> (cx, cy, w, h) of the box grown by ``padding``, as the DCC sees it."""
    tl, br = boxes[..., :2], boxes[..., 2:]
    return torch.cat(((br + tl) * 0.5, (br - tl) * padding), dim=-1)

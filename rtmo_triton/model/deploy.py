"""The graph the engine runs: image batch in, the K best cells' raw material out.

NMS has a data-dependent output size and TensorRT has no native op for it,
so the graph stops at a fixed-size TopK: scores, boxes, visibilities and the
DCC's 1-D heatmap logits for the K highest-scoring cells of each image. The
decoder thresholds, suppresses and integrates (``rtmo_triton.postprocess``).
Every cell's DCC is independent of the others, so computing it for K cells
instead of the kept ones gives the same numbers for the cells that survive.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from ..spec import BBOX_PADDING, num_cells
from .rtmo import RTMO, cell_priors, decode_boxes, flatten_levels, padded_box_cs


class DeployRTMO(nn.Module):
    """[B, 3, S, S] BGR 0..255 (uint8 or float) -> scores [B,K], boxes [B,K,4], kpt_vis [B,K,J],
    x_logits [B,K,J,192], y_logits [B,K,J,256]."""

    def __init__(self, model: RTMO, topk: int) -> None:
        super().__init__()
        if topk < 1:
            raise ValueError(f"topk must be >= 1, got {topk}")
        self.model = model
        size = model.variant.input_size
        self.topk = min(topk, num_cells(size))
        model.neck.fix_position_code(size)
        priors, strides = cell_priors(size)
        self.register_buffer("priors", priors, persistent=False)
        self.register_buffer("strides", strides, persistent=False)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
        maps = self.model(x.float())  # a Cast in the graph when the input is uint8
        scores = flatten_levels(maps.cls)[..., 0].sigmoid()  # [B, A]
        scores, idx = torch.topk(scores, self.topk, dim=1)  # sorted, best first
        rows = idx.unsqueeze(-1)

        def take(t: Tensor) -> Tensor:  # [B, A, C] -> [B, K, C]
            return torch.gather(t, 1, rows.repeat(1, 1, t.shape[-1]))

        deltas = take(flatten_levels(maps.box))
        priors = self.priors[idx]
        boxes = decode_boxes(deltas, priors, self.strides[idx])
        kpt_vis = take(flatten_levels(maps.vis)).sigmoid()
        pose = take(flatten_levels(maps.pose))
        x_logits, y_logits = self.model.head.dcc(pose, padded_box_cs(boxes, BBOX_PADDING), priors)
        return scores, boxes, kpt_vis, x_logits, y_logits

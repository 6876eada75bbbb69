"""The graph the engine runs: image batch in, the K best cells' raw material out.

NMS has a data-dependent output size and TensorRT has no native op for it,
so the graph stops at a fixed-size TopK: scores, boxes, visibilities and the
DCC's 1-D heatmap logits for the K highest-scoring cells of each image. The
decoder thresholds, suppresses and integrates (``rtmo_triton.served.postprocess``).
Every cell's DCC is independent of the others, so computing it for K cells
instead of the kept ones gives the same numbers for the cells that survive.

Precision: the network may run in FP16 (``DeployRTMO.to_half``), but the part
that measures pixels (``CandidateGeometry``: box decoding, the DCC's bin
positions and their sin/cos code) stays FP32 unless asked otherwise, and the
outputs are FP32 whatever the network ran in. Exported in that form the graph
carries explicit Cast nodes at the boundaries, under the ONNX scope
``/geometry/`` (``GEOMETRY_SCOPE``), which is how the TensorRT build finds
those layers.
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor, nn

from ..spec import BBOX_PADDING, served_topk
from .fuse import fold_batchnorm
from .head import DCC, bin_encoding
from .rtmo import RTMO, build_rtmo, cell_priors, decode_boxes, flatten_levels, padded_box_cs

GEOMETRY_SCOPE = "/geometry/"
"""Prefix of the ONNX node names of ``CandidateGeometry`` (the exporter names nodes by module path)."""


class CandidateGeometry(nn.Module):
    """Box deltas of the K candidates -> boxes (xyxy, input pixels) and the sin/cos code of the DCC's bins.

    It holds its own FP32 copies of the priors, bins and frequencies, so halving the network
    (``DeployRTMO.to_half``) leaves this module, and the pixel arithmetic, in FP32.
    """

    def __init__(self, input_size: int, dcc: DCC) -> None:
        super().__init__()
        priors, strides = cell_priors(input_size)
        self.register_buffer("priors", priors, persistent=False)
        self.register_buffer("strides", strides, persistent=False)
        self.register_buffer("x_bins", dcc.x_bins.detach().clone())
        self.register_buffer("y_bins", dcc.y_bins.detach().clone())
        self.register_buffer("dim_t", dcc.spe.dim_t.detach().clone())

    def forward(self, deltas: Tensor, idx: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """deltas [B, K, 4] (any float type), idx [B, K] cell indices -> boxes [B, K, 4],
        x code [B, K, Bx, 128], y code [B, K, By, 128], in this module's precision."""
        priors = self.priors[idx]
        boxes = decode_boxes(deltas.to(priors.dtype), priors, self.strides[idx])
        x_enc, y_enc = bin_encoding(padded_box_cs(boxes, BBOX_PADDING), priors, self.x_bins, self.y_bins,
                                    self.dim_t)
        return boxes, x_enc, y_enc


class DeployRTMO(nn.Module):
    """[B, 3, S, S] BGR 0..255 (uint8 or float) -> scores [B,K], boxes [B,K,4], kpt_vis [B,K,J],
    x_logits [B,K,J,192], y_logits [B,K,J,256], all FP32."""

    def __init__(self, model: RTMO, topk: int) -> None:
        super().__init__()
        if topk < 1:
            raise ValueError(f"topk must be >= 1, got {topk}")
        self.model = model
        size = model.variant.input_size
        self.topk = served_topk(topk, size)
        model.neck.fix_position_code(size)
        self.geometry = CandidateGeometry(size, model.head.dcc)

    def to_half(self, *, fp32_geometry: bool = True) -> DeployRTMO:
        """FP16 network; ``fp32_geometry`` keeps ``CandidateGeometry`` in FP32 (False: all FP16,
        kept only to measure what that costs). In place; returns self."""
        self.model.half()
        if not fp32_geometry:
            self.geometry.half()
        return self

    @property
    def network_dtype(self) -> torch.dtype:
        return self.model.backbone.stem.conv.conv.weight.dtype

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
        maps = self.model(x.to(self.network_dtype))  # a Cast in the graph when the input is uint8
        scores = flatten_levels(maps.cls)[..., 0].sigmoid()  # [B, A]
        scores, idx = torch.topk(scores, self.topk, dim=1)  # sorted, best first
        rows = idx.unsqueeze(-1)

        def take(t: Tensor) -> Tensor:  # [B, A, C] -> [B, K, C]
            return torch.gather(t, 1, rows.repeat(1, 1, t.shape[-1]))

        boxes, x_enc, y_enc = self.geometry(take(flatten_levels(maps.box)), idx)
        kpt_vis = take(flatten_levels(maps.vis)).sigmoid()
        pose = take(flatten_levels(maps.pose))
        x_logits, y_logits = self.model.head.dcc.logits(pose, x_enc, y_enc)
        outputs = (scores, boxes, kpt_vis, x_logits, y_logits)
        return tuple(t.float() for t in outputs)  # type: ignore[return-value]


DEPLOY_FORMAT = "rtmo-triton-deploy/1"
"""Tag of the saved deploy graph (``save_deploy``), so a foreign file is refused by name."""


def save_deploy(deploy: DeployRTMO, path: str | Path, metadata: dict[str, str] | None = None) -> None:
    """Write the deploy graph's weights (BatchNorm already folded) and what rebuilds it: the engine
    file of the torch flavour. Plain tensors, strings and ints only, so ``weights_only`` loads it."""
    model = deploy.model
    torch.save({
        "format": DEPLOY_FORMAT, "variant": model.variant.name, "num_keypoints": model.num_keypoints,
        "topk": deploy.topk, "input_size": model.variant.input_size, "metadata": dict(metadata or {}),
        "state_dict": {k: v.detach().float().cpu() for k, v in deploy.state_dict().items()},
    }, str(path))


def load_deploy(path: str | Path) -> tuple[DeployRTMO, dict]:
    """``save_deploy``'s file -> (FP32 eval-mode ``DeployRTMO`` on the CPU, the file's fields except
    the weights). Raises ``ValueError`` naming what is wrong with the file."""
    blob = torch.load(str(path), map_location="cpu", weights_only=True)
    if not isinstance(blob, dict) or blob.get("format") != DEPLOY_FORMAT:
        raise ValueError(f"{path} is not an RTMO deploy graph ({DEPLOY_FORMAT}); rebuild the repository "
                         "with `make build-engines ENGINE=torch`")
    model = fold_batchnorm(build_rtmo(blob["variant"], blob["num_keypoints"], fused=True))
    deploy = DeployRTMO(model, int(blob["topk"]))
    deploy.load_state_dict(blob["state_dict"], strict=True)
    return deploy.eval(), {k: v for k, v in blob.items() if k != "state_dict"}

"""RTMO head: per-cell classification, box, keypoint visibility and pose vector,
plus the dynamic coordinate classifier (DCC) that turns a pose vector into
1-D heatmap logits over bins laid across the (padded) box.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from ..spec import FEATMAP_STRIDES, NUM_BINS
from .blocks import BN_EPS_DEFAULT, ConvBNAct
from .neck import SineEncoding

CLS_WIDTH = 256
GROUPS = 8
CHANNELS_PER_GROUP = 36
DCC_FEAT = 128
DCC_SPE_CHANNELS = 128
DCC_SPE_TEMPERATURE = 300.0
GAU_S = 128
GAU_EXPANSION = 2


class HeadModule(nn.Module):
    """Two conv towers per level: classification, and a grouped 'pose' tower
    that feeds box, visibility and pose-vector outputs."""

    def __init__(self, widen: float, num_keypoints: int, pose_vec_channels: int) -> None:
        super().__init__()
        cin = int(CLS_WIDTH * widen)
        cls_ch = int(CLS_WIDTH * widen)
        pose_ch = GROUPS * int(CHANNELS_PER_GROUP * widen)
        levels = range(len(FEATMAP_STRIDES))
        self.conv_cls = nn.ModuleList(
            nn.Sequential(ConvBNAct(cin, cls_ch, 3), ConvBNAct(cls_ch, cls_ch, 3)) for _ in levels
        )
        self.out_cls = nn.ModuleList(nn.Conv2d(cls_ch, 1, 1) for _ in levels)
        self.conv_pose = nn.ModuleList(
            nn.Sequential(
                ConvBNAct(cin, pose_ch, 3),
                *(ConvBNAct(pose_ch, pose_ch, 3, groups=GROUPS) for _ in range(3)),
            )
            for _ in levels
        )
        self.out_bbox = nn.ModuleList(nn.Conv2d(pose_ch, 4, 1) for _ in levels)
        self.out_kpt_vis = nn.ModuleList(nn.Conv2d(pose_ch, num_keypoints, 1) for _ in levels)
        self.out_pose = nn.ModuleList(nn.Conv2d(pose_ch, pose_vec_channels, 1) for _ in levels)

    def forward(self, feats: tuple[Tensor, ...]) -> tuple[list[Tensor], ...]:
        """Raw per-level maps: cls logits, box deltas, visibility logits, pose vectors."""
        cls, box, vis, pose = [], [], [], []
        for i, x in enumerate(feats):
            cls_feat, reg_feat = x.split(x.shape[1] // 2, dim=1)
            cls_feat = self.conv_cls[i](cls_feat)
            reg_feat = self.conv_pose[i](reg_feat)
            cls.append(self.out_cls[i](cls_feat))
            box.append(self.out_bbox[i](reg_feat))
            vis.append(self.out_kpt_vis[i](reg_feat))
            pose.append(self.out_pose[i](reg_feat))
        return cls, box, vis, pose


class ScaleNorm(nn.Module):
    def __init__(self, dim: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.scale = dim**-0.5
        self.eps = eps
        self.g = nn.Parameter(torch.ones(1))

    def forward(self, x: Tensor) -> Tensor:
        norm = torch.linalg.vector_norm(x, dim=-1, keepdim=True) * self.scale
        return x / norm.clamp(min=self.eps) * self.g


class ChannelScale(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.ones(dim))

    def forward(self, x: Tensor) -> Tensor:
        return x * self.scale


class GAU(nn.Module):
    """Gated attention unit over the keypoint tokens of one cell.

    Queries and keys share one projection, each with its own affine and the
    learned per-keypoint position code added; attention is squared ReLU.
    """

    def __init__(self, dim: int, num_keypoints: int) -> None:
        super().__init__()
        self.e = dim * GAU_EXPANSION
        self.s = GAU_S
        self.ln = ScaleNorm(dim)
        self.uv = nn.Linear(dim, 2 * self.e + self.s, bias=False)
        self.gamma = nn.Parameter(torch.ones(2, self.s))
        self.beta = nn.Parameter(torch.zeros(2, self.s))
        self.o = nn.Linear(self.e, dim, bias=False)
        self.res_scale = ChannelScale(dim)
        self.act = nn.SiLU()

    def forward(self, x: Tensor, pos_enc: Tensor) -> Tensor:
        uv = self.act(self.uv(self.ln(x)))
        u, v, base = torch.split(uv, [self.e, self.e, self.s], dim=-1)
        q = base * self.gamma[0] + self.beta[0] + pos_enc
        k = base * self.gamma[1] + self.beta[1] + pos_enc
        kernel = torch.relu(q @ k.transpose(-1, -2) / math.sqrt(self.s)).square()
        return self.res_scale(x) + self.o(u * (kernel @ v))


class DCC(nn.Module):
    """Dynamic coordinate classifier.

    Bins span the padded box, so their positions differ per candidate; each
    bin's sine code goes through a linear layer and is scored against the
    keypoint feature. Only the logits are computed here: the softmax and the
    integral run in the decoder (``rtmo_triton.served.postprocess``).
    """

    def __init__(self, in_channels: int, num_keypoints: int, fused: bool = False) -> None:
        super().__init__()
        self.num_keypoints = num_keypoints
        self.pos_enc = nn.Parameter(torch.zeros(num_keypoints, GAU_S))
        self.register_buffer("x_bins", torch.linspace(-0.5, 0.5, NUM_BINS[0]))
        self.register_buffer("y_bins", torch.linspace(-0.5, 0.5, NUM_BINS[1]))
        self.spe = SineEncoding(DCC_SPE_CHANNELS, DCC_SPE_TEMPERATURE)
        self.gau = GAU(DCC_FEAT, num_keypoints)
        linear = nn.Linear(in_channels, DCC_FEAT * num_keypoints)
        # deploy-form checkpoints carry the BatchNorm already folded into the linear
        self.pose_to_kpts = (
            linear if fused
            else nn.Sequential(linear, nn.BatchNorm1d(DCC_FEAT * num_keypoints, eps=BN_EPS_DEFAULT))
        )
        self.x_fc = nn.Linear(DCC_SPE_CHANNELS, DCC_FEAT)
        self.y_fc = nn.Linear(DCC_SPE_CHANNELS, DCC_FEAT)

    def bin_encoding(self, bbox_cs: Tensor, grids: Tensor) -> tuple[Tensor, Tensor]:
        """The sin/cos code of every bin (``bin_encoding`` with this DCC's bins and frequencies)."""
        return bin_encoding(bbox_cs, grids, self.x_bins, self.y_bins, self.spe.dim_t)

    def logits(self, pose_vecs: Tensor, x_enc: Tensor, y_enc: Tensor) -> tuple[Tensor, Tensor]:
        """pose_vecs [..., C] and the bins' codes -> x logits [..., J, Bx], y logits [..., J, By].

        The codes lie in [-1, 1], so they enter the network's precision here without harm."""
        feats = self.pose_to_kpts(pose_vecs.reshape(-1, pose_vecs.shape[-1]))
        feats = feats.reshape(*pose_vecs.shape[:-1], self.num_keypoints, DCC_FEAT)
        feats = self.gau(feats, self.pos_enc)
        x_codes = self.x_fc(x_enc.to(feats.dtype))
        y_codes = self.y_fc(y_enc.to(feats.dtype))
        return feats @ x_codes.transpose(-1, -2), feats @ y_codes.transpose(-1, -2)

    def forward(self, pose_vecs: Tensor, bbox_cs: Tensor, grids: Tensor) -> tuple[Tensor, Tensor]:
        """pose_vecs [..., C], bbox_cs [..., 4] (cx, cy, w, h of the padded box),
        grids [..., 2] (cell centres) -> x logits [..., J, Bx], y logits [..., J, By]."""
        return self.logits(pose_vecs, *self.bin_encoding(bbox_cs, grids))


def bin_encoding(bbox_cs: Tensor, grids: Tensor, x_bins: Tensor, y_bins: Tensor,
                 dim_t: Tensor) -> tuple[Tensor, Tensor]:
    """bbox_cs [..., 4] (cx, cy, w, h of the padded box), grids [..., 2] (cell centres) ->
    [cos, sin] of every bin position over ``dim_t``: [..., Bx, 2·len(dim_t)], [..., By, ...].

    Positions are pixels relative to the cell centre (the integral adds it back), up to several
    hundred for a large box, and the lowest frequency divides them by 1 only: the angles reach
    ±400 rad, where FP16's spacing is 0.25 rad. This is the part of the graph that must stay FP32
    (``deploy.CandidateGeometry``).
    """
    rel = bbox_cs[..., :2] - grids
    x_pos = x_bins * bbox_cs[..., 2:3] + rel[..., 0:1]
    y_pos = y_bins * bbox_cs[..., 3:4] + rel[..., 1:2]
    return _sine_code(x_pos, dim_t), _sine_code(y_pos, dim_t)


def _sine_code(positions: Tensor, dim_t: Tensor) -> Tensor:
    angles = positions.unsqueeze(-1) / dim_t
    return torch.cat((angles.cos(), angles.sin()), dim=-1)


class RTMOHead(nn.Module):
    def __init__(
        self, widen: float, num_keypoints: int, pose_vec_channels: int, fused: bool = False
    ) -> None:
        super().__init__()
        self.head_module = HeadModule(widen, num_keypoints, pose_vec_channels)
        self.dcc = DCC(pose_vec_channels, num_keypoints, fused)

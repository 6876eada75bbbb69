"""Convolution building blocks shared by backbone, neck and head.

Attribute names follow the layout of OpenMMLab checkpoints (``conv``/``bn``
inside a conv unit, ``branch_3x3``/``branch_1x1`` in RepVGG blocks, ...) so
that official state dicts load without renaming.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

BN_EPS_YOLO = 1e-3
"""BatchNorm eps of the CSPDarknet backbone and the RTMO head module."""
BN_EPS_DEFAULT = 1e-5
"""BatchNorm eps of the neck, its projector and the DCC (PyTorch's default)."""


class ConvBNAct(nn.Module):
    """Bias-free convolution, BatchNorm and an optional SiLU.

    SiLU is what mmcv calls Swish: x * sigmoid(x).
    """

    def __init__(
        self, cin: int, cout: int, k: int = 1, stride: int = 1, groups: int = 1,
        eps: float = BN_EPS_YOLO, act: bool = True,
    ) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, k, stride, (k - 1) // 2, groups=groups, bias=False)
        self.bn = nn.BatchNorm2d(cout, eps=eps)
        self.act = nn.SiLU() if act else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        return self.act(self.bn(self.conv(x)))


class Focus(nn.Module):
    """Space-to-depth stem: four pixel phases stacked on channels, then a conv."""

    def __init__(self, cout: int) -> None:
        super().__init__()
        self.conv = ConvBNAct(12, cout, 3)

    def forward(self, x: Tensor) -> Tensor:
        # phase order (row, col): (0,0), (1,0), (0,1), (1,1)
        x = torch.cat(
            (x[..., ::2, ::2], x[..., 1::2, ::2], x[..., ::2, 1::2], x[..., 1::2, 1::2]), dim=1
        )
        return self.conv(x)


class SPPBottleneck(nn.Module):
    """Spatial pyramid pooling: max pools of three sizes concatenated."""

    def __init__(self, cin: int, cout: int, kernels: tuple[int, ...] = (5, 9, 13)) -> None:
        super().__init__()
        mid = cin // 2
        self.conv1 = ConvBNAct(cin, mid)
        self.poolings = nn.ModuleList(nn.MaxPool2d(k, 1, k // 2) for k in kernels)
        self.conv2 = ConvBNAct(mid * (len(kernels) + 1), cout)

    def forward(self, x: Tensor) -> Tensor:
        x = self.conv1(x)
        return self.conv2(torch.cat([x] + [p(x) for p in self.poolings], dim=1))


class DarknetBottleneck(nn.Module):
    """1x1 then 3x3 conv, with a residual when shapes allow."""

    def __init__(self, channels: int, add_identity: bool) -> None:
        super().__init__()
        self.conv1 = ConvBNAct(channels, channels, 1)
        self.conv2 = ConvBNAct(channels, channels, 3)
        self.add_identity = add_identity

    def forward(self, x: Tensor) -> Tensor:
        out = self.conv2(self.conv1(x))
        return out + x if self.add_identity else out


class CSPLayer(nn.Module):
    """Cross-stage partial layer: half the channels go through the blocks."""

    def __init__(self, cin: int, cout: int, num_blocks: int, add_identity: bool) -> None:
        super().__init__()
        mid = int(cout * 0.5)
        self.main_conv = ConvBNAct(cin, mid)
        self.short_conv = ConvBNAct(cin, mid)
        self.final_conv = ConvBNAct(2 * mid, cout)
        self.blocks = nn.Sequential(
            *(DarknetBottleneck(mid, add_identity) for _ in range(num_blocks))
        )

    def forward(self, x: Tensor) -> Tensor:
        main = self.blocks(self.main_conv(x))
        return self.final_conv(torch.cat((main, self.short_conv(x)), dim=1))


class RepVGGBlock(nn.Module):
    """3x3 + 1x1 conv branches summed, then SiLU.

    ``fused=True`` builds the single re-parameterised conv that mmpose's
    ``switch_to_deploy`` produces (``conv_reparam``), so deploy-form
    checkpoints load too.
    """

    def __init__(self, channels: int, fused: bool = False) -> None:
        super().__init__()
        if fused:
            self.conv_reparam = nn.Conv2d(channels, channels, 3, 1, 1, bias=True)
        else:
            self.branch_3x3 = ConvBNAct(channels, channels, 3, eps=BN_EPS_DEFAULT, act=False)
            self.branch_1x1 = ConvBNAct(channels, channels, 1, eps=BN_EPS_DEFAULT, act=False)
        self.act = nn.SiLU()

    def forward(self, x: Tensor) -> Tensor:
        if hasattr(self, "conv_reparam"):
            return self.act(self.conv_reparam(x))
        return self.act(self.branch_3x3(x) + self.branch_1x1(x))


class CSPRepLayer(nn.Module):
    """The neck's fusion block: two 1x1 paths, one through RepVGG blocks, summed."""

    def __init__(
        self, cin: int, cout: int, num_blocks: int, widen: float, fused: bool = False
    ) -> None:
        super().__init__()
        hidden = int(cout * widen)
        self.conv1 = ConvBNAct(cin, hidden, eps=BN_EPS_DEFAULT)
        self.conv2 = ConvBNAct(cin, hidden, eps=BN_EPS_DEFAULT)
        self.bottlenecks = nn.Sequential(*(RepVGGBlock(hidden, fused) for _ in range(num_blocks)))
        self.conv3 = (
            ConvBNAct(hidden, cout, eps=BN_EPS_DEFAULT) if hidden != cout else nn.Identity()
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.conv3(self.bottlenecks(self.conv1(x)) + self.conv2(x))

"""Fold inference-mode BatchNorm into the preceding conv or linear layer.

In eval mode BN is an affine map per channel, so folding it is exact up to
float rounding; the exported graph then has one op where it had two, and
RepVGG's two branches become the one 3x3 conv they are equivalent to.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .blocks import ConvBNAct, RepVGGBlock
from .rtmo import RTMO


def _bn_affine(bn: nn.modules.batchnorm._BatchNorm) -> tuple[torch.Tensor, torch.Tensor]:
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    return scale, bn.bias - bn.running_mean * scale


def _folded_conv(unit: ConvBNAct) -> tuple[torch.Tensor, torch.Tensor]:
    scale, shift = _bn_affine(unit.bn)
    return unit.conv.weight * scale.view(-1, 1, 1, 1), shift


def _fold_conv_unit(unit: ConvBNAct) -> None:
    weight, bias = _folded_conv(unit)
    conv = unit.conv
    fused = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride,
                      conv.padding, groups=conv.groups, bias=True)
    fused.weight.copy_(weight)
    fused.bias.copy_(bias)
    unit.conv, unit.bn = fused, nn.Identity()


def _fold_repvgg(block: RepVGGBlock) -> None:
    if hasattr(block, "conv_reparam"):
        return
    w3, b3 = _folded_conv(block.branch_3x3)
    w1, b1 = _folded_conv(block.branch_1x1)
    conv = nn.Conv2d(w3.shape[1], w3.shape[0], 3, 1, 1, bias=True)
    conv.weight.copy_(w3 + F.pad(w1, [1, 1, 1, 1]))
    conv.bias.copy_(b3 + b1)
    del block.branch_3x3, block.branch_1x1
    block.conv_reparam = conv


@torch.no_grad()
def to_deploy_form(model: RTMO) -> RTMO:
    """What mmpose's ``switch_to_deploy`` does to the weights: RepVGG blocks
    re-parameterised, the DCC's BatchNorm1d folded into its linear. In place."""
    for module in list(model.modules()):
        if isinstance(module, RepVGGBlock):
            _fold_repvgg(module)
    dcc = model.head.dcc
    if isinstance(dcc.pose_to_kpts, nn.Sequential):
        linear, bn = dcc.pose_to_kpts
        scale, shift = _bn_affine(bn)
        linear.weight.mul_(scale.unsqueeze(1))
        linear.bias.copy_(linear.bias * scale + shift)
        dcc.pose_to_kpts = linear
    return model.eval()


@torch.no_grad()
def fold_batchnorm(model: RTMO) -> RTMO:
    """Deploy form plus every conv's BatchNorm folded. In place; returns ``model``."""
    to_deploy_form(model)
    for module in list(model.modules()):
        if isinstance(module, ConvBNAct) and isinstance(module.bn, nn.BatchNorm2d):
            _fold_conv_unit(module)
    return model

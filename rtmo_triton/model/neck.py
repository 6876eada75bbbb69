"""HybridEncoder (from RT-DETR): attention on the coarsest level, then FPN + PAN.

RTMO keeps the stride-16 and stride-32 outputs and maps both to the head's
width with a 1x1 conv + BN projector.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .blocks import BN_EPS_DEFAULT, ConvBNAct, CSPRepLayer

HIDDEN = 256
FFN_HIDDEN = 1024
HEADS = 8
PE_TEMPERATURE = 10000.0


def sine_grid_encoding(h: int, w: int, dim_t: Tensor) -> Tensor:
    """2-D sin/cos position code, [h*w, 4*len(dim_t)]: row code then column code."""
    rows = torch.arange(h, dtype=torch.float32, device=dim_t.device)
    cols = torch.arange(w, dtype=torch.float32, device=dim_t.device)
    gy, gx = torch.meshgrid(rows, cols, indexing="ij")
    fy = gy.reshape(-1, 1) / dim_t
    fx = gx.reshape(-1, 1) / dim_t
    return torch.cat((fy.cos(), fy.sin(), fx.cos(), fx.sin()), dim=-1)


class SineEncoding(nn.Module):
    """Holds the frequency table; checkpoints store it as ``dim_t``."""

    def __init__(self, channels: int, temperature: float) -> None:
        super().__init__()
        half = channels // 2
        self.register_buffer("dim_t", temperature ** (torch.arange(half, dtype=torch.float32) / half))


class MultiheadSelfAttention(nn.Module):
    """Self-attention whose position code is added to queries and keys, not values."""

    def __init__(self) -> None:
        super().__init__()
        self.attn = nn.MultiheadAttention(HIDDEN, HEADS, batch_first=True)

    def forward(self, x: Tensor, pos: Tensor) -> Tensor:
        qk = x + pos
        return x + self.attn(qk, qk, x, need_weights=False)[0]


class FFN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.layers = nn.Sequential(
            nn.Sequential(nn.Linear(HIDDEN, FFN_HIDDEN), nn.GELU()), nn.Linear(FFN_HIDDEN, HIDDEN)
        )

    def forward(self, x: Tensor) -> Tensor:
        return x + self.layers(x)


class EncoderLayer(nn.Module):
    """Post-norm transformer encoder layer (DETR style)."""

    def __init__(self) -> None:
        super().__init__()
        self.self_attn = MultiheadSelfAttention()
        self.ffn = FFN()
        self.norms = nn.ModuleList(nn.LayerNorm(HIDDEN) for _ in range(2))

    def forward(self, x: Tensor, pos: Tensor) -> Tensor:
        x = self.norms[0](self.self_attn(x, pos))
        return self.norms[1](self.ffn(x))


class Encoder(nn.Module):
    def __init__(self, num_layers: int = 1) -> None:
        super().__init__()
        self.layers = nn.ModuleList(EncoderLayer() for _ in range(num_layers))

    def forward(self, x: Tensor, pos: Tensor) -> Tensor:
        for layer in self.layers:
            x = layer(x, pos)
        return x


class ChannelMapper(nn.Module):
    def __init__(self, cin: int, cout: int, num: int) -> None:
        super().__init__()
        self.convs = nn.ModuleList(
            ConvBNAct(cin, cout, eps=BN_EPS_DEFAULT, act=False) for _ in range(num)
        )

    def forward(self, feats: list[Tensor]) -> list[Tensor]:
        return [conv(f) for conv, f in zip(self.convs, feats, strict=True)]


class HybridEncoder(nn.Module):
    def __init__(
        self, in_channels: tuple[int, ...], widen: float, deepen: float, out_channels: int,
        fused: bool = False,
    ) -> None:
        super().__init__()
        levels = len(in_channels)
        blocks = round(3 * deepen)
        self.input_proj = nn.ModuleList(
            ConvBNAct(c, HIDDEN, eps=BN_EPS_DEFAULT, act=False) for c in in_channels
        )
        self.encoder = nn.ModuleList([Encoder()])
        self.sincos_pos_enc = SineEncoding(HIDDEN // 2, PE_TEMPERATURE)
        self.lateral_convs = nn.ModuleList(
            ConvBNAct(HIDDEN, HIDDEN, eps=BN_EPS_DEFAULT) for _ in range(levels - 1)
        )
        self.fpn_blocks = nn.ModuleList(
            CSPRepLayer(2 * HIDDEN, HIDDEN, blocks, widen, fused) for _ in range(levels - 1)
        )
        self.downsample_convs = nn.ModuleList(
            ConvBNAct(HIDDEN, HIDDEN, 3, stride=2, eps=BN_EPS_DEFAULT) for _ in range(levels - 1)
        )
        self.pan_blocks = nn.ModuleList(
            CSPRepLayer(2 * HIDDEN, HIDDEN, blocks, widen, fused) for _ in range(levels - 1)
        )
        self.projector = ChannelMapper(HIDDEN, out_channels, 2)
        # a buffer, so .to(device) and .half() move it with the weights; not saved: it derives from dim_t
        self.register_buffer("fixed_pos", None, persistent=False)

    def fix_position_code(self, input_size: int) -> None:
        """Precompute the stride-32 position code so an exported graph holds it as a constant."""
        n = input_size // 32
        self.fixed_pos = sine_grid_encoding(n, n, self.sincos_pos_enc.dim_t).unsqueeze(0)

    def forward(self, feats: tuple[Tensor, ...]) -> tuple[Tensor, Tensor]:
        proj = [p(f) for p, f in zip(self.input_proj, feats, strict=True)]
        # attention over the stride-32 map only
        top = proj[-1]
        b, c, h, w = top.shape
        pos = self.fixed_pos
        if pos is None or pos.shape[1] != h * w:
            pos = sine_grid_encoding(h, w, self.sincos_pos_enc.dim_t).unsqueeze(0)
        tokens = self.encoder[0](top.flatten(2).transpose(1, 2), pos.to(top.dtype))
        proj[-1] = tokens.transpose(1, 2).reshape(b, c, h, w)

        # top-down: inner[0] is always the finest map built so far
        inner = [proj[-1]]
        for step, low in enumerate(reversed(proj[:-1])):
            high = self.lateral_convs[step](inner[0])
            inner[0] = high
            up = F.interpolate(high, scale_factor=2.0, mode="nearest")
            inner.insert(0, self.fpn_blocks[step](torch.cat((up, low), dim=1)))
        # bottom-up
        outs = [inner[0]]
        for step, high in enumerate(inner[1:]):
            down = self.downsample_convs[step](outs[-1])
            outs.append(self.pan_blocks[step](torch.cat((down, high), dim=1)))
        p16, p32 = self.projector(outs[1:])
        return p16, p32

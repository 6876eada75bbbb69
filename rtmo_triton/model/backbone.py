"""CSPDarknet (the YOLOX backbone), P5 layout, returning strides 8, 16 and 32."""
from __future__ import annotations

from torch import Tensor, nn

from .blocks import ConvBNAct, CSPLayer, Focus, SPPBottleneck

# (in, out, blocks, residual in blocks, SPP) at width and depth 1.0
_STAGES = ((64, 128, 3, True, False), (128, 256, 9, True, False),
           (256, 512, 9, True, False), (512, 1024, 3, False, True))


def _depth(n: int, deepen: float) -> int:
    return max(round(n * deepen), 1)


class CSPDarknet(nn.Module):
    def __init__(self, widen: float, deepen: float) -> None:
        super().__init__()
        self.stem = Focus(int(_STAGES[0][0] * widen))
        for i, (cin, cout, n, residual, spp) in enumerate(_STAGES, start=1):
            cin, cout = int(cin * widen), int(cout * widen)
            layers: list[nn.Module] = [ConvBNAct(cin, cout, 3, stride=2)]
            if spp:
                layers.append(SPPBottleneck(cout, cout))
            layers.append(CSPLayer(cout, cout, _depth(n, deepen), residual))
            self.add_module(f"stage{i}", nn.Sequential(*layers))

    @property
    def out_channels(self) -> tuple[int, int, int]:
        return tuple(s[-1].final_conv.conv.out_channels for s in (self.stage2, self.stage3, self.stage4))

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        x = self.stage1(self.stem(x))
        c3 = self.stage2(x)
        c4 = self.stage3(c3)
        c5 = self.stage4(c4)
        return c3, c4, c5

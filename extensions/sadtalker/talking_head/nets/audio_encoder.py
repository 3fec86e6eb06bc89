"""Wav2Lip-style audio encoder: one 1x80x16 mel window -> a 512-value embedding.

Reproduces the `nn.Sequential` of 13 `Conv2d` blocks that upstream builds twice with separate weights:
in `src/audio2exp_models/networks.SimpleWrapperV2.audio_encoder` (keys `audio_encoder.N.conv_block.{0,1}.*`) and
in `src/audio2pose_models/audio_encoder.AudioEncoder.audio_encoder` (keys `audio_encoder.audio_encoder.N...`).
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

# (in, out, kernel, stride, padding, residual) of the 13 blocks; the spatial size goes 80x16 -> 27x16 -> 9x6
# -> 3x3 -> 1x1.
_LAYOUT: tuple[tuple[int, int, int, int | tuple[int, int], int, bool], ...] = (
    (1, 32, 3, 1, 1, False),
    (32, 32, 3, 1, 1, True),
    (32, 32, 3, 1, 1, True),
    (32, 64, 3, (3, 1), 1, False),
    (64, 64, 3, 1, 1, True),
    (64, 64, 3, 1, 1, True),
    (64, 128, 3, 3, 1, False),
    (128, 128, 3, 1, 1, True),
    (128, 128, 3, 1, 1, True),
    (128, 256, 3, (3, 2), 1, False),
    (256, 256, 3, 1, 1, True),
    (256, 512, 3, 1, 0, False),
    (512, 512, 1, 1, 0, False),
)


class ConvBNReLU(nn.Module):
    """Conv2d + BatchNorm (as `conv_block.0/1`), optional identity residual added BEFORE the ReLU."""

    def __init__(
        self, cin: int, cout: int, kernel_size: int, stride: int | tuple[int, int], padding: int, residual: bool
    ) -> None:
        super().__init__()
        self.conv_block = nn.Sequential(nn.Conv2d(cin, cout, kernel_size, stride, padding), nn.BatchNorm2d(cout))
        self.residual = residual

    def forward(self, x: Tensor) -> Tensor:
        out = self.conv_block(x)
        if self.residual:
            out = out + x
        return F.relu(out)


def build_audio_encoder() -> nn.Sequential:
    """The 13-block encoder: (N, 1, 80, 16) -> (N, 512, 1, 1)."""
    return nn.Sequential(*(ConvBNReLU(*spec) for spec in _LAYOUT))

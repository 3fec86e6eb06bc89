"""The small 2D residual U-Net that PoseVAE runs over a (32 frames x 6 pose values) map.

Reproduces upstream `src/audio2pose_models/res_unet.ResUnet` with `networks.ResidualConv` and `networks.Upsample`
(filters 32/64/128/256, strides (2, 1): only the time axis is down/upsampled).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


class ResidualConv(nn.Module):
    """Pre-activation residual block: (BN-ReLU-conv-BN-ReLU-conv) + (conv-BN) skip."""

    def __init__(self, input_dim: int, output_dim: int, stride: int | tuple[int, int]) -> None:
        super().__init__()
        self.conv_block = nn.Sequential(
            nn.BatchNorm2d(input_dim),
            nn.ReLU(),
            nn.Conv2d(input_dim, output_dim, kernel_size=3, stride=stride, padding=1),
            nn.BatchNorm2d(output_dim),
            nn.ReLU(),
            nn.Conv2d(output_dim, output_dim, kernel_size=3, padding=1),
        )
        self.conv_skip = nn.Sequential(
            nn.Conv2d(input_dim, output_dim, kernel_size=3, stride=stride, padding=1), nn.BatchNorm2d(output_dim)
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.conv_block(x) + self.conv_skip(x)


class Upsample(nn.Module):
    """ConvTranspose2d wrapper (kept as a module so the key reads `upsample_N.upsample.*`)."""

    def __init__(self, input_dim: int, output_dim: int) -> None:
        super().__init__()
        self.upsample = nn.ConvTranspose2d(input_dim, output_dim, kernel_size=(2, 1), stride=(2, 1))

    def forward(self, x: Tensor) -> Tensor:
        return self.upsample(x)


class ResUnet(nn.Module):
    """(B, 1, 32, 6) -> (B, 1, 32, 6) in (0, 1) (sigmoid output)."""

    def __init__(self, channel: int = 1, filters: tuple[int, int, int, int] = (32, 64, 128, 256)) -> None:
        super().__init__()
        f0, f1, f2, f3 = filters
        self.input_layer = nn.Sequential(
            nn.Conv2d(channel, f0, kernel_size=3, padding=1),
            nn.BatchNorm2d(f0),
            nn.ReLU(),
            nn.Conv2d(f0, f0, kernel_size=3, padding=1),
        )
        self.input_skip = nn.Sequential(nn.Conv2d(channel, f0, kernel_size=3, padding=1))
        self.residual_conv_1 = ResidualConv(f0, f1, stride=(2, 1))
        self.residual_conv_2 = ResidualConv(f1, f2, stride=(2, 1))
        self.bridge = ResidualConv(f2, f3, stride=(2, 1))
        self.upsample_1 = Upsample(f3, f3)
        self.up_residual_conv1 = ResidualConv(f3 + f2, f2, stride=1)
        self.upsample_2 = Upsample(f2, f2)
        self.up_residual_conv2 = ResidualConv(f2 + f1, f1, stride=1)
        self.upsample_3 = Upsample(f1, f1)
        self.up_residual_conv3 = ResidualConv(f1 + f0, f0, stride=1)
        self.output_layer = nn.Sequential(nn.Conv2d(f0, 1, 1, 1), nn.Sigmoid())

    def forward(self, x: Tensor) -> Tensor:
        x1 = self.input_layer(x) + self.input_skip(x)
        x2 = self.residual_conv_1(x1)
        x3 = self.residual_conv_2(x2)
        x4 = self.bridge(x3)
        x6 = self.up_residual_conv1(torch.cat([self.upsample_1(x4), x3], dim=1))
        x8 = self.up_residual_conv2(torch.cat([self.upsample_2(x6), x2], dim=1))
        x10 = self.up_residual_conv3(torch.cat([self.upsample_3(x8), x1], dim=1))
        return self.output_layer(x10)

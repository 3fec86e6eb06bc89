"""Building blocks shared by the face-vid2vid renderer networks (keypoint detector, dense motion, generator).

Reproduces the helpers of upstream `src/facerender/modules/util.py`: the [-1, 1] coordinate grid, the
conv-BatchNorm-ReLU down/up/same blocks, the pre-activation 3D residual block and the 3D hourglass.
Upstream uses "SynchronizedBatchNorm"; in eval mode (and in the checkpoints) it is plain BatchNorm, so we use
`nn.BatchNorm2d/3d`. All blocks are meant to run in eval mode.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def make_coordinate_grid(
    spatial_size: tuple[int, int, int], dtype: torch.dtype = torch.float32, device: torch.device | None = None
) -> Tensor:
    """Grid of shape (d, h, w, 3) holding (x, y, z) in [-1, 1], with x along w, y along h and z along d.

    Computed as `2 * (i / (n - 1)) - 1` in that order, like upstream, so the values match bit for bit.
    """
    d, h, w = spatial_size
    x = 2 * (torch.arange(w, device=device).to(dtype) / (w - 1)) - 1
    y = 2 * (torch.arange(h, device=device).to(dtype) / (h - 1)) - 1
    z = 2 * (torch.arange(d, device=device).to(dtype) / (d - 1)) - 1
    xx = x.view(1, 1, w).expand(d, h, w)
    yy = y.view(1, h, 1).expand(d, h, w)
    zz = z.view(d, 1, 1).expand(d, h, w)
    return torch.stack([xx, yy, zz], dim=3)


class DownBlock2d(nn.Module):
    """Conv2d -> BatchNorm -> ReLU -> AvgPool 2x2 (upstream `DownBlock2d`)."""

    def __init__(self, in_features: int, out_features: int, kernel_size: int = 3, padding: int = 1) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_features, out_features, kernel_size=kernel_size, padding=padding)
        self.norm = nn.BatchNorm2d(out_features, affine=True)
        self.pool = nn.AvgPool2d(kernel_size=(2, 2))

    def forward(self, x: Tensor) -> Tensor:
        return self.pool(F.relu(self.norm(self.conv(x))))


class DownBlock3d(nn.Module):
    """Conv3d -> BatchNorm -> ReLU -> AvgPool (1, 2, 2): pools h and w only (upstream `DownBlock3d`)."""

    def __init__(self, in_features: int, out_features: int) -> None:
        super().__init__()
        self.conv = nn.Conv3d(in_features, out_features, kernel_size=3, padding=1)
        self.norm = nn.BatchNorm3d(out_features, affine=True)
        self.pool = nn.AvgPool3d(kernel_size=(1, 2, 2))

    def forward(self, x: Tensor) -> Tensor:
        return self.pool(F.relu(self.norm(self.conv(x))))


class UpBlock3d(nn.Module):
    """Nearest x(1, 2, 2) upsampling -> Conv3d -> BatchNorm -> ReLU (upstream `UpBlock3d`)."""

    def __init__(self, in_features: int, out_features: int) -> None:
        super().__init__()
        self.conv = nn.Conv3d(in_features, out_features, kernel_size=3, padding=1)
        self.norm = nn.BatchNorm3d(out_features, affine=True)

    def forward(self, x: Tensor) -> Tensor:
        # Upstream's interpolate has no mode argument: nearest (the trilinear variant is commented out there).
        out = F.interpolate(x, scale_factor=(1, 2, 2))
        return F.relu(self.norm(self.conv(out)))


class SameBlock2d(nn.Module):
    """Conv2d -> BatchNorm -> ReLU, or LeakyReLU(0.01) with `lrelu` (upstream `SameBlock2d`)."""

    def __init__(
        self, in_features: int, out_features: int, kernel_size: int = 3, padding: int = 1, lrelu: bool = False
    ) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_features, out_features, kernel_size=kernel_size, padding=padding)
        self.norm = nn.BatchNorm2d(out_features, affine=True)
        self.lrelu = lrelu

    def forward(self, x: Tensor) -> Tensor:
        out = self.norm(self.conv(x))
        # nn.LeakyReLU() default slope 0.01, as upstream builds it.
        return F.leaky_relu(out, 0.01) if self.lrelu else F.relu(out)


class ResBlock3d(nn.Module):
    """Pre-activation residual block: x + conv2(relu(norm2(conv1(relu(norm1(x)))))) (upstream `ResBlock3d`)."""

    def __init__(self, in_features: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv3d(in_features, in_features, kernel_size=3, padding=1)
        self.conv2 = nn.Conv3d(in_features, in_features, kernel_size=3, padding=1)
        self.norm1 = nn.BatchNorm3d(in_features, affine=True)
        self.norm2 = nn.BatchNorm3d(in_features, affine=True)

    def forward(self, x: Tensor) -> Tensor:
        out = self.conv1(F.relu(self.norm1(x)))
        out = self.conv2(F.relu(self.norm2(out)))
        return out + x


class HourglassEncoder(nn.Module):
    """Encoder half of the 3D hourglass: returns the input and every level (upstream `Encoder`)."""

    def __init__(self, block_expansion: int, in_features: int, num_blocks: int, max_features: int) -> None:
        super().__init__()
        self.down_blocks = nn.ModuleList(
            DownBlock3d(
                in_features if i == 0 else min(max_features, block_expansion * (2**i)),
                min(max_features, block_expansion * (2 ** (i + 1))),
            )
            for i in range(num_blocks)
        )

    def forward(self, x: Tensor) -> list[Tensor]:
        outs = [x]
        for block in self.down_blocks:
            outs.append(block(outs[-1]))
        return outs


class HourglassDecoder(nn.Module):
    """Decoder half: up blocks with skip concatenation, then Conv3d-BN-ReLU (upstream `Decoder`)."""

    def __init__(self, block_expansion: int, in_features: int, num_blocks: int, max_features: int) -> None:
        super().__init__()
        blocks = []
        for i in reversed(range(num_blocks)):
            # Every level but the deepest receives its up-block output concatenated with the skip: 2x channels.
            factor = 1 if i == num_blocks - 1 else 2
            in_filters = factor * min(max_features, block_expansion * (2 ** (i + 1)))
            blocks.append(UpBlock3d(in_filters, min(max_features, block_expansion * (2**i))))
        self.up_blocks = nn.ModuleList(blocks)
        self.out_filters = block_expansion + in_features
        self.conv = nn.Conv3d(self.out_filters, self.out_filters, kernel_size=3, padding=1)
        self.norm = nn.BatchNorm3d(self.out_filters, affine=True)

    def forward(self, levels: list[Tensor]) -> Tensor:
        levels = list(levels)
        out = levels.pop()
        for block in self.up_blocks:
            out = torch.cat([block(out), levels.pop()], dim=1)
        return F.relu(self.norm(self.conv(out)))


class Hourglass3d(nn.Module):
    """3D U-Net used by the dense motion network (upstream `Hourglass`)."""

    def __init__(self, block_expansion: int, in_features: int, num_blocks: int, max_features: int) -> None:
        super().__init__()
        self.encoder = HourglassEncoder(block_expansion, in_features, num_blocks, max_features)
        self.decoder = HourglassDecoder(block_expansion, in_features, num_blocks, max_features)
        self.out_filters = self.decoder.out_filters

    def forward(self, x: Tensor) -> Tensor:
        return self.decoder(self.encoder(x))

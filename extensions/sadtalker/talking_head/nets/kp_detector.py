"""Canonical 3D keypoint detector of the face-vid2vid renderer.

Reproduces upstream `src/facerender/modules/keypoint_detector.KPDetector` with the `facerender.yaml` settings
(15 keypoints, no jacobians) and its helpers `KPHourglass` and `AntiAliasInterpolation2d`. State-dict keys:
`predictor.*`, `kp.*` and the fixed buffer `down.weight` (stored in the released checkpoints too).
"""

from __future__ import annotations

from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .facerender_blocks import DownBlock2d, UpBlock3d, make_coordinate_grid


def anti_alias_kernel(channels: int, scale: float) -> Tensor:
    """The depthwise Gaussian of `AntiAliasInterpolation2d`: sigma = (1/scale - 1)/2, size 2*round(4 sigma)+1.

    Built with the same float32 operations in the same order as upstream, so it matches the stored buffer
    bit for bit (13x13, sigma 1.5 at scale 0.25), normalised to sum 1, repeated for every channel.
    """
    sigma = (1 / scale - 1) / 2
    size = 2 * round(sigma * 4) + 1
    mean = (size - 1) / 2
    kernel = torch.ones((), dtype=torch.float32)
    for grid in torch.meshgrid(
        torch.arange(size, dtype=torch.float32), torch.arange(size, dtype=torch.float32), indexing="ij"
    ):
        kernel = kernel * torch.exp(-((grid - mean) ** 2) / (2 * sigma**2))
    kernel = kernel / torch.sum(kernel)
    return kernel.view(1, 1, size, size).repeat(channels, 1, 1, 1)


class AntiAliasDownsample(nn.Module):
    """Gaussian blur then keep every (1/scale)-th pixel (upstream `AntiAliasInterpolation2d`).

    Registered as the module `down` with buffer `weight`, so the key is `down.weight` as in the checkpoints.
    """

    def __init__(self, channels: int, scale: float) -> None:
        super().__init__()
        kernel = anti_alias_kernel(channels, scale)
        self.register_buffer("weight", kernel)
        size = kernel.shape[-1]
        self.pad_before = size // 2
        self.pad_after = self.pad_before - 1 if size % 2 == 0 else self.pad_before
        self.groups = channels
        self.step = int(1 / scale)

    def forward(self, x: Tensor) -> Tensor:
        out = F.pad(x, (self.pad_before, self.pad_after, self.pad_before, self.pad_after))
        out = F.conv2d(out, weight=self.weight, groups=self.groups)
        return out[:, :, :: self.step, :: self.step]


class KPHourglass(nn.Module):
    """2D encoder -> 1x1 conv -> reshape to a 3D volume -> 3D decoder (upstream `KPHourglass`)."""

    def __init__(
        self,
        block_expansion: int = 32,
        in_features: int = 3,
        reshape_features: int = 16384,
        reshape_depth: int = 16,
        num_blocks: int = 5,
        max_features: int = 1024,
    ) -> None:
        super().__init__()
        down = OrderedDict()
        for i in range(num_blocks):
            down[f"down{i}"] = DownBlock2d(
                in_features if i == 0 else min(max_features, block_expansion * (2**i)),
                min(max_features, block_expansion * (2 ** (i + 1))),
            )
        self.down_blocks = nn.Sequential(down)
        self.conv = nn.Conv2d(min(max_features, block_expansion * (2**num_blocks)), reshape_features, kernel_size=1)
        up = OrderedDict()
        out_filters = 0
        for i in range(num_blocks):
            in_filters = min(max_features, block_expansion * (2 ** (num_blocks - i)))
            out_filters = min(max_features, block_expansion * (2 ** (num_blocks - i - 1)))
            up[f"up{i}"] = UpBlock3d(in_filters, out_filters)
        self.up_blocks = nn.Sequential(up)
        self.reshape_depth = reshape_depth
        self.out_filters = out_filters

    def forward(self, x: Tensor) -> Tensor:
        out = self.conv(self.down_blocks(x))
        bs, c, h, w = out.shape
        out = out.view(bs, c // self.reshape_depth, self.reshape_depth, h, w)
        return self.up_blocks(out)


class KPDetector(nn.Module):
    """Image (B, 3, H, W) in [0, 1] -> canonical keypoints (B, 15, 3) as (x, y, z) in [-1, 1].

    Defaults are the `kp_detector_params` + `common_params` of facerender.yaml (identical for 256 and 512).
    """

    def __init__(
        self,
        block_expansion: int = 32,
        num_kp: int = 15,
        image_channel: int = 3,
        max_features: int = 1024,
        reshape_channel: int = 16384,
        reshape_depth: int = 16,
        num_blocks: int = 5,
        temperature: float = 0.1,
        scale_factor: float = 0.25,
    ) -> None:
        super().__init__()
        self.predictor = KPHourglass(
            block_expansion, image_channel, reshape_channel, reshape_depth, num_blocks, max_features
        )
        self.kp = nn.Conv3d(self.predictor.out_filters, num_kp, kernel_size=3, padding=1)
        self.temperature = temperature
        self.scale_factor = scale_factor
        if scale_factor != 1:
            self.down = AntiAliasDownsample(image_channel, scale_factor)

    def downsample(self, x: Tensor) -> Tensor:
        """The anti-aliased low-resolution image the hourglass sees (identity at scale 1)."""
        return self.down(x) if self.scale_factor != 1 else x

    def forward(self, x: Tensor) -> Tensor:
        prediction = self.kp(self.predictor(self.downsample(x)))
        shape = prediction.shape
        heatmap = F.softmax(prediction.view(shape[0], shape[1], -1) / self.temperature, dim=2).view(*shape)
        # Expected coordinate under each keypoint's softmax over the whole (d, h, w) volume.
        grid = make_coordinate_grid(tuple(shape[2:]), heatmap.dtype, heatmap.device)
        return (heatmap.unsqueeze(-1) * grid.unsqueeze(0).unsqueeze(0)).sum(dim=(2, 3, 4))

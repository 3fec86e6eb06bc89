"""Face renderer generator: source image + source/driving keypoints -> rendered frame.

Reproduces upstream `src/facerender/modules/generator.OcclusionAwareSPADEGenerator` with generator_params and
common_params of facerender.yaml (identical in facerender_still.yaml; same shapes at 256 and 512, only the
weights differ). Keys: `dense_motion_network.*`, `first.*`, `down_blocks.*`, `second.*`, `resblocks_3d.3drN.*`,
`third.*`, `fourth.*`, `decoder.*` (SPADE decoder with spectral-normalised blocks).

All defaults are upstream's. `dense_motion_params` (upstream's name in facerender.yaml) and `decoder_params` only
exist so that small test networks can be built from an architecture config; the dense motion network always gets
the generator's `num_kp`, `feature_channel` and `reshape_depth`, and the decoder's input width is the width the
generator feeds it (`block_expansion * 2**num_down_blocks`, 256 upstream).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping
from typing import Any

import torch.nn.functional as F
from torch import Tensor, nn

from .dense_motion import DenseMotionNetwork
from .facerender_blocks import DownBlock2d, ResBlock3d, SameBlock2d
from .spade import SPADEDecoder


class OcclusionAwareSPADEGenerator(nn.Module):
    """forward(source (B, 3, H, W) in [0, 1], kp_driving, kp_source (B, 15, 3)) -> dict with `prediction`
    (B, 3, H, W), `mask` (B, 16, 16, H/4, W/4, the softmax before the 1e-3 floor), `occlusion_map`
    (B, 1, H/4, W/4) and `deformation` (B, 16, H/4, W/4, 3; upstream computes but does not return it)."""

    def __init__(
        self,
        image_channel: int = 3,
        num_kp: int = 15,
        feature_channel: int = 32,
        block_expansion: int = 64,
        max_features: int = 512,
        num_down_blocks: int = 2,
        reshape_channel: int = 32,
        reshape_depth: int = 16,
        num_resblocks: int = 6,
        dense_motion_params: Mapping[str, Any] | None = None,
        decoder_params: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__()
        dense_motion_params = dict(dense_motion_params or {})
        derived = sorted({"num_kp", "feature_channel", "reshape_depth"} & set(dense_motion_params))
        if derived:
            raise ValueError(f"dense_motion_params may not set {', '.join(derived)}: they follow the generator's")
        decoder_params = dict(decoder_params or {})
        if "ic" in decoder_params:
            raise ValueError("decoder_params may not set ic: it is block_expansion * 2**num_down_blocks")
        if reshape_channel * reshape_depth != max_features:
            raise ValueError(
                f"reshape_channel * reshape_depth ({reshape_channel} * {reshape_depth}) must equal max_features "
                f"({max_features}): the 2D features are viewed as that 3D volume"
            )
        # Registered first: upstream's state_dict lists the dense motion network before the encoder.
        self.dense_motion_network = DenseMotionNetwork(
            num_kp=num_kp, feature_channel=feature_channel, reshape_depth=reshape_depth, **dense_motion_params
        )
        self.first = SameBlock2d(image_channel, block_expansion, kernel_size=3, padding=1)
        self.down_blocks = nn.ModuleList(
            DownBlock2d(
                min(max_features, block_expansion * (2**i)), min(max_features, block_expansion * (2 ** (i + 1)))
            )
            for i in range(num_down_blocks)
        )
        down_out = min(max_features, block_expansion * (2**num_down_blocks))
        self.second = nn.Conv2d(down_out, max_features, kernel_size=1, stride=1)
        self.reshape_channel = reshape_channel
        self.reshape_depth = reshape_depth
        self.resblocks_3d = nn.Sequential(
            OrderedDict((f"3dr{i}", ResBlock3d(reshape_channel)) for i in range(num_resblocks))
        )
        out_features = block_expansion * (2**num_down_blocks)
        self.third = SameBlock2d(max_features, out_features, kernel_size=3, padding=1, lrelu=True)
        self.fourth = nn.Conv2d(out_features, out_features, kernel_size=1, stride=1)
        self.decoder = SPADEDecoder(ic=out_features, **decoder_params)

    @staticmethod
    def deform_input(volume: Tensor, deformation: Tensor) -> Tensor:
        """Sample the (B, C, d, h, w) volume at the deformation grid (grid_sample defaults, as upstream)."""
        if tuple(deformation.shape[1:4]) != tuple(volume.shape[2:]):
            grid = deformation.permute(0, 4, 1, 2, 3)
            grid = F.interpolate(grid, size=tuple(volume.shape[2:]), mode="trilinear")
            deformation = grid.permute(0, 2, 3, 4, 1)
        return F.grid_sample(volume, deformation, mode="bilinear", padding_mode="zeros", align_corners=False)

    def forward(self, source_image: Tensor, kp_driving: Tensor, kp_source: Tensor) -> dict[str, Tensor]:
        out = self.first(source_image)
        for block in self.down_blocks:
            out = block(out)
        out = self.second(out)
        bs, _, h, w = out.shape
        feature_3d = self.resblocks_3d(out.view(bs, self.reshape_channel, self.reshape_depth, h, w))

        motion = self.dense_motion_network(feature_3d, kp_driving=kp_driving, kp_source=kp_source)
        out = self.deform_input(feature_3d, motion["deformation"])
        bs, c, d, h, w = out.shape
        out = self.fourth(self.third(out.view(bs, c * d, h, w)))
        occlusion = motion["occlusion_map"]
        if out.shape[2:] != occlusion.shape[2:]:
            occlusion = F.interpolate(occlusion, size=out.shape[2:], mode="bilinear")
        return {
            "prediction": self.decoder(out * occlusion),
            "mask": motion["mask"],
            "occlusion_map": motion["occlusion_map"],
            "deformation": motion["deformation"],
        }

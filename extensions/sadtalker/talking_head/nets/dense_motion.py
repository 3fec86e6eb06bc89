"""Dense motion network of the face-vid2vid renderer: keypoints -> 3D deformation field, mask and occlusion.

Reproduces upstream `src/facerender/modules/dense_motion.DenseMotionNetwork` (generator.dense_motion_params of
facerender.yaml: block_expansion 32, max_features 1024, num_blocks 5, reshape_depth 16, compress 4; no
jacobians). Keys: `hourglass.*`, `mask.*`, `compress.*`, `norm.*`, `occlusion.*`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .facerender_blocks import Hourglass3d, make_coordinate_grid

KP_VARIANCE = 0.01
MASK_FLOOR = 1e-3


def keypoint_gaussians(kp: Tensor, spatial_size: tuple[int, int, int]) -> Tensor:
    """(B, K, 3) keypoints -> (B, K, d, h, w) heatmaps exp(-0.5 |g - kp|^2 / 0.01) (upstream `kp2gaussian`)."""
    grid = make_coordinate_grid(spatial_size, kp.dtype, kp.device)
    diff = grid.view(1, 1, *grid.shape) - kp.view(kp.shape[0], kp.shape[1], 1, 1, 1, 3)
    return torch.exp(-0.5 * (diff**2).sum(-1) / KP_VARIANCE)


class DenseMotionNetwork(nn.Module):
    """feature (B, 32, d, h, w), kp_driving/kp_source (B, K, 3) -> mask, deformation, occlusion_map."""

    def __init__(
        self,
        block_expansion: int = 32,
        num_blocks: int = 5,
        max_features: int = 1024,
        num_kp: int = 15,
        feature_channel: int = 32,
        reshape_depth: int = 16,
        compress: int = 4,
    ) -> None:
        super().__init__()
        self.hourglass = Hourglass3d(block_expansion, (num_kp + 1) * (compress + 1), num_blocks, max_features)
        self.mask = nn.Conv3d(self.hourglass.out_filters, num_kp + 1, kernel_size=7, padding=3)
        self.compress = nn.Conv3d(feature_channel, compress, kernel_size=1)
        self.norm = nn.BatchNorm3d(compress, affine=True)
        self.occlusion = nn.Conv2d(self.hourglass.out_filters * reshape_depth, 1, kernel_size=7, padding=3)
        self.num_kp = num_kp

    def sparse_motions(self, shape: tuple[int, int, int], kp_driving: Tensor, kp_source: Tensor) -> Tensor:
        """(B, K+1, d, h, w, 3) sampling grids: identity (background) then grid - kp_driving + kp_source."""
        bs = kp_source.shape[0]
        identity = make_coordinate_grid(shape, kp_source.dtype, kp_source.device).view(1, 1, *shape, 3)
        driving_to_source = (identity - kp_driving.view(bs, self.num_kp, 1, 1, 1, 3)) + kp_source.view(
            bs, self.num_kp, 1, 1, 1, 3
        )
        return torch.cat([identity.expand(bs, 1, *shape, 3), driving_to_source], dim=1)

    def forward(self, feature: Tensor, kp_driving: Tensor, kp_source: Tensor) -> dict[str, Tensor]:
        bs, _, d, h, w = feature.shape
        feature = F.relu(self.norm(self.compress(feature)))
        motions = self.sparse_motions((d, h, w), kp_driving, kp_source)
        k1 = self.num_kp + 1
        # Warp the compressed volume once per motion; grid_sample defaults (bilinear, zeros,
        # align_corners=False) are what upstream uses (study.md §7).
        repeated = feature.unsqueeze(1).expand(bs, k1, *feature.shape[1:]).reshape(bs * k1, -1, d, h, w)
        deformed = F.grid_sample(
            repeated, motions.reshape(bs * k1, d, h, w, 3), mode="bilinear", padding_mode="zeros", align_corners=False
        ).view(bs, k1, -1, d, h, w)
        heatmap = keypoint_gaussians(kp_driving, (d, h, w)) - keypoint_gaussians(kp_source, (d, h, w))
        heatmap = torch.cat([heatmap.new_zeros(bs, 1, d, h, w), heatmap], dim=1).unsqueeze(2)
        prediction = self.hourglass(torch.cat([heatmap, deformed], dim=2).view(bs, -1, d, h, w))

        mask = F.softmax(self.mask(prediction), dim=1)
        # Tiny weights are zeroed WITHOUT renormalising the rest (upstream behaviour, study.md §7).
        kept = torch.where(mask < MASK_FLOOR, torch.zeros_like(mask), mask).unsqueeze(2)
        deformation = (motions.permute(0, 1, 5, 2, 3, 4) * kept).sum(dim=1).permute(0, 2, 3, 4, 1)
        occlusion = torch.sigmoid(self.occlusion(prediction.reshape(bs, -1, h, w)))
        return {"mask": mask, "deformation": deformation, "occlusion_map": occlusion}

"""MappingNet: a 27-frame window of 3DMM coefficients -> head pose bins, translation and keypoint deltas.

Reproduces upstream `src/facerender/modules/mapping.MappingNet` (PIRender-style), built with the `mapping`
section of facerender.yaml (70 coefficients in, file `mapping_00229-model.pth.tar`) or facerender_still.yaml
(73 in, `mapping_00109-model.pth.tar`). Keys: `first.0.*`, `encoder{0,1,2}.1.*`, `fc_{roll,pitch,yaw,t,exp}.*`.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn


class MappingNet(nn.Module):
    """Input (B, coeff_nc, 27) -> dict with `yaw`, `pitch`, `roll` (B, 66 logits), `t` (B, 3), `exp` (B, 45)."""

    def __init__(
        self, coeff_nc: int = 70, descriptor_nc: int = 1024, layer: int = 3, num_kp: int = 15, num_bins: int = 66
    ) -> None:
        super().__init__()
        self.layer = layer
        # Sequential wrappers only to reproduce the `first.0` / `encoderN.1` key names of the checkpoints.
        self.first = nn.Sequential(nn.Conv1d(coeff_nc, descriptor_nc, kernel_size=7, padding=0, bias=True))
        for i in range(layer):
            block = nn.Sequential(
                nn.LeakyReLU(0.1), nn.Conv1d(descriptor_nc, descriptor_nc, kernel_size=3, padding=0, dilation=3)
            )
            self.add_module(f"encoder{i}", block)
        self.fc_roll = nn.Linear(descriptor_nc, num_bins)
        self.fc_pitch = nn.Linear(descriptor_nc, num_bins)
        self.fc_yaw = nn.Linear(descriptor_nc, num_bins)
        self.fc_t = nn.Linear(descriptor_nc, 3)
        self.fc_exp = nn.Linear(descriptor_nc, 3 * num_kp)

    def forward(self, coeffs: Tensor) -> dict[str, Tensor]:
        out = self.first(coeffs)
        for i in range(self.layer):
            # Each dilated conv shortens time by 6; the residual is the input cropped to match (27->21->15->9->3).
            out = self.get_submodule(f"encoder{i}")(out) + out[:, :, 3:-3]
        out = F.adaptive_avg_pool1d(out, 1).flatten(1)
        return {
            "yaw": self.fc_yaw(out),
            "pitch": self.fc_pitch(out),
            "roll": self.fc_roll(out),
            "t": self.fc_t(out),
            "exp": self.fc_exp(out),
        }


def mapping_net_for(network: str) -> MappingNet:
    """`mapping_crop` (70 inputs) or `mapping_full` (73 inputs: + s, tx, ty of the alignment)."""
    if network not in ("mapping_crop", "mapping_full"):
        raise ValueError(f"not a MappingNet variant: {network!r}")
    return MappingNet(coeff_nc=73 if network == "mapping_full" else 70)

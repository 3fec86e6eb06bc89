"""Keypoint transformation of the SadTalker renderer: canonical keypoints + MappingNet output -> posed keypoints.

Reproduces `headpose_pred_to_degree`, `get_rotation_matrix` and `keypoint_transformation` of upstream
`src/facerender/modules/make_animation.py`. Pure functions, no weights. Parity traps (study.md §7) kept on
purpose: degrees -> radians uses 3.14, not pi; only the y translation is applied (t_x = t_z = 0).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import Tensor

# Upstream converts with this literal, not math.pi; using pi would rotate every frame slightly differently.
UPSTREAM_PI = 3.14
NUM_BINS = 66


def headpose_logits_to_degrees(logits: Tensor) -> Tensor:
    """(B, 66) bin logits -> (B,) degrees: expected bin index under the softmax, times 3, minus 99."""
    bins = torch.arange(NUM_BINS, dtype=logits.dtype, device=logits.device)
    return torch.sum(F.softmax(logits, dim=1) * bins, 1) * 3 - 99


def rotation_matrix(yaw: Tensor, pitch: Tensor, roll: Tensor) -> Tensor:
    """(B,) degrees each -> (B, 3, 3) rotation R = P(pitch) @ Y(yaw) @ Rz(roll)."""
    yaw = (yaw / 180 * UPSTREAM_PI).unsqueeze(1)
    pitch = (pitch / 180 * UPSTREAM_PI).unsqueeze(1)
    roll = (roll / 180 * UPSTREAM_PI).unsqueeze(1)
    one, zero = torch.ones_like(pitch), torch.zeros_like(pitch)
    pitch_mat = torch.cat(
        [one, zero, zero, zero, torch.cos(pitch), -torch.sin(pitch), zero, torch.sin(pitch), torch.cos(pitch)], dim=1
    ).view(-1, 3, 3)
    yaw_mat = torch.cat(
        [torch.cos(yaw), zero, torch.sin(yaw), zero, one, zero, -torch.sin(yaw), zero, torch.cos(yaw)], dim=1
    ).view(-1, 3, 3)
    roll_mat = torch.cat(
        [torch.cos(roll), -torch.sin(roll), zero, torch.sin(roll), torch.cos(roll), zero, zero, zero, one], dim=1
    ).view(-1, 3, 3)
    # Same three-operand einsum as upstream, so the float32 contraction order matches too.
    return torch.einsum("bij,bjk,bkm->bim", pitch_mat, yaw_mat, roll_mat)


def keypoint_transformation(
    kp_canonical: Tensor,
    head: Mapping[str, Tensor],
    yaw_in: Tensor | None = None,
    pitch_in: Tensor | None = None,
    roll_in: Tensor | None = None,
) -> Tensor:
    """Rotate (B, K, 3) canonical keypoints by the MappingNet pose, add t_y and the expression deltas.

    `head` is a MappingNet output (`yaw`, `pitch`, `roll` logits, `t`, `exp`). `*_in` (B,) degrees replace the
    predicted angles, as `--input_yaw/pitch/roll` do for the driving keypoints. Unlike upstream, which zeroes
    t_x and t_z IN PLACE in the MappingNet output, `head` is left untouched.
    """
    yaw = headpose_logits_to_degrees(head["yaw"]) if yaw_in is None else yaw_in
    pitch = headpose_logits_to_degrees(head["pitch"]) if pitch_in is None else pitch_in
    roll = headpose_logits_to_degrees(head["roll"]) if roll_in is None else roll_in
    rot = rotation_matrix(yaw, pitch, roll)
    kp_rotated = torch.einsum("bmp,bkp->bkm", rot, kp_canonical)
    # Only the vertical translation is used: upstream multiplies t_x and t_z by 0.
    t = head["t"]
    t = torch.stack([t[:, 0] * 0, t[:, 1], t[:, 2] * 0], dim=1)
    kp_t = kp_rotated + t.unsqueeze(1)
    return kp_t + head["exp"].view(head["exp"].shape[0], -1, 3)

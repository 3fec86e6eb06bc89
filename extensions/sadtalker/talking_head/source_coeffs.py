"""3DMM coefficients of source frames: face crop + landmarks -> alignment -> regressor -> the 73-column rows.

Reproduces the extraction loop of upstream `CropAndExtract.generate` (study.md §1.4): per frame, landmarks are
detected on the size x size source image, the face is aligned (`align.align_for_3dmm`), the regressor gives 257
coefficients, and the saved row is `[exp 64 | angle 3 | trans 3 | s, tx, ty]` (float32). For a video (reference
pose/blink videos) a frame without a face reuses the previous frame's landmarks; only when there is none yet is
the standard-face fallback used (upstream `KeypointExtractor.extract_keypoint`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from .align import align_for_3dmm, has_landmarks

if TYPE_CHECKING:
    from torch import nn

    from .crop import FaceLandmarker

# Frames per regressor call for videos: bounds memory; in eval mode frames do not influence each other.
_BATCH = 8


@dataclass(frozen=True)
class SourceCoefficients:
    """`coeff_3dmm` (N, 73) float32 = [exp | angle | trans | s, tx, ty]; `full_3dmm` (N, 257) float32;
    `fallback_frames` the frames aligned with the standard face because no landmarks were ever found."""

    coeff_3dmm: np.ndarray
    full_3dmm: np.ndarray
    fallback_frames: tuple[int, ...]

    @property
    def first_coeff(self) -> np.ndarray:
        """(1, 73): the first frame's row, what the coefficient stage and the renderer use as the source."""
        return self.coeff_3dmm[:1]


def coefficient_rows(full_3dmm: np.ndarray, crop_params: np.ndarray) -> np.ndarray:
    """(N, 257) regressor output + (N, 3) float32 [s, tx, ty] -> (N, 73) rows (exp 80:144, angle 224:227,
    trans 254:257, then the crop parameters)."""
    return np.concatenate(
        [full_3dmm[:, 80:144], full_3dmm[:, 224:227], full_3dmm[:, 254:257], crop_params], axis=1
    ).astype(np.float32)


def track_landmarks(frames: Sequence[np.ndarray], landmarker: FaceLandmarker) -> list[np.ndarray | None]:
    """Landmarks per frame; a frame without a face takes the previous frame's (None only before the first face)."""
    tracked: list[np.ndarray | None] = []
    for frame in frames:
        found = landmarker(frame)
        if not has_landmarks(found) and tracked:
            found = tracked[-1]
        tracked.append(found if has_landmarks(found) else None)
    return tracked


def extract_coefficients(
    net: nn.Module, frames: Sequence[np.ndarray], landmarks: Sequence[np.ndarray | None]
) -> SourceCoefficients:
    """Coefficients of RGB uint8 frames (normally the size x size crops) with their landmarks (None: no face)."""
    import torch

    if len(frames) != len(landmarks):
        raise ValueError(f"{len(frames)} frames but {len(landmarks)} landmark sets")
    if not frames:
        raise ValueError("no frames to extract coefficients from")
    alignments = [align_for_3dmm(frame, lm) for frame, lm in zip(frames, landmarks)]
    device = next(net.parameters()).device
    outputs = []
    with torch.inference_mode():
        for start in range(0, len(alignments), _BATCH):
            batch = torch.cat([a.net_input() for a in alignments[start : start + _BATCH]]).to(device)
            outputs.append(net(batch).float().cpu().numpy())
    full = np.concatenate(outputs, axis=0)
    crop_params = np.stack([a.crop_params for a in alignments])
    return SourceCoefficients(
        coeff_3dmm=coefficient_rows(full, crop_params),
        full_3dmm=full,
        fallback_frames=tuple(i for i, a in enumerate(alignments) if a.used_fallback),
    )


def coefficients_of_frames(
    net: nn.Module, frames: Sequence[np.ndarray], landmarker: FaceLandmarker
) -> SourceCoefficients:
    """Detect landmarks on every frame (tracking over gaps) and extract the coefficients."""
    return extract_coefficients(net, frames, track_landmarks(frames, landmarker))

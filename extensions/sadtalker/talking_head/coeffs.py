"""Coefficient stage: mel windows + the source's coefficients -> one 70-column row per video frame.

Reproduces upstream `get_data` (blinks, reference coefficients, reference-video blinks) and
`Audio2Coeff.generate` (ExpNet, PoseVAE, Savitzky-Golay smoothing, reference-video pose), study.md §1.5-1.8.
The output is what upstream saves as `coeff_3dmm` in the `.mat` file: columns 0:64 expression (ExpNet),
64:67 angles and 67:70 translation (smoothed PoseVAE pose, plus the reference video's motion if given).

Upstream's two random sources are explicit here: the blink positions come from a `random.Random` (same draws as
upstream's module-level `random`), the PoseVAE latents from a torch generator, or both are injected.
Expression scale, still mode and explicit yaw/pitch/roll belong to the renderer (`render_windows`,
`camera_angles`), as upstream applies them there.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch

    from .nets.audio2exp import ExpNet
    from .nets.audio2pose import PoseVAE

NUM_POSE_STYLES = 46
BLINK_PATTERN = (0.5, 0.9, 1.0, 0.9, 0.5)
MIN_BLINK_FRAMES = 21  # clips of 20 frames or fewer get no blinks


def check_pose_style(pose_style: int) -> int:
    """Pose styles are the PoseVAE's 46 classes, 0..45 (upstream's UI slider allowed 46, which crashed)."""
    if not 0 <= int(pose_style) < NUM_POSE_STYLES:
        raise ValueError(f"pose style must be 0..{NUM_POSE_STYLES - 1}, got {pose_style}")
    return int(pose_style)


def random_blink_ratio(num_frames: int, rng: random.Random | None = None) -> np.ndarray:
    """(T,) float32 eye-closure ratio with upstream's random blinks (`generate_blink_seq_randomly`).

    Each blink starts `rng.choice(range(min(10, T), min(int(T / 2), 70)))` frames after the previous one ended
    and writes 0.5, 0.9, 1.0, 0.9, 0.5; it stops at the first blink that would not end before the last frame.
    With the same `random.Random` state this draws exactly what upstream draws. Where upstream crashes on an
    empty range (T = 21), no blink is made.
    """
    rng = rng if rng is not None else random.Random()
    ratio = np.zeros(num_frames, dtype=np.float64)
    if num_frames < MIN_BLINK_FRAMES:
        return ratio.astype(np.float32)
    gaps = range(min(10, num_frames), min(int(num_frames / 2), 70))
    if len(gaps) == 0:
        return ratio.astype(np.float32)
    frame = 0
    while frame < num_frames:
        start = rng.choice(gaps)
        if frame + start + len(BLINK_PATTERN) > num_frames - 1:
            break
        ratio[frame + start : frame + start + len(BLINK_PATTERN)] = BLINK_PATTERN
        frame += start + len(BLINK_PATTERN)
    return ratio.astype(np.float32)


def loop_to_length(coeffs: np.ndarray, num_frames: int) -> np.ndarray:
    """A reference video's per-frame rows repeated from the start until they cover `num_frames`, then cut."""
    coeffs = np.asarray(coeffs)
    if coeffs.shape[0] == 0:
        raise ValueError("the reference video has no frames")
    return coeffs[np.arange(num_frames) % coeffs.shape[0]]


@dataclass(frozen=True)
class CoefficientInputs:
    """Per-frame inputs of the two audio networks, as upstream's `get_data` builds them.

    `indiv_mels` (1, T, 1, 80, 16), `ref` (1, T, 70) reference coefficients, `ratio` (1, T, 1) blink ratio.
    """

    indiv_mels: torch.Tensor
    ref: torch.Tensor
    ratio: torch.Tensor

    @property
    def num_frames(self) -> int:
        return int(self.indiv_mels.shape[1])


def build_inputs(
    indiv_mels: np.ndarray,
    first_coeff: np.ndarray,
    *,
    blink: np.ndarray | None = None,
    use_blink: bool = True,
    ref_eyeblink: np.ndarray | None = None,
    rng: random.Random | None = None,
) -> CoefficientInputs:
    """(T, 80, 16) mel windows + (1, >=70) source row -> network inputs.

    `blink` (T,) injects the ratio; otherwise it is drawn with `random_blink_ratio(T, rng)`. `use_blink=False`
    zeroes it. `ref_eyeblink` (N, >=64): a reference video's coefficients whose expressions (looped to T)
    replace the source's, with the blink ratio zero, so the video's own eye motion is copied.
    """
    import torch

    mels = np.require(indiv_mels, dtype=np.float32, requirements=["C", "W"])  # torch shares it: writable
    num_frames = mels.shape[0]
    ratio = random_blink_ratio(num_frames, rng) if blink is None else np.asarray(blink, dtype=np.float32)
    if ratio.reshape(-1).shape[0] != num_frames:
        raise ValueError(f"blink ratio has {ratio.size} values for {num_frames} frames")
    ref = np.repeat(np.asarray(first_coeff, dtype=np.float32)[:1, :70], num_frames, axis=0)
    if ref_eyeblink is not None:
        ratio = np.zeros_like(ratio)
        ref[:, :64] = loop_to_length(np.asarray(ref_eyeblink)[:, :64], num_frames)
    if not use_blink:
        ratio = np.zeros_like(ratio)
    return CoefficientInputs(
        indiv_mels=torch.from_numpy(mels).unsqueeze(1).unsqueeze(0),
        ref=torch.from_numpy(ref).unsqueeze(0),
        ratio=torch.from_numpy(ratio.reshape(1, num_frames, 1).copy()),
    )


def apply_reference_pose(coeffs: np.ndarray, ref_pose: np.ndarray) -> np.ndarray:
    """Add a reference video's head motion (its pose minus its first pose, looped) to columns 64:70."""
    poses = loop_to_length(np.asarray(ref_pose)[:, 64:70], coeffs.shape[0])
    out = coeffs.copy()
    out[:, 64:70] = out[:, 64:70] + (poses - poses[0:1])
    return out


def predict_coefficients(
    audio2exp: ExpNet,
    audio2pose: PoseVAE,
    inputs: CoefficientInputs,
    pose_style: int = 0,
    *,
    ref_pose: np.ndarray | None = None,
    z: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
) -> np.ndarray:
    """(T, 70) float32 `coeff_3dmm`: ExpNet expressions, smoothed PoseVAE poses, reference-video motion.

    `z` (num_noise_draws(T), 64) injects the PoseVAE latents in draw order; otherwise they come from
    `generator` (None: torch's global generator, as upstream).
    """
    import torch

    from .nets.audio2pose import smooth_pose

    pose_style = check_pose_style(pose_style)
    device = next(audio2exp.parameters()).device
    mels, ref, ratio = (t.to(device) for t in (inputs.indiv_mels, inputs.ref, inputs.ratio))
    with torch.inference_mode():
        exp = audio2exp.predict_clip(mels, ref, ratio)
        pose = audio2pose.predict(mels, ref, pose_style, inputs.num_frames, z=z, generator=generator)["pose_pred"]
        pose = smooth_pose(pose)
        coeffs = torch.cat([exp, pose.to(exp.device)], dim=-1)[0].float().cpu().numpy()
    if ref_pose is not None:
        coeffs = apply_reference_pose(coeffs, ref_pose)
    return coeffs


def generate_coefficients(
    audio2exp: ExpNet,
    audio2pose: PoseVAE,
    indiv_mels: np.ndarray,
    first_coeff: np.ndarray,
    pose_style: int = 0,
    *,
    use_blink: bool = True,
    blink: np.ndarray | None = None,
    ref_eyeblink: np.ndarray | None = None,
    ref_pose: np.ndarray | None = None,
    rng: random.Random | None = None,
    z: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
) -> np.ndarray:
    """The whole coefficient stage: (T, 80, 16) mel windows + (1, >=70) source row -> (T, 70) float32."""
    inputs = build_inputs(
        indiv_mels, first_coeff, blink=blink, use_blink=use_blink, ref_eyeblink=ref_eyeblink, rng=rng
    )
    return predict_coefficients(audio2exp, audio2pose, inputs, pose_style, ref_pose=ref_pose, z=z, generator=generator)

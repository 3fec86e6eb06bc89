"""The whole talking-head run on loaded networks: photo + audio features -> a stream of finished video frames.

Stages, in upstream's order (study.md §1): preprocess (face crop and the source's 3DMM coefficients, reference
videos likewise), coefficients (blinks, ExpNet, PoseVAE), render (MappingNet -> keypoints -> generator), then per
frame the aspect restore, the paste-back of the `full` modes and the optional enhancer. Frames are produced
lazily, chunk by chunk, so the encoder can stream them and a long clip never sits in memory whole.

Everything random comes from `seed`: blink positions from `random.Random(seed)`, PoseVAE latents from a CPU
torch generator seeded with it, so the same seed, inputs and device give the same video.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from . import render_chain
from .audio import AudioFeatures
from .camera_angles import angle_sequence
from .coeffs import generate_coefficients
from .crop import FaceLandmarker, FaceNotFoundError, PreparedSource, plan_crop, prepare_source
from .paste_back import PasteBack
from .source_coeffs import coefficients_of_frames
from .video import aspect_restored_size, resize_to_output

if TYPE_CHECKING:
    from .checkpoints import TalkingHeadNets

REFERENCE_SIZE = 256  # upstream crops reference videos at its default pic_size, whatever the model size

# Stage names, in order; the UI shows one progress line per stage.
PREPROCESS, COEFFICIENTS, RENDER, ENHANCE, ENCODE = "preprocess", "coefficients", "render", "enhance", "encode"
STAGES = (PREPROCESS, COEFFICIENTS, RENDER, ENHANCE, ENCODE)

Progress = Callable[[str, int, int], None]  # (stage, done, total)
Enhancer = Callable[[np.ndarray], np.ndarray]  # RGB uint8 frame -> enhanced RGB uint8 frame (maybe larger)


@dataclass(frozen=True)
class Settings:
    """The user's choices that shape the video (see request.TalkingHeadRequest for their meaning)."""

    preprocess: str = "crop"
    pose_style: int = 0
    still: bool = False
    batch_size: int = 2
    expression_scale: float = 1.0
    use_blink: bool = True
    yaw: Sequence[float] | None = None
    pitch: Sequence[float] | None = None
    roll: Sequence[float] | None = None
    seed: int = 0


@dataclass(frozen=True)
class Inputs:
    """RGB uint8 photo, the audio's features, and optional reference videos as RGB uint8 frames."""

    image: np.ndarray
    audio: AudioFeatures
    ref_eyeblink: Sequence[np.ndarray] | None = None
    ref_pose: Sequence[np.ndarray] | None = None


@dataclass
class Prepared:
    """Everything fixed for the clip once preprocessing and the coefficient stage are done. `output_size` is
    upstream's (size, size * h / w) of the crop; with `paste`, frames are the photo's size instead."""

    source: PreparedSource
    setup: render_chain.RenderSetup
    output_size: tuple[int, int]
    paste: PasteBack | None
    notes: list[str] = field(default_factory=list)

    @property
    def num_frames(self) -> int:
        return self.setup.num_frames


def _quiet(_stage: str, _done: int, _total: int) -> None:
    return None


def prepare(nets: TalkingHeadNets, landmarker: FaceLandmarker, inputs: Inputs, settings: Settings,
            progress: Progress = _quiet) -> Prepared:
    """Preprocess and compute every frame's coefficients. Raises FaceNotFoundError when the photo has no face."""
    notes: list[str] = []
    progress(PREPROCESS, 0, 1)
    source = _crop_source(nets.size, landmarker, inputs.image, settings.preprocess, notes)
    coeffs = coefficients_of_frames(nets.face_3drecon, [source.image], landmarker)
    if coeffs.fallback_frames:
        notes.append("No landmarks were found on the cropped face, so a standard face position was assumed; "
                     "the motion may look off. A clearer, front-facing photo works best.")
    ref_eyeblink = _reference(nets, landmarker, inputs.ref_eyeblink, settings.preprocess, "eye-blink", notes)
    ref_pose = _reference(nets, landmarker, inputs.ref_pose, settings.preprocess, "pose", notes)
    progress(PREPROCESS, 1, 1)

    progress(COEFFICIENTS, 0, 1)
    import torch

    generator = torch.Generator().manual_seed(settings.seed)
    rows = generate_coefficients(
        nets.audio2exp, nets.audio2pose, inputs.audio.indiv_mels, coeffs.first_coeff, settings.pose_style,
        use_blink=settings.use_blink, ref_eyeblink=ref_eyeblink, ref_pose=ref_pose,
        rng=random.Random(settings.seed), generator=generator,
    )
    num_frames = rows.shape[0]
    setup = render_chain.prepare(
        nets.renderer(), render_chain.source_image_tensor(source.image, nets.size), coeffs.first_coeff, rows,
        preprocess=settings.preprocess, expression_scale=settings.expression_scale, still=settings.still,
        yaw=_angles(settings.yaw, num_frames), pitch=_angles(settings.pitch, num_frames),
        roll=_angles(settings.roll, num_frames),
    )
    progress(COEFFICIENTS, 1, 1)
    box = source.plan.paste_box
    paste = PasteBack(inputs.image, box) if box is not None else None
    return Prepared(source, setup, aspect_restored_size(nets.size, source.plan.output_size), paste, notes)


def frames(nets: TalkingHeadNets, prepared: Prepared, batch_size: int, *, enhance: Enhancer | None = None,
           progress: Progress = _quiet, stop: Callable[[], bool] = lambda: False) -> Iterator[np.ndarray]:
    """The finished RGB uint8 frames in order. `stop()` is asked between chunks; when true the stream ends
    early (the frames so far make a shorter video)."""
    total = prepared.num_frames
    done = 0
    for _, chunk in render_chain.iter_frames(nets.renderer(), prepared.setup, batch_size):
        for frame in render_chain.frames_to_uint8(chunk):
            if prepared.paste is not None:
                frame = prepared.paste(frame)  # resized straight to the face's box (upstream resizes twice)
            else:
                frame = resize_to_output(frame, prepared.output_size)
            if enhance is not None:
                frame = enhance(frame)
            yield frame
        done += chunk.shape[0]
        progress(RENDER, done, total)
        if enhance is not None:
            progress(ENHANCE, done, total)
        if stop():
            return


def _crop_source(size: int, landmarker: FaceLandmarker, image: np.ndarray, mode: str,
                 notes: list[str]) -> PreparedSource:
    """The renderer's source image. Detection runs once: the largest face's landmarks are reused for the crop."""
    if mode == "resize":
        return prepare_source(image, mode, size, landmarker)
    faces = landmarker.faces(image) if hasattr(landmarker, "faces") else None
    if faces is None:
        return prepare_source(image, mode, size, landmarker)
    if not faces:
        raise FaceNotFoundError(_NO_FACE)
    if len(faces) > 1:
        notes.append(f"{len(faces)} faces were found in the photo; the largest one is animated.")
    landmarks = landmarker.landmarks_in_box(image, faces[0].box)
    return prepare_source(image, mode, size, lambda _image: landmarks)


_NO_FACE = ("No face was found in the photo. Use a photo where one face is clearly visible (front-facing, not "
            "too small), or choose the 'resize' preprocess for an image that is already a face close-up.")


def _reference(nets: TalkingHeadNets, landmarker: FaceLandmarker, video: Sequence[np.ndarray] | None, mode: str,
               what: str, notes: list[str]) -> np.ndarray | None:
    """A reference video's per-frame coefficients, cropped like upstream: one box from its first frame."""
    if video is None:
        return None
    if not video:
        raise ValueError(f"the {what} reference video has no frames")
    first = video[0]
    landmarks = None if mode == "resize" else landmarker(first)
    try:
        plan = plan_crop(landmarks, (first.shape[1], first.shape[0]), mode)
    except FaceNotFoundError:
        raise FaceNotFoundError(f"No face was found in the first frame of the {what} reference video.") from None
    import cv2

    crops = [cv2.resize(plan.apply(frame), (REFERENCE_SIZE, REFERENCE_SIZE)) for frame in video]
    coeffs = coefficients_of_frames(nets.face_3drecon, crops, landmarker)
    if coeffs.fallback_frames:
        notes.append(f"The {what} reference video has frames without a detectable face; a standard face "
                     "position was used for them.")
    return coeffs.coeff_3dmm


def _angles(degrees: Sequence[float] | None, num_frames: int) -> np.ndarray | None:
    return None if not degrees else angle_sequence(degrees, num_frames)

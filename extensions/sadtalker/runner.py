"""The "sadtalker" job: a TalkingHeadRequest in, an MP4 in outputs/sadtalker/<date>/ out.

It runs on the studio's one job queue, as a guest of the studio's device manager: Stable Diffusion weights leave
the GPU while the talking-head networks run, and these leave it before SD runs again. Loaded networks stay in
RAM between jobs (unless the setting says otherwise) so the second video does not read 700 MB again.

Every failure a user can cause becomes the studio's UserError with a message; the video is written under a
temporary name and renamed when complete, so a failed or cancelled job leaves no broken file behind.
"""

from __future__ import annotations

import datetime
import json
import logging
import os
import random
import threading
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from . import media
from .request import TalkingHeadRequest
from .talking_head import pipeline
from .talking_head.audio import FPS
from .talking_head.checkpoints import (
    MissingCheckpointError,
    UnreadableCheckpointError,
    load_nets,
    missing_files,
)
from .talking_head.crop import FaceLandmarker, FaceNotFoundError
from .talking_head.landmarks import FanLandmarker, LandmarkModelError, missing_landmark_files
from .talking_head.video import DiskFullError, write_mp4
from .talking_head.weights import CheckpointMismatchError

if TYPE_CHECKING:
    from .talking_head.checkpoints import TalkingHeadNets

log = logging.getLogger(__name__)

JOB_TYPE = "sadtalker"
GUEST = "SadTalker"
MODEL_KIND = "SadTalker"
FACE_MODELS = "GFPGAN"  # facexlib's detector and landmark weights live beside GFPGAN's, as A1111 keeps them
OUTPUT_FOLDER = "sadtalker"

LandmarkerFactory = Callable[[Path, str], FaceLandmarker]  # (models/GFPGAN folder, device) -> landmarker


def _fan_landmarker(folder: Path, device: str) -> FaceLandmarker:
    from .talking_head.landmarks import ALIGNMENT_FILE, DETECTOR_FILE

    return FanLandmarker(folder / DETECTOR_FILE, folder / ALIGNMENT_FILE, device=device)


class TalkingHeadRunner:
    """Runs talking-head jobs; keeps the loaded networks between them. `api` is the extension API."""

    def __init__(self, api: Any, landmarker_factory: LandmarkerFactory = _fan_landmarker) -> None:
        self._api = api
        self._landmarker_factory = landmarker_factory
        self._lock = threading.Lock()
        self._nets: TalkingHeadNets | None = None
        self._nets_key: tuple[Any, ...] | None = None
        self._landmarker: Any = None

    def use_landmarker(self, factory: LandmarkerFactory) -> None:
        """Replace the face detector (tests give fixed landmarks; another detector plugs in the same way)."""
        with self._lock:
            self._landmarker_factory = factory
            self._landmarker = None

    # -- what is missing ------------------------------------------------------------------------------------------

    def missing(self, size: int, preprocess: str) -> dict[str, list[str]]:
        """Files still needed for this choice, by model folder name (the tab lists them and offers downloads)."""
        found: dict[str, list[str]] = {}
        checkpoints = missing_files(self._api.model_folder(MODEL_KIND), size, preprocess)
        if checkpoints:
            found[MODEL_KIND] = checkpoints
        if self._landmarker_factory is _fan_landmarker:
            faces = missing_landmark_files(self._api.model_folder(FACE_MODELS))
            if faces:
                found[FACE_MODELS] = faces
        return found

    def download_ids(self, missing: dict[str, list[str]]) -> dict[str, str]:
        """filename -> download catalogue id, for the files of `missing()` the catalogue lists."""
        return {name: entry_id for folder, names in missing.items()
                for name, entry_id in self._api.studio.catalogue_ids(folder, names).items()}

    def _check_files(self, size: int, preprocess: str) -> None:
        missing = self.missing(size, preprocess)
        if missing:
            where = "; ".join(f"models/{folder}: {', '.join(names)}" for folder, names in missing.items())
            raise self._api.UserError(
                f"SadTalker needs files that are not installed ({where}). Download them from the SadTalker tab "
                "(\"Download missing files\") or Settings > Model downloads.", field="models")

    # -- the device -------------------------------------------------------------------------------------------

    def release(self) -> None:
        """Move the networks off the accelerator (the device manager calls this before SD runs)."""
        with self._lock:
            if self._nets is not None:
                self._nets.to("cpu")
            if self._landmarker is not None and hasattr(self._landmarker, "to"):
                self._landmarker.to("cpu")

    def unload(self) -> None:
        with self._lock:
            self._nets = self._nets_key = self._landmarker = None

    def _load(self, size: int, preprocess: str, device: str) -> tuple[TalkingHeadNets, FaceLandmarker]:
        folder = self._api.model_folder(MODEL_KIND)
        key = (str(folder), size, "full" if "full" in preprocess else "crop", _identity(folder))
        with self._lock:
            if self._nets_key != key:
                self._nets = self._nets_key = None  # free the old set before reading the new one
                self._nets = load_nets(folder, size, preprocess, device="cpu")
                self._nets_key = key
            if self._landmarker is None:
                self._landmarker = self._landmarker_factory(self._api.model_folder(FACE_MODELS), "cpu")
            nets, landmarker = self._nets, self._landmarker
        nets.to(device)
        if hasattr(landmarker, "to"):
            landmarker.to(device)
        return nets, landmarker

    # -- the job ----------------------------------------------------------------------------------------------

    def run(self, request: TalkingHeadRequest, ctx: Any) -> dict[str, Any]:
        studio, user_error = self._api.studio, self._api.UserError
        seed = request.seed if request.seed >= 0 else random.SystemRandom().randrange(2**32)
        self._check_files(request.size, request.preprocess)
        self._check_enhancers(request)
        image = media.decode_image(request.image, user_error)
        audio = media.decode_audio(request.audio, request.audio_name, float(self._api.setting("sadtalker_max_seconds")),
                                   user_error)
        inputs = pipeline.Inputs(
            image=image, audio=audio,
            ref_eyeblink=media.decode_video(request.ref_eyeblink, "ref_eyeblink", audio.num_frames, user_error),
            ref_pose=media.decode_video(request.ref_pose, "ref_pose", audio.num_frames, user_error),
        )
        settings = pipeline.Settings(
            preprocess=request.preprocess, pose_style=request.pose_style, still=request.still_mode,
            batch_size=request.batch_size, expression_scale=request.expression_scale, use_blink=request.use_blink,
            yaw=request.input_yaw, pitch=request.input_pitch, roll=request.input_roll, seed=seed)
        stages = StageProgress(ctx, audio.num_frames, enhanced=bool(request.enhancer or request.background_enhancer))
        path = self._output_path(seed)
        parameters = request.parameters(seed)
        try:
            with studio.device(GUEST, self.release) as choice:
                nets, landmarker = self._load(request.size, request.preprocess, str(choice.device))
                prepared = pipeline.prepare(nets, landmarker, inputs, settings, stages)
                ctx.check()
                frames = pipeline.frames(nets, prepared, request.batch_size, enhance=self._enhancer(request, ctx),
                                         progress=stages, stop=lambda: _stopping(ctx))
                info = write_mp4(path, frames, fps=FPS, audio=audio.wav, comment=json.dumps(parameters))
        except (FaceNotFoundError, CheckpointMismatchError, MissingCheckpointError, UnreadableCheckpointError,
                LandmarkModelError, DiskFullError) as e:
            raise user_error(str(e)) from None
        finally:
            if not self._api.setting("sadtalker_keep_loaded"):
                self.unload()
        stages(pipeline.ENCODE, 1, 1)
        for note in prepared.notes:
            ctx.note(note)
        sidecar = path.with_suffix(".json")
        result = {"video": str(path), "sidecar": str(sidecar), "seed": seed, "frames": info.frames, "fps": FPS,
                  "width": info.width, "height": info.height, "seconds": round(info.frames / FPS, 3),
                  "has_audio": info.has_audio, "notes": list(prepared.notes), "parameters": parameters}
        # No paths in the sidecar (it shares the video's name): it stays true when the folder moves, or when a
        # cluster worker's video is filed on the studio server under another number.
        described = {k: v for k, v in result.items() if k not in ("video", "sidecar")}
        _write_atomic(sidecar, json.dumps(described, indent=2))
        return result

    def _check_enhancers(self, request: TalkingHeadRequest) -> None:
        """Fail before minutes of rendering, not after, when an enhancer is not installed."""
        if request.enhancer:
            self._api.studio.check_face_restorer(request.enhancer)
        if request.background_enhancer:
            self._api.studio.check_upscaler(request.background_enhancer)

    def _enhancer(self, request: TalkingHeadRequest, ctx: Any) -> pipeline.Enhancer | None:
        """GFPGAN/RestoreFormer on every frame through the studio's face restoration, after an optional 2x
        background upscale (GFPGANer's bg_upsampler order)."""
        if not request.enhancer and not request.background_enhancer:
            return None
        from PIL import Image

        studio = self._api.studio

        def enhance(frame: np.ndarray) -> np.ndarray:
            image = Image.fromarray(frame)
            if request.background_enhancer:
                image = studio.upscale(image, request.background_enhancer, 2.0, check=ctx.check)
            if request.enhancer:
                image = studio.restore_faces(image, request.enhancer, check=ctx.check)
            return np.asarray(image.convert("RGB"))

        return enhance

    def _output_path(self, seed: int) -> Path:
        folder = self._api.studio.outputs_folder(OUTPUT_FOLDER) / datetime.date.today().isoformat()
        folder.mkdir(parents=True, exist_ok=True)
        return folder / f"{self._api.studio.next_output_number(folder):05d}-{seed}.mp4"


class StageProgress:
    """Reports each stage to the job as lines "stage done/total", which the tab draws as one bar per stage."""

    def __init__(self, ctx: Any, num_frames: int, enhanced: bool) -> None:
        self._ctx = ctx
        self._stages: dict[str, tuple[int, int]] = {
            pipeline.PREPROCESS: (0, 1), pipeline.COEFFICIENTS: (0, 1), pipeline.RENDER: (0, num_frames),
            pipeline.ENCODE: (0, 1)}
        if enhanced:
            self._stages[pipeline.ENHANCE] = (0, num_frames)

    def __call__(self, stage: str, done: int, total: int) -> None:
        if stage not in self._stages:
            return
        self._stages[stage] = (done, total)
        step = sum(d for d, _ in self._stages.values())
        whole = sum(t for _, t in self._stages.values())
        self._ctx.progress(step, whole, text=stage_text(self._stages))
        self._ctx.check()


def stage_text(stages: dict[str, tuple[int, int]]) -> str:
    return "\n".join(f"{name} {done}/{total}" for name, (done, total) in
                     sorted(stages.items(), key=lambda item: pipeline.STAGES.index(item[0])))


def parse_stage_text(text: str) -> list[tuple[str, int, int]]:
    """The (stage, done, total) lines of `stage_text`; other lines are skipped."""
    found = []
    for line in (text or "").splitlines():
        name, _, counts = line.partition(" ")
        done, _, total = counts.partition("/")
        if name in pipeline.STAGES and done.isdigit() and total.isdigit():
            found.append((name, int(done), int(total)))
    return found


def _write_atomic(path: Path, text: str) -> None:
    """Write through a hidden `.tmp` name and rename: a crash mid-write must not leave a truncated sidecar beside
    its video (the start-up sweep removes the temporary; see modules.engine.outputs.sweep)."""
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:12]}.tmp")
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _stopping(ctx: Any) -> bool:
    """Interrupt keeps what is rendered (a shorter video); Cancel raises in ctx.check()."""
    ctx.check()
    return bool(ctx.interrupted)


def _identity(folder: Path) -> tuple[tuple[str, int, int], ...]:
    """Names, sizes and mtimes of the checkpoint files: a replaced file is loaded again."""
    try:
        return tuple(sorted((p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in folder.iterdir() if p.is_file()))
    except OSError:
        return ()

"""The face restorer list and the restore call: find faces, align, restore each one, paste it back, blend.

Names are A1111's, so saved settings (`face_restoration_model`), infotext ("Face restoration: GFPGAN") and API
clients (`/sdapi/v1/face-restorers`) keep working:

* "GFPGAN": `GFPGANv1.4.pth`, else `GFPGANv1.3.pth`, else another file whose name contains "GFPGAN";
* "RestoreFormer": `RestoreFormer.pth` (or another file whose name starts with "RestoreFormer");
* "CodeFormer": a file whose name contains "codeformer", in `models/GFPGAN` or A1111's `models/Codeformer`, and
  only when `spandrel-extra-arches` is installed (its licence is non-commercial; see `CODEFORMER_NOTE`).

A name is listed when its file is there; nothing is downloaded. The detector and parser files of facexlib share
the folder and are never listed.

A restore (`FaceRestorers.restore`) follows GFPGAN's `FaceRestoreHelper` as A1111 drives it: detection on the RGB
image (alpha kept aside), each face aligned to the FFHQ 512 template, restored, pasted back through the parsing
mask, then the whole result mixed with the original by `visibility` (A1111's "GFPGAN visibility").

Importing this module does not import torch, spandrel, facexlib, cv2 or PIL.
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from modules.engine.postprocess.faces import files
from modules.errors import NotFound, UserError
from modules.model_registry import ModelFile, ModelKind, ModelRegistry, UnknownModelKind, scan_kind

if TYPE_CHECKING:
    import torch
    from PIL import Image

    from modules.engine.memory import MemoryManager
    from modules.engine.postprocess.faces.detect import FaceDetector
    from modules.engine.postprocess.faces.networks import FaceModel
    from modules.engine.postprocess.faces.parse import FaceParser
    from modules.engine.postprocess.spandrel_models import FileIdentity

log = logging.getLogger(__name__)

GFPGAN = "GFPGAN"
RESTOREFORMER = "RestoreFormer"
CODEFORMER = "CodeFormer"
KNOWN_RESTORERS = (GFPGAN, RESTOREFORMER, CODEFORMER)
CODEFORMER_NOTE = ("CodeFormer's licence is non-commercial (S-Lab License 1.0); it is offered only when you "
                   "install spandrel-extra-arches yourself")
NO_FACE_NOTE = "no face found; image unchanged"
ZERO_VISIBILITY_NOTE = "face restoration visibility is 0; image unchanged"
MODEL_EXTENSIONS = (".pth", ".safetensors")
# A1111's setting defaults (Settings > Face restoration).
DEFAULT_CODEFORMER_WEIGHT = 0.5

# (path, name, device, wanted dtype) -> FaceModel; tests swap in a stand-in network.
ModelLoaderFn = Callable[[Path, str, "torch.device", "torch.dtype"], "FaceModel"]


class FaceRestoreCancelled(Exception):
    """Raised between faces when the `check` callable returned a true value."""


@dataclass(frozen=True)
class FaceRestoreResult:
    """What `restore` made.

    Attributes:
        image: The result: the input's size; RGB, or RGBA when the input had alpha. When nothing was restored
            (no face, visibility 0) it is a copy of the input, mode included.
        faces: How many faces were restored.
        note: Something the user should know (no face found, the plain-mask fallback), or None.
    """

    image: Image.Image
    faces: int
    note: str | None = None


@dataclass(frozen=True)
class FaceRestorerEntry:
    """One listed face restorer: its A1111 name and the file it loads."""

    name: str
    path: Path


class FaceRestorers:
    """Lists face restorers, keeps one restoration model (plus the detector and parser) on the memory manager's
    device, and restores faces in images.

    Safe to call from several threads; restores run one at a time (they share the loaded networks).

    Args:
        models: The model registry; its "GFPGAN" kind lists `models/GFPGAN`.
        memory: Gives the device and dtype, and turns OOMs into `OutOfMemory`.
        settings_get: Reads `face_restoration_model`, `code_former_weight` and `face_restoration_unload`.
        detector: Finds faces; None builds facexlib's RetinaFace from `detection_Resnet50_Final.pth` on first use.
        parser: Labels face parts for the paste mask; None builds ParseNet from `parsing_parsenet.pth` on first
            use, or falls back to a soft square mask (with a note) when that file is missing.
        load_model: Reads a restoration model file (default: spandrel, `networks.load_face_model`).
    """

    def __init__(
        self,
        models: ModelRegistry,
        memory: MemoryManager,
        settings_get: Callable[[str], Any],
        detector: FaceDetector | None = None,
        *,
        parser: FaceParser | None = None,
        load_model: ModelLoaderFn | None = None,
    ) -> None:
        self._models = models
        self._memory = memory
        self._settings_get = settings_get
        self._injected_detector = detector
        self._injected_parser = parser
        self._load_model = load_model
        # `_lock` guards the fields below briefly, so listing never waits for a restore; `_run_lock` is held for
        # a whole load-and-restore, so two restores never swap a network under each other.
        self._lock = threading.RLock()
        self._run_lock = threading.RLock()
        self._codeformer_scan: tuple[ModelFile, ...] | None = None
        self._model: FaceModel | None = None
        self._detector: Any = None
        self._detector_identity: FileIdentity | None = None
        self._parser: Any = None
        self._parser_identity: FileIdentity | None = None

    # -- the list ----------------------------------------------------------------------------------------------

    def entries(self) -> list[FaceRestorerEntry]:
        """The restorers whose files are present (GFPGAN, RestoreFormer, CodeFormer), each with the file it loads."""
        found: list[FaceRestorerEntry] = []
        for name in KNOWN_RESTORERS:
            path = self._file_for(name)
            if path is not None:
                found.append(FaceRestorerEntry(name, path))
        return found

    def names(self) -> list[str]:
        """The choices of the face restoration dropdowns: "GFPGAN", "RestoreFormer", "CodeFormer" as present."""
        return [entry.name for entry in self.entries()]

    def api_list(self) -> list[dict[str, Any]]:
        """The `/sdapi/v1/face-restorers` answer: `{name, cmd_dir}` per restorer; `cmd_dir` is the folder its file
        is in (A1111 gives the models-path flag there, often None)."""
        return [{"name": entry.name, "cmd_dir": str(entry.path.parent)} for entry in self.entries()]

    def find(self, name: str) -> FaceRestorerEntry:
        """The entry called `name` (case-insensitive).

        Raises:
            UserError: A known restorer whose file is missing (the message says how to get it).
            NotFound: Not a face restorer name; the message lists the available ones.
        """
        wanted = next((known for known in KNOWN_RESTORERS if known.casefold() == name.strip().casefold()), None)
        if wanted is not None:
            path = self._file_for(wanted)
            if path is not None:
                return FaceRestorerEntry(wanted, path)
            raise self._missing_model(wanted)
        available = self.names()
        raise NotFound(f"unknown face restorer '{name}'; available: {', '.join(available) or 'none installed'}",
                       field="face_restorer")

    def refresh(self) -> None:
        """Rescan the folders (the refresh button next to the dropdown)."""
        try:
            self._models.refresh(files.KIND)
        except UnknownModelKind:
            pass
        with self._lock:
            self._codeformer_scan = None

    # -- loading -----------------------------------------------------------------------------------------------

    def loaded_name(self) -> str | None:
        """The name of the restoration model on the device, if any."""
        with self._lock:
            return self._model.name if self._model is not None else None

    def unload(self) -> None:
        """Free the restoration model and the detector and parser built from files (checkpoint switch, OOM)."""
        with self._run_lock:
            with self._lock:
                if self._model is None and self._detector is None and self._parser is None:
                    return
                log.info("unloading face restoration networks")
                self._model = None
                self._detector = self._detector_identity = None
                self._parser = self._parser_identity = None
            self._memory.collect()

    # -- restoring ---------------------------------------------------------------------------------------------

    def restore(
        self,
        image: Image.Image,
        name: str | None = None,
        visibility: float = 1.0,
        codeformer_weight: float | None = None,
        check: Callable[[], object] | None = None,
    ) -> FaceRestoreResult:
        """Restore the faces in `image`.

        Args:
            image: Any PIL mode; alpha is kept as it is.
            name: "GFPGAN", "RestoreFormer" or "CodeFormer"; None uses the `face_restoration_model` setting.
            visibility: How much of the restored image shows over the original, 0..1 (A1111's visibility).
            codeformer_weight: CodeFormer's fidelity, 0 (strongest restoration) .. 1 (closest to the input); None
                uses the `code_former_weight` setting. Ignored by the other models.
            check: Called before detection and before each face. It may raise to stop (a job's cancel check
                does); if it returns a true value, `FaceRestoreCancelled` is raised.

        Raises:
            NotFound: Unknown restorer name.
            UserError: Bad visibility/weight, a missing weight file (the message names the file, the folder and
                the catalogue id to download), or a file that is not a face restoration model.
            OutOfMemory: The device ran out of memory; the face networks were unloaded.
            FaceRestoreCancelled: `check` asked to stop.
        """
        from modules.engine.memory.oom import OutOfMemory

        _check_fraction(visibility, "face restoration visibility", "visibility")
        if codeformer_weight is None:
            codeformer_weight = float(self._settings_get("code_former_weight"))
        _check_fraction(codeformer_weight, "the CodeFormer weight", "codeformer_weight")
        if name is None:
            name = str(self._settings_get("face_restoration_model"))
        entry = self.find(name)
        if visibility == 0.0:
            return FaceRestoreResult(image.copy(), 0, ZERO_VISIBILITY_NOTE)
        stop = _checker(check)

        with self._run_lock:
            try:
                # Loading is guarded too: moving a 350 MB model onto a full GPU is where an OOM often strikes.
                with self._memory.oom_guard():
                    model = self._model_for(entry)
                    detector = self._detector_for()
                    parser, note = self._parser_for()
                    restored, count = self._restore_faces(image, model, detector, parser, codeformer_weight, stop)
            except OutOfMemory:
                # The guard moved the SD pipelines off the GPU; these networks must go too, or a retry fails again.
                self.unload()
                raise
            finally:
                if self._settings_get("face_restoration_unload"):
                    self._offload()
        if count == 0:
            return FaceRestoreResult(image.copy(), 0, NO_FACE_NOTE)
        return FaceRestoreResult(restored if visibility == 1.0 else self._blend(image, restored, visibility),
                                 count, note)

    def _restore_faces(self, image: Image.Image, model: FaceModel, detector: Any, parser: Any, weight: float,
                       stop: Callable[[], None] | None) -> tuple[Image.Image, int]:
        import numpy as np
        from PIL import Image

        from modules.engine.postprocess.faces.detect import align_face
        from modules.engine.postprocess.faces.parse import parsing_mask, paste_face
        from modules.engine.postprocess.image_modes import join_alpha, split_alpha

        rgb, alpha = split_alpha(image)
        original = np.asarray(rgb, dtype=np.uint8)
        result: np.ndarray = original.copy()
        count = 0
        if stop is not None:
            stop()
        faces = detector.detect(original)
        log.debug("face restoration: %d face(s) found", len(faces))
        for face in faces:
            # The memory manager's fault-injection point, as at every denoising step and upscale tile.
            self._memory.check_allocation()
            if stop is not None:
                stop()
            aligned = align_face(original, face.landmarks5)
            if aligned is None:
                log.debug("face restoration: skipped a face with degenerate landmarks")
                continue
            crop, affine = aligned
            fixed = model.restore(crop, weight)
            mask = parsing_mask(parser.labels(fixed)) if parser is not None else None
            if paste_face(result, fixed, affine, mask):
                count += 1
        return join_alpha(Image.fromarray(result), alpha), count

    @staticmethod
    def _blend(image: Image.Image, restored: Image.Image, visibility: float) -> Image.Image:
        """A1111's `Image.blend(original, restored, visibility)`, with the original's alpha left as it is."""
        from PIL import Image

        from modules.engine.postprocess.image_modes import join_alpha, split_alpha

        rgb, alpha = split_alpha(image)
        restored_rgb, _ = split_alpha(restored)
        return join_alpha(Image.blend(rgb, restored_rgb, visibility), alpha)

    # -- networks ----------------------------------------------------------------------------------------------

    def _model_for(self, entry: FaceRestorerEntry) -> FaceModel:
        from modules.engine.postprocess.faces.networks import load_face_model
        from modules.engine.postprocess.spandrel_models import FileIdentity

        try:
            identity = FileIdentity.of(entry.path)
        except OSError as e:
            raise NotFound(f"face restoration model file {entry.path} is gone ({e.strerror}); refresh the list",
                           field="face_restorer") from e
        with self._lock:
            current = self._model
        if current is not None and current.name == entry.name and current.identity == identity:
            self._ensure_on_device(current)
            return current
        with self._lock:
            self._model = None  # one model at a time: free the old one before the new one needs the memory
        if current is not None:
            del current
            self._memory.collect()
        loader = self._load_model or load_face_model
        model = loader(entry.path, entry.name, self._memory.device, self._memory.dtype)
        if model.identity is None:
            model.identity = identity  # a stand-in loader need not know about files
        with self._lock:
            self._model = model
        return model

    def _detector_for(self) -> Any:
        if self._injected_detector is not None:
            return self._injected_detector
        from modules.engine.postprocess.faces.detect import RetinaFaceDetector

        path = self._helper_file(files.DETECTION_FILE)
        if path is None:
            raise files.missing_file(files.DETECTION_FILE, self._folder(), files.DETECTION_ID,
                                     "face restoration (finding the faces)")
        identity = self._identity(path)
        with self._lock:
            if self._detector is not None and self._detector_identity == identity:
                detector = self._detector
                self._ensure_on_device(detector)
                return detector
        detector = RetinaFaceDetector(path, self._memory.device)
        with self._lock:
            self._detector, self._detector_identity = detector, identity
        return detector

    def _parser_for(self) -> tuple[Any, str | None]:
        """The parser and no note, or None and the note that explains the plainer mask."""
        if self._injected_parser is not None:
            return self._injected_parser, None
        from modules.engine.postprocess.faces.parse import ParseNetParser

        path = self._helper_file(files.PARSING_FILE)
        if path is None:
            folder = self._folder()
            return None, (f"{files.PARSING_FILE} is not in {folder or 'the models/GFPGAN folder'}, so faces were "
                          "blended in with a plain soft-edged square instead of GFPGAN's face-shaped mask. "
                          f"{files.download_hint(files.PARSING_FILE, folder, files.PARSING_ID)}")
        identity = self._identity(path)
        with self._lock:
            if self._parser is not None and self._parser_identity == identity:
                parser = self._parser
                self._ensure_on_device(parser)
                return parser, None
        parser = ParseNetParser(path, self._memory.device)
        with self._lock:
            self._parser, self._parser_identity = parser, identity
        return parser, None

    def _ensure_on_device(self, part: Any) -> None:
        """Bring back a network `face_restoration_unload` parked in RAM."""
        device = self._memory.device
        if getattr(part, "device", device) != device and callable(getattr(part, "to", None)):
            part.to(device)

    def _offload(self) -> None:
        """`face_restoration_unload`: park the networks in RAM so the GPU is free for the next generation."""
        import torch

        if self._memory.device.type == "cpu":
            return
        cpu = torch.device("cpu")
        with self._lock:
            parts = [self._model, self._detector, self._parser]
        for part in parts:
            if part is not None and getattr(part, "device", cpu) != cpu:
                part.to(cpu)
        self._memory.collect()

    # -- files -------------------------------------------------------------------------------------------------

    def _folders(self) -> tuple[Path, ...]:
        try:
            return self._models.kind(files.KIND).folders
        except UnknownModelKind:
            return ()

    def _folder(self) -> Path | None:
        folders = self._folders()
        return folders[0] if folders else None

    def _helper_file(self, filename: str) -> Path | None:
        return files.find_file(self._folders(), filename)

    @staticmethod
    def _identity(path: Path) -> FileIdentity:
        from modules.engine.postprocess.spandrel_models import FileIdentity

        return FileIdentity.of(path)

    def _model_files(self) -> list[ModelFile]:
        try:
            listed = [m for m in self._models.list(files.KIND) if not files.is_helper(m.filename.name)]
        except UnknownModelKind:
            log.debug("model kind %s is not registered; no face restorers are listed", files.KIND)
            listed = []
        return listed

    def _codeformer_files(self) -> list[ModelFile]:
        """CodeFormer files of A1111's `models/Codeformer` (beside `models/GFPGAN`), scanned once per refresh."""
        with self._lock:
            if self._codeformer_scan is None:
                folders = tuple(folder.parent / files.CODEFORMER_FOLDER for folder in self._folders())
                kind = ModelKind("face-restoration-codeformer", folders, MODEL_EXTENSIONS)
                self._codeformer_scan = tuple(scan_kind(kind)) if folders else ()
            return list(self._codeformer_scan)

    def _file_for(self, name: str) -> Path | None:
        """The file `name` loads, by A1111's file-name rules (see the module docstring)."""
        if name == GFPGAN:
            return _pick(self._model_files(), exact=("gfpganv1.4", "gfpganv1.3"), contains="gfpgan")
        if name == RESTOREFORMER:
            return _pick(self._model_files(), exact=("restoreformer",), starts="restoreformer")
        if name == CODEFORMER:
            from modules.engine.postprocess.faces.networks import extra_arches_installed

            if not extra_arches_installed():
                return None
            return _pick(self._model_files() + self._codeformer_files(), exact=("codeformer-v0.1.0", "codeformer"),
                         contains="codeformer")
        return None

    def _missing_model(self, name: str) -> UserError:
        folder = self._folder()
        if name == GFPGAN:
            return files.missing_file(files.GFPGAN_FILE, folder, files.GFPGAN_ID, "face restoration with GFPGAN")
        if name == RESTOREFORMER:
            return files.missing_file(files.RESTOREFORMER_FILE, folder, files.RESTOREFORMER_ID,
                                      "face restoration with RestoreFormer")
        from modules.engine.postprocess.faces.networks import extra_arches_installed

        if not extra_arches_installed():
            return UserError(f"CodeFormer is not available: it needs the spandrel-extra-arches package, which is "
                             f"not installed. {CODEFORMER_NOTE}.", field="face_restorer")
        where = folder.parent / files.CODEFORMER_FOLDER if folder is not None else "models/Codeformer"
        return UserError(f"face restoration with CodeFormer needs codeformer-v0.1.0.pth in {where} or {folder}, "
                         "and it is not there; it is not in the download catalogue, so fetch it from the "
                         f"CodeFormer releases yourself. {CODEFORMER_NOTE}.", field="face_restorer")


def _pick(models: list[ModelFile], exact: tuple[str, ...], contains: str = "", starts: str = "") -> Path | None:
    """The first file whose stem is one of `exact` (in that order of preference), else the first (by name) whose
    stem contains `contains` or starts with `starts`, case-insensitively."""
    by_stem: dict[str, Path] = {}
    for model in sorted(models, key=lambda m: m.filename.name.casefold()):
        stem = _stem(model.filename.name)
        by_stem.setdefault(stem, model.filename)
    for stem in exact:
        if stem in by_stem:
            return by_stem[stem]
    for stem, path in by_stem.items():
        if (contains and contains in stem) or (starts and stem.startswith(starts)):
            return path
    return None


def _stem(filename: str) -> str:
    lower = filename.casefold()
    for ext in MODEL_EXTENSIONS:
        if lower.endswith(ext):
            return lower[: -len(ext)]
    return lower


def _check_fraction(value: float, what: str, field: str) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
            or not 0.0 <= value <= 1.0:
        raise UserError(f"{what} must be between 0 and 1, got {value!r}", field=field)


def _checker(check: Callable[[], object] | None) -> Callable[[], None] | None:
    """Turn a cancel callable that returns True into one that raises, so the loop only knows one kind."""
    if check is None:
        return None

    def raising() -> None:
        if check():
            raise FaceRestoreCancelled("face restoration cancelled")

    return raising


"""The upscaler list and the upscale call: None, Lanczos and Nearest, plus every model file spandrel can run.

Names follow A1111 so saved settings, infotext ("Hires upscaler: 4x-UltraSharp") and API clients keep working:
the built-ins are "None", "Lanczos" and "Nearest", and a model is listed under its file name without extension
("4x-UltraSharp.pth" -> "4x-UltraSharp"), which is what A1111 shows for ESRGAN-family files. Files come from the
model kinds given (A1111's folders `models/ESRGAN`, `models/RealESRGAN`, `models/SwinIR`, plus `DAT` and `HAT`)
and from any extra folders the user adds in Settings. When two files share a stem, the first kind (then the
first folder) wins and the other is logged, as the model registry does for checkpoints.

Scaling follows A1111's `Upscaler.upscale`: the target is the size times the scale, rounded down to a multiple of
8; the model runs up to 3 times while the image is still smaller than the target (once at least when the scale
is not exactly 1), and a final Lanczos resize hits the target exactly. So a 4x model asked for 2x runs once and is
resized down, and asked for 8x runs twice. Between passes the image stays a float tensor on the device (A1111
rounds it to 8 bits). A target `size` is used exactly, unrounded: that is what hires fix needs; the Extras tab's
"Scale to" with "Crop to fit" (upscale by the larger ratio, then centre-crop) is the caller's arithmetic.

Importing this module does not import torch, spandrel or PIL.
"""

from __future__ import annotations

import logging
import math
import re
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from modules.errors import NotFound, UserError
from modules.model_registry import ModelFile, ModelKind, ModelPaths, ModelRegistry, UnknownModelKind, scan_kind

if TYPE_CHECKING:
    from PIL import Image

    from modules.engine.memory import MemoryManager
    from modules.engine.postprocess.spandrel_models import FileIdentity, LoadedUpscaler

log = logging.getLogger(__name__)

NONE = "None"
LANCZOS = "Lanczos"
NEAREST = "Nearest"
BUILTIN_UPSCALERS = (NONE, LANCZOS, NEAREST)
# Kinds whose files are listed, in order of precedence. Only "ESRGAN" is a core kind; see `extra_model_kinds`.
DEFAULT_KINDS = ("ESRGAN", "RealESRGAN", "SwinIR", "DAT", "HAT")
MODEL_EXTENSIONS = (".pth", ".pt", ".safetensors")
# A1111's "Tile size for ESRGAN upscalers" and "Tile overlap" defaults (Settings > Upscaling).
DEFAULT_TILE = 192
DEFAULT_OVERLAP = 8
# 8192x8192: a 4x upscale of 2048x2048. Its float32 result alone is 805 MB on the device.
DEFAULT_MAX_PIXELS = 8192 * 8192
# A1111 rounds upscale targets down to a multiple of 8 (what the VAE needs for hires fix).
DEFAULT_MULTIPLE_OF = 8
# A1111 runs a model at most this many times per upscale.
MAX_PASSES = 3
# The scale A1111 reports for the built-ins and uses when nothing else is known.
DEFAULT_SCALE = 4
USER_FOLDERS_KIND = "upscaler-folders"

_SCALE_IN_NAME = re.compile(r"(?<![0-9])([2-8])x|x([2-8])(?![0-9])")


class UpscaleCancelled(Exception):
    """Raised between tiles when the `check` callable returned a true value."""


@dataclass(frozen=True)
class UpscalerEntry:
    """One entry of the upscaler list.

    Attributes:
        name: What users pick and infotext records.
        kind: The model kind (folder) it was found in; None for the built-ins.
        path: The model file; None for the built-ins.
    """

    name: str
    kind: str | None = None
    path: Path | None = None

    @property
    def is_model(self) -> bool:
        return self.path is not None


def extra_model_kinds(paths: ModelPaths) -> list[ModelKind]:
    """The upscaler kinds the core registry lacks (it has "ESRGAN"), in A1111's folder names under `models/`.

    The app adds them at start: `for kind in extra_model_kinds(paths): models.add_kind(kind)`.
    """
    return [ModelKind(name, (paths.model_folder(name),), MODEL_EXTENSIONS) for name in DEFAULT_KINDS[1:]]


class UpscalerRegistry:
    """Lists upscalers, loads one model at a time onto the memory manager's device, and upscales images.

    Safe to call from several threads; upscales run one at a time (they share the one loaded model).

    Args:
        models: The model registry; kinds it does not have are skipped (logged at debug level).
        memory: Gives the device and dtype, and turns OOMs into `OutOfMemory`.
        kinds: Model kinds to list, in order of precedence for clashing names.
        extra_folders: More folders to scan (the "extra upscaler folders" setting); see `set_extra_folders`.
    """

    def __init__(
        self,
        models: ModelRegistry,
        memory: MemoryManager,
        kinds: Sequence[str] = DEFAULT_KINDS,
        extra_folders: Iterable[Path] = (),
    ) -> None:
        self._models = models
        self._memory = memory
        self._kinds = tuple(kinds)
        # `_lock` guards the fields below and is held only briefly, so listing never waits for an upscale;
        # `_run_lock` is held for a whole load-and-upscale, so two upscales never swap the model under each other.
        self._lock = threading.RLock()
        self._run_lock = threading.RLock()
        self._extra_folders = tuple(Path(f) for f in extra_folders)
        self._extra_scan: tuple[ModelFile, ...] | None = None
        self._loaded: LoadedUpscaler | None = None
        # Scale and architecture per file version (None: unusable), so listing reads each file once per process.
        self._inspected: dict[FileIdentity, tuple[int, str] | None] = {}

    # -- the list ----------------------------------------------------------------------------------------------

    def set_extra_folders(self, folders: Iterable[Path]) -> None:
        """Replace the user's extra folders; they are scanned at the next listing."""
        with self._lock:
            self._extra_folders = tuple(Path(f) for f in folders)
            self._extra_scan = None

    def refresh(self) -> None:
        """Rescan every folder (A1111's refresh button next to the upscaler dropdowns)."""
        for kind in self._kinds:
            try:
                self._models.refresh(kind)
            except UnknownModelKind:
                pass
        with self._lock:
            self._extra_scan = None

    def entries(self) -> list[UpscalerEntry]:
        """Built-ins first, then model files sorted case-insensitively by name, as A1111 orders them."""
        found: dict[str, UpscalerEntry] = {}
        for model in self._model_files():
            entry = UpscalerEntry(model.basename, model.kind, model.filename)
            first = found.setdefault(entry.name, entry)
            if first is not entry:
                log.warning("upscaler '%s': %s is hidden by %s", entry.name, entry.path, first.path)
        for name in BUILTIN_UPSCALERS:
            if name in found:
                log.warning("upscaler model %s is hidden by the built-in '%s'", found.pop(name).path, name)
        models = sorted(found.values(), key=lambda e: (e.name.casefold(), e.name))
        return [UpscalerEntry(name) for name in BUILTIN_UPSCALERS] + models

    def names(self) -> list[str]:
        """["None", "Lanczos", "Nearest", *model names]: the choices of the Extras upscaler dropdowns."""
        return [entry.name for entry in self.entries()]

    def model_names(self) -> list[str]:
        """The model upscalers only: what the hires-fix list adds after its latent modes and Lanczos/Nearest."""
        return [entry.name for entry in self.entries() if entry.is_model]

    def find(self, name: str) -> UpscalerEntry:
        """The entry called `name` (exact, then case-insensitive); raises NotFound listing the choices."""
        entries = self.entries()
        for fold in (False, True):
            for entry in entries:
                if (entry.name.casefold() == name.casefold()) if fold else entry.name == name:
                    return entry
        raise NotFound(f"unknown upscaler '{name}'; available: {', '.join(e.name for e in entries)}",
                       field="upscaler")

    def scale_of(self, name: str) -> int:
        """The scale of one pass of `name`: read from the model file (loaded once per file version, on the CPU);
        guessed from the file name ("4x-...", "..._x2") when the file cannot be loaded; 4 for the built-ins."""
        return self._scale(self.find(name))

    def api_list(self) -> list[dict[str, Any]]:
        """The `/sdapi/v1/upscalers` answer: `{name, model_name, model_path, model_url, scale}` per upscaler.

        As in A1111, `model_name` is None for the built-ins; for a model it is the kind (folder) it came from,
        as A1111 puts its upscaler family there ("ESRGAN_4x", "SwinIR 4x", ...). `model_url` is always None:
        nothing is downloaded. The first call loads each model file once to read its scale.
        """
        return [
            {
                "name": entry.name,
                "model_name": entry.kind,
                "model_path": str(entry.path) if entry.path is not None else None,
                "model_url": None,
                "scale": self._scale(entry),
            }
            for entry in self.entries()
        ]

    # -- loading -----------------------------------------------------------------------------------------------

    def load(self, name: str) -> LoadedUpscaler:
        """The model upscaler `name` on the device, loading it (and freeing the previous one) if needed.

        Raises:
            NotFound: No upscaler has that name.
            UserError: `name` is a built-in, or its file is unreadable or not an upscaler.
        """
        entry = self.find(name)
        if entry.path is None:
            raise UserError(f"'{entry.name}' is a built-in upscaler, not a model", field="upscaler")
        return self._load(entry)

    def loaded_name(self) -> str | None:
        """The name of the model on the device, if any."""
        with self._lock:
            return self._loaded.name if self._loaded is not None else None

    def unload(self) -> None:
        """Free the loaded model and its device memory (checkpoint switch, OOM, or before a job needing it all)."""
        with self._run_lock:
            with self._lock:
                if self._loaded is None:
                    return
                log.info("unloading upscaler %s", self._loaded.name)
                self._loaded = None
            self._memory.collect()

    # -- upscaling ---------------------------------------------------------------------------------------------

    def upscale(
        self,
        image: Image.Image,
        upscaler: str,
        scale: float | None = None,
        size: tuple[int, int] | None = None,
        tile: int = DEFAULT_TILE,
        overlap: int = DEFAULT_OVERLAP,
        *,
        max_pixels: int = DEFAULT_MAX_PIXELS,
        multiple_of: int = DEFAULT_MULTIPLE_OF,
        progress: Callable[[int, int], None] | None = None,
        check: Callable[[], object] | None = None,
    ) -> Image.Image:
        """Upscale `image` with `upscaler` by `scale` or to `size` (width, height).

        Args:
            image: Any PIL mode; alpha is kept (see `image_modes`), the result is RGB or RGBA.
            upscaler: A name from `names()`. "None" returns a copy of the image: A1111 skips the step.
            scale: Factor; the target is rounded down to a multiple of `multiple_of` (A1111: 8).
            size: Exact target (width, height); give `scale` or `size`, not both. With neither, a model uses its
                own scale and Lanczos/Nearest use 4 (A1111's Extras default).
            tile: Tile edge in input pixels for model upscalers; 0 runs the image whole.
            overlap: Pixels neighbouring tiles share, blended with feathered weights.
            max_pixels: Refuse inputs, model passes and outputs with more pixels than this.
            multiple_of: The rounding of scaled targets; 1 gives exactly `int(width * scale)`.
            progress: Called as (tiles done, tiles total) after each tile, over all passes.
            check: Called before each tile. It may raise to stop (a job's cancel check does); if it returns a
                true value, `UpscaleCancelled` is raised.

        Raises:
            NotFound: Unknown upscaler.
            UserError: Bad scale/size/tile settings, an image over `max_pixels`, or a model file that cannot be
                used (see `spandrel_models`).
            OutOfMemory: The device ran out of memory; the model was unloaded.
            UpscaleCancelled: `check` asked to stop.
        """
        from modules.engine.postprocess.image_modes import join_alpha, split_alpha

        entry = self.find(upscaler)
        _check_tiling(tile, overlap)
        if scale is not None and size is not None:
            raise UserError("give an upscale factor or a target size, not both", field="scale")
        _check_pixels(image.size, max_pixels, "the input image")
        if entry.name == NONE:
            return image.copy()
        rgb, alpha = split_alpha(image)
        if entry.path is None:
            dest = target_size(rgb.size, scale, size, multiple_of, default_scale=DEFAULT_SCALE)
            _check_pixels(dest, max_pixels, "the upscaled image")
            return join_alpha(_resize(rgb, dest, entry.name == NEAREST), alpha, nearest=entry.name == NEAREST)
        result = self._upscale_with_model(rgb, entry, scale, size, tile, overlap, max_pixels, multiple_of,
                                          progress, _checker(check))
        return join_alpha(result, alpha)

    def _upscale_with_model(
        self,
        rgb: Image.Image,
        entry: UpscalerEntry,
        scale: float | None,
        size: tuple[int, int] | None,
        tile: int,
        overlap: int,
        max_pixels: int,
        multiple_of: int,
        progress: Callable[[int, int], None] | None,
        check: Callable[[], None] | None,
    ) -> Image.Image:
        from modules.engine.memory.oom import OutOfMemory
        from modules.engine.postprocess.image_modes import to_image, to_tensor
        from modules.engine.postprocess.tiling import run_tiled, tile_count

        with self._run_lock:
            model = self._load(entry)
            width, height = rgb.size
            dest = target_size(rgb.size, scale, size, multiple_of, default_scale=model.scale)
            _check_pixels(dest, max_pixels, "the upscaled image")
            ratio = scale if scale is not None else max(dest[0] / width, dest[1] / height)
            passes = plan_passes(rgb.size, dest, model.scale, ratio)
            for w, h in passes:
                _check_pixels((w * model.scale, h * model.scale), max_pixels,
                              f"the {model.scale}x output of '{entry.name}' (before resizing to the target)")
            # A tile below the model's minimum would be padded anyway (the layout aligns tiles to multiple_of).
            tile_for_model = max(tile, model.minimum) if tile and model.tiles else 0
            align = model.multiple_of
            total = sum(tile_count(w, h, tile_for_model, overlap, align) for w, h in passes)
            tensor = to_tensor(rgb)
            done = 0

            def before_tile() -> None:
                # The memory manager's fault-injection point, as at every denoising step, so tests and the
                # robustness suite can make an upscale run out of memory mid-way on any device.
                self._memory.check_allocation()
                if check is not None:
                    check()

            try:
                with self._memory.oom_guard():
                    for w, h in passes:
                        tensor = run_tiled(model.descriptor, tensor, model.scale, tile_for_model, overlap,
                                           model.device, model.dtype, check=before_tile, progress=progress,
                                           done_before=done, total=total, multiple_of=align)
                        done += tile_count(w, h, tile_for_model, overlap, align)
                    result = to_image(tensor)  # converts to bytes on the device: a full-size float buffer too
                    del tensor
            except OutOfMemory:
                # The guard moved the SD pipelines off the GPU; this model must go too, or the retry fails again.
                self.unload()
                raise
        return result if result.size == dest else _resize(result, dest, nearest=False)

    # -- internals ---------------------------------------------------------------------------------------------

    def _model_files(self) -> list[ModelFile]:
        files: list[ModelFile] = []
        for kind in self._kinds:
            try:
                files.extend(self._models.list(kind))
            except UnknownModelKind:
                log.debug("model kind %s is not registered; its upscalers are not listed", kind)
        with self._lock:
            if self._extra_scan is None:
                folders = self._extra_folders
                self._extra_scan = tuple(scan_kind(ModelKind(USER_FOLDERS_KIND, folders, MODEL_EXTENSIONS))
                                         if folders else ())
            files.extend(self._extra_scan)
        return files

    def _load(self, entry: UpscalerEntry) -> LoadedUpscaler:
        from modules.engine.postprocess.spandrel_models import FileIdentity, load_upscaler

        assert entry.path is not None
        with self._run_lock:
            try:
                identity = FileIdentity.of(entry.path)
            except OSError as e:
                raise NotFound(f"upscaler model file {entry.path} is gone ({e.strerror}); refresh the list",
                               field="upscaler") from e
            with self._lock:
                current = self._loaded
            if current is not None and current.identity == identity:
                return current
            self.unload()  # one model at a time: free the old one before the new one needs the memory
            loaded = load_upscaler(entry.path, entry.name, self._memory.device, self._memory.dtype)
            with self._lock:
                self._loaded = loaded
                self._inspected[identity] = (loaded.scale, loaded.architecture)
            return loaded

    def _scale(self, entry: UpscalerEntry) -> int:
        if entry.path is None:
            return DEFAULT_SCALE
        inspected = self._inspect(entry)
        return inspected[0] if inspected is not None else _scale_from_name(entry.name)

    def _inspect(self, entry: UpscalerEntry) -> tuple[int, str] | None:
        from modules.engine.postprocess.spandrel_models import FileIdentity, read_descriptor

        assert entry.path is not None
        try:
            identity = FileIdentity.of(entry.path)
        except OSError:
            return None
        with self._lock:
            if identity in self._inspected:
                return self._inspected[identity]
        found: tuple[int, str] | None
        try:
            descriptor = read_descriptor(entry.path, entry.name)
            found = (int(descriptor.scale), str(descriptor.architecture.name))
            del descriptor
        except UserError as e:
            log.warning("upscaler %s: %s", entry.name, e.message)
            found = None  # remembered too, so a broken file is not re-read (and re-logged) at every listing
        with self._lock:
            self._inspected[identity] = found
        return found


# -- sizes -----------------------------------------------------------------------------------------------------


def target_size(source: tuple[int, int], scale: float | None, size: tuple[int, int] | None,
                multiple_of: int = DEFAULT_MULTIPLE_OF, default_scale: float = DEFAULT_SCALE) -> tuple[int, int]:
    """The output size: `size` as given, or `source` times `scale` (`default_scale` when both are None) rounded
    down to a multiple of `multiple_of` (never below one multiple, so a tiny image still gets an image).

    Raises:
        UserError: A scale that is not a positive finite number, or a size that is not two positive integers.
    """
    if size is not None:
        if len(size) != 2 or any(not isinstance(v, int) or v < 1 for v in size):
            raise UserError(f"the target size must be two positive whole numbers, got {size}", field="size")
        return int(size[0]), int(size[1])
    if scale is None:
        scale = default_scale
    if not math.isfinite(scale) or scale <= 0:
        raise UserError(f"the upscale factor must be a positive number, got {scale}", field="scale")
    if multiple_of < 1:
        raise ValueError(f"multiple_of must be at least 1, got {multiple_of}")

    def scaled(length: int) -> int:
        return max(multiple_of, int(length * scale) // multiple_of * multiple_of)

    return scaled(source[0]), scaled(source[1])


def plan_passes(
    source: tuple[int, int], dest: tuple[int, int], model_scale: int, ratio: float
) -> list[tuple[int, int]]:
    """The input size of each model pass, following A1111's loop: stop once both sides reach `dest`, except that
    the first pass always runs when `ratio` is not exactly 1; at most `MAX_PASSES` passes."""
    passes: list[tuple[int, int]] = []
    width, height = source
    for i in range(MAX_PASSES):
        if width >= dest[0] and height >= dest[1] and (i > 0 or ratio != 1):
            break
        passes.append((width, height))
        width, height = width * model_scale, height * model_scale
    return passes


def blend(first: Image.Image, second: Image.Image, visibility: float) -> Image.Image:
    """A1111's "Upscaler 2 visibility": `first` and `second` mixed, `visibility` being the share of `second`.

    0 gives `first`, 1 gives `second`. A second image of another size is resized (Lanczos) to the first's;
    images of different modes are both taken to RGBA when either has alpha, else to RGB.

    Raises:
        UserError: `visibility` outside 0..1.
    """
    from PIL import Image

    if not math.isfinite(visibility) or not 0.0 <= visibility <= 1.0:
        raise UserError(f"upscaler 2 visibility must be between 0 and 1, got {visibility}",
                        field="upscaler_2_visibility")
    if second.size != first.size:
        second = second.resize(first.size, Image.Resampling.LANCZOS)
    if first.mode != second.mode:
        mode = "RGBA" if "A" in first.getbands() or "A" in second.getbands() else "RGB"
        first, second = first.convert(mode), second.convert(mode)
    if visibility == 0.0:
        return first.copy()
    if visibility == 1.0:
        return second.copy()
    return Image.blend(first, second, visibility)


# -- helpers ---------------------------------------------------------------------------------------------------


def _resize(image: Image.Image, size: tuple[int, int], nearest: bool) -> Image.Image:
    from PIL import Image

    resample = Image.Resampling.NEAREST if nearest else Image.Resampling.LANCZOS
    return image.resize(size, resample)


def _check_pixels(size: tuple[int, int], max_pixels: int, what: str) -> None:
    width, height = size
    if width * height > max_pixels:
        raise UserError(
            f"{what} would be {width}x{height} = {width * height / 1e6:.1f} megapixels, over the limit of "
            f"{max_pixels / 1e6:.1f} MP (Settings > Upscaling); use a smaller image or factor", field="image")


def _check_tiling(tile: int, overlap: int) -> None:
    if tile < 0:
        raise UserError(f"the tile size must be 0 (no tiling) or more, got {tile}", field="tile")
    if overlap < 0:
        raise UserError(f"the tile overlap must be 0 or more, got {overlap}", field="overlap")
    if tile and overlap >= tile:
        raise UserError(f"the tile overlap ({overlap}) must be smaller than the tile size ({tile})", field="overlap")


def _checker(check: Callable[[], object] | None) -> Callable[[], None] | None:
    """Turn a cancel callable that returns True into one that raises, so tiling only knows one kind."""
    if check is None:
        return None

    def raising() -> None:
        if check():
            raise UpscaleCancelled("upscale cancelled")

    return raising


def _scale_from_name(name: str) -> int:
    match = _SCALE_IN_NAME.search(name.lower())
    if match is None:
        return DEFAULT_SCALE
    return int(match.group(1) or match.group(2))

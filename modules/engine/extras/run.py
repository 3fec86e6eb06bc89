"""The "extras" job: for each image, upscale and restore faces in A1111's order, save with infotext, note problems.

Order (A1111's `run_extras`): with `upscale_first`, upscale then GFPGAN then CodeFormer; without it, the faces
first (on the smaller image) and the upscale last. Names are checked before any image is touched, so a typo fails
at once instead of after the first image. In a batch, an image that cannot be read or processed is skipped with a
note and the others go on; a single image fails the job with the reason. Interrupt stops after the current image
(mid-image, the unfinished image is dropped) and keeps what is done; Skip drops the current image; cancel stops.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from modules.engine.extras import steps
from modules.engine.extras.infotext import postprocess_text, saved_text
from modules.engine.extras.requests import NONE, ExtrasRequest
from modules.engine.extras.results import ExtrasImage, ExtrasResult
from modules.engine.image_input import open_image_bytes
from modules.engine.outputs import NamingContext
from modules.engine.postprocess.upscalers import DEFAULT_MAX_PIXELS
from modules.engine.server_folders import list_images, output_folder
from modules.errors import UserError
from modules.jobs import JobContext

if TYPE_CHECKING:
    from PIL import Image

    from modules.access import AccessPolicy
    from modules.engine.engine import Engine

# What the LAN refusal names; the UI and the API use the same words.
FOLDER_ACTION = "extras batch from a folder"
# Progress steps per image, shared out between its operations (so the bar moves smoothly through a batch).
UNITS = 1000
# A folder batch keeps at most this many images in memory for the gallery; the rest are only on disk.
RESULT_LIMIT = 32


@dataclass(frozen=True)
class Source:
    """One image to process: how to open it, what to call it, and its name for saving ("" for none)."""

    label: str
    name: str
    open: Callable[[], Any]


def run_extras(engine: Engine, request: ExtrasRequest, ctx: JobContext,
               access: AccessPolicy | None = None) -> ExtrasResult:
    """Process every image of `request`; `access`, when given, refuses a server folder under the LAN rule (the UI
    and /sdapi check before submitting; this catches a folder job sent straight to the job API)."""
    if request.from_folder and access is not None:
        access.check_server_paths(FOLDER_ACTION, field="input_dir")
    steps.check_upscalers(engine, request)
    steps.check_face_restorers(engine, request)
    sources = list(_sources(request))
    out_dir = output_folder(request.output_dir) if request.from_folder else None
    max_pixels = _max_pixels(engine)
    result = ExtrasResult()
    if not request.upscales and request.upscaler_2 != NONE and request.extras_upscaler_2_visibility > 0:
        result.notes.append("Upscaler 2 was not used: it is blended into Upscaler 1's result, and Upscaler 1 is None.")
    total = len(sources) * UNITS
    failed = 0
    for index, source in enumerate(sources):
        ctx.check()
        if ctx.interrupted:
            result.notes.append(f"Interrupted: {len(sources) - index} image(s) were not processed.")
            break
        progress = _Progress(ctx, index * UNITS, total, _operations(request), source.label)
        progress.start()
        try:
            image, source_infotext = _decode(source)
            processed, info, notes = _process(engine, image, request, max_pixels, progress, ctx)
        except _Interrupted:
            result.notes.append(f"Interrupted during {source.label}: it and any images after it were not processed.")
            break
        except UserError as e:
            if len(sources) == 1 or _fatal(e):
                raise
            failed += 1
            result.notes.append(f"Skipped {source.label}: {e.message}")
            continue
        if ctx.take_skip():
            result.notes.append(f"Skipped {source.label} (Skip pressed).")
            continue
        result.notes.extend(f"{source.label}: {note}" if len(sources) > 1 else note for note in notes)
        text = postprocess_text(info)
        full_text = saved_text(source_infotext, text)
        path = _save(engine, request, out_dir, source.name, processed, full_text) if request.save_images else None
        keep = _keep(request, result)
        result.images.append(ExtrasImage(name=source.name, infotext=text, saved_infotext=full_text,
                                         image=processed if keep else None, path=path))
    ctx.progress(total, total, text="done")
    if failed == len(sources):
        raise UserError("none of the images could be processed: " + " ".join(result.notes))
    return result


# -- the sources ---------------------------------------------------------------------------------------------------


def _sources(request: ExtrasRequest) -> Iterator[Source]:
    if request.from_folder:
        for path in list_images(request.input_dir):
            yield Source(path.name, path.name, lambda path=path: _read_file(path))
        return
    for index, image in enumerate(request.images):
        name = _file_name(request.name_of(index))
        label = name or (f"image {index + 1}" if len(request.images) > 1 else "the image")
        yield Source(label, name, lambda image=image: image)


def _file_name(name: str) -> str:
    """The last part of a client-given name: a name is never a path (`../../x.png` saves as `x`)."""
    return name.replace("\\", "/").rsplit("/", 1)[-1].strip()


def _read_file(path: Path) -> Any:
    try:
        data = path.read_bytes()
    except OSError as e:
        raise UserError(f"could not read it: {e.strerror or e}") from None
    return open_image_bytes(data, path.name)


def _decode(source: Source) -> tuple[Image.Image, str | None]:
    """The source as RGB (RGBA when it has transparency, which the upscalers keep), upright as its EXIF says,
    and the infotext it carried. Raises UserError for a file that is not an image, truncated or corrupt."""
    from PIL import ImageOps

    from modules.engine.image_metadata import read_image_info
    from modules.engine.postprocess.image_modes import join_alpha, split_alpha

    image = source.open()
    if image.width == 0 or image.height == 0:
        raise UserError(f"{source.label} is {image.width}x{image.height}: it has no pixels")
    try:
        infotext, _ = read_image_info(image)
        image.load()
        upright = ImageOps.exif_transpose(image)
        rgb, alpha = split_alpha(upright if upright is not None else image)
    except (OSError, ValueError, SyntaxError) as e:
        raise UserError(f"{source.label} could not be decoded (truncated or corrupt file): {e}") from None
    return join_alpha(rgb, alpha), infotext


# -- the work ------------------------------------------------------------------------------------------------------


class _Interrupted(Exception):
    """Interrupt was pressed while an image was being upscaled or its faces restored."""


def _operations(request: ExtrasRequest) -> int:
    return (request.upscales + request.blends_second) + len(request.face_steps)


def _process(engine: Engine, image: Image.Image, request: ExtrasRequest, max_pixels: int, progress: _Progress,
             ctx: JobContext) -> tuple[Image.Image, dict[str, Any], list[str]]:
    from modules.engine.postprocess import UpscaleCancelled
    from modules.engine.postprocess.faces import FaceRestoreCancelled

    info: dict[str, Any] = {}
    notes: list[str] = []

    def check() -> bool:
        ctx.check()  # cancel raises JobCancelled, which ends the job
        return ctx.interrupted  # interrupt makes the upscaler (or face restorer) raise its Cancelled

    def upscale(current: Image.Image) -> Image.Image:
        if not request.upscales:
            return current
        try:
            result, pairs = steps.upscale(engine, current, request, max_pixels, progress.tiles, check)
        except UpscaleCancelled:
            raise _Interrupted from None
        info.update(pairs)
        progress.done(1 + request.blends_second)
        return result

    def faces(current: Image.Image) -> Image.Image:
        if not request.face_steps:
            return current
        try:
            result, pairs, found = steps.restore_faces(engine, current, request, check)
        except FaceRestoreCancelled:
            raise _Interrupted from None
        info.update(pairs)
        notes.extend(found)
        progress.done(len(request.face_steps))
        return result

    if request.upscale_first:
        image = faces(upscale(image))
    else:
        image = upscale(faces(image))
    return image, info, notes


def _keep(request: ExtrasRequest, result: ExtrasResult) -> bool:
    """Whether the result keeps this image's pixels: always for uploads (the caller shows or returns them all);
    for a folder, when results are shown, up to RESULT_LIMIT, so a folder of thousands does not fill memory."""
    if not request.from_folder:
        return True
    if not request.show_extras_results:
        return False
    if len(result.shown) < RESULT_LIMIT:
        return True
    note = f"Only the first {RESULT_LIMIT} images are shown; all of them were saved."
    if note not in result.notes:
        result.notes.append(note)
    return False


def _fatal(error: UserError) -> bool:
    """Errors that stop a batch instead of skipping one image: out of memory (the next would fail too) and a
    folder that cannot be written."""
    from modules.engine.memory.oom import OutOfMemory

    return isinstance(error, OutOfMemory) or error.field == "output_dir"


class _Progress:
    """Maps one image's operations (and an upscale's tiles) onto the job's progress bar."""

    def __init__(self, ctx: JobContext, base: int, total: int, operations: int, label: str) -> None:
        self._ctx, self._base, self._total, self._label = ctx, base, total, label
        self._share = UNITS // max(1, operations)
        self._finished = 0

    def start(self) -> None:
        self._ctx.progress(self._base, self._total, text=f"Extras: {self._label}")

    def tiles(self, operation: int, done: int, total: int) -> None:
        within = (operation * self._share) + (self._share * done // total if total else 0)
        self._ctx.progress(self._base + min(UNITS, within), self._total,
                           text=f"Extras: {self._label}, upscaling ({done}/{total} tiles)")

    def done(self, operations: int) -> None:
        self._finished += operations
        self._ctx.progress(self._base + min(UNITS, self._finished * self._share), self._total,
                           text=f"Extras: {self._label}")


# -- saving --------------------------------------------------------------------------------------------------------


def _save(engine: Engine, request: ExtrasRequest, out_dir: Path | None, name: str, image: Image.Image,
          infotext: str) -> Path:
    """Into output_dir under the source's name (folder batch), else outputs/extras-images: counter only for an
    unnamed image (`00012.png`), counter and source name for a named one (`00012-photo.png`)."""
    stem = Path(name).stem if name else ""
    if out_dir is not None:
        return engine.saver.save_as(image, "extras", out_dir, stem or "image", NamingContext(basename=stem or None),
                                    infotext)
    return engine.saver.save(image, "extras", NamingContext(basename=stem or None), infotext, suffix=stem)


def _max_pixels(engine: Engine) -> int:
    """The upscalers' own ceiling, or the `max_image_pixels` setting when a user raised it above that."""
    try:
        configured = int(engine.settings_get("max_image_pixels"))
    except (KeyError, UserError, TypeError, ValueError):
        configured = 0
    return max(DEFAULT_MAX_PIXELS, configured)

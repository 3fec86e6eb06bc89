"""Saving generated images where, and under the names, A1111 users expect (A1111 `images.save_image`).

    outputs/<kind>-images/<directories_filename_pattern>/<NNNNN>-<samples_filename_pattern>.<ext>
    outputs/<kind>-grids/<directories_filename_pattern>/grid-<NNNN>.<ext>

A save never leaves a partial file where a gallery looks: the image is written to a hidden temporary name and
renamed (modules.atomic). Two saves into one folder never share a counter value: the counter is chosen under a
lock and held by a hidden `.NNNNN.reserve` file (created with O_EXCL) until the image is in place, which also
keeps other processes saving into the same folder off that number.
"""

from __future__ import annotations

import errno
import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from datetime import datetime
from pathlib import Path
from types import MappingProxyType
from typing import Any, cast

from PIL import Image

from modules import atomic
from modules.engine.image_metadata import ImageFormat, encode_image
from modules.engine.outputs import paths
from modules.engine.outputs.grid import make_grid
from modules.engine.outputs.naming import MAX_PART_LENGTH, FilenameGenerator, NamingContext, scrub
from modules.errors import UserError
from modules.extensions.hooks import HookRegistry, ImageSaveEvent

log = logging.getLogger(__name__)

# A1111 defaults, used for options this install has not registered (grid_format, n_rows, ...) and when a
# settings getter does not know a key.
DEFAULTS: MappingProxyType[str, Any] = MappingProxyType({
    "samples_format": "png",
    "jpeg_quality": 80,
    "webp_lossless": False,
    "enable_pnginfo": True,
    "save_txt": False,
    "save_to_dirs": True,
    "grid_save_to_dirs": True,
    "directories_filename_pattern": "[date]",
    "directories_max_prompt_words": 8,
    "samples_filename_pattern": "",
    "save_images_add_number": True,
    # A1111's default is "Replace"; without the option registered we never overwrite an earlier image.
    "save_images_replace_action": "Add number suffix",
    "grid_save": True,
    "grid_format": "png",
    "grid_extended_filename": False,
    "grid_only_if_multiple": True,
    "grid_prevent_empty_spots": False,
    "n_rows": -1,
})

FORMATS = frozenset({"png", "jpg", "jpeg", "webp", "gif"})
# Beyond these sides the format cannot store the image; A1111 then saves a PNG instead.
MAX_SIDE = MappingProxyType({"jpg": 65535, "jpeg": 65535, "webp": 16383})
# EDQUOT (quota exceeded) is "full" to the user too; not every platform defines it.
_DISK_FULL = frozenset({errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)})
_MAX_TRIES = 500  # A1111 tries as many names before giving up
_KIND_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789_-")


@dataclass(frozen=True)
class _Claim:
    """A final path that is ours, and the hidden marker that holds it (None when overwriting is wanted)."""

    path: Path
    marker: Path | None

    def release(self) -> None:
        if self.marker is not None:
            self.marker.unlink(missing_ok=True)


@dataclass(frozen=True)
class _Layout:
    """How a save call wants its image laid out, before any pattern is expanded."""

    root: Path  # outputs/<kind>-images or outputs/<kind>-grids
    basename: str  # "" for images, "grid" for grids (A1111's `basename` argument)
    short: bool  # no file name pattern, counter only (A1111's `short_filename`)
    use_dirs: bool  # expand directories_filename_pattern into subfolders
    suffix: str
    extension: str


@dataclass(frozen=True)
class _Target:
    """Where and how one image goes: the folder, the file name parts, and its format."""

    folder: Path
    basename: str  # "" for images, "grid" for grids
    decoration: str  # the expanded file name pattern plus suffix, already made safe
    numbered: bool
    extension: str


class ImageSaver:
    """Names, encodes and writes images under `outputs_dir`; safe to share between threads."""

    def __init__(
        self,
        outputs_dir: Path,
        settings_get: Callable[[str], Any],
        hooks: HookRegistry | None = None,
        *,
        clock: Callable[[], datetime] = datetime.now,
        max_part_length: int = MAX_PART_LENGTH,
    ) -> None:
        self.outputs_dir = outputs_dir
        self._settings_get = settings_get
        self._hooks = hooks
        self._clock = clock
        self._max_part_length = max_part_length
        self._lock = threading.Lock()

    # --- public ------------------------------------------------------------------------------------------

    def save(
        self,
        image: Image.Image,
        kind: str,
        context: NamingContext,
        infotext: str | None,
        suffix: str = "",
        extension: str | None = None,
    ) -> Path:
        """Save one image of a `kind` job (txt2img, img2img, extras) and return where it went.

        Extras are saved as A1111 saves them: no subfolder, counter only (`extras-images/00003.png`).

        Raises:
            UserError: The disk is full (nothing is left behind), or the format is unknown.
        """
        short = kind == "extras" or context.seed is None
        use_dirs = kind != "extras" and bool(self._opt("save_to_dirs"))
        fmt = self._format(extension or self._opt("samples_format"), image)
        layout = _Layout(self.outputs_dir / f"{_checked_kind(kind)}-images", "", short, use_dirs, suffix, fmt)
        return self._save(image, kind, context, infotext, layout)

    def save_grid(
        self,
        grid: Image.Image,
        kind: str,
        context: NamingContext,
        infotext: str | None,
        extension: str | None = None,
    ) -> Path:
        """Save a grid as `outputs/<kind>-grids/<dir>/grid-NNNN.<grid_format>` and return where it went."""
        short = not self._opt("grid_extended_filename") or context.seed is None
        use_dirs = bool(self._opt("grid_save_to_dirs"))
        fmt = self._format(extension or self._opt("grid_format"), grid)
        layout = _Layout(self.outputs_dir / f"{_checked_kind(kind)}-grids", "grid", short, use_dirs, "", fmt)
        return self._save(grid, kind, context, infotext, layout)

    def save_as(
        self, image: Image.Image, kind: str, folder: Path, stem: str, context: NamingContext, infotext: str | None
    ) -> Path:
        """Save under a name the caller chose, in a folder the user chose (img2img and extras batches into an
        output folder): `<stem>.<ext>`, or `<stem>-N.<ext>` when that is taken (the `save_images_replace_action`
        setting can make it replace). Hooks fire as for any other save."""
        fmt = self._format(self._opt("samples_format"), image)
        layout = _Layout(folder, "", True, False, "", fmt)
        return self._save(image, kind, context, infotext, layout, _Target(folder, "", scrub(stem), False, fmt))

    def wants_grid(self, image_count: int) -> bool:
        """A1111's rule: grids are saved when `grid_save` is on, unless one image and `grid_only_if_multiple`."""
        return bool(self._opt("grid_save")) and not (image_count < 2 and self._opt("grid_only_if_multiple"))

    def build_grid(self, images: Sequence[Image.Image], batch_size: int = 1) -> Image.Image:
        """`make_grid` with the `n_rows` and `grid_prevent_empty_spots` settings."""
        return make_grid(
            images,
            batch_size=batch_size,
            n_rows=int(self._opt("n_rows")),
            prevent_empty_spots=bool(self._opt("grid_prevent_empty_spots")),
        )

    # --- naming ------------------------------------------------------------------------------------------

    def _opt(self, key: str) -> Any:
        try:
            value = self._settings_get(key)
        except (KeyError, UserError):
            return DEFAULTS[key]
        return DEFAULTS.get(key) if value is None else value

    def _format(self, requested: str, image: Image.Image) -> str:
        fmt = str(requested).lower().lstrip(".")
        if fmt not in FORMATS:
            raise UserError(f"cannot save images as '{requested}'; use png, jpg or webp", field="samples_format")
        if max(image.size) > MAX_SIDE.get(fmt, max(image.size)):
            log.warning("image of %dx%d is too large for %s; saving it as PNG", *image.size, fmt)
            return "png"
        return fmt

    def _target(self, gen: FilenameGenerator, layout: _Layout) -> _Target:
        """Expand the folder and file patterns (A1111 order: folder first, then file name plus suffix)."""
        folder = layout.root
        if layout.use_dirs:
            pattern = self._opt("directories_filename_pattern") or "[prompt_words]"
            folder = layout.root.joinpath(*paths.folder_parts(gen.apply(pattern)))
        if not paths.is_within(folder, layout.root):  # cannot happen (folder_parts drops ".."); belt and braces
            raise UserError(f"the folder pattern leads outside {layout.root}", field="directories_filename_pattern")
        decoration = "" if layout.short else gen.apply(self._file_pattern())
        decoration = scrub(decoration + layout.suffix)
        numbered = bool(self._opt("save_images_add_number")) or not paths.plain_stem(decoration, layout.extension)
        return _Target(folder, layout.basename, decoration, numbered, layout.extension)

    def _file_pattern(self) -> str:
        # A1111 picks the default from the save_to_dirs setting, even for grids.
        default = "[seed]" if self._opt("save_to_dirs") else "[seed]-[prompt_spaces]"
        return str(self._opt("samples_filename_pattern") or default)

    def _claim(self, target: _Target) -> _Claim:
        """Choose the final name under the lock and hold it with a hidden O_EXCL marker."""
        target.folder.mkdir(parents=True, exist_ok=True)
        with self._lock:
            if target.numbered:
                return self._claim_numbered(target)
            return self._claim_plain(target)

    def _claim_numbered(self, target: _Target) -> _Claim:
        width, prefix = (4, f"{target.basename}-") if target.basename else (5, "")
        start = paths.next_sequence_number(target.folder, target.basename)
        for number in range(start, start + _MAX_TRIES):
            head = f"{prefix}{number:0{width}}"
            path = target.folder / paths.numbered_name(head, target.decoration, target.extension)
            marker = target.folder / paths.reservation_marker(head)
            if path.exists() or not atomic.reserve_exclusive(marker):
                continue
            if not paths.counter_in_use(target.folder, head):
                return _Claim(path, marker)
            marker.unlink(missing_ok=True)
        raise UserError(f"could not find a free file name in {target.folder}")

    def _claim_plain(self, target: _Target) -> _Claim:
        stem = paths.plain_stem(target.decoration, target.extension)
        if self._opt("save_images_replace_action") == "Replace":
            return _Claim(target.folder / f"{stem}.{target.extension}", None)
        for n in range(_MAX_TRIES):
            name = f"{stem}.{target.extension}" if n == 0 else f"{stem}-{n}.{target.extension}"
            path, marker = target.folder / name, target.folder / paths.reservation_marker(name)
            if not path.exists() and atomic.reserve_exclusive(marker):
                return _Claim(path, marker)
        raise UserError(f"could not find a free file name in {target.folder}")

    # --- writing -----------------------------------------------------------------------------------------

    def _save(
        self, image: Image.Image, kind: str, context: NamingContext, infotext: str | None, layout: _Layout,
        target: _Target | None = None,
    ) -> Path:
        """Name (unless `target` is given), fire before_image_saved, encode, write atomically, fire image_saved."""
        if target is None:
            max_words = int(self._opt("directories_max_prompt_words"))
            gen = FilenameGenerator(context, image, self._clock(), max_words, self._max_part_length)
            target = self._target(gen, layout)
        try:
            claim = self._claim(target)
            event = ImageSaveEvent(image, claim.path, infotext, kind, _event_params(context, layout))
            try:
                self._fire("before_image_saved", event)
                _undo_bad_hook_changes(event, image, infotext)
                # A hook's change of event.path is ignored: the name is ours, and must stay under outputs.
                event.path = self._write(event, target, claim)
            finally:
                claim.release()
        except OSError as e:
            _raise_if_disk_full(e, target.folder)
            raise
        self._fire("image_saved", event)
        return event.path

    def _write(self, event: ImageSaveEvent, target: _Target, claim: _Claim) -> Path:
        """Encode what the hooks left and write it (and the .txt) atomically; returns the final path."""
        infotext = event.infotext
        data, fmt = self._encode(event.image, target.extension, infotext)
        if fmt == target.extension:
            self._write_files(claim.path, data, infotext)
            return claim.path
        # JPEG/WebP could not hold it: a PNG under a freshly claimed name (its own counter value if needed).
        claim.release()
        png_claim = self._claim(replace(target, extension=fmt))
        try:
            self._write_files(png_claim.path, data, infotext)
        finally:
            png_claim.release()
        return png_claim.path

    def _encode(self, image: Image.Image, fmt: str, infotext: str | None) -> tuple[bytes, str]:
        embedded = infotext if self._opt("enable_pnginfo") else None
        quality = int(self._opt("jpeg_quality"))
        lossless = bool(self._opt("webp_lossless"))
        try:
            return encode_image(image, cast(ImageFormat, fmt), embedded, quality=quality, lossless=lossless), fmt
        except (ValueError, OSError) as e:
            if fmt == "png":
                raise
            log.warning("could not save as %s (%s); saving as PNG instead", fmt, e)
            return encode_image(image, "png", embedded), "png"

    def _write_files(self, path: Path, data: bytes, infotext: str | None) -> None:
        """The image, then its .txt; if the .txt fails the image goes too, so a save is all or nothing."""
        atomic.write_bytes(path, data)
        if not (self._opt("save_txt") and infotext is not None):
            return
        try:
            atomic.write_text(path.with_suffix(".txt"), f"{infotext}\n")
        except BaseException:
            path.unlink(missing_ok=True)
            raise

    def _fire(self, hook: str, event: ImageSaveEvent) -> None:
        if self._hooks is not None:
            self._hooks.fire(hook, event)


def _checked_kind(kind: str) -> str:
    """`kind` names a folder under outputs, so it must be a plain lowercase word."""
    if not kind or kind[0] in "-_" or not set(kind) <= _KIND_CHARS:
        raise ValueError(f"bad output kind {kind!r}: use lowercase letters, digits, '-' and '_'")
    return kind


def _undo_bad_hook_changes(event: ImageSaveEvent, image: Image.Image, infotext: str | None) -> None:
    """A hook that put something unusable in the event must not stop the save: its change is dropped."""
    if not isinstance(event.image, Image.Image):
        log.error("a before_image_saved hook set the image to a %s; saving the original", type(event.image).__name__)
        event.image = image
    if event.infotext is not None and not isinstance(event.infotext, str):
        log.error("a before_image_saved hook set the infotext to a %s; keeping the original",
                  type(event.infotext).__name__)
        event.infotext = infotext


def _event_params(context: NamingContext, layout: _Layout) -> dict[str, Any]:
    return {"naming": asdict(context), "grid": layout.basename == "grid", "suffix": layout.suffix}


def _raise_if_disk_full(error: OSError, folder: Path) -> None:
    """A full disk becomes a message the user can act on; other OS errors are left to the caller to re-raise."""
    if error.errno in _DISK_FULL:
        raise UserError(
            f"the disk holding {folder} is full; free space on it and try again (nothing was saved)"
        ) from error

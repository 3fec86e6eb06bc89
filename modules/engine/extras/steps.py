"""The two Extras operations on one image, each returning the image and the infotext pairs A1111 writes.

Upscale (A1111's scripts/postprocessing_upscale.py): "Scale by" multiplies the size (rounded down to a multiple of
8, as A1111's upscalers round); "Scale to" scales by the larger of the two ratios, so the image covers the target,
and with "Crop to fit" cuts the centre out at exactly the target size. A1111 pastes onto a black canvas instead,
which leaves black edges whenever its rounding falls short of the target; we size the cover exactly, so it never
does. Upscaler 2 is run on the same source and blended in with its visibility.

Face restoration (scripts/postprocessing_gfpgan.py, postprocessing_codeformer.py): GFPGAN, then CodeFormer, each
blended by its visibility by the face restorer registry (which keeps an alpha channel as it is).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from modules.engine.extras.requests import CODEFORMER, ExtrasOptions
from modules.errors import NotFound, UserError

if TYPE_CHECKING:
    from PIL import Image

    from modules.engine.engine import Engine

Info = dict[str, Any]
Check = Callable[[], object]
# (operation, tiles done, tiles total): operation 0 is Upscaler 1, 1 is Upscaler 2.
Progress = Callable[[int, int, int], None]


def check_upscalers(engine: Engine, options: ExtrasOptions) -> None:
    """Refuse unknown upscaler names before any work starts (400 listing the valid ones, not the registry's 404:
    the request is wrong, not a missing resource)."""
    names = [("upscaler_1", options.upscaler_1)]
    if options.blends_second:
        names.append(("upscaler_2", options.upscaler_2))
    for field, name in names:
        try:
            engine.upscalers.find(name)
        except NotFound as e:
            raise UserError(f"{field}: {e.message}", field=field) from None


def check_face_restorers(engine: Engine, options: ExtrasOptions) -> None:
    """Refuse a face restorer that cannot run before any work starts; the registry's message says which file is
    missing, where it goes and how to download it (or, for CodeFormer, what it needs)."""
    for name, _ in options.face_steps:
        field = "codeformer_visibility" if name == CODEFORMER else "gfpgan_visibility"
        try:
            engine.face_restorers.find(name)
        except UserError as e:  # NotFound included: both are the request's problem here, so a 400
            raise UserError(f"{field}: {e.message}", field=field) from None


def upscale(engine: Engine, image: Image.Image, options: ExtrasOptions, max_pixels: int,
            progress: Progress | None, check: Check | None) -> tuple[Image.Image, Info]:
    """Upscaler 1 (and Upscaler 2 blended in) applied to `image`; returns the image and its infotext pairs."""
    from modules.engine.postprocess import blend

    info: Info = {}
    size, crop = _target(image.size, options, info)
    tile, overlap = engine.upscaler_tiling()

    def run(name: str, operation: int) -> Image.Image:
        tiles = None if progress is None else (lambda done, total: progress(operation, done, total))
        result = engine.upscalers.upscale(
            image, name, scale=None if size else options.upscaling_resize, size=size, tile=tile, overlap=overlap,
            max_pixels=max_pixels, progress=tiles, check=check)
        return _crop_centre(result, crop) if crop else result

    result = run(options.upscaler_1, 0)
    info["Postprocess upscaler"] = engine.upscalers.find(options.upscaler_1).name
    if options.blends_second:
        result = blend(result, run(options.upscaler_2, 1), options.extras_upscaler_2_visibility)
        info["Postprocess upscaler 2"] = engine.upscalers.find(options.upscaler_2).name
    return result, info


def _target(source: tuple[int, int], options: ExtrasOptions, info: Info
            ) -> tuple[tuple[int, int] | None, tuple[int, int] | None]:
    """(exact size to upscale to, or None to scale by the factor; the size to crop to, or None)."""
    if options.resize_mode == 0:
        info["Postprocess upscale by"] = options.upscaling_resize
        return None, None
    width, height = options.upscaling_resize_w, options.upscaling_resize_h
    info["Postprocess upscale to"] = f"{width}x{height}"
    ratio = max(width / source[0], height / source[1])
    # Rounded up on the side that does not set the ratio, so a cover is never a pixel short of the target.
    cover = (max(width, math.ceil(source[0] * ratio - 1e-9)), max(height, math.ceil(source[1] * ratio - 1e-9)))
    if not options.upscaling_crop:
        return cover, None
    info["Postprocess crop to"] = f"{width}x{height}"
    return cover, (width, height)


def _crop_centre(image: Image.Image, size: tuple[int, int]) -> Image.Image:
    left, top = (image.width - size[0]) // 2, (image.height - size[1]) // 2
    return image.crop((left, top, left + size[0], top + size[1]))


def restore_faces(engine: Engine, image: Image.Image, options: ExtrasOptions, check: Check | None
                  ) -> tuple[Image.Image, Info, list[str]]:
    """GFPGAN then CodeFormer, as the visibilities ask; returns the image, its infotext pairs and notes.

    `check` may raise (cancel) or return True (interrupt: the registry raises FaceRestoreCancelled)."""
    info: Info = {}
    notes: list[str] = []
    for name, visibility in options.face_steps:
        # The weight only matters to CodeFormer; passing it always keeps the registry off its settings default.
        restored = engine.face_restorers.restore(image, name=name, visibility=visibility,
                                     codeformer_weight=options.codeformer_weight, check=check)
        image = restored.image
        if restored.note:
            notes.append(f"{name}: {restored.note}")
        # A1111 records the step whether or not a face was found: it ran, with these settings.
        info[f"{name} visibility"] = round(visibility, 3)
        if name == CODEFORMER:
            info[f"{name} weight"] = round(options.codeformer_weight, 3)
    return image, info, notes

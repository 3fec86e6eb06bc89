"""Post-processing of finished images: the upscalers of the Extras tab and of hires fix, and face restoration.

    upscalers = UpscalerRegistry(models, memory)          # once, at start; models has the upscaler kinds
    upscalers.names()                                     # ["None", "Lanczos", "Nearest", "4x-UltraSharp", ...]
    big = upscalers.upscale(image, "4x-UltraSharp", scale=2, tile=192, overlap=8,
                            progress=ctx.progress, check=ctx.check)
    final = blend(big, upscalers.upscale(image, "Lanczos", scale=2), visibility=0.3)

Importing this package imports neither torch, spandrel nor PIL; they load at the first upscale or listing of scales.

Modules:
    upscalers: `UpscalerRegistry` (list, load, upscale), `blend`, sizes, `extra_model_kinds`.
    spandrel_models: reading model files with spandrel and the errors for files that are not upscalers.
    tiling: feathered, overlapping tiled inference.
    image_modes: any PIL mode to RGB and back, alpha kept.
    faces: face restoration (GFPGAN, RestoreFormer, opt-in CodeFormer) with facexlib detection and paste-back.
"""

from modules.engine.postprocess.upscalers import (
    BUILTIN_UPSCALERS,
    DEFAULT_KINDS,
    DEFAULT_MAX_PIXELS,
    DEFAULT_OVERLAP,
    DEFAULT_TILE,
    LANCZOS,
    NEAREST,
    NONE,
    UpscaleCancelled,
    UpscalerEntry,
    UpscalerRegistry,
    blend,
    extra_model_kinds,
    plan_passes,
    target_size,
)

__all__ = [
    "BUILTIN_UPSCALERS",
    "DEFAULT_KINDS",
    "DEFAULT_MAX_PIXELS",
    "DEFAULT_OVERLAP",
    "DEFAULT_TILE",
    "LANCZOS",
    "NEAREST",
    "NONE",
    "UpscaleCancelled",
    "UpscalerEntry",
    "UpscalerRegistry",
    "blend",
    "extra_model_kinds",
    "plan_passes",
    "target_size",
]

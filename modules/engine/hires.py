"""Hires fix: upscale the first pass, then denoise again at the larger size (img2img on the same components).

Upscalers: A1111's latent modes (interpolating the latents directly), and pixel upscalers (decode, upscale,
encode): Lanczos, Nearest and every model in the upscaler registry (ESRGAN and friends, through spandrel).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from modules.engine.requests import Txt2ImgRequest
from modules.errors import UserError

if TYPE_CHECKING:
    import torch

# A1111's latent upscale modes: name -> (torch interpolate mode, antialias)
LATENT_MODES: dict[str, tuple[str, bool]] = {
    "Latent": ("bilinear", False),
    "Latent (antialiased)": ("bilinear", True),
    "Latent (bicubic)": ("bicubic", False),
    "Latent (bicubic antialiased)": ("bicubic", True),
    "Latent (nearest)": ("nearest", False),
    "Latent (nearest-exact)": ("nearest-exact", False),
}
PIXEL_UPSCALERS = ("Lanczos", "Nearest")


def hires_upscalers(model_names: Sequence[str] = ()) -> list[str]:
    """A1111's hires-fix list: the latent modes, Lanczos and Nearest, then the model upscalers."""
    return [*LATENT_MODES, *PIXEL_UPSCALERS, *model_names]


def check_upscaler(name: str, model_names: Sequence[str] = ()) -> None:
    if name not in hires_upscalers(model_names):
        raise UserError(f"unknown hires upscaler '{name}'; available: {', '.join(hires_upscalers(model_names))}",
                        field="hr_upscaler")


def target_size(request: Txt2ImgRequest) -> tuple[int, int]:
    """The second-pass size: hr_resize_x/y when given (one of them keeps the aspect), else width/height × scale,
    rounded down to a multiple of 8 as the VAE needs."""
    w, h = request.width, request.height
    if request.hr_resize_x or request.hr_resize_y:
        tw = request.hr_resize_x or round(request.hr_resize_y * w / h)
        th = request.hr_resize_y or round(request.hr_resize_x * h / w)
    else:
        tw, th = round(w * request.hr_scale), round(h * request.hr_scale)
    return max(8, tw // 8 * 8), max(8, th // 8 * 8)


def upscale_latents(latents: torch.Tensor, width: int, height: int, mode: str) -> torch.Tensor:
    import torch.nn.functional as F

    interp, antialias = LATENT_MODES[mode]
    size = (height // 8, width // 8)
    if interp in ("nearest", "nearest-exact"):
        return F.interpolate(latents, size=size, mode=interp)
    return F.interpolate(latents, size=size, mode=interp, antialias=antialias)


def upscale_pixels(pipe: Any, latents: torch.Tensor, resize: Callable[[Any], Any]) -> torch.Tensor:
    """Decode, upscale each image with `resize` (PIL or a model upscaler), encode again (deterministically,
    from the VAE's mean)."""
    from modules.engine.vae import decode, encode

    images, _ = decode(pipe, latents)
    resized = [resize(img) for img in images]
    return encode(pipe, pipe.image_processor.preprocess(resized), latents.device).to(latents.dtype)


"""Image modes in and out of the upscalers: every model sees 8-bit RGB; an alpha channel travels beside it.

Upscaling networks are trained on RGB. An input's alpha (RGBA, LA, PA, or a palette image with a transparent
colour) is taken off, resized on its own with the plain resampler (Lanczos, or Nearest for the Nearest upscaler)
to the size the colour channels end up at, and put back, so a transparent PNG stays transparent. 16-bit greyscale
("I;16", common for depth maps) is scaled down to 8 bits rather than clipped, which is what `convert("RGB")` alone
would do (everything above 255 turns white).

Importing this module does not import PIL or numpy; the functions do.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch
    from PIL import Image

# 16-bit integer modes, and the 32-bit ones that may hold 16-bit data.
_SIXTEEN_BIT = ("I;16", "I;16L", "I;16B", "I;16N")
_WIDE = ("I", "F")
_ALPHA_MODES = ("RGBA", "LA", "PA", "RGBa", "La")


def split_alpha(image: Image.Image) -> tuple[Image.Image, Image.Image | None]:
    """`image` as 8-bit RGB, and its alpha channel ("L") when it has one."""
    mode = image.mode
    if mode == "P" and "transparency" in image.info:
        image, mode = image.convert("RGBA"), "RGBA"
    if mode in _ALPHA_MODES:
        rgba = image.convert("RGBA")  # also un-premultiplies RGBa/La
        return rgba.convert("RGB"), rgba.getchannel("A")
    if mode in _SIXTEEN_BIT or mode in _WIDE:
        return _wide_to_rgb(image), None
    if mode == "RGB":
        return image, None
    return image.convert("RGB"), None


def join_alpha(rgb: Image.Image, alpha: Image.Image | None, nearest: bool = False) -> Image.Image:
    """`rgb` with `alpha` resized to fit it and attached (RGBA); `rgb` itself when there is no alpha."""
    from PIL import Image

    if alpha is None:
        return rgb
    resample = Image.Resampling.NEAREST if nearest else Image.Resampling.LANCZOS
    if alpha.size != rgb.size:
        alpha = alpha.resize(rgb.size, resample)
    out = rgb.convert("RGBA")
    out.putalpha(alpha)
    return out


def _wide_to_rgb(image: Image.Image) -> Image.Image:
    """16/32-bit greyscale to 8-bit RGB, keeping the tonal range: 16-bit data is divided by 257 (65535 -> 255);
    32-bit data is taken as 16-bit when it goes past 255, else as 8-bit, and clipped to the valid range."""
    import numpy as np
    from PIL import Image

    values = np.asarray(image).astype(np.float64)
    if image.mode in _SIXTEEN_BIT or (values.size and values.max() > 255):
        values = values / 257.0
    grey = np.clip(np.rint(values), 0, 255).astype(np.uint8)
    return Image.fromarray(grey).convert("RGB")  # (H, W) uint8 is "L"


def to_tensor(image: Image.Image) -> torch.Tensor:
    """An 8-bit RGB image as a (1, 3, H, W) float32 CPU tensor in [0, 1]."""
    import numpy as np
    import torch

    array = np.asarray(image, dtype=np.uint8)
    return torch.from_numpy(array.copy()).permute(2, 0, 1).unsqueeze(0).float().div_(255.0)


def to_image(tensor: torch.Tensor) -> Image.Image:
    """A (1, 3, H, W) float tensor in [0, 1], on any device, as an 8-bit RGB image rounded to the nearest level.

    The conversion to bytes happens on the tensor's device, so a GPU result crosses to the CPU at a quarter of
    its float32 size.
    """
    import torch
    from PIL import Image

    as_bytes = tensor[0].clamp(0.0, 1.0).mul(255.0).round_().to(torch.uint8).permute(1, 2, 0).contiguous()
    array = as_bytes.cpu().numpy()
    return Image.fromarray(array)  # (H, W, 3) uint8 is RGB

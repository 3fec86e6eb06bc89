"""Image and mask operations for img2img and inpainting: pure PIL and numpy, no torch.

The geometry is A1111's (`images.resize_image`, `masking.get_crop_region_v2`, `masking.expand_crop_region`,
`processing.apply_overlay`) so a request gives the same framing here as there; the code is our own.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from PIL import Image, ImageFilter, ImageOps

Box = tuple[int, int, int, int]  # left, top, right, bottom

JUST_RESIZE, CROP_AND_RESIZE, RESIZE_AND_FILL, LATENT_UPSCALE = range(4)

# Blur radii (and how often each layer is laid down) for the "fill" masked content: wide blurs give the
# overall colour far from the edge, narrow ones the detail near it (A1111's `masking.fill` schedule).
_FILL_LAYERS = ((256, 1), (64, 1), (16, 2), (4, 4), (2, 2), (0, 1))
_ROUND_LUT = tuple(255 if v > 128 else 0 for v in range(256))  # A1111's mask_round threshold
_DOUBLE_LUT = tuple(min(255, 2 * v) for v in range(256))


def fit_box(size: tuple[int, int], width: int, height: int, cover: bool) -> Box:
    """Where an image of `size`, scaled keeping its aspect, sits centred in width x height: scaled to cover the
    whole area (then cropped) or to fit inside it (then the rest is filled). Returns (x, y, scaled w, scaled h);
    x or y is negative when covering."""
    src_w, src_h = size
    target_is_wider = width * src_h > height * src_w
    if target_is_wider == cover:
        scaled = (width, max(1, src_h * width // src_w))
    else:
        scaled = (max(1, src_w * height // src_h), height)
    return width // 2 - scaled[0] // 2, height // 2 - scaled[1] // 2, scaled[0], scaled[1]


def resize_image(mode: int, image: Any, width: int, height: int) -> Any:
    """A1111's resize modes: 0 stretch, 1 cover and centre-crop, 2 fit and fill the empty border by stretching
    the edge pixels outwards. Mode 3 (latent upscale) resizes pixels like mode 0: the latent part is the caller's."""
    if image.size == (width, height):
        return image.copy()
    if mode == CROP_AND_RESIZE:
        x, y, w, h = fit_box(image.size, width, height, cover=True)
        return image.resize((w, h), Image.Resampling.LANCZOS).crop((-x, -y, width - x, height - y))
    if mode == RESIZE_AND_FILL:
        return _fit_and_fill(image, width, height)
    return image.resize((width, height), Image.Resampling.LANCZOS)


def _fit_and_fill(image: Any, width: int, height: int) -> Any:
    x, y, w, h = fit_box(image.size, width, height, cover=False)
    inner = np.asarray(image.resize((w, h), Image.Resampling.LANCZOS))
    out = np.empty((height, width, *inner.shape[2:]), dtype=inner.dtype)
    out[y:y + h, x:x + w] = inner
    # Only one axis has a border (the other side fits exactly); repeating the outermost row or column is what
    # stretching a one-pixel edge across the border amounts to.
    out[:y, x:x + w] = inner[:1]
    out[y + h:, x:x + w] = inner[-1:]
    out[:, :x] = out[:, x:x + 1]
    out[:, x + w:] = out[:, x + w - 1:x + w]
    return Image.fromarray(out, mode=image.mode)


def border_mask(size: tuple[int, int], width: int, height: int) -> Any:
    """White where resize mode 2 ("Resize and fill") invents pixels: the border that outpainting paints."""
    x, y, w, h = fit_box(size, width, height, cover=False)
    mask = Image.new("L", (width, height), 255)
    mask.paste(0, (x, y, x + w, y + h))
    return mask


def binary_mask(mask: Any, round_mask: bool) -> Any:
    """A1111's `create_binary_mask` on an "L" mask: with mask_round, above half grey counts as painted."""
    return mask.point(_ROUND_LUT) if round_mask else mask.copy()


def blur_mask(mask: Any, sigma_x: float, sigma_y: float) -> Any:
    """Gaussian blur along x, then y, with OpenCV's kernel size for the sigma (what A1111's mask_blur_x/y use),
    borders mirrored without repeating the edge pixel (OpenCV's default)."""
    pixels = np.asarray(mask, dtype=np.float32)
    for axis, sigma in ((1, sigma_x), (0, sigma_y)):
        if sigma > 0:
            pixels = _blur_axis(pixels, float(sigma), axis)
    return Image.fromarray(np.clip(np.rint(pixels), 0, 255).astype(np.uint8), mode="L")


def _blur_axis(pixels: np.ndarray, sigma: float, axis: int) -> np.ndarray:
    radius = int(2.5 * sigma + 0.5)
    taps = np.exp(-np.arange(-radius, radius + 1, dtype=np.float64) ** 2 / (2 * sigma * sigma))
    taps /= taps.sum()
    pad = [(0, 0), (0, 0)]
    pad[axis] = (radius, radius)
    padded = np.pad(pixels, pad, mode="reflect")
    length = pixels.shape[axis]
    out = np.zeros_like(pixels)
    for offset, weight in enumerate(taps):
        out += np.float32(weight) * np.take(padded, np.arange(offset, offset + length), axis=axis)
    return out


def crop_region(mask: Any, padding: int) -> Box | None:
    """The box around everything painted in `mask`, grown by `padding` and kept inside it; None if nothing is."""
    box = mask.getbbox()
    if box is None:
        return None
    x1, y1, x2, y2 = box
    return max(x1 - padding, 0), max(y1 - padding, 0), min(x2 + padding, mask.width), min(y2 + padding, mask.height)


def expand_crop_region(box: Box, width: int, height: int, image_width: int, image_height: int) -> Box:
    """Grow the shorter side of `box` so it has the aspect of width x height (the size it is generated at),
    centred on the original box, shifted back inside the image and cut at its edge where it cannot fit."""
    x1, y1, x2, y2 = box
    box_w, box_h = x2 - x1, y2 - y1
    if box_w * height > box_h * width:
        y1, y2 = _grow(y1, y2, int(box_w * height / width - box_h), image_height)
    else:
        x1, x2 = _grow(x1, x2, int(box_h * width / height - box_w), image_width)
    return x1, y1, x2, y2


def _grow(low: int, high: int, extra: int, limit: int) -> tuple[int, int]:
    low, high = low - extra // 2, high + extra - extra // 2
    over = max(0, high - limit)
    low, high = low - over, high - over
    under = max(0, -low)
    low, high = low + under, high + under
    return low, min(high, limit)


def fill_masked(image: Any, mask: Any) -> Any:
    """The "fill" masked content: the painted area takes the colours around it, blurred from far to near.

    Each layer is a blur of the unpainted pixels divided by the blur of where they are (a normalised
    convolution), laid over the previous ones with that coverage as its opacity; the last layer has no blur,
    so unpainted pixels come back exactly."""
    keep = ImageOps.invert(mask)
    known = Image.composite(image, Image.new("RGB", image.size), keep)
    out = np.zeros((image.height, image.width, 3), dtype=np.float32)
    for radius, repeats in _FILL_LAYERS:
        blur = ImageFilter.GaussianBlur(radius)
        colour = np.asarray(known.filter(blur), dtype=np.float32)
        alpha = np.asarray(keep.filter(blur), dtype=np.float32)[..., None] / 255.0
        layer = np.clip(colour / np.maximum(alpha, 1.0 / 255.0), 0.0, 255.0)
        for _ in range(repeats):
            out = layer * alpha + out * (1.0 - alpha)
    return Image.fromarray(np.clip(np.rint(out), 0, 255).astype(np.uint8), mode="RGB")


def overlay_for_whole_picture(mask: Any) -> Any:
    """The paste-back mask for "Whole picture": A1111 doubles the blurred mask, so the generated pixels show
    fully wherever the blurred mask is at least half on and the blur only softens the outer edge."""
    return mask.point(_DOUBLE_LUT)


def paste_back(base: Any, generated: Any, overlay: Any, box: Box | None) -> Any:
    """The generated image over `base` through `overlay` (white shows the generated pixels, black keeps
    `base` exactly). With `box` ("Only masked"), `generated` is first scaled (cover and crop) into that box."""
    placed = generated
    if box is not None:
        placed = base.copy()
        x1, y1, x2, y2 = box
        placed.paste(resize_image(CROP_AND_RESIZE, generated, x2 - x1, y2 - y1), (x1, y1))
    return Image.composite(placed, base, overlay)


def latent_mask(mask: Any, width: int, height: int, round_mask: bool) -> np.ndarray:
    """The mask at latent size as 0..1 floats (rounded to 0/1 with mask_round), as A1111 masks latents."""
    small = np.asarray(mask.resize((width, height), Image.Resampling.BICUBIC), dtype=np.float32) / 255.0
    return np.around(small) if round_mask else small

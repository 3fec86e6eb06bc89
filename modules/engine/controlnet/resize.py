"""Sizing control images the way sd-webui-controlnet does.

- Preprocessors see the input scaled so its short side is the processor resolution (`scale_short_side`).
- "Pixel perfect" picks that resolution from the generation size instead: the short side the image will have
  once fitted (`pixel_perfect_resolution`), so the map is detected at the size it is used at.
- The detected map is then fitted to width x height (`fit_to_size`) by the unit's resize mode:
  "Just Resize" stretches; "Crop and Resize" scales to cover and crops the middle; "Resize and Fill" scales to fit
  inside and pads with the median colour of the map's border.

Maps are not photos, so scaling them picks its interpolation by content, as the extension's resizer does:
few-colour maps (segmentation) use nearest-neighbour so no new colours appear, two-tone maps (edges, scribbles)
are thresholded again after scaling so lines stay crisp, and other images use area when shrinking and cubic when
growing.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np

RESIZE = "Just Resize"
CROP = "Crop and Resize"
FILL = "Resize and Fill"
_FEW_COLOURS = 200  # below this many colours a map is treated as labels (nearest-neighbour)


def pixel_perfect_resolution(image_width: int, image_height: int, width: int, height: int, resize_mode: str) -> int:
    """The processor resolution at which the image's short side matches its size once fitted to width x height."""
    scale_h, scale_w = height / image_height, width / image_width
    scale = min(scale_h, scale_w) if resize_mode == FILL else max(scale_h, scale_w)
    return int(round(scale * min(image_width, image_height)))


def hwc3(image: np.ndarray) -> np.ndarray:
    """An 8-bit image as H x W x 3: grey is repeated, alpha is flattened onto white."""
    import numpy as np

    if image.ndim == 2:
        image = image[:, :, None]
    if image.dtype != np.uint8:
        image = image.clip(0, 255).astype(np.uint8)
    channels = image.shape[2]
    if channels == 3:
        return image
    if channels == 1:
        return np.concatenate([image] * 3, axis=2)
    colour, alpha = image[:, :, :3].astype(np.float32), image[:, :, 3:4].astype(np.float32) / 255.0
    return (colour * alpha + 255.0 * (1.0 - alpha)).clip(0, 255).astype(np.uint8)


def scale_short_side(image: np.ndarray, resolution: int) -> np.ndarray:
    """`image` scaled so its short side is `resolution` (cubic when growing, area when shrinking)."""
    import cv2

    height, width = image.shape[:2]
    scale = resolution / min(height, width)
    size = (max(1, int(round(width * scale))), max(1, int(round(height * scale))))
    if size == (width, height):
        return image
    return cv2.resize(image, size, interpolation=cv2.INTER_CUBIC if scale > 1 else cv2.INTER_AREA)


def fit_to_size(image: np.ndarray, width: int, height: int, resize_mode: str) -> np.ndarray:
    """The map fitted to exactly width x height by `resize_mode` (see the module docstring)."""
    import numpy as np

    image = hwc3(image)
    if resize_mode == RESIZE:
        return scale_map(image, width, height)
    old_h, old_w = image.shape[:2]
    pick = min if resize_mode == FILL else max
    scale = pick(height / old_h, width / old_w)
    new_w, new_h = max(1, int(round(old_w * scale))), max(1, int(round(old_h * scale)))
    if resize_mode == FILL:
        border = np.concatenate([image[0], image[-1], image[:, 0], image[:, -1]], axis=0)
        canvas = np.empty((height, width, 3), dtype=np.uint8)
        canvas[:] = np.median(border, axis=0).astype(np.uint8)
        scaled = scale_map(image, new_w, new_h)[:height, :width]
        top, left = (height - scaled.shape[0]) // 2, (width - scaled.shape[1]) // 2
        canvas[top:top + scaled.shape[0], left:left + scaled.shape[1]] = scaled
        return canvas
    scaled = scale_map(image, new_w, new_h)
    top, left = max(0, (new_h - height) // 2), max(0, (new_w - width) // 2)
    return np.ascontiguousarray(scaled[top:top + height, left:left + width])


def scale_map(image: np.ndarray, width: int, height: int) -> np.ndarray:
    """A control map scaled to width x height with an interpolation that suits its content."""
    import cv2
    import numpy as np

    old_h, old_w = image.shape[:2]
    if (old_w, old_h) == (width, height):
        return image
    packed = (image[:, :, 0].astype(np.uint32) << 16) | (image[:, :, 1].astype(np.uint32) << 8) | image[:, :, 2]
    colours = len(np.unique(packed))
    shrinking = width * height < old_w * old_h
    two_tone = colours == 2 and int(image.min()) < 16 and int(image.max()) > 240
    if 2 < colours < _FEW_COLOURS:
        interpolation = cv2.INTER_NEAREST
    else:
        interpolation = cv2.INTER_AREA if shrinking else cv2.INTER_CUBIC
    scaled = cv2.resize(image, (width, height), interpolation=interpolation)
    if two_tone:
        grey = scaled.mean(axis=2).clip(0, 255).astype(np.uint8)
        _, binary = cv2.threshold(grey, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
        scaled = np.stack([binary] * 3, axis=2)
    return scaled

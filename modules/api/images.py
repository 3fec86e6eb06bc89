"""base64 images in and out of /sdapi/v1, as A1111's `decode_base64_to_image` / `encode_pil_to_base64` do.

Out: the `samples_format` setting (PNG by default) with the infotext embedded where A1111 puts it, when
`enable_pnginfo` is on. In: plain base64 or a `data:image/...;base64,` URL. URLs are refused (A1111 fetches them
only with its `api_enable_requests` option); anything that is not base64 or not an image, and images whose
header claims more pixels than Pillow's decompression-bomb limit, are a 400 with a message that says which.
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from types import MappingProxyType
from typing import Any

from PIL import Image

from modules.engine.image_input import decode_b64_image
from modules.engine.image_metadata import ImageFormat, encode_image

__all__ = ["decode_b64_image", "encode_b64", "encode_png_b64"]

_FORMATS: MappingProxyType[str, ImageFormat] = MappingProxyType(
    {"png": "png", "jpg": "jpeg", "jpeg": "jpeg", "webp": "webp"})


def encode_b64(image: Image.Image, infotext: str | None, setting: Callable[[str], Any]) -> str:
    """`image` as base64 in the `samples_format` setting, with `infotext` embedded when `enable_pnginfo` is on.

    An infotext too long for a JPEG EXIF segment falls back to PNG, as A1111 does for oversize JPEGs.
    """
    fmt = _FORMATS.get(str(setting("samples_format")).lower(), "png")
    text = infotext if setting("enable_pnginfo") else None
    try:
        data = encode_image(image, fmt, text, quality=int(setting("jpeg_quality")))
    except ValueError:
        data = encode_image(image, "png", text)
    return base64.b64encode(data).decode("ascii")


def encode_png_b64(image: Image.Image) -> str:
    """A plain PNG (no metadata) as base64: the live preview."""
    return base64.b64encode(encode_image(image, "png", None)).decode("ascii")

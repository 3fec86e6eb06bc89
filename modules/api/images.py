"""base64 images in and out of /sdapi/v1, as A1111's `decode_base64_to_image` / `encode_pil_to_base64` do.

Out: the `samples_format` setting (PNG by default) with the infotext embedded where A1111 puts it, when
`enable_pnginfo` is on. In: plain base64 or a `data:image/...;base64,` URL. URLs are refused (A1111 fetches them
only with its `api_enable_requests` option); anything that is not base64 or not an image, and images whose
header claims more pixels than Pillow's decompression-bomb limit, are a 400 with a message that says which.
"""

from __future__ import annotations

import base64
import binascii
import io
from collections.abc import Callable
from types import MappingProxyType
from typing import Any

from PIL import Image, UnidentifiedImageError

from modules.engine.image_metadata import ImageFormat, encode_image
from modules.errors import UserError

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


def decode_b64_image(text: str, field: str = "image") -> Image.Image:
    """Open a base64 (or `data:` URL) image without decoding its pixels.

    Raises:
        UserError: 400 for a URL, bad base64, data that is not an image, or a decompression bomb.
    """
    raw = text.strip()
    if raw.startswith(("http://", "https://")):
        raise UserError(f"{field}: image URLs are not accepted; send the image itself as base64", field=field)
    if raw.startswith("data:"):
        header, _, raw = raw.partition(",")
        if ";base64" not in header:
            raise UserError(f"{field}: a data: URL must be base64-encoded", field=field)
    try:
        data = base64.b64decode(raw, validate=True)
    except (binascii.Error, ValueError):
        raise UserError(f"{field} is not valid base64", field=field) from None
    if not data:
        raise UserError(f"{field} is empty", field=field)
    try:
        image = Image.open(io.BytesIO(data))
    except Image.DecompressionBombError as e:
        raise UserError(f"{field} is too large to open safely: {e}", field=field) from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError):
        raise UserError(f"{field} is not an image (PNG, JPEG, WebP or GIF expected)", field=field) from None
    limit = Image.MAX_IMAGE_PIXELS
    if limit is not None and image.width * image.height > limit:
        raise UserError(f"{field} is {image.width}x{image.height}, over the {limit}-pixel limit for uploaded images",
                        field=field)
    return image

"""Images that arrive in requests: base64 from the API, PIL images from the UI; both end up as 8-bit RGB.

A1111 flattens transparent init images onto a background colour (its `img2img_background_color`, white) and
converts everything else with `convert("RGB")`. We do the same, but scale 16-bit images down instead of clipping
them, and refuse what cannot be used (0-pixel, truncated or corrupt files, bombs) with a message naming the field.
"""

from __future__ import annotations

import base64
import binascii
import io
from typing import Annotated, Any

from pydantic import BeforeValidator, PlainSerializer

from modules.errors import UserError

BACKGROUND = (255, 255, 255)  # A1111's img2img_background_color default


def decode_b64_image(text: str, field: str = "image") -> Any:
    """Open a base64 (or `data:` URL) image without decoding its pixels.

    Raises:
        UserError: 400 for a URL, bad base64, data that is not an image, or a decompression bomb.
    """
    raw = text.strip()
    if raw.startswith(("http://", "https://")):
        raise UserError(f"{field}: image URLs are not accepted here; send the image itself as base64", field=field)
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
    return open_image_bytes(data, field)


def open_image_bytes(data: bytes, field: str = "image") -> Any:
    from PIL import Image, UnidentifiedImageError

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


def to_rgb(image: Any, field: str = "image") -> Any:
    """`image` decoded as 8-bit RGB: transparency flattened onto white, 16-bit scaled, CMYK converted.

    Raises:
        UserError: for a 0-pixel image, or one whose data is truncated or corrupt.
    """
    from PIL import Image

    from modules.engine.postprocess.image_modes import split_alpha

    if image.width == 0 or image.height == 0:
        raise UserError(f"{field} is {image.width}x{image.height}: it has no pixels", field=field)
    try:
        image.load()
        rgb, alpha = split_alpha(image)
    except (OSError, ValueError, SyntaxError) as e:
        raise UserError(f"{field} could not be decoded (truncated or corrupt file): {e}", field=field) from None
    if alpha is None:
        return rgb
    flat = Image.new("RGB", rgb.size, BACKGROUND)
    flat.paste(rgb, mask=alpha)
    return flat


def to_mask(image: Any, field: str = "mask") -> Any:
    """A mask as 8-bit greyscale ("L"): white is repainted. A mask with an alpha channel, as the browser's
    brush layer gives, uses its alpha (painted = opaque); otherwise its brightness."""
    from PIL import Image

    if image.width == 0 or image.height == 0:
        raise UserError(f"{field} is {image.width}x{image.height}: it has no pixels", field=field)
    try:
        image.load()
        if image.mode == "P" and "transparency" in image.info:
            image = image.convert("RGBA")
        if image.mode in ("RGBA", "LA", "PA"):
            alpha = image.getchannel("A")
            if alpha.getextrema() != (255, 255):
                return alpha
        rgb = to_rgb(image, field)
    except (OSError, ValueError, SyntaxError) as e:
        raise UserError(f"{field} could not be decoded (truncated or corrupt file): {e}", field=field) from None
    return rgb.convert("L") if isinstance(rgb, Image.Image) else rgb


def _image_or_b64(value: Any, info: Any = None) -> Any:
    if value is None or value == "":
        return None
    if isinstance(value, str):
        return decode_b64_image(value, getattr(info, "field_name", None) or "image")
    from PIL import Image

    if isinstance(value, Image.Image):
        return value
    raise ValueError("expected an image (base64 text or a PIL image)")


def _to_b64(image: Any) -> str | None:
    if image is None:
        return None
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


# A request field holding an image: base64 text (API, job API) or a PIL image (UI); dumps back to base64.
ImageValue = Annotated[Any, BeforeValidator(_image_or_b64), PlainSerializer(_to_b64, return_type=str | None)]

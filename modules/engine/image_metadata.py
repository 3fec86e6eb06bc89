"""Reading and writing the infotext stored inside image files, where A1111 stores it.

- PNG: a text chunk named `parameters` (A1111 `PngInfo.add_text`, which becomes iTXt for non-Latin-1 text).
- JPEG and WebP: EXIF `UserComment` (tag 0x9286) holding `b"UNICODE\\0"` + UTF-16 big-endian text, which is
  what A1111 writes with `piexif.helper.UserComment.dump(..., encoding="unicode")`.
- GIF: the `comment` extension.

piexif is not a dependency, so the EXIF block is written and its UserComment decoded here. Pillow alone would
store the comment with TIFF type BYTE, which piexif reads back as a tuple of ints and A1111 then fails on; the
block below uses type UNDEFINED as piexif does.
"""

from __future__ import annotations

import io
import struct
from collections.abc import Mapping
from typing import Any, Literal

from PIL import Image, PngImagePlugin

from modules.engine.infotext import parse_novelai

ImageFormat = Literal["png", "jpeg", "jpg", "webp", "gif"]

EXIF_IFD_POINTER = 0x8769
USER_COMMENT_TAG = 0x9286
_TIFF_LONG = 4
_TIFF_UNDEFINED = 7

UNICODE_PREFIX = b"UNICODE\x00"
ASCII_PREFIX = b"ASCII\x00\x00\x00"
JIS_PREFIX = b"JIS\x00\x00\x00\x00\x00"
UNDEFINED_PREFIX = b"\x00" * 8

# JPEG keeps EXIF in one APP1 segment, whose length field is 16 bits (it counts itself).
_JPEG_MAX_EXIF = 65533

# `Image.info` keys that are format details rather than text (A1111's IGNORED_INFO_KEYS).
IGNORED_INFO_KEYS = frozenset(
    {
        "jfif",
        "jfif_version",
        "jfif_unit",
        "jfif_density",
        "dpi",
        "exif",
        "loop",
        "background",
        "timestamp",
        "duration",
        "progressive",
        "progression",
        "icc_profile",
        "chromaticity",
        "photoshop",
    }
)


# --- EXIF UserComment --------------------------------------------------------------------------------------


def encode_user_comment(text: str) -> bytes:
    """EXIF UserComment bytes for `text`, as piexif's `UserComment.dump(text, encoding="unicode")` makes them."""
    return UNICODE_PREFIX + text.encode("utf-16-be")


def _decode_utf16(body: bytes) -> str:
    """UTF-16 without a declared byte order: a BOM if there is one, else guess from where the zero bytes are.

    piexif (so A1111) always writes big-endian whatever the TIFF byte order says; some Windows tools write
    little-endian. Text that is mostly ASCII has its zero bytes first in each pair when big-endian.
    """
    if body.startswith(b"\xfe\xff") or body.startswith(b"\xff\xfe"):
        return body.decode("utf-16", errors="replace")
    if len(body) % 2:
        body = body[:-1]
    zeros_even = body[0::2].count(0)
    zeros_odd = body[1::2].count(0)
    order = "utf-16-le" if zeros_odd > zeros_even else "utf-16-be"
    try:
        return body.decode(order)
    except UnicodeDecodeError:
        other = "utf-16-be" if order == "utf-16-le" else "utf-16-le"
        try:
            return body.decode(other)
        except UnicodeDecodeError:
            return body.decode(order, errors="replace")


def decode_user_comment(data: bytes) -> str:
    """Text of an EXIF UserComment: the 8-byte charset prefix, then the text in that charset.

    A comment without a known prefix is read as UTF-8, which is A1111's fallback too. NUL padding is dropped.
    """
    prefix, body = data[:8], data[8:]
    if len(data) >= 8 and prefix == UNICODE_PREFIX:
        text = _decode_utf16(body)
    elif len(data) >= 8 and prefix == ASCII_PREFIX:
        text = body.decode("utf-8", errors="replace")
    elif len(data) >= 8 and prefix == JIS_PREFIX:
        text = body.decode("shift_jis", errors="replace")
    elif len(data) >= 8 and prefix == UNDEFINED_PREFIX:
        text = body.decode("utf-8", errors="ignore")
    else:
        text = data.decode("utf-8", errors="ignore")
    return text.strip("\x00")


def build_exif(text: str) -> bytes:
    """A minimal EXIF block (with the `Exif\\0\\0` header Pillow expects) holding only UserComment = `text`.

    Laid out as piexif lays it out: big-endian TIFF header, IFD0 with one entry pointing at the Exif IFD, and
    the Exif IFD with one UNDEFINED-typed UserComment entry whose data follows it.
    """
    comment = encode_user_comment(text)
    ifd0_offset = 8
    exif_ifd_offset = ifd0_offset + 2 + 12 + 4
    data_offset = exif_ifd_offset + 2 + 12 + 4
    header = b"MM" + struct.pack(">HI", 42, ifd0_offset)
    ifd0 = struct.pack(">H", 1) + struct.pack(">HHII", EXIF_IFD_POINTER, _TIFF_LONG, 1, exif_ifd_offset)
    ifd0 += struct.pack(">I", 0)
    if len(comment) <= 4:
        # Values of up to four bytes live in the entry itself, left-aligned.
        entry = struct.pack(">HHI", USER_COMMENT_TAG, _TIFF_UNDEFINED, len(comment)) + comment.ljust(4, b"\x00")
        tail = b""
    else:
        entry = struct.pack(">HHII", USER_COMMENT_TAG, _TIFF_UNDEFINED, len(comment), data_offset)
        tail = comment
    exif_ifd = struct.pack(">H", 1) + entry + struct.pack(">I", 0)
    return b"Exif\x00\x00" + header + ifd0 + exif_ifd + tail


def _user_comment_from_exif(raw: bytes) -> str:
    """The UserComment text inside a raw EXIF block, or "" if there is none or the block is unreadable."""
    exif = Image.Exif()
    try:
        exif.load(raw)
        value = exif.get_ifd(EXIF_IFD_POINTER).get(USER_COMMENT_TAG)
    except Exception:  # noqa: BLE001 - EXIF from the wild is often broken; it must never stop an image opening.
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, (bytes, bytearray)):
        return decode_user_comment(bytes(value))
    if isinstance(value, tuple) and all(isinstance(v, int) for v in value):
        return decode_user_comment(bytes(value))
    return ""


# --- Reading -----------------------------------------------------------------------------------------------


def read_image_info(image: Image.Image) -> tuple[str | None, dict[str, str]]:
    """The infotext stored in `image` and its other text items, like A1111's `read_info_from_image`.

    Looks at the PNG `parameters` chunk, then the EXIF UserComment (JPEG/WebP; it wins when non-empty), or for
    an image without EXIF the GIF/JPEG `comment`. A NovelAI PNG (`Software: NovelAI`) is converted to an A1111
    infotext.

    Returns:
        (infotext or None, the remaining text items). Format details (dpi, icc_profile, ...) and non-text
        values are left out of the items.
    """
    items: dict[str, Any] = dict(image.info or {})
    geninfo: str | None = items.pop("parameters", None)

    if "exif" in items:
        raw = items["exif"]
        comment = _user_comment_from_exif(raw) if isinstance(raw, (bytes, bytearray)) else ""
        if comment:
            geninfo = comment
    elif "comment" in items:
        comment_value = items["comment"]
        if isinstance(comment_value, (bytes, bytearray)):
            geninfo = bytes(comment_value).decode("utf-8", errors="ignore")
        elif isinstance(comment_value, str):
            geninfo = comment_value

    texts: dict[str, str] = {}
    for key, value in items.items():
        if key in IGNORED_INFO_KEYS or not isinstance(key, str):
            continue
        if isinstance(value, str):
            texts[key] = value
        elif key == "comment" and isinstance(value, (bytes, bytearray)):
            texts[key] = bytes(value).decode("utf-8", errors="ignore")

    novelai = parse_novelai(texts, size=(image.width, image.height))
    if novelai is not None:
        geninfo = novelai

    return geninfo, texts


# --- Writing -----------------------------------------------------------------------------------------------


def _for_jpeg(image: Image.Image) -> Image.Image:
    """JPEG has no alpha or 16-bit modes: drop alpha (as A1111 does, no flattening) and scale 16-bit to 8."""
    if image.mode in ("RGB", "L", "CMYK"):
        return image
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        # A1111 scales 16-bit to 8-bit with this factor (1/257) before saving.
        return image.point(lambda p: p * 0.0038910505836576).convert("L")
    return image.convert("RGB")


def _for_webp(image: Image.Image) -> Image.Image:
    """WebP takes RGB or RGBA. Unlike A1111, which drops alpha for WebP too, we keep it: WebP can store it."""
    if image.mode in ("RGB", "RGBA"):
        return image
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        return image.point(lambda p: p * 0.0038910505836576).convert("RGB")
    has_alpha = image.mode in ("LA", "PA", "La", "RGBa") or "transparency" in image.info
    return image.convert("RGBA" if has_alpha else "RGB")


def encode_image(
    image: Image.Image,
    fmt: ImageFormat,
    infotext: str | None,
    quality: int = 80,
    lossless: bool = False,
    extra_text: Mapping[str, str] | None = None,
) -> bytes:
    """Encode `image` as `fmt` with `infotext` embedded where A1111 puts it, readable by A1111 and by us.

    Args:
        image: The image to encode; it is not modified.
        fmt: "png", "jpeg" (or "jpg"), "webp" or "gif".
        infotext: The generation parameters, or None to embed nothing.
        quality: JPEG/WebP quality (A1111's `jpeg_quality`, default 80).
        lossless: Lossless WebP (A1111's `webp_lossless`).
        extra_text: More PNG text chunks, written before `parameters` (A1111's `existing_info`).

    Returns:
        The encoded file.

    Raises:
        ValueError: For an unknown format, or an infotext too long for a JPEG EXIF segment (about 32,000
            characters); callers fall back to PNG, as A1111 does for oversize JPEGs.
    """
    out = io.BytesIO()
    kind = fmt.lower()
    if kind == "png":
        pnginfo = PngImagePlugin.PngInfo()
        for key, value in (extra_text or {}).items():
            pnginfo.add_text(key, str(value))
        if infotext is not None:
            pnginfo.add_text("parameters", infotext)
        image.save(out, format="PNG", pnginfo=pnginfo)
    elif kind in ("jpeg", "jpg"):
        exif = build_exif(infotext) if infotext is not None else b""
        if len(exif) > _JPEG_MAX_EXIF:
            raise ValueError(f"infotext of {len(infotext or '')} characters is too long for JPEG EXIF")
        _for_jpeg(image).save(out, format="JPEG", quality=quality, exif=exif)
    elif kind == "webp":
        exif = build_exif(infotext) if infotext is not None else b""
        _for_webp(image).save(out, format="WEBP", quality=quality, lossless=lossless, exif=exif)
    elif kind == "gif":
        if infotext is not None:
            image.save(out, format="GIF", comment=infotext.encode("utf-8"))
        else:
            image.save(out, format="GIF")
    else:
        raise ValueError(f"unsupported image format: {fmt!r}")
    return out.getvalue()

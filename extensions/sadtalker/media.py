"""The request's media (base64 photo, recording and reference videos) turned into pipeline inputs.

Every way these can be wrong (not base64, not a picture, not audio, silent, too long, not a video) ends as the
studio's UserError with a message that names the input, so the tab, the REST route and the command line all
say the same thing and nothing is half-done when it happens.
"""

from __future__ import annotations

import base64
import binascii
import io
import re
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np

from .talking_head.audio import AudioFeatures, AudioInputError, load_audio_features
from .talking_head.video import VideoInputError, read_frames

MAX_IMAGE_PIXELS = 4096 * 4096  # a larger photo gains nothing: the face is cropped and resized to 256/512
_SUFFIX = re.compile(r"^\.[A-Za-z0-9]{1,8}$")

UserErrorType = Callable[..., Exception]


def decode_base64(data: str, what: str, user_error: UserErrorType) -> bytes:
    """Bytes of a base64 string or data URL; a clear error naming `what` otherwise."""
    text = data.strip()
    if text.startswith("data:"):
        text = text.partition(",")[2]
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise user_error(f"the {what} is not valid base64 data", field=what) from None
    if not raw:
        raise user_error(f"the {what} is empty", field=what)
    return raw


def decode_image(data: str, user_error: UserErrorType) -> np.ndarray:
    """The photo as RGB uint8 (H, W, 3); transparency is flattened onto white, as a viewer shows it."""
    from PIL import Image, UnidentifiedImageError

    raw = decode_base64(data, "image", user_error)
    try:
        with Image.open(io.BytesIO(raw)) as image:
            if image.width * image.height > MAX_IMAGE_PIXELS:
                raise user_error(f"the image is {image.width}x{image.height}; photos up to "
                                 f"{MAX_IMAGE_PIXELS} pixels are accepted, resize it first", field="image")
            image.load()
            if image.mode in ("RGBA", "LA", "P", "PA"):
                rgba = image.convert("RGBA")
                flat = Image.new("RGB", rgba.size, (255, 255, 255))
                flat.paste(rgba, mask=rgba.getchannel("A"))
                return np.asarray(flat)
            return np.asarray(image.convert("RGB"))
    # ValueError: Pillow's refusal of a PNG text chunk that inflates past its limit (a metadata bomb) was a 500.
    except (UnidentifiedImageError, OSError, Image.DecompressionBombError, SyntaxError, ValueError) as e:
        raise user_error(f"the image could not be read as a picture ({type(e).__name__}: {e}); use a PNG, "
                         "JPEG or WebP photo", field="image") from None


def _suffix(name: str) -> str:
    suffix = Path(name).suffix
    return suffix if _SUFFIX.match(suffix) else ".bin"


def decode_audio(data: str, name: str, max_seconds: float, user_error: UserErrorType) -> AudioFeatures:
    """Decode the recording (any format libsndfile or the bundled ffmpeg reads) into mel windows at 25 fps."""
    raw = decode_base64(data, "audio", user_error)
    with tempfile.TemporaryDirectory(prefix="sadtalker-audio-") as folder:
        path = Path(folder) / f"{_safe_stem(name)}{_suffix(name)}"
        path.write_bytes(raw)
        try:
            return load_audio_features(path, max_seconds=max_seconds)
        except AudioInputError as e:
            raise user_error(str(e), field="audio") from None


def decode_video(data: str | None, what: str, max_frames: int, user_error: UserErrorType) -> list[np.ndarray] | None:
    """A reference video's first `max_frames` frames (RGB uint8); None when not given."""
    if data is None:
        return None
    raw = decode_base64(data, what, user_error)
    with tempfile.TemporaryDirectory(prefix="sadtalker-video-") as folder:
        path = Path(folder) / "reference.mp4"
        path.write_bytes(raw)
        try:
            found, _fps = read_frames(path, max_frames=max_frames)
        except VideoInputError as e:
            raise user_error(f"the {what} video could not be used: {e}", field=what) from None
    return found


def _safe_stem(name: str) -> str:
    stem = re.sub(r"[^A-Za-z0-9_-]+", "_", Path(name).stem)[:40]
    return stem or "audio"


def file_to_base64(path: str | Path) -> str:
    """What the tab and the command line put in a request for a file on this machine."""
    return base64.b64encode(Path(path).read_bytes()).decode("ascii")


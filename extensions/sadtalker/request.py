"""The typed request of a talking-head video: what the tab, the REST route, the job API and the command line send.

Field names follow the A1111 SadTalker extension and upstream's `inference.py` where they exist (pose_style,
size, preprocess, still_mode, batch_size, expression_scale, enhancer, background_enhancer, ref_eyeblink,
ref_pose, input_yaw/pitch/roll), so a user's settings carry over. Media travel as base64 (a data URL is fine),
which the JSON job API can carry; the tab and the CLI read files into it.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

PREPROCESS_CHOICES = ("crop", "resize", "full", "extcrop", "extfull")  # the order of A1111's radio
MAX_BATCH_SIZE = 10
MAX_POSE_STYLE = 45
MAX_ANGLES = 64


class TalkingHeadRequest(BaseModel):
    # NaN passes every range check (comparisons with it are false): refuse it by name instead.
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    image: str = Field(description="The portrait, base64 (PNG, JPEG, WebP, ...; a data URL is fine)")
    audio: str = Field(description="The voice recording, base64 (wav, mp3, m4a, ogg, flac, ...)")
    audio_name: str = Field("audio.wav", max_length=200,
                            description="The recording's file name; its extension helps the decoder")
    pose_style: int = Field(0, ge=0, le=MAX_POSE_STYLE, description="Head-motion style, 0..45")
    size: Literal[256, 512] = Field(256, description="Face model resolution")
    preprocess: Literal["crop", "resize", "full", "extcrop", "extfull"] = "crop"
    still_mode: bool = Field(False, description="Keep the head still (pose from the photo)")
    batch_size: int = Field(2, ge=1, le=MAX_BATCH_SIZE, description="Frames rendered per network call")
    expression_scale: float = Field(1.0, ge=0.0, le=3.0, description="How strong the expressions are")
    use_blink: bool = Field(True, description="Add eye blinks")
    enhancer: str | None = Field(None, description="Face restorer for every frame: GFPGAN or RestoreFormer")
    background_enhancer: str | None = Field(None, description="Upscaler for the whole frame (2x), e.g. R-ESRGAN")
    ref_eyeblink: str | None = Field(None, description="Reference video (base64) whose eye blinks are copied")
    ref_pose: str | None = Field(None, description="Reference video (base64) whose head motion is copied")
    input_yaw: list[float] | None = Field(None, max_length=MAX_ANGLES, description="Yaw path in degrees")
    input_pitch: list[float] | None = Field(None, max_length=MAX_ANGLES, description="Pitch path in degrees")
    input_roll: list[float] | None = Field(None, max_length=MAX_ANGLES, description="Roll path in degrees")
    seed: int = Field(-1, ge=-1, le=2**32 - 1, description="-1: random; the same seed gives the same video")

    @field_validator("size", mode="before")
    @classmethod
    def _size_from_text(cls, value: object) -> object:
        # Form fields and the UI's radio arrive as text.
        return int(value) if isinstance(value, str) and value.strip().isdigit() else value

    @field_validator("enhancer", "background_enhancer")
    @classmethod
    def _none_words(cls, value: str | None) -> str | None:
        # The UI and A1111 clients send "None" or "" for "off".
        if value is None or value.strip().lower() in ("", "none"):
            return None
        return value.strip()

    @field_validator("input_yaw", "input_pitch", "input_roll")
    @classmethod
    def _angles(cls, value: list[float] | None) -> list[float] | None:
        if value is None or not value:
            return None
        if any(abs(v) > 90 for v in value):
            raise ValueError("head angles must be within -90..90 degrees")
        return value

    def parameters(self, seed: int) -> dict[str, object]:
        """Every setting of the video (media left out), for the sidecar and the MP4 comment."""
        values = self.model_dump(exclude={"image", "audio", "ref_eyeblink", "ref_pose"})
        values["seed"] = seed
        values["ref_eyeblink"] = self.ref_eyeblink is not None
        values["ref_pose"] = self.ref_pose is not None
        return values

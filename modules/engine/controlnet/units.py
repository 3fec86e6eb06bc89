"""A ControlNet unit as sd-webui-controlnet's API takes it (`alwayson_scripts: {"controlnet": {"args": [...]}}`).

Field names, defaults and the accepted spellings of `control_mode` and `resize_mode` (names or 0/1/2) are that
extension's, so clients such as the `webuiapi` package's ControlNetUnit work unchanged.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from modules.engine.image_input import ImageValue

MAX_UNITS = 3
CONTROL_MODES = ("Balanced", "My prompt is more important", "ControlNet is more important")
RESIZE_MODES = ("Just Resize", "Crop and Resize", "Resize and Fill")
HR_OPTIONS = ("Both", "Low res only", "High res only")

ControlMode = Literal["Balanced", "My prompt is more important", "ControlNet is more important"]
ResizeMode = Literal["Just Resize", "Crop and Resize", "Resize and Fill"]


class ControlNetUnit(BaseModel):
    """One unit. `image` empty means "use the init image" (img2img), as in sd-webui-controlnet."""

    model_config = ConfigDict(extra="ignore", arbitrary_types_allowed=True)  # old clients send retired fields

    enabled: bool = True
    image: ImageValue = None
    mask: ImageValue = None
    module: str = "none"
    model: str = "None"
    weight: float = Field(1.0, ge=0.0, le=2.0)
    resize_mode: ResizeMode = "Crop and Resize"
    low_vram: bool = False
    # -1 (or a value outside the module's slider range, or leaving it out) means the module's default, as in
    # sd-webui-controlnet's API; so do -1 thresholds.
    processor_res: int = Field(512, ge=-1, le=4096)
    threshold_a: float = 64
    threshold_b: float = 64
    guidance_start: float = Field(0.0, ge=0.0, le=1.0)
    guidance_end: float = Field(1.0, ge=0.0, le=1.0)
    control_mode: ControlMode = "Balanced"
    pixel_perfect: bool = False
    hr_option: Literal["Both", "Low res only", "High res only"] = "Both"

    @model_validator(mode="before")
    @classmethod
    def _legacy_fields(cls, data: Any) -> Any:
        if isinstance(data, dict):
            data = dict(data)
            # Older sd-webui-controlnet clients send the image as `input_image` and the mode as `guessmode`.
            if not data.get("image") and data.get("input_image"):
                data["image"] = data["input_image"]
            if "control_mode" not in data and data.get("guessmode"):
                data["control_mode"] = 2
            if isinstance(data.get("image"), dict):  # {"image": b64, "mask": b64} as the extension accepts
                pair = data["image"]
                data["image"], data["mask"] = pair.get("image"), data.get("mask") or pair.get("mask")
        return data

    @field_validator("control_mode", mode="before")
    @classmethod
    def _control_mode_index(cls, v: Any) -> Any:
        return CONTROL_MODES[v] if isinstance(v, int) and 0 <= v < len(CONTROL_MODES) else v

    @field_validator("resize_mode", mode="before")
    @classmethod
    def _resize_mode_index(cls, v: Any) -> Any:
        if isinstance(v, int) and 0 <= v < len(RESIZE_MODES):
            return RESIZE_MODES[v]
        # sd-webui-controlnet also accepts its enum's value names ("Inner Fit (Scale to Fit)", ...).
        aliases = {"Scale to Fit (Inner Fit)": "Crop and Resize", "Envelope (Outer Fit)": "Resize and Fill",
                   "Inner Fit (Scale to Fit)": "Crop and Resize", "Outer Fit (Shrink to Fit)": "Resize and Fill"}
        return aliases.get(v, v)

    @model_validator(mode="after")
    def _guidance_order(self) -> ControlNetUnit:
        if self.guidance_end < self.guidance_start:
            raise ValueError("guidance_end must not be before guidance_start")
        return self

    @property
    def active(self) -> bool:
        return self.enabled and self.model not in ("", "None", None)

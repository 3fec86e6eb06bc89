"""Typed generation requests shared by the UI, the REST API and the job queue.

Field names and defaults are A1111's (`/sdapi/v1/txt2img` in A1111 1.10), so an API request maps onto the
engine's request one to one, and infotext fields map by name. Range checks give messages a user can act on.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from modules.engine.controlnet.units import MAX_UNITS, ControlNetUnit
from modules.engine.image_input import ImageValue

MAX_SIDE = 8192  # a hard ceiling; the configurable size limit is applied on top by the API and the UI
MAX_SEED = 2**32 - 1
# Longer than any real prompt (about 8,000 CLIP tokens, 100+ chunks), short enough that parsing and encoding one
# stays cheap: a 100 KB paste used to run for seconds before the first step.
MAX_PROMPT_CHARS = 32_768


class GenerationRequest(BaseModel):
    """What txt2img and img2img share. -1 seeds mean random; an empty sampler means the default one."""

    # NaN slips through every ge/le check (all comparisons with it are false) and makes black images; the refusal
    # then says "a finite number" instead of a misleading "less than or equal to".
    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True, allow_inf_nan=False)

    prompt: str = ""
    negative_prompt: str = ""
    styles: list[str] = Field(default_factory=list)
    seed: int = Field(-1, ge=-1, le=MAX_SEED)
    subseed: int = Field(-1, ge=-1, le=MAX_SEED)
    subseed_strength: float = Field(0.0, ge=0.0, le=1.0)
    seed_resize_from_h: int = -1
    seed_resize_from_w: int = -1
    sampler_name: str = "DPM++ 2M"
    scheduler: str | None = None
    batch_size: int = Field(1, ge=1, le=64)
    n_iter: int = Field(1, ge=1, le=1000)
    steps: int = Field(20, ge=1, le=500)
    cfg_scale: float = Field(7.0, ge=0.0, le=100.0)
    width: int = Field(512, ge=8, le=MAX_SIDE)
    height: int = Field(512, ge=8, le=MAX_SIDE)
    clip_skip: int = Field(1, ge=1, le=12)
    restore_faces: bool = False
    tiling: bool = False
    do_not_save_samples: bool = False
    do_not_save_grid: bool = False
    eta: float | None = Field(None, ge=0.0)  # a noise amount: A1111's sliders start at 0
    override_settings: dict[str, Any] = Field(default_factory=dict)
    checkpoint: str | None = Field(None, description="checkpoint title or name; empty = the current one")
    vae: str | None = Field(None, description="'Automatic', 'None' or a VAE file name; empty = the setting")
    controlnet: list[ControlNetUnit] = Field(default_factory=list, description="ControlNet units (enabled ones run)")

    @field_validator("width", "height")
    @classmethod
    def _multiple_of_8(cls, v: int, info: Any) -> int:
        return _check_multiple_of_8(v, info.field_name)

    @field_validator("prompt", "negative_prompt")
    @classmethod
    def _prompt_text(cls, v: str) -> str:
        return _check_prompt_text(v)

    @field_validator("controlnet")
    @classmethod
    def _unit_count(cls, v: list[ControlNetUnit]) -> list[ControlNetUnit]:
        if sum(unit.enabled for unit in v) > MAX_UNITS:
            raise ValueError(f"at most {MAX_UNITS} ControlNet units can be enabled")
        return v

    @model_validator(mode="after")
    def _known_sampler(self) -> GenerationRequest:
        # Checked here (pure Python, no torch) so a bad name is refused before the job is queued.
        _check_sampler(self.sampler_name, self.scheduler)
        return self

    @property
    def total_images(self) -> int:
        return self.batch_size * self.n_iter


class Txt2ImgRequest(GenerationRequest):
    """txt2img: the shared fields plus hires fix."""

    enable_hr: bool = False
    hr_scale: float = Field(2.0, ge=1.0, le=8.0)
    hr_upscaler: str = "Latent"
    hr_second_pass_steps: int = Field(0, ge=0, le=500)
    hr_resize_x: int = Field(0, ge=0, le=MAX_SIDE)
    hr_resize_y: int = Field(0, ge=0, le=MAX_SIDE)
    hr_sampler_name: str | None = None
    hr_scheduler: str | None = None
    hr_prompt: str = ""
    hr_negative_prompt: str = ""
    denoising_strength: float = Field(0.7, ge=0.0, le=1.0)

    @field_validator("hr_resize_x", "hr_resize_y")
    @classmethod
    def _hr_multiple_of_8(cls, v: int, info: Any) -> int:
        return _check_multiple_of_8(v, info.field_name)

    @field_validator("hr_prompt", "hr_negative_prompt")
    @classmethod
    def _hr_prompt_text(cls, v: str) -> str:
        return _check_prompt_text(v)

    @model_validator(mode="after")
    def _known_hr_sampler(self) -> Txt2ImgRequest:
        if self.enable_hr and self.hr_sampler_name:
            _check_sampler(self.hr_sampler_name, self.hr_scheduler)
        return self

    @model_validator(mode="after")
    def _hires_target(self) -> Txt2ImgRequest:
        if self.enable_hr and (self.hr_resize_x or self.hr_resize_y):
            if self.hr_resize_x and self.hr_resize_x < self.width or self.hr_resize_y and self.hr_resize_y < self.height:
                raise ValueError("hires fix resize target must not be smaller than the first pass")
        return self


# A1111's img2img resize modes, by index.
RESIZE_MODES = ("Just resize", "Crop and resize", "Resize and fill", "Just resize (latent upscale)")
# A1111's "Masked content" choices, by index (`inpainting_fill`).
MASKED_CONTENT = ("fill", "original", "latent noise", "latent nothing")


class Img2ImgRequest(GenerationRequest):
    """img2img, sketch and inpaint (a mask turns it into inpainting). `width`/`height` are the output size the
    init image is resized to with `resize_mode`."""

    init_images: list[ImageValue] = Field(default_factory=list, description="base64 images (the first is used "
                                          "for every image of the batch unless there are batch_size of them)")
    mask: ImageValue = Field(None, description="base64 mask: white is repainted")
    resize_mode: int = Field(0, ge=0, le=3, description="; ".join(f"{i}: {m}" for i, m in enumerate(RESIZE_MODES)))
    denoising_strength: float = Field(0.75, ge=0.0, le=1.0)
    image_cfg_scale: float | None = Field(None, ge=0.0, le=100.0)
    mask_blur: int | None = Field(None, ge=0, le=256, description="sets mask_blur_x and mask_blur_y")
    mask_blur_x: int = Field(4, ge=0, le=256)
    mask_blur_y: int = Field(4, ge=0, le=256)
    mask_round: bool = True
    inpainting_fill: int = Field(0, ge=0, le=3, description="; ".join(f"{i}: {m}" for i, m in enumerate(MASKED_CONTENT)))
    inpaint_full_res: bool = Field(True, description="inpaint area: true = only masked, false = whole picture")
    inpaint_full_res_padding: int = Field(0, ge=0, le=1024)
    inpainting_mask_invert: int = Field(0, ge=0, le=1)
    initial_noise_multiplier: float | None = Field(None, ge=0.0, le=2.0)
    include_init_images: bool = False

    @model_validator(mode="after")
    def _one_blur(self) -> Img2ImgRequest:
        if self.mask_blur is not None:
            self.mask_blur_x = self.mask_blur_y = self.mask_blur
        return self

    @model_validator(mode="after")
    def _has_image(self) -> Img2ImgRequest:
        if not self.init_images:
            raise ValueError("init_images: img2img needs an image")
        return self


class Img2ImgBatchRequest(Img2ImgRequest):
    """img2img over a folder on the server: every image in `input_dir`, with the mask of the same name (any
    extension) from `mask_dir` when given, saved to `output_dir` (or the usual img2img folder when empty)."""

    init_images: list[ImageValue] = Field(default_factory=list)
    input_dir: str
    output_dir: str = ""
    mask_dir: str = ""

    @model_validator(mode="after")
    def _has_image(self) -> Img2ImgBatchRequest:
        if not self.input_dir.strip():
            raise ValueError("input_dir: choose the folder of images to process")
        return self


def _check_multiple_of_8(v: int, name: str) -> int:
    if v % 8:
        raise ValueError(f"{name} must be a multiple of 8 (got {v}; try {max(8, v // 8 * 8)})")
    return v


def _check_prompt_text(v: str) -> str:
    if len(v) > MAX_PROMPT_CHARS:
        raise ValueError(f"is {len(v)} characters long; the limit is {MAX_PROMPT_CHARS}")
    if "\x00" in v:
        raise ValueError("must not contain NUL characters")
    try:
        v.encode("utf-8")
    except UnicodeEncodeError as e:
        # JSON's "\ud800" escape gives a half of a UTF-16 pair that no tokenizer or file can hold (it was a 500).
        raise ValueError(f"is not valid Unicode text: character {e.start + 1} is a lone surrogate "
                         f"({v[e.start]!r}); send the text as UTF-8") from None
    return v


def _check_sampler(name: str, scheduler: str | None) -> None:
    from modules.engine.samplers import resolve_sampler
    from modules.errors import UserError

    try:
        resolve_sampler(name, scheduler)
    except UserError as e:
        raise ValueError(e.message) from None

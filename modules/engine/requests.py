"""Typed generation requests shared by the UI, the REST API and the job queue.

Field names and defaults are A1111's (`/sdapi/v1/txt2img` in A1111 1.10), so an API request maps onto the
engine's request one to one, and infotext fields map by name. Range checks give messages a user can act on.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

MAX_SIDE = 8192  # a hard ceiling; the configurable size limit is applied on top by the API and the UI
MAX_SEED = 2**32 - 1


class Txt2ImgRequest(BaseModel):
    """What txt2img needs. -1 seeds mean random; an empty sampler means the default one."""

    model_config = ConfigDict(extra="forbid")

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
    eta: float | None = None
    override_settings: dict[str, Any] = Field(default_factory=dict)
    checkpoint: str | None = Field(None, description="checkpoint title or name; empty = the current one")
    vae: str | None = Field(None, description="'Automatic', 'None' or a VAE file name; empty = the setting")
    # Hires fix
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

    @field_validator("width", "height", "hr_resize_x", "hr_resize_y")
    @classmethod
    def _multiple_of_8(cls, v: int, info: Any) -> int:
        if v % 8:
            raise ValueError(f"{info.field_name} must be a multiple of 8 (got {v}; try {max(8, v // 8 * 8)})")
        return v

    @field_validator("prompt", "negative_prompt", "hr_prompt", "hr_negative_prompt")
    @classmethod
    def _no_nul(cls, v: str) -> str:
        if "\x00" in v:
            raise ValueError("must not contain NUL characters")
        return v

    @model_validator(mode="after")
    def _known_sampler(self) -> Txt2ImgRequest:
        # Checked here (pure Python, no torch) so a bad name is refused before the job is queued.
        from modules.engine.samplers import resolve_sampler
        from modules.errors import UserError

        try:
            resolve_sampler(self.sampler_name, self.scheduler)
            if self.enable_hr and self.hr_sampler_name:
                resolve_sampler(self.hr_sampler_name, self.hr_scheduler)
        except UserError as e:
            raise ValueError(e.message) from None
        return self

    @model_validator(mode="after")
    def _hires_target(self) -> Txt2ImgRequest:
        if self.enable_hr and (self.hr_resize_x or self.hr_resize_y):
            if self.hr_resize_x and self.hr_resize_x < self.width or self.hr_resize_y and self.hr_resize_y < self.height:
                raise ValueError("hires fix resize target must not be smaller than the first pass")
        return self

    @property
    def total_images(self) -> int:
        return self.batch_size * self.n_iter

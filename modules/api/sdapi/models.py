"""Request and response bodies of /sdapi/v1, with A1111 1.10's field names and defaults.

`Txt2ImgApiRequest` and `Img2ImgApiRequest` list every field A1111's generated
`StableDiffusion{Txt2Img,Img2Img}ProcessingAPI` models have, with the same defaults (so the API default sampler is
"Euler" through `sampler_index`, steps 50, CFG 7, 512x512). Like A1111's pydantic v1 models they ignore keys they
do not know. Range checks are not repeated here: the engine's requests own them, and the adapter turns their
messages into 400 answers.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class GenerationApiRequest(BaseModel):
    """The fields A1111's txt2img and img2img API models share."""

    model_config = ConfigDict(extra="ignore")

    prompt: str = ""
    negative_prompt: str = ""
    styles: list[str] | None = None
    seed: int = -1
    subseed: int = -1
    subseed_strength: float = 0.0
    seed_resize_from_h: int = -1
    seed_resize_from_w: int = -1
    sampler_name: str | None = None
    scheduler: str | None = None
    batch_size: int = 1
    n_iter: int = 1
    steps: int = 50
    cfg_scale: float = 7.0
    width: int = 512
    height: int = 512
    restore_faces: bool | None = None
    tiling: bool | None = None
    do_not_save_samples: bool = False
    do_not_save_grid: bool = False
    eta: float | None = None
    denoising_strength: float | None = 0.75
    s_min_uncond: float | None = None
    s_churn: float | None = None
    s_tmax: float | None = None
    s_tmin: float | None = None
    s_noise: float | None = None
    override_settings: dict[str, Any] | None = None
    override_settings_restore_afterwards: bool = True
    refiner_checkpoint: str | None = None
    refiner_switch_at: float | None = None
    disable_extra_networks: bool = False
    firstpass_image: str | None = None
    comments: dict[str, Any] | None = None
    force_task_id: str | None = None
    # API-only fields (A1111 adds them to the generated model).
    sampler_index: str = "Euler"
    script_name: str | None = None
    script_args: list[Any] = Field(default_factory=list)
    send_images: bool = True
    save_images: bool = False
    alwayson_scripts: dict[str, Any] = Field(default_factory=dict)
    infotext: str | None = None



class Txt2ImgApiRequest(GenerationApiRequest):
    """POST /sdapi/v1/txt2img (A1111 1.10 `StableDiffusionTxt2ImgProcessingAPI`)."""

    enable_hr: bool = False
    firstphase_width: int = 0
    firstphase_height: int = 0
    hr_scale: float = 2.0
    hr_upscaler: str | None = None
    hr_second_pass_steps: int = 0
    hr_resize_x: int = 0
    hr_resize_y: int = 0
    hr_checkpoint_name: str | None = None
    hr_sampler_name: str | None = None
    hr_scheduler: str | None = None
    hr_prompt: str = ""
    hr_negative_prompt: str = ""


class Img2ImgApiRequest(GenerationApiRequest):
    """POST /sdapi/v1/img2img (A1111 1.10 `StableDiffusionImg2ImgProcessingAPI`)."""

    init_images: list[str] | None = Field(default=None, description="base64 images (or http(s) URLs when the "
                                          "'api_enable_requests' setting allows them)")
    resize_mode: int = 0
    image_cfg_scale: float | None = None
    mask: str | None = Field(default=None, description="base64 mask (or URL, as init_images): white is repainted")
    mask_blur_x: int = 4
    mask_blur_y: int = 4
    mask_blur: int | None = None
    mask_round: bool = True
    inpainting_fill: int = 0
    inpaint_full_res: bool = True
    inpaint_full_res_padding: int = 0
    inpainting_mask_invert: int = 0
    initial_noise_multiplier: float | None = None
    latent_mask: str | None = None
    include_init_images: bool = False

class TextToImageResponse(BaseModel):
    """A1111's `TextToImageResponse`: base64 images, the echoed request, and `Processed.js()` as a JSON string."""

    images: list[str] | None = Field(default=None, description="base64 images, infotext embedded")
    parameters: dict[str, Any]
    info: str


class ImageToImageResponse(TextToImageResponse):
    """A1111's `ImageToImageResponse` (the same shape)."""


class PngInfoRequest(BaseModel):
    image: str = Field(description="base64 image, optionally as a data: URL")


class PngInfoResponse(BaseModel):
    info: str = Field(description="the infotext, empty when the image has none")
    items: dict[str, Any] = Field(default_factory=dict, description="the image's other text items")
    parameters: dict[str, Any] = Field(default_factory=dict, description="the infotext, parsed")


class ProgressState(BaseModel):
    """A1111's `shared.state.dict()`."""

    skipped: bool = False
    interrupted: bool = False
    stopping_generation: bool = False
    job: str = ""
    job_count: int = 0
    job_timestamp: str = "0"
    job_no: int = 0
    sampling_step: int = 0
    sampling_steps: int = 0


class ProgressResponse(BaseModel):
    progress: float = Field(description="0..1 for the running job")
    eta_relative: float = Field(description="seconds left, estimated")
    state: ProgressState
    current_image: str | None = Field(default=None, description="base64 PNG of the live preview")
    textinfo: str | None = None


class SDModelItem(BaseModel):
    title: str
    model_name: str
    hash: str | None = None
    sha256: str | None = None
    filename: str
    config: str | None = None


class SDVaeItem(BaseModel):
    model_name: str
    filename: str


class UpscalerItem(BaseModel):
    name: str
    model_name: str | None = None
    model_path: str | None = None
    model_url: str | None = None
    scale: float | None = None


class LatentUpscalerModeItem(BaseModel):
    name: str


class PromptStyleItem(BaseModel):
    name: str
    prompt: str | None = None
    negative_prompt: str | None = None


class LoraItem(BaseModel):
    """The Lora extension's `/sdapi/v1/loras` entry."""

    name: str
    alias: str
    path: str
    metadata: dict[str, Any] = Field(default_factory=dict)


class ExtensionItem(BaseModel):
    name: str
    remote: str | None = None
    branch: str | None = None
    commit_hash: str | None = None
    commit_date: int | None = None
    version: str | None = None
    enabled: bool


class ScriptsList(BaseModel):
    txt2img: list[str] = Field(default_factory=list)
    img2img: list[str] = Field(default_factory=list)

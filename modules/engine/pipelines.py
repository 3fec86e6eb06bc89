"""The diffusers pipeline for a kind of work, built over a loaded checkpoint's components (no weights copied).

txt2img, img2img and inpaint each have a diffusers pipeline class, and a ControlNet variant of each; SD1/SD2 and
SDXL have their own classes. Inpaint pipelines take both 9-channel inpainting UNets and normal 4-channel ones
(those blend the original latents back outside the mask at every step).
"""

from __future__ import annotations

from typing import Any, Literal

Kind = Literal["txt2img", "img2img", "inpaint"]

# (kind, has controlnet, sdxl) -> diffusers class name
_CLASSES: dict[tuple[str, bool, bool], str] = {
    ("txt2img", False, False): "StableDiffusionPipeline",
    ("img2img", False, False): "StableDiffusionImg2ImgPipeline",
    ("inpaint", False, False): "StableDiffusionInpaintPipeline",
    ("txt2img", True, False): "StableDiffusionControlNetPipeline",
    ("img2img", True, False): "StableDiffusionControlNetImg2ImgPipeline",
    ("inpaint", True, False): "StableDiffusionControlNetInpaintPipeline",
    ("txt2img", False, True): "StableDiffusionXLPipeline",
    ("img2img", False, True): "StableDiffusionXLImg2ImgPipeline",
    ("inpaint", False, True): "StableDiffusionXLInpaintPipeline",
    ("txt2img", True, True): "StableDiffusionXLControlNetPipeline",
    ("img2img", True, True): "StableDiffusionXLControlNetImg2ImgPipeline",
    ("inpaint", True, True): "StableDiffusionXLControlNetInpaintPipeline",
}


def is_sdxl(pipe: Any) -> bool:
    return getattr(pipe, "text_encoder_2", None) is not None


def takes_mask(pipe: Any) -> bool:
    """An inpainting checkpoint: its UNet takes 9 channels (latents, mask, masked-image latents)."""
    return pipe.unet.config.in_channels == 9


def whole_mask(batch: int, width: int, height: int) -> tuple[list[Any], list[Any]]:
    """What an inpainting checkpoint is given when nothing is kept (txt2img, hires fix): flat grey as the
    image and everything masked, which is how A1111 conditions those models outside inpainting."""
    from PIL import Image

    return ([Image.new("RGB", (width, height), (127, 127, 127))] * batch,
            [Image.new("L", (width, height), 255)] * batch)


def grey_latents(pipe: Any, batch: int, width: int, height: int) -> Any:
    """The masked-image latents of `whole_mask`, for pipelines that get latents rather than pixels as `image`."""
    import torch

    from modules.engine.vae import encode

    grey = torch.zeros(1, 3, height, width)  # 0 in [-1, 1]: 50% grey
    return encode(pipe, grey, pipe.vae.device).expand(batch, -1, -1, -1)


def pipeline_for(pipe: Any, kind: Kind, controlnet: Any = None) -> Any:
    """A pipeline of `kind` sharing `pipe`'s modules; `controlnet` is a ControlNetModel or MultiControlNetModel."""
    import diffusers

    cls = getattr(diffusers, _CLASSES[(kind, controlnet is not None, is_sdxl(pipe))])
    if type(pipe) is cls and controlnet is None:
        return pipe
    expected, optional = cls._get_signature_keys(cls)
    components = {k: v for k, v in pipe.components.items() if k in expected or k in optional}
    if controlnet is not None:
        components["controlnet"] = controlnet
    for name in expected:
        components.setdefault(name, None)
    extra = {"requires_safety_checker": False} if "requires_safety_checker" in _init_params(cls) else {}
    built = cls(**components, **extra)
    built.set_progress_bar_config(disable=True)
    return built


def _init_params(cls: type) -> set[str]:
    import inspect

    return set(inspect.signature(cls.__init__).parameters)

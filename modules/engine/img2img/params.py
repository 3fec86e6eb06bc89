"""The infotext parameters of an img2img image, with A1111's keys and values (`processing.py`, img2img init)."""

from __future__ import annotations

from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from modules.engine.records import VERSION, base_params
from modules.engine.requests import Img2ImgRequest
from modules.engine.seeds import ImageSeeds

if TYPE_CHECKING:
    from modules.engine.img2img.plan import Plan
    from modules.engine.model_cache import LoadedCheckpoint

# A1111 writes "Masked content" for these choices only ("original" leaves the key out).
_MASKED_CONTENT = MappingProxyType({0: "fill", 2: "latent noise", 3: "latent nothing"})


def img2img_params(request: Img2ImgRequest, plan: Plan, model: LoadedCheckpoint, s: ImageSeeds,
                   masked: bool) -> dict[str, Any]:
    params = base_params(request, plan.choice, model, s, request.denoising_strength)
    if masked:
        blurred = request.mask_blur_x > 0 or request.mask_blur_y > 0
        same = request.mask_blur_x == request.mask_blur_y
        only_masked = request.inpaint_full_res
        params.update({
            # A1111 writes one "Mask blur", and nothing when x and y differ.
            "Mask blur": request.mask_blur_x if blurred and same else None,
            "Inpaint area": "Only masked" if only_masked else None,
            "Masked area padding": request.inpaint_full_res_padding if only_masked else None,
            "Masked content": _MASKED_CONTENT.get(request.inpainting_fill),
            "Mask mode": "Inpaint not masked" if request.inpainting_mask_invert else None,
        })
    params["Noise multiplier"] = plan.noise_multiplier if plan.noise_multiplier != 1.0 else None
    params["Version"] = VERSION
    return params

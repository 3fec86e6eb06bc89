"""POST /sdapi/v1/img2img: the txt2img steps (infotext, 501s, overrides, one queue, A1111's answer) plus images.

`init_images` and `mask` are base64 (or `data:` URLs); http(s) URLs are fetched only when the
`api_enable_requests` setting allows it, and never from the server's own network (see modules.api.fetch_image).
A `mask` makes it inpainting, as in A1111. `include_init_images` appends the init images to the answer's images.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from modules.api.fetch_image import fetch_image
from modules.api.images import decode_b64_image, encode_b64
from modules.api.sdapi.generate import apply_infotext, common_fields, refuse_unsupported, respond, validated
from modules.api.sdapi.models import ImageToImageResponse, Img2ImgApiRequest
from modules.api.sdapi.overrides import OverrideGate, plan_overrides
from modules.engine.requests import Img2ImgRequest
from modules.errors import UserError
from modules.services import Services

IMAGE_FIELDS = ("resize_mode", "image_cfg_scale", "mask_blur_x", "mask_blur_y", "mask_blur", "mask_round",
                "inpainting_fill", "inpaint_full_res", "inpaint_full_res_padding", "inpainting_mask_invert",
                "initial_noise_multiplier", "include_init_images")


def router(services: Services, gate: OverrideGate) -> APIRouter:
    r = APIRouter()

    @r.post("/img2img", response_model=ImageToImageResponse)
    def img2img(req: Img2ImgApiRequest) -> dict[str, Any]:
        """A1111's img2img (inpainting when `mask` is given): an `img2img` job on the shared queue."""
        req, from_infotext = apply_infotext(req, "img2img")
        refuse_unsupported(req, [(bool(req.latent_mask), "a separate latent_mask")])
        if not req.init_images:
            raise UserError("init_images: img2img needs at least one image", field="init_images")
        plan = plan_overrides(req.override_settings or {}, services.settings, req.override_settings_restore_afterwards,
                              from_infotext)
        fields = common_fields(req) | {name: getattr(req, name) for name in IMAGE_FIELDS}
        fields["init_images"] = [open_image(services, text, f"init_images[{i}]")
                                 for i, text in enumerate(req.init_images)]
        fields["mask"] = open_image(services, req.mask, "mask") if req.mask else None
        request = validated(services, Img2ImgRequest, req, fields, plan.request_fields)
        job = gate.run("img2img", request, plan.settings, req.override_settings_restore_afterwards)
        answer = respond(services, req, job)
        if req.include_init_images and req.send_images and answer["images"]:
            answer["images"] += [encode_b64(image, None, services.settings.get) for image in request.init_images]
        return answer

    return r


def open_image(services: Services, text: str, field: str) -> Any:
    """A request image from base64, or from a URL when the setting allows fetching."""
    stripped = text.strip()
    if not stripped.startswith(("http://", "https://")):
        return decode_b64_image(stripped, field)
    if not services.settings.get("api_enable_requests"):
        raise UserError(f"{field}: image URLs are off; send the image as base64, or turn on the "
                        "'api_enable_requests' setting", field=field)
    return fetch_image(stripped, field, max_bytes=int(services.settings.get("api_max_request_mb")) * 1024 * 1024)

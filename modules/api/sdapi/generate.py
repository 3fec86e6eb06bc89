"""POST /sdapi/v1/txt2img, the steps img2img shares with it, and the routes that answer 501 until their features land.

txt2img, in order: fill unset fields from `infotext`; refuse what we cannot do (501) or do not know (422 for an
unknown always-on script, as A1111); split `override_settings`; build the engine's `Txt2ImgRequest` (its range
checks become 400s); submit a `txt2img` job to the one queue the UI uses and wait for it in a worker thread;
answer A1111's `{images, parameters, info}`. A client that disconnects does not stop the job: it finishes, and
saves its images when `save_images` asked for that.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from types import MappingProxyType
from typing import Any, Literal, TypeVar

from fastapi import APIRouter, Body
from pydantic import ValidationError

from modules.api.images import encode_b64
from modules.api.sdapi.errors import JobFailed, not_available
from modules.api.sdapi.models import GenerationApiRequest, TextToImageResponse, Txt2ImgApiRequest
from modules.api.sdapi.overrides import OverrideGate, plan_overrides
from modules.api.sdapi.scripts import apply_scripts
from modules.engine import hires
from modules.engine.infotext import infotext_to_request_fields, parse_infotext
from modules.engine.requests import GenerationRequest, Txt2ImgRequest
from modules.engine.results import GenerationResult
from modules.engine.samplers import resolve_sampler
from modules.errors import UserError, from_validation
from modules.jobs import Job, JobState
from modules.services import Services

CHECKPOINTS = "Stable-diffusion"
ApiRequest = TypeVar("ApiRequest", bound=GenerationApiRequest)
RequestT = TypeVar("RequestT", bound=GenerationRequest)
_SAME = frozenset({"", "Use same sampler", "Use same scheduler", "Use same checkpoint"})
# Generation routes A1111 has whose features have not landed here yet: path -> what the 501 names.
NOT_YET: MappingProxyType[str, str] = MappingProxyType({
    "/interrogate": "interrogate (CLIP/DeepDanbooru captions)",
    "/create/embedding": "creating embeddings",
    "/create/hypernetwork": "creating hypernetworks",
    "/train/embedding": "training embeddings",
    "/train/hypernetwork": "training hypernetworks",
})


def router(services: Services, gate: OverrideGate) -> APIRouter:
    r = APIRouter()

    @r.post("/txt2img", response_model=TextToImageResponse)
    def txt2img(req: Txt2ImgApiRequest) -> dict[str, Any]:
        """A1111's txt2img: runs as a `txt2img` job on the shared queue; sync, so it waits in a worker thread."""
        req, from_infotext = apply_infotext(req)
        refuse_unsupported(req, [
            (bool(req.enable_hr and req.hr_checkpoint_name and req.hr_checkpoint_name not in _SAME),
             "a separate hires fix checkpoint (hr_checkpoint_name)"),
            (bool(req.firstpass_image), "firstpass_image"),
        ])
        overrides = req.override_settings or {}
        plan = plan_overrides(overrides, services.settings, req.override_settings_restore_afterwards, from_infotext)
        request = engine_request(services, req, plan.request_fields)
        job = gate.run("txt2img", request, plan.settings, req.override_settings_restore_afterwards)
        return respond(services, req, job)

    for path, feature in NOT_YET.items():
        r.add_api_route(path, _not_yet(feature), methods=["POST"], summary=f"{feature}: not available yet (501)")
    return r


def _not_yet(feature: str) -> Callable[..., None]:
    def endpoint(body: Any = Body(default=None)) -> None:  # noqa: B008 - FastAPI's way to accept any body
        raise not_available(feature)

    endpoint.__doc__ = f"Answers 501: {feature} is not available yet."
    return endpoint


def apply_infotext(req: ApiRequest, mode: Literal["txt2img", "img2img"] = "txt2img") -> tuple[ApiRequest, set[str]]:
    """A1111's `apply_infotext`: fields the request did not set come from `infotext`, and its settings join
    `override_settings` unless the request set them. Returns the request and the override keys it added."""
    if not req.infotext:
        return req, set()
    fields = infotext_to_request_fields(parse_infotext(req.infotext), mode)
    from_text: dict[str, Any] = fields.pop("override_settings", {})
    own = dict(req.override_settings or {})
    update = {k: v for k, v in fields.items() if k in type(req).model_fields and k not in req.model_fields_set}
    update["override_settings"] = {**from_text, **own}
    return req.model_copy(update=update), set(from_text) - set(own)


def refuse_unsupported(req: GenerationApiRequest, checks: list[tuple[bool, str]] | None = None) -> None:
    """501 for what A1111 accepts and we cannot do yet (never silently ignored); `checks` adds a route's own."""
    if req.script_name:
        raise not_available(f"the script '{req.script_name}' (selectable scripts)")
    checks = [
        (bool(req.tiling), "tiling"),
        (bool(req.refiner_checkpoint) and req.refiner_checkpoint not in ("None", ""), "the refiner"),
        (req.disable_extra_networks, "disable_extra_networks"),
        *(checks or []),
    ]
    for refused, feature in checks:
        if refused:
            raise not_available(feature)


def engine_request(services: Services, req: Txt2ImgApiRequest, mapped: dict[str, Any]) -> Txt2ImgRequest:
    """The engine's request for `req`; every mistake is a 400 that names the field."""
    hr_sampler = req.hr_sampler_name if req.hr_sampler_name not in _SAME else None
    hr_scheduler = req.hr_scheduler if req.hr_scheduler not in _SAME else None
    hr_upscaler = req.hr_upscaler or "Latent"
    if req.enable_hr:
        hires.check_upscaler(hr_upscaler, services.engine.upscalers.model_names())
    fields = common_fields(req) | {
        "enable_hr": req.enable_hr, "hr_scale": req.hr_scale, "hr_upscaler": hr_upscaler,
        "hr_second_pass_steps": req.hr_second_pass_steps, "hr_resize_x": req.hr_resize_x,
        "hr_resize_y": req.hr_resize_y, "hr_sampler_name": hr_sampler or None, "hr_scheduler": hr_scheduler or None,
        "hr_prompt": req.hr_prompt, "hr_negative_prompt": req.hr_negative_prompt,
    }
    return validated(services, Txt2ImgRequest, req, fields, mapped)


def common_fields(req: GenerationApiRequest) -> dict[str, Any]:
    """The engine fields txt2img and img2img share, from A1111's API names."""
    choice = resolve_sampler(req.sampler_name or req.sampler_index, req.scheduler)
    fields: dict[str, Any] = {
        "prompt": req.prompt, "negative_prompt": req.negative_prompt, "styles": list(req.styles or []),
        "seed": req.seed, "subseed": req.subseed, "subseed_strength": req.subseed_strength,
        "seed_resize_from_h": req.seed_resize_from_h, "seed_resize_from_w": req.seed_resize_from_w,
        "sampler_name": choice.sampler, "scheduler": choice.scheduler, "batch_size": req.batch_size,
        "n_iter": req.n_iter, "steps": req.steps, "cfg_scale": req.cfg_scale, "width": req.width,
        "height": req.height, "eta": req.eta, "override_settings": dict(req.override_settings or {}),
        "restore_faces": bool(req.restore_faces),
        # A1111's API saves nothing unless save_images, whatever do_not_save_* say.
        "do_not_save_samples": not req.save_images, "do_not_save_grid": not req.save_images,
    }
    if req.denoising_strength is not None:
        fields["denoising_strength"] = req.denoising_strength
    return fields


def validated(services: Services, model: type[RequestT], req: GenerationApiRequest, fields: dict[str, Any],
              mapped: dict[str, Any]) -> RequestT:
    """`fields` plus the settings mapped onto request fields and the always-on scripts' changes, validated
    into the engine's `model`; unknown models are refused before anything is queued."""
    fields.update(mapped)
    if req.alwayson_scripts:
        apply_scripts(services, req.alwayson_scripts, fields, model)
    _check_models(services, fields)
    try:
        return model.model_validate(fields)
    except ValidationError as e:
        raise from_validation(e) from None


def _check_models(services: Services, fields: dict[str, Any]) -> None:
    """Refuse an unknown checkpoint or VAE before anything is queued (the job would fail the same way)."""
    registry = services.models
    checkpoint = fields.get("checkpoint")
    if isinstance(checkpoint, str) and checkpoint and registry.find(CHECKPOINTS, checkpoint) is None:
        names = ", ".join(m.relative_filename for m in registry.list(CHECKPOINTS)[:30]) or "none"
        raise UserError(f"unknown checkpoint '{checkpoint}'; available: {names}", field="sd_model_checkpoint")
    vae = fields.get("vae")
    if isinstance(vae, str) and vae not in ("", "Automatic", "None") and \
            registry.find("VAE", vae, compute_hashes=False) is None:
        names = ", ".join(m.relative_filename for m in registry.list("VAE")[:30]) or "none"
        raise UserError(f"unknown VAE '{vae}'; use Automatic, None or one of: {names}", field="sd_vae")


def respond(services: Services, req: GenerationApiRequest, job: Job) -> dict[str, Any]:
    """A1111's `{images, parameters, info}` for a finished job; a failed job raises its own status."""
    if job.state is JobState.FAILED:
        raise JobFailed(job)
    result: GenerationResult | None = job.result if job.state is JobState.DONE else None
    info: dict[str, Any] = dict(result.info) if result is not None else {}
    if job.notes:
        info["notes"] = list(job.notes)
    if job.state is JobState.CANCELLED:
        info.setdefault("notes", []).append("the job was cancelled before it finished")
    images: list[str] = []
    if result is not None:
        generated = ([result.grid] if result.grid is not None else []) + result.images
        if result.grid is not None:
            # A1111 returns the grid first (opts.return_grid), with its infotext first in `infotexts`.
            info["index_of_first_image"] = 1
            info["infotexts"] = [result.grid.infotext, *info.get("infotexts", [])]
        if req.send_images:
            images = [encode_b64(g.image, g.infotext, services.settings.get) for g in generated]
    return {"images": images, "parameters": req.model_dump(), "info": json.dumps(info, default=str)}

"""/sdapi/v1: AUTOMATIC1111's REST API (1.10 shapes), so A1111 clients work unchanged.

Served only with `--api` or `--nowebui`, as in A1111. The routes are thin adapters: they validate, call the
services (job queue, registry, settings, engine objects) and shape A1111's answer; generation always goes
through the job queue the UI uses. By topic:

- `generate`: txt2img (and 501s for interrogate, training until those land)
- `extras`: extra-single-image and extra-batch-images (upscaling, face restoration)
- `img2img`: img2img and inpainting, with init images as base64 or (opt-in) URLs
- `info`: GET lists (samplers, schedulers, upscalers, models, VAEs, LoRAs, embeddings, styles, scripts)
- `control`: progress, interrupt, skip, options, refreshes, unload/reload
- `system`: png-info, memory, cmd-flags, extensions
- `overrides`: `override_settings`, applied for one job without leaking into others
"""

from __future__ import annotations

from fastapi import APIRouter

from modules.api.sdapi import control, extras, generate, img2img, info, system
from modules.api.sdapi.overrides import OverrideGate
from modules.services import Services

PREFIX = "/sdapi/v1"


def router(services: Services) -> APIRouter:
    """All /sdapi/v1 routes, bound to `services`."""
    gate = OverrideGate(services.settings, services.jobs)
    r = APIRouter(prefix=PREFIX, tags=["sdapi"])
    r.include_router(generate.router(services, gate))
    r.include_router(img2img.router(services, gate))
    r.include_router(extras.router(services))
    r.include_router(info.router(services))
    r.include_router(control.router(services, gate))
    r.include_router(system.router(services))
    return r

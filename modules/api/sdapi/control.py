"""Controlling the app through /sdapi/v1: progress, interrupt, skip, options, refreshes, unload/reload.

Progress, interrupt and skip are `async` and never block, so they answer at once even while every worker thread
waits on a generation. They act on the job the queue is running, whoever submitted it (UI or API), as A1111's
single `shared.state` does.
"""

from __future__ import annotations

import time
from typing import Any

from fastapi import APIRouter, Body

from modules.api.images import encode_png_b64
from modules.api.sdapi.errors import Busy
from modules.api.sdapi.info import CHECKPOINTS, checkpoint_title
from modules.api.sdapi.models import ProgressResponse, ProgressState
from modules.api.sdapi.overrides import OverrideGate
from modules.errors import UserError
from modules.jobs import Job
from modules.services import Services


def progress_of(job: Job | None, pending: int, with_image: bool) -> ProgressResponse:
    """A1111's progress body for the running job (or the idle body when none runs)."""
    if job is None:
        return ProgressResponse(progress=0.0, eta_relative=0.0, state=ProgressState(job_count=pending), textinfo=None)
    p = job.progress
    started = job.started_at or job.created_at
    state = ProgressState(
        skipped=job.skip_requested,
        interrupted=job.interrupt_requested,
        job=job.type,
        job_count=max(pending, 1),
        job_timestamp=time.strftime("%Y%m%d%H%M%S", time.localtime(started)),
        job_no=0,
        sampling_step=p.step,
        sampling_steps=p.total,
    )
    image = encode_png_b64(p.preview) if with_image and p.preview is not None else None
    return ProgressResponse(progress=round(p.fraction, 4), eta_relative=p.eta_s or 0.0, state=state,
                            current_image=image, textinfo=p.text or None)


def effective_checkpoint(services: Services) -> str:
    """The A1111 title of the checkpoint a request that names none uses, by the engine's rule: --ckpt or the
    setting when given (as given, if no file matches it any more), else the first in the folder; "" if none."""
    registry = services.models
    wanted = services.args.ckpt or services.settings.get("sd_model_checkpoint")
    if wanted:
        model = registry.find(CHECKPOINTS, wanted, compute_hashes=False)
        return checkpoint_title(registry, model) if model is not None else wanted
    files = registry.list(CHECKPOINTS)
    return checkpoint_title(registry, files[0]) if files else ""


def router(services: Services, gate: OverrideGate) -> APIRouter:
    r = APIRouter()
    jobs, settings, registry, engine = services.jobs, services.settings, services.models, services.engine

    @r.get("/progress", response_model=ProgressResponse)
    async def progress(skip_current_image: bool = False) -> ProgressResponse:
        """Progress of the running job; `current_image` is the live preview unless `skip_current_image`."""
        return progress_of(jobs.current(), jobs.pending_count(), not skip_current_image)

    @r.post("/interrupt")
    async def interrupt() -> dict[str, Any]:
        """Stop the running job early; it answers with the images finished so far."""
        jobs.interrupt()
        return {}

    @r.post("/skip")
    async def skip() -> dict[str, Any]:
        """Drop the image the running job is making and go on with the next."""
        jobs.skip()
        return {}

    @r.get("/options")
    def get_options() -> dict[str, Any]:
        """Every setting (secret ones left out), `sd_model_checkpoint` as the title of the checkpoint in use."""
        values = settings.values()
        values["sd_model_checkpoint"] = effective_checkpoint(services)
        return values

    @r.post("/options")
    def set_options(req: dict[str, Any] = Body(...)) -> None:  # noqa: B008 - FastAPI body declaration
        """Validate every key and value first, then save them all (or nothing). Unknown keys are a 400."""
        valid = {o.key for s in settings.sections() for o in s.options}
        unknown = sorted(k for k in req if k not in valid)
        if unknown:
            raise UserError(f"unknown option(s): {', '.join(unknown)}; valid options: {', '.join(sorted(valid))}",
                            field=unknown[0])
        changes = dict(req)
        if "disabled_extensions" in changes:
            services.access.check_extension_management("Enabling and disabling extensions")
        checkpoint = changes.get("sd_model_checkpoint")
        if isinstance(checkpoint, str) and checkpoint:
            model = registry.find(CHECKPOINTS, checkpoint)
            if model is None:
                raise UserError(f"model {checkpoint!r} not found", field="sd_model_checkpoint")
            changes["sd_model_checkpoint"] = checkpoint_title(registry, model)
        with gate.exclusive():  # never save while a request's temporary overrides are in force
            settings.update(changes)

    @r.post("/refresh-checkpoints")
    def refresh_checkpoints() -> None:
        registry.refresh(CHECKPOINTS)

    @r.post("/refresh-vae")
    def refresh_vae() -> None:
        registry.refresh("VAE")

    @r.post("/refresh-loras")
    def refresh_loras() -> None:
        registry.refresh("Lora")

    @r.post("/refresh-embeddings")
    def refresh_embeddings() -> None:
        registry.refresh("embeddings")
        current = engine.checkpoints.current
        if current is not None:
            engine.embeddings.load_for(current.pipe)

    @r.post("/unload-checkpoint")
    def unload_checkpoint() -> dict[str, Any]:
        """Free the loaded checkpoint and the ControlNets used with it (RAM and VRAM); the next job loads what it
        needs again."""
        _refuse_while_running(services)
        engine.checkpoints.unload()
        engine.controlnets.unload()
        return {}

    @r.post("/reload-checkpoint")
    def reload_checkpoint() -> dict[str, Any]:
        """Load the checkpoint the settings name (the next job would load it anyway)."""
        _refuse_while_running(services)
        engine.checkpoints.get(None)
        return {}

    return r


def _refuse_while_running(services: Services) -> None:
    if services.jobs.current() is not None:
        raise Busy("a generation job is running; interrupt it or try again when it has finished")

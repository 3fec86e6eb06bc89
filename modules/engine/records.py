"""What a finished image records, for every generation mode: its infotext parameters, its file name, the grid,
and A1111's `info` block for the API."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from modules.engine.outputs import NamingContext
from modules.engine.results import GeneratedImage, GenerationResult
from modules.engine.seeds import ImageSeeds

if TYPE_CHECKING:
    from modules.engine.engine import Engine
    from modules.engine.model_cache import LoadedCheckpoint
    from modules.engine.requests import GenerationRequest

VERSION = "SD Studio 0.1.0"


def base_params(request: GenerationRequest, choice: Any, model: LoadedCheckpoint, s: ImageSeeds,
                denoising: float | None = None) -> dict[str, Any]:
    """The infotext keys every mode writes; the mode adds its own (hires, mask, ControlNet) after these."""
    return {
        "Steps": request.steps,
        "Sampler": choice.sampler,
        "Schedule type": choice.effective_scheduler,
        "CFG scale": request.cfg_scale,
        "Seed": s.seed,
        "Size": f"{request.width}x{request.height}",
        "Model hash": model.shorthash,
        "Model": model.name,
        "VAE hash": model.vae_hash,
        "VAE": model.vae_name,
        "Variation seed": s.subseed if s.subseed_strength > 0 else None,
        "Variation seed strength": s.subseed_strength if s.subseed_strength > 0 else None,
        "Denoising strength": denoising,
        "Clip skip": request.clip_skip if request.clip_skip > 1 else None,
        "RNG": "CPU",
    }


def naming(request: GenerationRequest, model: LoadedCheckpoint, s: ImageSeeds, iteration: int,
           index: int) -> NamingContext:
    return NamingContext(
        seed=s.seed, prompt=request.prompt, negative_prompt=request.negative_prompt, steps=request.steps,
        cfg_scale=request.cfg_scale, width=request.width, height=request.height, sampler=request.sampler_name,
        model_name=model.name, model_hash=model.shorthash, styles=tuple(request.styles), clip_skip=request.clip_skip,
        batch_size=request.batch_size, batch_index=index, n_iter=request.n_iter, iteration=iteration)


def save_grid(engine: Engine, request: GenerationRequest, model: LoadedCheckpoint, result: GenerationResult,
              mode: str) -> None:
    """A grid of a multi-image job, saved to `<mode>-grids` when the settings ask for one."""
    if len(result.images) < 2 or request.do_not_save_grid or not engine.saver.wants_grid(len(result.images)):
        return
    grid = engine.saver.build_grid([g.image for g in result.images], request.batch_size)
    first = result.images[0]
    path = engine.saver.save_grid(grid, mode, naming(request, model, ImageSeeds(first.seed, first.subseed, 0), 0, 0),
                                  first.infotext)
    result.grid = GeneratedImage(grid, first.seed, first.subseed, first.infotext, path)


def info_block(request: GenerationRequest, choice: Any, model: LoadedCheckpoint, prompt: str, negative: str,
               result: GenerationResult, denoising: float | None) -> dict[str, Any]:
    """A1111's `Processed.js()` fields: the API's `info`."""
    first = result.images[0] if result.images else None
    count = len(result.images)
    return {
        "prompt": prompt, "all_prompts": [prompt] * count,
        "negative_prompt": negative, "all_negative_prompts": [negative] * count,
        "seed": first.seed if first else -1, "all_seeds": [g.seed for g in result.images],
        "subseed": first.subseed if first else -1, "all_subseeds": [g.subseed for g in result.images],
        "subseed_strength": request.subseed_strength,
        "width": request.width, "height": request.height,
        "sampler_name": choice.sampler, "scheduler": choice.scheduler,
        "cfg_scale": request.cfg_scale, "steps": request.steps, "batch_size": request.batch_size,
        "restore_faces": request.restore_faces,
        "sd_model_name": model.name, "sd_model_hash": model.shorthash,
        "sd_vae_name": model.vae_name, "sd_vae_hash": model.vae_hash,
        "denoising_strength": denoising,
        "clip_skip": request.clip_skip, "styles": request.styles,
        "infotexts": result.infotexts, "index_of_first_image": 0,
        "job_timestamp": time.strftime("%Y%m%d%H%M%S"), "version": VERSION,
        "extra_generation_params": {},
    }

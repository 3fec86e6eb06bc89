"""txt2img, read top to bottom in numbered steps like a diffusers pipeline's __call__."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from modules.engine.conditioning import PromptEncoder, padded
from modules.engine.images import NamingContext
from modules.engine.infotext import build_infotext
from modules.engine.preview import latent_preview
from modules.engine.requests import Txt2ImgRequest
from modules.engine.results import GeneratedImage, GenerationResult
from modules.engine.samplers import make_scheduler, resolve_sampler
from modules.engine.seeds import ImageSeeds, initial_noise, seeds_for_job
from modules.engine.vae import decode
from modules.jobs import JobContext

if TYPE_CHECKING:
    from modules.engine.engine import Engine
    from modules.engine.model_cache import LoadedCheckpoint

VERSION = "SD Studio 0.1.0"


def run_txt2img(engine: Engine, request: Txt2ImgRequest, ctx: JobContext) -> GenerationResult:
    import torch

    # 1. Sampler first: an unknown name fails before any model is loaded.
    choice = resolve_sampler(request.sampler_name, request.scheduler)
    engine.check_size(request.width, request.height)

    # 2. The checkpoint and its scheduler for this sampler.
    ctx.progress(0, request.steps * request.n_iter, text="loading model")
    model = engine.checkpoints.get(request.checkpoint)
    pipe = model.pipe
    pipe.scheduler = make_scheduler(choice, model.scheduler_config)

    # 3. Prompts (styles applied) to conditioning, one entry per prompt-editing step range.
    prompt, negative = engine.styles.apply(request.prompt, request.negative_prompt, request.styles)
    with torch.inference_mode():
        encoder = PromptEncoder(pipe, clip_skip=request.clip_skip)
        positive, negative_c = padded(
            [encoder.schedule(prompt, request.steps), encoder.schedule(negative, request.steps)], encoder.empty())

    # 4. Seeds: one per image, A1111 numbering.
    seeds = seeds_for_job(request.seed, request.subseed, request.subseed_strength, request.total_images)

    # 5. Denoise batch by batch, with progress, preview, interrupt and skip.
    result = GenerationResult()
    total_steps = request.steps * request.n_iter
    for iteration in range(request.n_iter):
        if ctx.interrupted:
            break
        batch_seeds = seeds[iteration * request.batch_size:(iteration + 1) * request.batch_size]
        images = _denoise(engine, model, request, positive, negative_c, batch_seeds, ctx, iteration, total_steps)
        if images is None:  # skipped
            continue

        # 6. Infotext, then save (hooks fire inside the saver).
        for index, (image, s) in enumerate(zip(images, batch_seeds, strict=True)):
            infotext = build_infotext(prompt, negative, _params(request, choice, model, s))
            generated = GeneratedImage(image, s.seed, s.subseed, infotext)
            if not request.do_not_save_samples:
                generated.path = engine.saver.save(image, "txt2img", _naming(request, model, s, iteration, index),
                                                   infotext)
            result.images.append(generated)

    # 7. A grid for multi-image jobs, and A1111's info block.
    if len(result.images) > 1 and not request.do_not_save_grid and engine.saver.wants_grid(len(result.images)):
        grid = engine.saver.build_grid([g.image for g in result.images], request.batch_size)
        first = result.images[0]
        path = engine.saver.save_grid(grid, "txt2img", _naming(request, model, ImageSeeds(first.seed, first.subseed, 0),
                                                               0, 0), first.infotext)
        result.grid = GeneratedImage(grid, first.seed, first.subseed, first.infotext, path)
    result.info = _info(request, choice, model, prompt, negative, result)
    ctx.progress(total_steps, total_steps, text="done")
    return result


def _denoise(engine: Engine, model: LoadedCheckpoint, request: Txt2ImgRequest, positive: Any, negative: Any,
             seeds: list[ImageSeeds], ctx: JobContext, iteration: int, total_steps: int) -> list[Any] | None:
    import torch

    pipe = model.pipe
    sdxl = model.family.startswith("sdxl")
    latent_shape = (pipe.unet.config.in_channels if not _is_inpaint(model) else 4,
                    request.height // pipe.vae_scale_factor, request.width // pipe.vae_scale_factor)
    latents = initial_noise(seeds, latent_shape, engine.memory.device, pipe.unet.dtype)
    every = max(1, engine.preview_every())
    skipped = {"now": False}

    def on_step(p: Any, step_index: int, timestep: Any, kwargs: dict[str, Any]) -> dict[str, Any]:
        ctx.check()
        engine.memory.check_allocation()
        done = iteration * request.steps + step_index + 1
        preview = latent_preview(kwargs["latents"], sdxl) if done % every == 0 else None
        ctx.progress(done, total_steps, preview=preview, text=f"step {step_index + 1}/{request.steps}")
        if ctx.interrupted or ctx.take_skip():
            skipped["now"] = not ctx.interrupted
            p._interrupt = True
        if step_index + 1 < request.steps:
            nxt = step_index + 1
            kwargs["prompt_embeds"] = _cfg_embeds(p, positive.at_step(nxt), negative.at_step(nxt), len(seeds))
        return kwargs

    first_pos, first_neg = positive.at_step(0), negative.at_step(0)
    batch = len(seeds)
    kwargs: dict[str, Any] = dict(
        prompt_embeds=first_pos.embeds.expand(batch, -1, -1),
        negative_prompt_embeds=first_neg.embeds.expand(batch, -1, -1),
        width=request.width, height=request.height, num_inference_steps=request.steps,
        guidance_scale=request.cfg_scale, latents=latents, output_type="latent",
        callback_on_step_end=on_step, callback_on_step_end_tensor_inputs=["latents", "prompt_embeds"],
    )
    if sdxl:
        kwargs["pooled_prompt_embeds"] = first_pos.pooled.expand(batch, -1)
        kwargs["negative_pooled_prompt_embeds"] = first_neg.pooled.expand(batch, -1)
    if request.eta is not None and "eta" in _call_params(pipe):
        kwargs["eta"] = request.eta
    pipe._interrupt = False
    started = time.perf_counter()
    with engine.memory.oom_guard(), engine.memory.use(pipe), torch.inference_mode():
        engine.memory.vae_tiling_for(pipe, request.width, request.height)
        latents = pipe(**kwargs).images
        pipe._interrupt = False
        engine.last_step_seconds = (time.perf_counter() - started) / max(1, request.steps)
        if skipped["now"]:
            return None
        images, note = decode(pipe, latents)
    if note:
        ctx.note(note)
    return images


def _cfg_embeds(pipe: Any, pos: Any, neg: Any, batch: int) -> Any:
    import torch

    pos_e, neg_e = pos.embeds.expand(batch, -1, -1), neg.embeds.expand(batch, -1, -1)
    return torch.cat([neg_e, pos_e]) if pipe.do_classifier_free_guidance else pos_e


def _is_inpaint(model: LoadedCheckpoint) -> bool:
    return model.family.endswith("inpaint")


def _call_params(pipe: Any) -> set[str]:
    import inspect

    return set(inspect.signature(pipe.__call__).parameters)


def _params(request: Txt2ImgRequest, choice: Any, model: LoadedCheckpoint, s: ImageSeeds) -> dict[str, Any]:
    params: dict[str, Any] = {
        "Steps": request.steps,
        "Sampler": choice.sampler,
        "Schedule type": choice.effective_scheduler,
        "CFG scale": request.cfg_scale,
        "Seed": s.seed,
        "Size": f"{request.width}x{request.height}",
        "Model hash": model.shorthash,
        "Model": model.name,
        "Variation seed": s.subseed if s.subseed_strength > 0 else None,
        "Variation seed strength": s.subseed_strength if s.subseed_strength > 0 else None,
        "Clip skip": request.clip_skip if request.clip_skip > 1 else None,
        "RNG": "CPU",
        "Version": VERSION,
    }
    return params


def _naming(request: Txt2ImgRequest, model: LoadedCheckpoint, s: ImageSeeds, iteration: int,
            index: int) -> NamingContext:
    return NamingContext(
        seed=s.seed, prompt=request.prompt, negative_prompt=request.negative_prompt, steps=request.steps,
        cfg_scale=request.cfg_scale, width=request.width, height=request.height, sampler=request.sampler_name,
        model_name=model.name, model_hash=model.shorthash, styles=tuple(request.styles), clip_skip=request.clip_skip,
        batch_size=request.batch_size, batch_index=index, n_iter=request.n_iter, iteration=iteration)


def _info(request: Txt2ImgRequest, choice: Any, model: LoadedCheckpoint, prompt: str, negative: str,
          result: GenerationResult) -> dict[str, Any]:
    first = result.images[0] if result.images else None
    return {
        "prompt": prompt,
        "all_prompts": [prompt] * len(result.images),
        "negative_prompt": negative,
        "all_negative_prompts": [negative] * len(result.images),
        "seed": first.seed if first else -1,
        "all_seeds": [g.seed for g in result.images],
        "subseed": first.subseed if first else -1,
        "all_subseeds": [g.subseed for g in result.images],
        "subseed_strength": request.subseed_strength,
        "width": request.width,
        "height": request.height,
        "sampler_name": choice.sampler,
        "scheduler": choice.scheduler,
        "cfg_scale": request.cfg_scale,
        "steps": request.steps,
        "batch_size": request.batch_size,
        "restore_faces": request.restore_faces,
        "sd_model_name": model.name,
        "sd_model_hash": model.shorthash,
        "clip_skip": request.clip_skip,
        "styles": request.styles,
        "infotexts": result.infotexts,
        "index_of_first_image": 0,
        "job_timestamp": time.strftime("%Y%m%d%H%M%S"),
        "version": VERSION,
        "extra_generation_params": {},
    }


"""txt2img, read top to bottom in numbered steps like a diffusers pipeline's __call__."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from modules.engine import hires
from modules.engine.conditioning import PromptEncoder, ScheduledConditioning, padded
from modules.engine.outputs import NamingContext
from modules.engine.lora import apply_loras, lora_hashes_infotext
from modules.engine.infotext import build_infotext
from modules.engine.preview import latent_preview
from modules.engine.prompts import extract_extra_networks, remove_extra_networks
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


@dataclass
class Plan:
    """Everything decided before sampling starts."""

    choice: Any
    hr_choice: Any
    steps: int  # first-pass steps
    hr_steps: int  # steps the hires pass really runs (0 without hires)
    hr_size: tuple[int, int] | None

    @property
    def steps_per_batch(self) -> int:
        return self.steps + self.hr_steps


def run_txt2img(engine: Engine, request: Txt2ImgRequest, ctx: JobContext) -> GenerationResult:
    import torch

    # 1. Decide sampler, sizes and step counts: every request mistake fails here, before a model loads.
    plan = _plan(engine, request)
    total = plan.steps_per_batch * request.n_iter

    # 2. The checkpoint.
    ctx.progress(0, total, text="loading model")
    model = engine.checkpoints.get(request.checkpoint, request.vae)

    # 3. Styles, then extra networks: <lora:…> tags are applied for this job and removed afterwards.
    prompt, negative = engine.styles.apply(request.prompt, request.negative_prompt, request.styles)
    text, networks = extract_extra_networks(prompt)
    negative_text = remove_extra_networks(negative)
    with apply_loras(model.pipe, networks, engine.models, cache=engine.lora_cache, family=model.family) as loras:

        # 4. Prompts to conditioning, one entry per prompt-editing step range (textual inversion included).
        with torch.inference_mode():
            encoder = PromptEncoder(model.pipe, clip_skip=request.clip_skip, embeddings=engine.embeddings)
            conds = padded([encoder.schedule(text, plan.steps), encoder.schedule(negative_text, plan.steps)],
                           encoder.empty())
            hr_conds = conds
            if plan.hr_size and (request.hr_prompt or request.hr_negative_prompt):
                hr_conds = padded([encoder.schedule(remove_extra_networks(request.hr_prompt) or text, plan.hr_steps),
                                   encoder.schedule(remove_extra_networks(request.hr_negative_prompt) or negative_text,
                                                    plan.hr_steps)], encoder.empty())
        extra = {"Lora hashes": lora_hashes_infotext(loras),
                 "TI hashes": engine.embeddings.ti_hashes_infotext(encoder.used_embeddings)}

        # 5. Seeds: one per image, A1111 numbering.
        seeds = seeds_for_job(request.seed, request.subseed, request.subseed_strength, request.total_images)

        # 6. Sample batch by batch (first pass, hires fix, decode), then infotext and save; hooks fire in the saver.
        result = GenerationResult()
        for iteration in range(request.n_iter):
            if ctx.interrupted:
                break
            batch_seeds = seeds[iteration * request.batch_size:(iteration + 1) * request.batch_size]
            offset = iteration * plan.steps_per_batch
            images = _sample_batch(engine, model, request, plan, (conds, hr_conds), batch_seeds,
                                   _Progress(ctx, offset, total, model.family.startswith("sdxl"),
                                             engine.preview_every()))
            if images is None:  # skipped
                continue
            for index, (image, s) in enumerate(zip(images, batch_seeds, strict=True)):
                infotext = build_infotext(prompt, negative, {**_params(request, plan, model, s), **extra})
                generated = GeneratedImage(image, s.seed, s.subseed, infotext)
                if not request.do_not_save_samples:
                    generated.path = engine.saver.save(image, "txt2img",
                                                       _naming(request, model, s, iteration, index), infotext)
                result.images.append(generated)

    # 7. A grid for multi-image jobs, and A1111's info block.
    _grid(engine, request, model, result)
    result.info = _info(request, plan, model, prompt, negative, result)
    ctx.progress(total, total, text="done")
    return result


def _plan(engine: Engine, request: Txt2ImgRequest) -> Plan:
    choice = resolve_sampler(request.sampler_name, request.scheduler)
    engine.check_size(request.width, request.height)
    if not request.enable_hr:
        return Plan(choice, None, request.steps, 0, None)
    hires.check_upscaler(request.hr_upscaler, engine.upscalers.model_names())
    hr_choice = resolve_sampler(request.hr_sampler_name, request.hr_scheduler) if request.hr_sampler_name else choice
    size = hires.target_size(request)
    engine.check_size(*size)
    # A1111 (and diffusers img2img) run int(steps * denoising strength) of the second-pass steps.
    hr_steps = int((request.hr_second_pass_steps or request.steps) * min(request.denoising_strength, 0.999))
    return Plan(choice, hr_choice, request.steps, max(1, hr_steps), size)


class _Progress:
    """The step callback shared by both passes: progress, preview, interrupt/skip, conditioning switches."""

    def __init__(self, ctx: JobContext, offset: int, total: int, sdxl: bool, preview_every: int) -> None:
        self.ctx, self.offset, self.total, self.sdxl = ctx, offset, total, sdxl
        self.every = max(1, preview_every)
        self.skipped = False

    def callback(self, engine: Engine, steps: int, conds: tuple[ScheduledConditioning, ScheduledConditioning],
                 batch: int, label: str) -> Any:
        positive, negative = conds

        def on_step(pipe: Any, step_index: int, timestep: Any, kwargs: dict[str, Any]) -> dict[str, Any]:
            self.ctx.check()
            engine.memory.check_allocation()
            self.offset += 1
            preview = latent_preview(kwargs["latents"], self.sdxl) if self.offset % self.every == 0 else None
            self.ctx.progress(self.offset, self.total, preview=preview, text=f"{label} {step_index + 1}/{steps}")
            if self.ctx.interrupted or self.ctx.take_skip():
                self.skipped = self.skipped or not self.ctx.interrupted
                pipe._interrupt = True
            if step_index + 1 < steps:
                kwargs["prompt_embeds"] = _cfg_embeds(pipe, positive.at_step(step_index + 1),
                                                      negative.at_step(step_index + 1), batch)
            return kwargs

        return on_step


def _sample_batch(engine: Engine, model: LoadedCheckpoint, request: Txt2ImgRequest, plan: Plan,
                  conds: tuple[Any, Any], seeds: list[ImageSeeds], progress: _Progress) -> list[Any] | None:
    import torch

    pipe = model.pipe
    first, hr_conds = conds
    pipe.scheduler = make_scheduler(plan.choice, model.scheduler_config)
    shape = (4, request.height // pipe.vae_scale_factor, request.width // pipe.vae_scale_factor)
    with engine.memory.use(pipe), torch.inference_mode():
        latents = initial_noise(seeds, shape, engine.memory.device, pipe.unet.dtype)
        kwargs = _embeds_kwargs(first, len(seeds), model.family.startswith("sdxl"))
        kwargs.update(width=request.width, height=request.height, num_inference_steps=plan.steps,
                      guidance_scale=request.cfg_scale, latents=latents, output_type="latent",
                      callback_on_step_end=progress.callback(engine, plan.steps, first, len(seeds), "step"),
                      callback_on_step_end_tensor_inputs=["latents", "prompt_embeds"])
        latents = _run(engine, pipe, kwargs)
        if progress.skipped:
            return None
        if plan.hr_size and not progress.ctx.interrupted:
            latents = _hires_pass(engine, model, request, plan, hr_conds, latents, seeds, progress)
            if progress.skipped:
                return None
        engine.memory.vae_tiling_for(pipe, latents.shape[-1] * 8, latents.shape[-2] * 8)
        images, note = decode(pipe, latents)
    if note:
        progress.ctx.note(note)
    return images


def _hires_pass(engine: Engine, model: LoadedCheckpoint, request: Txt2ImgRequest, plan: Plan, conds: Any,
                latents: Any, seeds: list[ImageSeeds], progress: _Progress) -> Any:
    import torch

    width, height = plan.hr_size  # type: ignore[misc]
    if request.hr_upscaler in hires.LATENT_MODES:
        upscaled = hires.upscale_latents(latents, width, height, request.hr_upscaler)
    else:
        tile, overlap = engine.upscaler_tiling()
        upscaled = hires.upscale_pixels(model.pipe, latents, lambda image: engine.upscalers.upscale(
            image, request.hr_upscaler, size=(width, height), tile=tile, overlap=overlap,
            max_pixels=engine.settings_get("max_image_pixels"), check=progress.ctx.check))
    img2img = hires.img2img_pipeline(model.pipe)
    img2img.scheduler = make_scheduler(plan.hr_choice, model.scheduler_config)
    generators = [torch.Generator("cpu").manual_seed(s.seed + 1) for s in seeds]
    kwargs = _embeds_kwargs(conds, len(seeds), model.family.startswith("sdxl"))
    kwargs.update(image=upscaled, strength=request.denoising_strength,
                  num_inference_steps=request.hr_second_pass_steps or request.steps,
                  guidance_scale=request.cfg_scale, generator=generators, output_type="latent",
                  callback_on_step_end=progress.callback(engine, plan.hr_steps, conds, len(seeds), "hires step"),
                  callback_on_step_end_tensor_inputs=["latents", "prompt_embeds"])
    return _run(engine, img2img, kwargs)


def _run(engine: Engine, pipe: Any, kwargs: dict[str, Any]) -> Any:
    pipe._interrupt = False
    started = time.perf_counter()
    try:
        with engine.memory.oom_guard():
            return pipe(**kwargs).images
    finally:
        pipe._interrupt = False
        steps = kwargs.get("num_inference_steps") or 1
        engine.last_step_seconds = (time.perf_counter() - started) / steps


def _embeds_kwargs(conds: tuple[ScheduledConditioning, ScheduledConditioning], batch: int,
                   sdxl: bool) -> dict[str, Any]:
    pos, neg = conds[0].at_step(0), conds[1].at_step(0)
    kwargs: dict[str, Any] = {"prompt_embeds": pos.embeds.expand(batch, -1, -1),
                              "negative_prompt_embeds": neg.embeds.expand(batch, -1, -1)}
    if sdxl:
        kwargs["pooled_prompt_embeds"] = pos.pooled.expand(batch, -1)
        kwargs["negative_pooled_prompt_embeds"] = neg.pooled.expand(batch, -1)
    return kwargs


def _cfg_embeds(pipe: Any, pos: Any, neg: Any, batch: int) -> Any:
    import torch

    pos_e, neg_e = pos.embeds.expand(batch, -1, -1), neg.embeds.expand(batch, -1, -1)
    return torch.cat([neg_e, pos_e]) if pipe.do_classifier_free_guidance else pos_e


def _grid(engine: Engine, request: Txt2ImgRequest, model: LoadedCheckpoint, result: GenerationResult) -> None:
    if len(result.images) < 2 or request.do_not_save_grid or not engine.saver.wants_grid(len(result.images)):
        return
    grid = engine.saver.build_grid([g.image for g in result.images], request.batch_size)
    first = result.images[0]
    naming = _naming(request, model, ImageSeeds(first.seed, first.subseed, 0), 0, 0)
    path = engine.saver.save_grid(grid, "txt2img", naming, first.infotext)
    result.grid = GeneratedImage(grid, first.seed, first.subseed, first.infotext, path)


def _params(request: Txt2ImgRequest, plan: Plan, model: LoadedCheckpoint, s: ImageSeeds) -> dict[str, Any]:
    params: dict[str, Any] = {
        "Steps": request.steps,
        "Sampler": plan.choice.sampler,
        "Schedule type": plan.choice.effective_scheduler,
        "CFG scale": request.cfg_scale,
        "Seed": s.seed,
        "Size": f"{request.width}x{request.height}",
        "Model hash": model.shorthash,
        "Model": model.name,
        "VAE hash": model.vae_hash,
        "VAE": model.vae_name,
        "Variation seed": s.subseed if s.subseed_strength > 0 else None,
        "Variation seed strength": s.subseed_strength if s.subseed_strength > 0 else None,
        "Denoising strength": request.denoising_strength if plan.hr_size else None,
        "Clip skip": request.clip_skip if request.clip_skip > 1 else None,
        "RNG": "CPU",
    }
    if plan.hr_size:
        resized = request.hr_resize_x or request.hr_resize_y
        params.update({
            "Hires upscale": None if resized else request.hr_scale,
            "Hires resize": f"{plan.hr_size[0]}x{plan.hr_size[1]}" if resized else None,
            "Hires steps": request.hr_second_pass_steps or None,
            "Hires upscaler": request.hr_upscaler,
            "Hires sampler": plan.hr_choice.sampler if request.hr_sampler_name else None,
            "Hires prompt": request.hr_prompt or None,
            "Hires negative prompt": request.hr_negative_prompt or None,
        })
    params["Version"] = VERSION
    return params


def _naming(request: Txt2ImgRequest, model: LoadedCheckpoint, s: ImageSeeds, iteration: int,
            index: int) -> NamingContext:
    return NamingContext(
        seed=s.seed, prompt=request.prompt, negative_prompt=request.negative_prompt, steps=request.steps,
        cfg_scale=request.cfg_scale, width=request.width, height=request.height, sampler=request.sampler_name,
        model_name=model.name, model_hash=model.shorthash, styles=tuple(request.styles), clip_skip=request.clip_skip,
        batch_size=request.batch_size, batch_index=index, n_iter=request.n_iter, iteration=iteration)


def _info(request: Txt2ImgRequest, plan: Plan, model: LoadedCheckpoint, prompt: str, negative: str,
          result: GenerationResult) -> dict[str, Any]:
    first = result.images[0] if result.images else None
    count = len(result.images)
    return {
        "prompt": prompt, "all_prompts": [prompt] * count,
        "negative_prompt": negative, "all_negative_prompts": [negative] * count,
        "seed": first.seed if first else -1, "all_seeds": [g.seed for g in result.images],
        "subseed": first.subseed if first else -1, "all_subseeds": [g.subseed for g in result.images],
        "subseed_strength": request.subseed_strength,
        "width": request.width, "height": request.height,
        "sampler_name": plan.choice.sampler, "scheduler": plan.choice.scheduler,
        "cfg_scale": request.cfg_scale, "steps": request.steps, "batch_size": request.batch_size,
        "restore_faces": request.restore_faces,
        "sd_model_name": model.name, "sd_model_hash": model.shorthash,
        "sd_vae_name": model.vae_name, "sd_vae_hash": model.vae_hash,
        "denoising_strength": request.denoising_strength if plan.hr_size else None,
        "clip_skip": request.clip_skip, "styles": request.styles,
        "infotexts": result.infotexts, "index_of_first_image": 0,
        "job_timestamp": time.strftime("%Y%m%d%H%M%S"), "version": VERSION,
        "extra_generation_params": {},
    }

"""txt2img, read top to bottom in numbered steps like a diffusers pipeline's __call__."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from modules.engine import hires
from modules.engine.controlnet.plan import ControlPlan, controlled_pipeline, prepare_control
from modules.engine.face_step import check_face_restorer, restore_faces
from modules.engine.infotext import build_infotext
from modules.engine.pipelines import grey_latents, takes_mask, whole_mask
from modules.engine.records import VERSION, base_params, info_block, naming, save_grid
from modules.engine.requests import Txt2ImgRequest
from modules.engine.results import GeneratedImage, GenerationResult
from modules.engine.samplers import make_scheduler, resolve_sampler
from modules.engine.sampling import Conds, Progress, embeds_kwargs, prompt_conditioning, run_pipe
from modules.engine.seeds import ImageSeeds, initial_noise, seeds_for_job
from modules.engine.vae import decode
from modules.jobs import JobContext

if TYPE_CHECKING:
    from modules.engine.engine import Engine
    from modules.engine.model_cache import LoadedCheckpoint

__all__ = ["VERSION", "run_txt2img"]


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
    # 1. Decide sampler, sizes and step counts: every request mistake fails here, before a model loads.
    plan = _plan(engine, request)
    total = plan.steps_per_batch * request.n_iter

    # 2. The checkpoint.
    ctx.progress(0, total, text="loading model")
    model = engine.checkpoints.get(request.checkpoint, request.vae)

    # 2b. ControlNet units: their models and control images, for the first pass and the hires pass.
    control = prepare_control(engine, model, request.controlnet, request.width, request.height,
                              hires=plan.hr_size is not None, seed=max(request.seed, 0))
    controls = (control, control.for_hires(*plan.hr_size) if control and plan.hr_size else None)

    # 3. Styles, LoRA and prompts to conditioning (see sampling.prompt_conditioning).
    with prompt_conditioning(engine, model, request, plan.steps) as prompts:
        conds = prompts.conds
        hr_conds = conds
        if plan.hr_size and (request.hr_prompt or request.hr_negative_prompt):
            hr_conds = prompts.encode(request.hr_prompt, request.hr_negative_prompt, plan.hr_steps)
        extra = prompts.extra_params(engine)
        prompt, negative = prompts.prompt, prompts.negative

        # 4. Seeds: one per image, A1111 numbering.
        seeds = seeds_for_job(request.seed, request.subseed, request.subseed_strength, request.total_images)

        # 5. Sample batch by batch (first pass, hires fix, decode), then infotext and save; hooks fire in the saver.
        result = GenerationResult()
        for iteration in range(request.n_iter):
            if ctx.interrupted:
                break
            batch_seeds = seeds[iteration * request.batch_size:(iteration + 1) * request.batch_size]
            offset = iteration * plan.steps_per_batch
            images = _sample_batch(engine, model, request, plan, (conds, hr_conds), controls, batch_seeds,
                                   Progress(ctx, offset, total, model.family.startswith("sdxl"),
                                            engine.preview_every()))
            if images is None:  # skipped
                continue
            for index, (image, s) in enumerate(zip(images, batch_seeds, strict=True)):
                image, faces = restore_faces(engine, request, image, ctx)
                infotext = build_infotext(prompt, negative, {**_params(request, plan, model, s), **faces, **extra,
                                                             **(control.infotext() if control else {})})
                generated = GeneratedImage(image, s.seed, s.subseed, infotext)
                if not request.do_not_save_samples:
                    generated.path = engine.saver.save(image, "txt2img",
                                                       naming(request, model, s, iteration, index), infotext)
                result.images.append(generated)

    # 6. A grid for multi-image jobs, and A1111's info block.
    save_grid(engine, request, model, result, "txt2img")
    result.info = info_block(request, plan.choice, model, prompt, negative, result,
                             request.denoising_strength if plan.hr_size else None)
    if control:  # sd-webui-controlnet returns each unit's control image after the results
        result.images.extend(GeneratedImage(image, -1, -1, "") for image in control.detected_maps)
    ctx.progress(total, total, text="done")
    return result


def _plan(engine: Engine, request: Txt2ImgRequest) -> Plan:
    choice = resolve_sampler(request.sampler_name, request.scheduler)
    engine.check_size(request.width, request.height)
    check_face_restorer(engine, request)
    if not request.enable_hr:
        return Plan(choice, None, request.steps, 0, None)
    hires.check_upscaler(request.hr_upscaler, engine.upscalers.model_names())
    hr_choice = resolve_sampler(request.hr_sampler_name, request.hr_scheduler) if request.hr_sampler_name else choice
    size = hires.target_size(request)
    engine.check_size(*size)
    # A1111 (and diffusers img2img) run int(steps * denoising strength) of the second-pass steps.
    hr_steps = int((request.hr_second_pass_steps or request.steps) * min(request.denoising_strength, 0.999))
    return Plan(choice, hr_choice, request.steps, max(1, hr_steps), size)


def _sample_batch(engine: Engine, model: LoadedCheckpoint, request: Txt2ImgRequest, plan: Plan,
                  conds: tuple[Conds, Conds], controls: tuple[ControlPlan | None, ControlPlan | None],
                  seeds: list[ImageSeeds], progress: Progress) -> list[Any] | None:
    import torch

    pipe = model.pipe
    first, hr_conds = conds
    pipe.scheduler = make_scheduler(plan.choice, model.scheduler_config)
    inpainting = takes_mask(pipe)  # an inpainting checkpoint runs its own pipeline with everything masked
    first_pipe, control_kwargs = controlled_pipeline(pipe, "inpaint" if inpainting else "txt2img", controls[0],
                                                     len(seeds))
    shape = (4, request.height // pipe.vae_scale_factor, request.width // pipe.vae_scale_factor)
    with engine.memory.use(pipe), torch.inference_mode():
        latents = initial_noise(seeds, shape, engine.memory.device, pipe.unet.dtype)
        kwargs = embeds_kwargs(first, len(seeds), model.family.startswith("sdxl"))
        kwargs.update(width=request.width, height=request.height, num_inference_steps=plan.steps,
                      guidance_scale=request.cfg_scale, latents=latents, output_type="latent",
                      **progress.kwargs(engine, plan.steps, first, len(seeds)), **control_kwargs)
        if inpainting:
            grey, masks = whole_mask(len(seeds), request.width, request.height)
            # The pipeline samples the grey image's latents: seeded, so a seed still gives one image.
            kwargs.update(image=grey, mask_image=masks, strength=1.0,
                          generator=[torch.Generator("cpu").manual_seed(s.seed) for s in seeds])
        latents = run_pipe(engine, first_pipe, kwargs)
        if progress.skipped:
            return None
        if plan.hr_size and not progress.ctx.interrupted:
            latents = _hires_pass(engine, model, request, plan, hr_conds, controls[1], latents, seeds, progress)
            if progress.skipped:
                return None
        engine.memory.vae_tiling_for(pipe, latents.shape[-1] * 8, latents.shape[-2] * 8)
        images, note = decode(pipe, latents)
    if note:
        progress.ctx.note(note)
    return images


def _hires_pass(engine: Engine, model: LoadedCheckpoint, request: Txt2ImgRequest, plan: Plan, conds: Conds,
                control: ControlPlan | None, latents: Any, seeds: list[ImageSeeds], progress: Progress) -> Any:
    import torch

    width, height = plan.hr_size  # type: ignore[misc]
    if request.hr_upscaler in hires.LATENT_MODES:
        upscaled = hires.upscale_latents(latents, width, height, request.hr_upscaler)
    else:
        tile, overlap = engine.upscaler_tiling()
        upscaled = hires.upscale_pixels(model.pipe, latents, lambda image: engine.upscalers.upscale(
            image, request.hr_upscaler, size=(width, height), tile=tile, overlap=overlap,
            max_pixels=engine.settings_get("max_image_pixels"), check=progress.ctx.check))
    # ControlNet units whose hr_option includes the hires pass run in it, at the hires size.
    inpainting = takes_mask(model.pipe)
    img2img, control_kwargs = controlled_pipeline(model.pipe, "inpaint" if inpainting else "img2img", control,
                                                  len(seeds))
    img2img.scheduler = make_scheduler(plan.hr_choice, model.scheduler_config)
    generators = [torch.Generator("cpu").manual_seed(s.seed + 1) for s in seeds]
    kwargs = embeds_kwargs(conds, len(seeds), model.family.startswith("sdxl"))
    kwargs.update(image=upscaled, strength=request.denoising_strength,
                  num_inference_steps=request.hr_second_pass_steps or request.steps,
                  guidance_scale=request.cfg_scale, generator=generators, output_type="latent",
                  **progress.kwargs(engine, plan.hr_steps, conds, len(seeds), "hires step"), **control_kwargs)
    if inpainting:
        kwargs.update(mask_image=whole_mask(len(seeds), width, height)[1], width=width, height=height)
        if control_kwargs:  # diffusers' ControlNet inpaint pipelines encode pixels themselves
            kwargs["image"] = decode(model.pipe, upscaled)[0]
        else:
            kwargs["masked_image_latents"] = grey_latents(model.pipe, len(seeds), width, height)
    return run_pipe(engine, img2img, kwargs)


def _params(request: Txt2ImgRequest, plan: Plan, model: LoadedCheckpoint, s: ImageSeeds) -> dict[str, Any]:
    params = base_params(request, plan.choice, model, s, request.denoising_strength if plan.hr_size else None)
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

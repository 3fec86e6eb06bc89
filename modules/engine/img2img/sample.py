"""One batch through a diffusers img2img or inpaint pipeline, from canvases to decoded images."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from modules.engine.controlnet.plan import ControlPlan, controlled_pipeline
from modules.engine.img2img import latents as lat
from modules.engine.img2img.plan import Plan
from modules.engine.pipelines import takes_mask
from modules.engine.requests import Img2ImgRequest
from modules.engine.samplers import make_scheduler
from modules.engine.sampling import Conds, Progress, embeds_kwargs, run_pipe
from modules.engine.seeds import ImageSeeds, initial_noise
from modules.engine.vae import decode

if TYPE_CHECKING:
    from modules.engine.engine import Engine
    from modules.engine.img2img.canvas import Canvas
    from modules.engine.model_cache import LoadedCheckpoint


def sample_batch(engine: Engine, model: LoadedCheckpoint, request: Img2ImgRequest, plan: Plan, conds: Conds,
                 canvases: list[Canvas], seeds: list[ImageSeeds], progress: Progress,
                 control: ControlPlan | None) -> list[Any] | None:
    """The decoded images of one batch (canvas i gives image i), or None when the user skipped it."""
    import torch

    # 1. The pipeline: inpaint for a mask, and for 9-channel models always (they need a mask input; A1111
    #    gives them an all-white one for plain img2img). ControlNet, when present, picks the variant.
    pipe = model.pipe
    width, height = request.width, request.height
    masked = any(c.mask is not None for c in canvases)
    inpaint = masked or takes_mask(pipe)
    runner, control_kwargs = controlled_pipeline(pipe, "inpaint" if inpaint else "img2img", control, len(seeds))
    runner.scheduler = make_scheduler(plan.choice, model.scheduler_config)
    shape = (height // pipe.vae_scale_factor, width // pipe.vae_scale_factor)

    with engine.memory.use(pipe), torch.inference_mode():
        # 2. Init latents and the seeds' noise; "latent noise"/"latent nothing" edit the masked area.
        init = lat.init_latents(engine, pipe, canvases, width, height)
        noise = initial_noise(seeds, (init.shape[1], *shape), init.device, init.dtype)
        if masked:
            masks = lat.latent_masks(canvases, shape, request.mask_round, init)
            init = lat.with_masked_content(init, noise, masks, request.inpainting_fill)
        noise = noise * plan.noise_multiplier

        # 3. Sample. At denoising strength 0 nothing is: the result is the init latents decoded.
        latents = init
        if plan.steps:
            kwargs = embeds_kwargs(conds, len(seeds), model.family.startswith("sdxl"))
            kwargs.update(image=init, strength=plan.strength, num_inference_steps=request.steps,
                          guidance_scale=request.cfg_scale, output_type="latent",
                          # seeded per image, so ancestral samplers' per-step noise repeats with the seed too
                          generator=[torch.Generator("cpu").manual_seed(s.seed) for s in seeds],
                          **progress.kwargs(engine, plan.steps, conds, len(seeds)))
            if inpaint:
                kwargs.update(_inpaint_kwargs(engine, pipe, canvases, plan, init, noise, width, height))
                if control_kwargs:
                    # diffusers' ControlNet inpaint pipelines blank and encode `image` themselves and take no
                    # masked_image_latents: they get the pixels (our seeded noise still goes in through add_noise).
                    kwargs.update(image=[c.pixels for c in canvases])
                    kwargs.pop("masked_image_latents")
            kwargs.update(control_kwargs)
            with lat.noise_from(runner.scheduler, noise):
                latents = run_pipe(engine, runner, kwargs)
            if progress.skipped:
                return None

        # 4. Decode.
        engine.memory.vae_tiling_for(pipe, width, height)
        images, note = decode(pipe, latents)
    if note:
        progress.ctx.note(note)
    return images


def _inpaint_kwargs(engine: Engine, pipe: Any, canvases: list[Canvas], plan: Plan, init: Any, noise: Any,
                    width: int, height: int) -> dict[str, Any]:
    from PIL import Image

    white = Image.new("L", (width, height), 255)
    kwargs: dict[str, Any] = {
        "mask_image": [white if c.mask is None else c.mask for c in canvases],
        # The pipeline would blank `image` itself, which it cannot do to latents: 9-channel models get the
        # blanked picture encoded by us; 4-channel ones never read it but the pipeline needs the shape.
        "masked_image_latents": lat.masked_image_latents(engine, pipe, canvases, width, height)
        if takes_mask(pipe) else init,
        "height": height, "width": width,
    }
    if plan.strength == 1.0:
        # At full strength the inpaint pipelines start from their noise without calling add_noise.
        kwargs["latents"] = noise
    return kwargs

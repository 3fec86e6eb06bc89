"""img2img, sketch, inpaint and outpaint, read top to bottom in numbered steps like `modules/engine/txt2img.py`."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from modules.engine.controlnet.plan import ControlPlan, prepare_control
from modules.engine.face_step import check_face_restorer, restore_faces
from modules.engine.img2img.canvas import Canvas, prepare_canvases
from modules.engine.img2img.params import img2img_params
from modules.engine.img2img.plan import Plan, batch_for, check_canvases, make_plan
from modules.engine.img2img.sample import sample_batch
from modules.engine.infotext import build_infotext
from modules.engine.outputs import NamingContext
from modules.engine.records import info_block, naming, save_grid
from modules.engine.requests import Img2ImgRequest
from modules.engine.results import GeneratedImage, GenerationResult
from modules.engine.sampling import Progress, Prompts, prompt_conditioning
from modules.engine.seeds import seeds_for_job
from modules.jobs import JobContext

if TYPE_CHECKING:
    from modules.engine.engine import Engine
    from modules.engine.model_cache import LoadedCheckpoint

# Saves one finished image: (image, naming, infotext, its number among the images of one init image).
SaveImage = Callable[[Any, NamingContext, str, int], "Path | None"]


def run_img2img(engine: Engine, request: Img2ImgRequest, ctx: JobContext) -> GenerationResult:
    # 1. Sampler, size and steps, then the init images and mask: every request mistake fails here, before a
    #    model loads.
    plan = make_plan(engine, request)
    check_face_restorer(engine, request)
    canvases = prepare_canvases(request, ctx.note)
    check_canvases(engine, canvases)
    request = batch_for(request, canvases, ctx.note)
    total = plan.steps * request.n_iter

    # 2. The checkpoint, then ControlNet units (their models and control images).
    ctx.progress(0, total, text="loading model")
    model = engine.checkpoints.get(request.checkpoint, request.vae)
    control = control_for(engine, model, request, canvases[0])

    # 3. Prompts to conditioning, then batch by batch: sample, paste back onto the original, save.
    with prompt_conditioning(engine, model, request, plan.conditioning_steps) as prompts:
        result = GenerationResult()
        result.images = generate(engine, model, request, plan, prompts, canvases, ctx, (0, total),
                                 save_to_outputs(engine, request), control)

    # 4. A grid for multi-image jobs, and A1111's info block.
    save_grid(engine, request, model, result, "img2img")
    result.info = info_block(request, plan.choice, model, prompts.prompt, prompts.negative, result,
                             request.denoising_strength)
    if control:  # sd-webui-controlnet returns each unit's control image after the results
        result.images.extend(GeneratedImage(image, -1, -1, "") for image in control.detected_maps)
    ctx.progress(total, total, text="done")
    return result


def generate(engine: Engine, model: LoadedCheckpoint, request: Img2ImgRequest, plan: Plan, prompts: Prompts,
             canvases: list[Canvas], ctx: JobContext, span: tuple[int, int], save: SaveImage,
             control: ControlPlan | None = None) -> list[GeneratedImage]:
    """Every image of one init image (or one set of them): n_iter batches of batch_size. `span` is (steps done
    before, total steps of the job) for the progress bar; the batch run over a folder calls this per file."""
    # 1. Seeds (A1111 numbering), and what every image's infotext shares.
    seeds = seeds_for_job(request.seed, request.subseed, request.subseed_strength, request.total_images)
    extra = {**prompts.extra_params(engine), **(control.infotext() if control else {})}
    masked = any(c.mask is not None for c in canvases)
    offset, total = span

    # 2. Batch by batch; canvas i % len(canvases) is image i of every batch.
    images: list[GeneratedImage] = []
    batch_canvases = [canvases[i % len(canvases)] for i in range(request.batch_size)]
    for iteration in range(request.n_iter):
        if ctx.interrupted:
            break
        batch_seeds = seeds[iteration * request.batch_size:(iteration + 1) * request.batch_size]
        progress = Progress(ctx, offset + iteration * plan.steps, total, model.family.startswith("sdxl"),
                            engine.preview_every())
        decoded = sample_batch(engine, model, request, plan, prompts.conds, batch_canvases, batch_seeds, progress,
                               control)
        if decoded is None:  # skipped
            continue

        # 3. The original pixels back outside the mask, then infotext and save (hooks fire in the saver).
        for index, (image, canvas, s) in enumerate(zip(decoded, batch_canvases, batch_seeds, strict=True)):
            image, faces = restore_faces(engine, request, image, ctx)  # before paste-back, as A1111: unmasked
            final = canvas.finish(image)                                # faces stay as they were
            infotext = build_infotext(prompts.prompt, prompts.negative,
                                      {**img2img_params(request, plan, model, s, masked), **faces, **extra})
            generated = GeneratedImage(final, s.seed, s.subseed, infotext)
            generated.path = save(final, naming(request, model, s, iteration, index), infotext,
                                  iteration * request.batch_size + index)
            images.append(generated)
    return images


def control_for(engine: Engine, model: LoadedCheckpoint, request: Img2ImgRequest,
                canvas: Canvas) -> ControlPlan | None:
    """The request's ControlNet units; a unit without its own image uses the init image as prepared for sampling
    (sd-webui-controlnet's behaviour in img2img)."""
    return prepare_control(engine, model, request.controlnet, request.width, request.height, init_image=canvas.pixels,
                           init_resize_mode=request.resize_mode, seed=max(request.seed, 0))


def save_to_outputs(engine: Engine, request: Img2ImgRequest) -> SaveImage:
    """Save into outputs/img2img-images, A1111's way, unless the request says not to."""

    def save(image: Any, context: NamingContext, infotext: str, number: int) -> Path | None:
        if request.do_not_save_samples:
            return None
        return engine.saver.save(image, "img2img", context, infotext)

    return save

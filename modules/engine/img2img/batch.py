"""img2img over a folder on the server (A1111's Batch tab): every image in input_dir, its mask from mask_dir,
results in output_dir under the input's own name, or in outputs/img2img-images when output_dir is empty.

Files that cannot be read are skipped with a note and the rest go on; so are images without a mask when a
mask folder is given (A1111 skips them too). A mask folder holding one mask uses it for every image.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from modules.engine.face_step import check_face_restorer
from modules.engine.image_input import open_image_bytes, to_mask, to_rgb
from modules.engine.img2img.canvas import make_canvas
from modules.engine.img2img.plan import check_canvases, make_plan
from modules.engine.img2img.run import SaveImage, control_for, generate, save_to_outputs
from modules.engine.outputs import NamingContext
from modules.engine.records import info_block
from modules.engine.requests import Img2ImgBatchRequest
from modules.engine.results import GenerationResult
from modules.engine.sampling import prompt_conditioning
from modules.engine.server_folders import list_images, output_folder
from modules.errors import UserError
from modules.jobs import JobContext

if TYPE_CHECKING:
    from modules.access import AccessPolicy
    from modules.engine.engine import Engine

# Images kept in the result for the gallery; the rest are only on disk (A1111's
# img2img_batch_show_results_limit), so a folder of thousands does not sit in memory.
RESULT_LIMIT = 32


def run_img2img_batch(engine: Engine, request: Img2ImgBatchRequest, ctx: JobContext,
                      access: AccessPolicy | None = None) -> GenerationResult:
    # 1. Server folders: allowed at all (the LAN rule), there, and holding images.
    if access is not None:
        access.check_server_paths("img2img batch from server folders", field="input_dir")
    files = list_images(request.input_dir, "input_dir")
    masks = list_images(request.mask_dir, "mask_dir") if request.mask_dir.strip() else []
    output_dir = output_folder(request.output_dir)

    # 2. Sampler, size and steps; progress covers every file.
    plan = make_plan(engine, request)
    check_face_restorer(engine, request)
    per_file = plan.steps * request.n_iter
    total = per_file * len(files)

    # 3. The checkpoint, and the prompts once for the whole folder.
    ctx.progress(0, total, text="loading model")
    model = engine.checkpoints.get(request.checkpoint, request.vae)
    result, made = GenerationResult(), 0
    with prompt_conditioning(engine, model, request, plan.conditioning_steps) as prompts:
        # 4. File by file: read, prepare, generate, save; a bad file is a note, not the end of the job.
        for number, path in enumerate(files):
            if ctx.interrupted:
                break
            note = _prefixed(ctx, path.name)
            try:
                canvas = make_canvas(read_image(path), _mask_for(path, masks, request), request, note)
                check_canvases(engine, [canvas])
                control = control_for(engine, model, request, canvas)
            except UserError as e:
                note(f"skipped: {e.message}")
                continue
            save = _save_to_folder(engine, request, output_dir, path.stem) if output_dir else \
                save_to_outputs(engine, request)
            images = generate(engine, model, request, plan, prompts, [canvas], ctx, (number * per_file, total), save,
                              control)
            made += len(images)
            result.images.extend(images[:max(0, RESULT_LIMIT - len(result.images))])
    if made > len(result.images):
        ctx.note(f"{made} images were made; the result holds the first {RESULT_LIMIT}.")

    # 5. A1111's info block (no grid: A1111's batch makes none).
    result.info = info_block(request, plan.choice, model, prompts.prompt, prompts.negative, result,
                             request.denoising_strength)
    ctx.progress(total, total, text="done")
    return result


def read_image(path: Path, mask: bool = False) -> Any:
    """An image file as RGB (or a mask as "L"), upright as its EXIF says (A1111 reads batch files so).

    Raises:
        UserError: unreadable, not an image, truncated or corrupt.
    """
    from PIL import ImageOps

    try:
        image = open_image_bytes(path.read_bytes(), path.name)
        image = ImageOps.exif_transpose(image)
    except OSError as e:
        raise UserError(f"could not read it: {e}") from None
    return to_mask(image, path.name) if mask else to_rgb(image, path.name)


def _mask_for(path: Path, masks: list[Path], request: Img2ImgBatchRequest) -> Any:
    if not masks:
        return None if request.mask is None else to_mask(request.mask, "mask")
    if len(masks) == 1:
        return read_image(masks[0], mask=True)
    for mask in masks:
        if mask.stem == path.stem:
            return read_image(mask, mask=True)
    raise UserError(f"no mask named {path.stem}.* in the mask folder")


def _prefixed(ctx: JobContext, name: str) -> Callable[[str], None]:
    return lambda text: ctx.note(f"{name}: {text}")


def _save_to_folder(engine: Engine, request: Img2ImgBatchRequest, folder: Path, stem: str) -> SaveImage:
    """Save as <stem>.<ext> in `folder` (<stem>-<n>.<ext> when an input makes several images, as A1111 names
    them), through the image saver so hooks, formats and the no-overwrite rule are the same as everywhere."""
    several = request.total_images > 1

    def save(image: Any, context: NamingContext, infotext: str, number: int) -> Path:
        return engine.saver.save_as(image, "img2img", folder, f"{stem}-{number + 1}" if several else stem, context,
                                    infotext)

    return save

"""img2img, inpaint, outpaint and folder batches through the public path (job queue -> engine -> files), on tiny
random-weight checkpoints: a normal 4-channel SD1 and a 9-channel SD1 inpainting model.

The tiny models draw noise, so what is checked is what a user relies on whatever the weights: sizes, files,
infotext, reproducibility, which pixels may change and which must not, and a clear message for bad input.
"""

from __future__ import annotations

import base64
import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from modules.engine.image_metadata import read_image_info
from modules.engine.infotext import infotext_to_request_fields, parse_infotext
from modules.jobs import JobState
from modules.services import build_services
from tests.fixtures.tiny_models import save_tiny_checkpoint

BASE = {"steps": 3, "width": 64, "height": 64, "cfg_scale": 5, "sampler_name": "Euler", "seed": 3,
        "checkpoint": "plain", "prompt": "a lighthouse"}


@pytest.fixture(scope="module")
def studio(tmp_path_factory: pytest.TempPathFactory):
    data = tmp_path_factory.mktemp("i2i")
    folder = data / "models" / "Stable-diffusion"
    save_tiny_checkpoint(folder, "sd1", name="plain", seed=0)
    save_tiny_checkpoint(folder, "sd1-inpaint", name="inpainting", seed=0)
    services = build_services(["--data-dir", str(data)], {})
    services.jobs.start()
    yield services
    services.jobs.stop()


def run(services, kind: str = "img2img", **fields):
    job = services.jobs.submit(kind, {**BASE, **fields})
    assert job.wait(120), "job did not finish"
    return job


def ok(services, kind: str = "img2img", **fields):
    job = run(services, kind, **fields)
    assert job.state is JobState.DONE, job.error
    return job


def noise_image(width: int = 64, height: int = 64, seed: int = 0) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8))


def box_mask(size: tuple[int, int], box: tuple[int, int, int, int]) -> Image.Image:
    mask = Image.new("L", size, 0)
    mask.paste(255, box)
    return mask


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("RGB"), dtype=np.int16)


def b64(image: Image.Image, fmt: str = "PNG") -> str:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return base64.b64encode(buffer.getvalue()).decode()


def assert_only_mask_changed(result: Image.Image, original: Image.Image, mask: Image.Image) -> None:
    inside = np.asarray(mask) > 0
    diff = np.abs(pixels(result) - pixels(original)).max(axis=2)
    assert (diff[~inside] == 0).all(), "pixels outside the mask changed"
    assert diff[inside].mean() > 5, "the masked area did not change"


# --- plain img2img ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", [0, 1, 2, 3])
def test_every_resize_mode_gives_the_requested_size(studio, mode: int) -> None:
    job = ok(studio, init_images=[noise_image(96, 40)], resize_mode=mode)
    image = job.result.images[0]
    assert image.image.size == (64, 64) and Image.open(image.path).size == (64, 64)
    assert image.path.parent.parent.name == "img2img-images"
    assert job.progress.total == 2  # int(3 steps x 0.75 denoising)


def test_same_seed_same_image_and_variation_seeds(studio) -> None:
    init = noise_image()
    a = ok(studio, init_images=[init], seed=7, batch_size=2).result
    b = ok(studio, init_images=[init], seed=7, batch_size=2).result
    assert [g.seed for g in a.images] == [7, 8]
    assert (pixels(a.images[0].image) == pixels(b.images[0].image)).all()
    assert (pixels(a.images[0].image) != pixels(a.images[1].image)).any()
    assert a.grid is not None and a.grid.path.parent.parent.name == "img2img-grids"
    varied = ok(studio, init_images=[init], seed=7, subseed=99, subseed_strength=0.5).result.images[0]
    again = ok(studio, init_images=[init], seed=7, subseed=99, subseed_strength=0.5).result.images[0]
    assert (pixels(varied.image) != pixels(a.images[0].image)).any()
    assert (pixels(varied.image) == pixels(again.image)).all()
    assert "Variation seed: 99" in varied.infotext


def test_denoising_strength_sets_how_much_is_sampled(studio) -> None:
    init = noise_image()
    none_a = ok(studio, init_images=[init], denoising_strength=0.0, seed=1)
    none_b = ok(studio, init_images=[init], denoising_strength=0.0, seed=2)
    # Nothing is sampled at 0, so the seed cannot matter; at 1 it does.
    assert none_a.progress.total == 0
    assert (pixels(none_a.result.images[0].image) == pixels(none_b.result.images[0].image)).all()
    full_a = ok(studio, init_images=[init], denoising_strength=1.0, seed=1)
    full_b = ok(studio, init_images=[init], denoising_strength=1.0, seed=2)
    assert full_a.progress.total == 3
    assert (pixels(full_a.result.images[0].image) != pixels(full_b.result.images[0].image)).any()
    assert (pixels(full_a.result.images[0].image) != pixels(none_a.result.images[0].image)).any()
    assert "Denoising strength: 0," in none_a.result.images[0].infotext
    assert ok(studio, init_images=[init], denoising_strength=0.1).progress.total == 1  # at least one step


def test_several_init_images_and_skip(studio) -> None:
    job = ok(studio, init_images=[noise_image(seed=1), noise_image(seed=2)], n_iter=2, do_not_save_grid=True)
    assert len(job.result.images) == 4 and any("batch size" in n for n in job.notes)
    queued = studio.jobs.submit("img2img", {**BASE, "init_images": [noise_image()], "n_iter": 2})
    studio.jobs.skip(queued.id)  # taken by the first batch's first step
    assert queued.wait(60) and queued.state is JobState.DONE
    assert len(queued.result.images) == 1


# --- inpainting -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("checkpoint", ["plain", "inpainting"])
def test_only_masked_keeps_every_pixel_outside_the_mask(studio, checkpoint: str) -> None:
    init = noise_image(96, 80, seed=4)
    mask = box_mask(init.size, (30, 20, 50, 44))
    job = ok(studio, checkpoint=checkpoint, init_images=[init], mask=mask, mask_blur=0, inpaint_full_res=True,
             inpaint_full_res_padding=4, denoising_strength=1.0)
    result = job.result.images[0]
    assert result.image.size == init.size  # "Only masked" keeps the picture's own size, as A1111
    assert_only_mask_changed(result.image, init, mask)
    assert "Inpaint area: Only masked, Masked area padding: 4" in result.infotext
    assert "Mask blur" not in result.infotext


@pytest.mark.parametrize("checkpoint", ["plain", "inpainting"])
def test_whole_picture_inpaint(studio, checkpoint: str) -> None:
    init = noise_image(seed=5)
    mask = box_mask(init.size, (8, 8, 40, 30))
    job = ok(studio, checkpoint=checkpoint, init_images=[init], mask=mask, mask_blur=0, inpaint_full_res=False)
    assert_only_mask_changed(job.result.images[0].image, init, mask)
    assert "Inpaint area" not in job.result.images[0].infotext


@pytest.mark.parametrize("fill, written", [(0, "fill"), (1, None), (2, "latent noise"), (3, "latent nothing")])
def test_every_masked_content_option(studio, fill: int, written: str | None) -> None:
    init = noise_image(seed=6)
    mask = box_mask(init.size, (16, 16, 48, 48))
    image = ok(studio, init_images=[init], mask=mask, inpainting_fill=fill, mask_blur=0).result.images[0]
    # A1111 writes no "Masked content" for "original" (the parser then fills in "original").
    if written:
        assert f"Masked content: {written}" in image.infotext
    else:
        assert "Masked content" not in image.infotext
    assert parse_infotext(image.infotext)["Masked content"] == (written or "original")
    assert_only_mask_changed(image.image, init, mask)


def test_mask_invert_and_blur(studio) -> None:
    init = noise_image(seed=7)
    painted = box_mask(init.size, (16, 16, 48, 48))
    job = ok(studio, init_images=[init], mask=painted, inpainting_mask_invert=1, mask_blur=0,
             inpaint_full_res=False)
    inverted = Image.eval(painted, lambda v: 255 - v)
    assert_only_mask_changed(job.result.images[0].image, init, inverted)
    assert "Mask mode: Inpaint not masked" in job.result.images[0].infotext
    blurred = ok(studio, init_images=[init], mask=painted, mask_blur_x=6, mask_blur_y=2, inpaint_full_res=False)
    diff = np.abs(pixels(blurred.result.images[0].image) - pixels(init)).max(axis=2)
    # sigma 6 reaches 15 px (OpenCV's kernel for it), sigma 2 reaches 5 px: the box starts at 16.
    assert diff[32, 12] > 0 and diff[32, 0] == 0
    assert diff[14, 32] > 0 and diff[8, 32] == 0
    assert "Mask blur" not in blurred.result.images[0].infotext  # A1111 writes it only when x == y


def test_outpainting_with_resize_and_fill(studio) -> None:
    wide = noise_image(64, 32, seed=8)
    black = Image.new("L", wide.size, 0)
    job = ok(studio, init_images=[wide], mask=black, resize_mode=2, mask_blur=0, inpaint_full_res=False)
    result = pixels(job.result.images[0].image)
    assert result.shape == (64, 64, 3)
    assert (result[16:48] == pixels(wide)).all()  # the picture itself is kept
    stretched = np.repeat(pixels(wide)[:1], 16, axis=0)
    assert np.abs(result[:16] - stretched).mean() > 5  # the invented border was painted


def test_infotext_round_trips_and_files_land_in_img2img_images(studio) -> None:
    init = noise_image(seed=9)
    job = ok(studio, init_images=[init], mask=box_mask(init.size, (10, 10, 30, 30)), mask_blur=4,
             inpaint_full_res_padding=8, inpainting_fill=2, denoising_strength=0.5, initial_noise_multiplier=0.9,
             negative_prompt="fog")
    image = job.result.images[0]
    assert image.path.parent.parent.name == "img2img-images"
    infotext, _ = read_image_info(Image.open(image.path))
    assert infotext == image.infotext
    params = parse_infotext(infotext)
    fields = infotext_to_request_fields(params, "img2img")
    assert (fields["prompt"], fields["negative_prompt"], fields["denoising_strength"]) == ("a lighthouse", "fog", 0.5)
    assert (fields["mask_blur"], fields["inpainting_fill"], fields["inpaint_full_res"],
            fields["inpaint_full_res_padding"]) == (4, 2, True, 8)
    assert fields["override_settings"]["initial_noise_multiplier"] == 0.9
    assert job.result.info["denoising_strength"] == 0.5 and job.result.info["infotexts"] == [infotext]


# --- bad input ----------------------------------------------------------------------------------------------


def _truncated_png() -> str:
    buffer = io.BytesIO()
    noise_image().save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()[:2000]).decode()


@pytest.mark.parametrize("fields, message", [
    ({"mask": Image.new("L", (64, 64), 0)}, "the mask is empty: paint the area to change"),
    ({"mask": Image.new("L", (64, 64), 255), "inpainting_mask_invert": 1}, "the mask is empty"),
    ({"init_images": [_truncated_png()]}, "init_images[0] could not be decoded (truncated or corrupt file)"),
    ({"init_images": [Image.new("RGB", (0, 0))]}, "init_images[0] is 0x0: it has no pixels"),
])
def test_bad_images_fail_clearly_and_the_next_job_works(studio, fields, message: str) -> None:
    job = run(studio, **{"init_images": [noise_image()], **fields})
    assert job.state is JobState.FAILED and job.error_status == 400 and message in job.error
    assert ok(studio, init_images=[noise_image()]).result.images


def test_size_over_the_limit_is_refused(studio) -> None:
    studio.settings.update({"max_image_pixels": 64 * 64}, save=False)
    try:
        job = run(studio, init_images=[noise_image()], width=128)
        assert job.state is JobState.FAILED and "over the size limit" in job.error
        latent = run(studio, init_images=[noise_image(128, 128)], resize_mode=3)  # encoded at its own size
        assert latent.state is JobState.FAILED and "128x128 is over the size limit" in latent.error
    finally:
        studio.settings.update({"max_image_pixels": 4096 * 4096}, save=False)
    assert ok(studio, init_images=[noise_image()]).result.images


def test_a_mask_of_another_size_is_stretched_with_a_note(studio) -> None:
    init = noise_image(seed=10)
    job = ok(studio, init_images=[init], mask=box_mask((32, 32), (0, 0, 16, 16)), mask_blur=0,
             inpaint_full_res=False)
    assert any("the mask was stretched" in note for note in job.notes)
    assert_only_mask_changed(job.result.images[0].image, init, box_mask((64, 64), (0, 0, 32, 32)))


def _cmyk_jpeg() -> str:
    return b64(Image.new("CMYK", (64, 64), (0, 200, 200, 0)), "JPEG")


def _png16() -> str:
    return b64(Image.fromarray(np.full((64, 64), 40000, dtype=np.uint16)))


def _rgba_png() -> str:
    return b64(Image.new("RGBA", (64, 64), (255, 0, 0, 0)))


@pytest.mark.parametrize("make", [_cmyk_jpeg, _png16, _rgba_png])
def test_unusual_image_modes_are_converted(studio, make) -> None:
    image = ok(studio, init_images=[make()], denoising_strength=0.0).result.images[0].image
    assert image.mode == "RGB" and image.size == (64, 64)


# --- batch from a folder --------------------------------------------------------------------------------------


def test_batch_matches_masks_by_name_skips_bad_files_and_uses_output_dir(studio, tmp_path: Path) -> None:
    inputs, masks, out = tmp_path / "in", tmp_path / "masks", tmp_path / "out"
    inputs.mkdir(), masks.mkdir()
    first, second = noise_image(seed=11), noise_image(seed=12)
    first.save(inputs / "a.png"), second.save(inputs / "b.jpg", quality=100)
    (inputs / "c.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    (inputs / "notes.txt").write_text("ignored")
    left, right = box_mask((64, 64), (0, 0, 32, 64)), box_mask((64, 64), (32, 0, 64, 64))
    left.save(masks / "a.png"), right.save(masks / "b.png")
    job = ok(studio, "img2img-batch", input_dir=str(inputs), mask_dir=str(masks), output_dir=str(out),
             mask_blur=0, inpaint_full_res=False)
    assert sorted(p.name for p in out.iterdir()) == ["a.png", "b.png"]
    assert any(note.startswith("c.png: skipped: ") for note in job.notes)
    assert job.progress.total == 2 * 3  # every listed file counts, the skipped one too
    saved_a, saved_b = Image.open(out / "a.png"), Image.open(out / "b.png")
    assert_only_mask_changed(saved_a, first, left)
    assert_only_mask_changed(saved_b, Image.open(inputs / "b.jpg"), right)
    assert parse_infotext(read_image_info(saved_a)[0])["Seed"] == "3"


def test_batch_without_output_dir_uses_img2img_images(studio, tmp_path: Path) -> None:
    noise_image(seed=13).save(tmp_path / "x.png")
    job = ok(studio, "img2img-batch", input_dir=str(tmp_path), n_iter=2)
    assert [g.path.parent.parent.name for g in job.result.images] == ["img2img-images"] * 2


@pytest.mark.parametrize("fields, message", [
    ({"input_dir": "/nowhere/at/all"}, "input_dir: the folder /nowhere/at/all does not exist"),
    ({"mask_dir": "/nowhere/masks"}, "mask_dir: the folder /nowhere/masks does not exist"),
    ({"output_dir": "{tmp}/x.png"}, "is a file, not a folder"),
])
def test_batch_bad_folders(studio, tmp_path: Path, fields, message: str) -> None:
    noise_image().save(tmp_path / "x.png")
    fields = {key: value.format(tmp=tmp_path) for key, value in fields.items()}
    job = run(studio, "img2img-batch", **{"input_dir": str(tmp_path), **fields})
    assert job.state is JobState.FAILED and job.error_status == 400 and message in job.error


def test_batch_is_refused_when_shared_on_the_network(tmp_path: Path) -> None:
    services = build_services(["--data-dir", str(tmp_path), "--listen"], {})
    services.jobs.start()
    try:
        job = services.jobs.submit("img2img-batch", {**BASE, "input_dir": str(tmp_path)})
        assert job.wait(30) and job.state is JobState.FAILED and job.error_status == 403
        assert "--enable-insecure-extension-access" in job.error
    finally:
        services.jobs.stop()


@pytest.mark.parametrize("family", ["sdxl", "sdxl-inpaint"])
def test_sdxl_img2img_and_inpaint(tmp_path: Path, family: str) -> None:
    save_tiny_checkpoint(tmp_path / "models" / "Stable-diffusion", family, name="xl")
    services = build_services(["--data-dir", str(tmp_path)], {})
    services.jobs.start()
    try:
        init = noise_image(seed=14)
        mask = box_mask(init.size, (20, 20, 44, 44))
        plain = ok(services, checkpoint="xl", init_images=[init], sampler_name="Euler a")
        assert plain.result.images[0].image.size == (64, 64)
        inpainted = ok(services, checkpoint="xl", init_images=[init], mask=mask, mask_blur=0)
        assert_only_mask_changed(inpainted.result.images[0].image, init, mask)
    finally:
        services.jobs.stop()

"""txt2img through the public path (job queue -> engine -> files), on tiny random-weight checkpoints.

Covers what a user notices: files named as A1111 names them, infotext that round-trips, reproducible seeds,
prompt syntax that changes the image, and every bad input getting a clear message with the app still working.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import psutil
import pytest
from PIL import Image

from modules.engine.image_metadata import read_image_info
from modules.engine.infotext import parse_infotext
from modules.errors import UserError
from modules.jobs import JobState
from modules.services import build_services
from tests.fixtures import extensions as fx
from tests.fixtures.tiny_models import save_tiny_checkpoint

BASE = {"steps": 3, "width": 64, "height": 64, "cfg_scale": 5, "sampler_name": "Euler"}


@pytest.fixture(scope="module")
def studio(tmp_path_factory: pytest.TempPathFactory):
    data = tmp_path_factory.mktemp("t2i")
    folder = data / "models" / "Stable-diffusion"
    save_tiny_checkpoint(folder, "sd1", name="alpha", seed=0)
    save_tiny_checkpoint(folder, "sd1", name="beta", seed=1)
    fx.write_extension(data / "extensions", "hello", fx.HELLO)
    (data / "styles.csv").write_text("name,prompt,negative_prompt\nCinematic,\"{prompt}, film grain\",cartoon\n")
    services = build_services(["--data-dir", str(data)], {})
    services.jobs.start()
    yield services
    services.jobs.stop()


def run(services, **fields):
    job = services.jobs.submit("txt2img", {**BASE, **fields})
    assert job.wait(120), "job did not finish"
    return job


def ok(services, **fields):
    job = run(services, **fields)
    assert job.state is JobState.DONE, job.error
    return job.result


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image, dtype=np.int16)


def test_files_are_named_and_tagged_like_a1111(studio) -> None:
    result = ok(studio, prompt="a red fox, snow", negative_prompt="blurry", seed=1234, checkpoint="alpha")
    path = result.images[0].path
    assert path.parent.parent.name == "txt2img-images"
    assert path.name.endswith("-1234.png") and path.name[:5].isdigit()
    infotext, _ = read_image_info(Image.open(path))
    params = parse_infotext(infotext)
    assert params["Prompt"] == "a red fox, snow" and params["Negative prompt"] == "blurry"
    assert (params["Steps"], params["Sampler"], params["Seed"], params["Size-1"]) == ("3", "Euler", "1234", "64")
    assert params["Model"] == "alpha" and len(params["Model hash"]) == 10
    assert infotext.endswith("Hello: yes")  # the extension's before_image_saved hook ran on the real save


def test_same_seed_same_image_and_batch_seeds_count_up(studio) -> None:
    a = ok(studio, prompt="a cat", seed=7, batch_size=2, checkpoint="alpha")
    b = ok(studio, prompt="a cat", seed=7, batch_size=2, checkpoint="alpha")
    assert [g.seed for g in a.images] == [7, 8]
    assert (pixels(a.images[0].image) == pixels(b.images[0].image)).all()
    assert (pixels(a.images[0].image) != pixels(a.images[1].image)).any()
    assert a.grid is not None and a.grid.path.parent.parent.name == "txt2img-grids"


def test_variation_seed_changes_the_image_reproducibly(studio) -> None:
    base = ok(studio, prompt="a cat", seed=7, checkpoint="alpha").images[0]
    varied = ok(studio, prompt="a cat", seed=7, subseed=99, subseed_strength=0.5, checkpoint="alpha").images[0]
    again = ok(studio, prompt="a cat", seed=7, subseed=99, subseed_strength=0.5, checkpoint="alpha").images[0]
    assert (pixels(base.image) != pixels(varied.image)).any()
    assert (pixels(varied.image) == pixels(again.image)).all()
    assert "Variation seed: 99, Variation seed strength: 0.5" in varied.infotext


@pytest.mark.parametrize("other", ["a (cat:1.6)", "a [cat:dog:0.5]", "a [cat|dog]", "a cat BREAK a dog",
                                   "a " + "very " * 100 + "long cat"])
def test_prompt_syntax_changes_the_image(studio, other: str) -> None:
    plain = ok(studio, prompt="a cat", seed=3, checkpoint="alpha").images[0]
    syntax = ok(studio, prompt=other, seed=3, checkpoint="alpha").images[0]
    assert (pixels(plain.image) != pixels(syntax.image)).any()


def test_styles_are_applied(studio) -> None:
    result = ok(studio, prompt="a cat", styles=["Cinematic"], seed=3, checkpoint="alpha")
    assert result.images[0].infotext.startswith("a cat, film grain\nNegative prompt: cartoon")


def test_clip_skip_is_recorded(studio) -> None:
    result = ok(studio, prompt="a cat", clip_skip=2, seed=3, checkpoint="alpha")
    assert "Clip skip: 2" in result.images[0].infotext


def test_do_not_save_samples(studio) -> None:
    before = set(studio.paths.outputs.rglob("*.png"))
    result = ok(studio, prompt="a cat", do_not_save_samples=True, do_not_save_grid=True, checkpoint="alpha")
    assert result.images[0].path is None and set(studio.paths.outputs.rglob("*.png")) == before


@pytest.mark.parametrize("fields, message", [
    ({"width": 65}, "multiple of 8"),
    ({"steps": 0}, "greater than or equal to 1"),
    ({"sampler_name": "Euler z"}, "DPM++ 2M"),  # the valid names are listed
    ({"scheduler": "Sideways"}, "Karras"),
])
def test_bad_requests_are_refused_before_queueing(studio, fields, message: str) -> None:
    with pytest.raises(UserError, match=re.escape(message)) as e:
        studio.jobs.submit("txt2img", {**BASE, **fields})
    assert "Value error" not in e.value.message


@pytest.mark.parametrize("fields, message", [
    ({"checkpoint": "gamma"}, "unknown checkpoint 'gamma'; available: alpha, beta"),
    ({"styles": ["Nope"]}, "unknown style Nope"),
    ({"prompt": "a <lora:x:abc> cat"}, "<lora:x:abc>"),
    ({"prompt": "a <lora:nowhere:0.8> cat"}, "nowhere"),
])
def test_bad_names_fail_the_job_with_a_message(studio, fields, message) -> None:
    job = run(studio, **fields)
    assert job.state is JobState.FAILED and message in job.error and job.error_status in (400, 404)
    assert ok(studio, prompt="still works", checkpoint="alpha").images


def test_size_over_the_limit_setting(studio) -> None:
    studio.settings.update({"max_image_pixels": 64 * 64}, save=False)
    try:
        job = run(studio, width=128, height=64, checkpoint="alpha")
        assert job.state is JobState.FAILED and "over the size limit" in job.error
    finally:
        studio.settings.update({"max_image_pixels": 4096 * 4096}, save=False)


def test_out_of_memory_gives_advice_and_the_next_job_works(studio) -> None:
    ok(studio, prompt="warm up", checkpoint="alpha")
    studio.engine.memory.inject_oom()
    job = run(studio, prompt="too big", checkpoint="alpha")
    assert job.state is JobState.FAILED and job.error_status == 503
    assert "smaller width/height" in job.error  # on a GPU the advice also names --medvram
    assert ok(studio, prompt="fits", checkpoint="alpha").images


def test_switching_checkpoints_frees_the_old_one(studio) -> None:
    ok(studio, prompt="a", checkpoint="alpha")
    rss = []
    for name in ["beta", "alpha"] * 4:
        ok(studio, prompt="a", checkpoint=name)
        assert studio.engine.memory.live_pipelines() == 1
        rss.append(psutil.Process().memory_info().rss)
    assert studio.engine.checkpoints.current.name == "alpha"
    assert rss[-1] - rss[1] < 150 * 2**20  # flat, allowing for allocator noise


def test_broken_checkpoints_fail_clearly_and_the_app_goes_on(studio, tmp_path: Path) -> None:
    folder = studio.paths.model_folder("Stable-diffusion")
    (folder / "corrupt.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json")
    from safetensors.torch import save_file
    import torch

    save_file({"model.0.weight": torch.zeros(4, 3, 3, 3)}, str(folder / "upscaler.safetensors"))
    studio.models.refresh("Stable-diffusion")
    try:
        corrupt = run(studio, checkpoint="corrupt")
        assert corrupt.state is JobState.FAILED and "corrupt or truncated" in corrupt.error
        other = run(studio, checkpoint="upscaler")
        assert other.state is JobState.FAILED and "not a Stable Diffusion checkpoint" in other.error
        assert ok(studio, prompt="fine", checkpoint="alpha").images
    finally:
        (folder / "corrupt.safetensors").unlink()
        (folder / "upscaler.safetensors").unlink()
        studio.models.refresh("Stable-diffusion")


def test_interrupt_keeps_the_finished_images(studio) -> None:
    job = studio.jobs.submit("txt2img", {**BASE, "steps": 30, "n_iter": 20, "checkpoint": "alpha"})
    import time

    while job.progress.step < 31:
        time.sleep(0.02)
    studio.jobs.interrupt()
    assert job.wait(60) and job.state is JobState.DONE
    assert 1 <= len(job.result.images) < 20


def test_no_checkpoint_says_where_to_put_one(tmp_path: Path) -> None:
    services = build_services(["--data-dir", str(tmp_path)], {})
    services.jobs.start()
    job = services.jobs.submit("txt2img", BASE)
    job.wait(30)
    assert job.state is JobState.FAILED and job.error_status == 404
    assert "No checkpoint found" in job.error and str(tmp_path / "models" / "Stable-diffusion") in job.error
    services.jobs.stop()


def test_hook_calls_recorded(studio) -> None:
    calls = (studio.extensions.get("hello").folder / "calls.jsonl").read_text().splitlines()
    events = {json.loads(c)["event"] for c in calls}
    assert {"before_generate", "after_generate", "before_image_saved", "image_saved"} <= events


@pytest.mark.parametrize("fields, size, expected", [
    ({"hr_scale": 2.0, "hr_upscaler": "Latent"}, (128, 128), "Hires upscale: 2, Hires upscaler: Latent"),
    ({"hr_scale": 1.5, "hr_upscaler": "Lanczos", "hr_second_pass_steps": 4}, (96, 96),
     "Hires upscale: 1.5, Hires steps: 4, Hires upscaler: Lanczos"),
    ({"hr_resize_x": 128, "hr_upscaler": "Latent (nearest-exact)", "hr_sampler_name": "DDIM"}, (128, 128),
     'Hires resize: 128x128, Hires upscaler: Latent (nearest-exact), Hires sampler: DDIM'),
])
def test_hires_fix(studio, fields, size, expected: str) -> None:
    job = run(studio, prompt="a castle", seed=5, enable_hr=True, denoising_strength=0.5, checkpoint="alpha", **fields)
    assert job.state is JobState.DONE, job.error
    image = job.result.images[0]
    assert image.image.size == size and Image.open(image.path).size == size
    assert expected in image.infotext and "Denoising strength: 0.5" in image.infotext
    assert "Size: 64x64" in image.infotext  # A1111 records the first-pass size
    assert job.progress.total > 3  # the hires steps count in the progress


def test_hires_fix_is_reproducible_and_refuses_unknown_upscalers(studio) -> None:
    a = ok(studio, prompt="a castle", seed=5, enable_hr=True, checkpoint="alpha").images[0]
    b = ok(studio, prompt="a castle", seed=5, enable_hr=True, checkpoint="alpha").images[0]
    assert (pixels(a.image) == pixels(b.image)).all()
    job = run(studio, enable_hr=True, hr_upscaler="4x-Nope", checkpoint="alpha")
    assert job.state is JobState.FAILED and "unknown hires upscaler '4x-Nope'; available: Latent" in job.error


@pytest.mark.parametrize("family", ["sd2", "sd2-v", "sdxl"])
def test_other_families_generate(tmp_path: Path, family: str) -> None:
    save_tiny_checkpoint(tmp_path / "models" / "Stable-diffusion", family, name=f"tiny-{family}")
    services = build_services(["--data-dir", str(tmp_path)], {})
    services.jobs.start()
    try:
        job = services.jobs.submit("txt2img", {**BASE, "prompt": "a (boat:1.3) on a lake", "seed": 11,
                                               "negative_prompt": "fog", "clip_skip": 2})
        assert job.wait(120) and job.state is JobState.DONE, job.error
        image = job.result.images[0]
        assert image.image.size == (64, 64) and np.asarray(image.image).std() > 0
        assert f"Model: tiny-{family}" in image.infotext
    finally:
        services.jobs.stop()


def _save_tiny_vae(folder: Path, name: str, seed: int) -> Path:
    """An LDM-layout VAE file with its own `<name>/config.json` beside it (the tiny VAE is not standard-sized)."""
    import torch
    from safetensors.torch import save_file

    from modules.engine.models.ldm_convert import vae_to_ldm
    from tests.fixtures.tiny_models import get_dummy_components

    torch.manual_seed(seed)
    vae = get_dummy_components("sd1", seed=seed)["vae"]
    with torch.no_grad():
        for p in vae.parameters():
            p.add_(torch.randn_like(p) * 0.2)  # clearly different weights from the checkpoint's own VAE
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.safetensors"
    save_file({k: v.contiguous() for k, v in vae_to_ldm(vae.state_dict(), vae.config).items()}, str(path))
    (folder / name).mkdir(exist_ok=True)
    (folder / name / "config.json").write_text(json.dumps(dict(vae.config)))
    return path


def test_vae_choice(tmp_path: Path) -> None:
    models = tmp_path / "models"
    save_tiny_checkpoint(models / "Stable-diffusion", "sd1", name="alpha")
    _save_tiny_vae(models / "VAE", "shared-vae", seed=5)
    services = build_services(["--data-dir", str(tmp_path)], {})
    services.jobs.start()
    try:
        def image(vae: str | None):
            job = services.jobs.submit("txt2img", {**BASE, "seed": 9, **({"vae": vae} if vae else {})})
            assert job.wait(120) and job.state is JobState.DONE, job.error
            return job.result.images[0]

        own = image("None")
        shared = image("shared-vae")
        assert (pixels(own.image) != pixels(shared.image)).any()
        assert "VAE: shared-vae.safetensors" in shared.infotext and "VAE hash: " in shared.infotext
        assert "VAE:" not in own.infotext
        assert (pixels(image("Automatic").image) == pixels(own.image)).all()  # nothing beside the checkpoint yet

        _save_tiny_vae(models / "Stable-diffusion", "alpha.vae", seed=6)  # A1111's <ckpt>.vae.safetensors
        beside = image(None)  # the sd_vae setting defaults to Automatic
        assert "VAE: alpha.vae.safetensors" in beside.infotext
        assert "alpha.vae" not in [f.name for f in services.models.refresh("Stable-diffusion")]

        job = services.jobs.submit("txt2img", {**BASE, "vae": "missing-vae"})
        job.wait(60)
        assert job.state is JobState.FAILED and "unknown VAE 'missing-vae'; use Automatic, None or one of: " \
            "shared-vae" in job.error
    finally:
        services.jobs.stop()


def test_lora_and_embedding_apply_per_job_and_leave_the_model_clean(studio) -> None:
    import torch

    from tests.fixtures.tiny_networks import a1111_embedding, kohya_state_dict, lora_layers, save_lora

    pipe = studio.engine.checkpoints.get("alpha").pipe
    save_lora(studio.paths.model_folder("Lora") / "inkwash.safetensors",
              kohya_state_dict(lora_layers(pipe, seed=3), alpha=4.0))
    dim = pipe.text_encoder.config.hidden_size
    a1111_embedding(studio.paths.embeddings / "fuzzystyle.pt", torch.randn(2, dim, generator=torch.Generator().manual_seed(4)))
    studio.models.refresh()

    plain = ok(studio, prompt="a cat", seed=21, checkpoint="alpha").images[0]
    with_lora = ok(studio, prompt="a cat <lora:inkwash:1>", seed=21, checkpoint="alpha").images[0]
    half_lora = ok(studio, prompt="a cat <lora:inkwash:0.5>", seed=21, checkpoint="alpha").images[0]
    after = ok(studio, prompt="a cat", seed=21, checkpoint="alpha").images[0]
    assert (pixels(plain.image) != pixels(with_lora.image)).any()
    assert (pixels(with_lora.image) != pixels(half_lora.image)).any()
    assert (pixels(plain.image) == pixels(after.image)).all()  # the LoRA was removed after its job
    assert with_lora.infotext.startswith("a cat <lora:inkwash:1>")  # A1111 keeps the tag in the prompt
    assert "Lora hashes: \"inkwash: " in with_lora.infotext

    embedded = ok(studio, prompt="a cat fuzzystyle", seed=21, checkpoint="alpha").images[0]
    plain_word = ok(studio, prompt="a cat fluffystyle", seed=21, checkpoint="alpha").images[0]
    assert (pixels(embedded.image) != pixels(plain_word.image)).any()
    assert "TI hashes: \"fuzzystyle: " in embedded.infotext


def test_optimization_settings_reach_the_next_job(studio) -> None:
    studio.settings.update({"vae_tiling": "on"}, save=False)
    try:
        ok(studio, prompt="tiles", checkpoint="alpha")
        assert studio.engine.memory.config.vae_tiling == "on"
        assert studio.engine.checkpoints.current.pipe.vae.use_tiling is True
    finally:
        studio.settings.update({"vae_tiling": "auto"}, save=False)
    ok(studio, prompt="small", checkpoint="alpha")
    assert studio.engine.checkpoints.current.pipe.vae.use_tiling is False  # auto: 64x64 is far below the threshold


def test_hires_fix_with_a_model_upscaler_from_the_registry(studio) -> None:
    import torch

    from tests.fixtures.tiny_upscalers import old_esrgan

    folder = studio.paths.model_folder("ESRGAN")
    folder.mkdir(parents=True, exist_ok=True)
    torch.save(old_esrgan(4), folder / "4x-tiny.pth")
    studio.models.refresh("ESRGAN")
    assert "4x-tiny" in studio.engine.hires_upscalers()
    result = ok(studio, prompt="a castle", seed=5, enable_hr=True, hr_upscaler="4x-tiny", hr_scale=2,
                denoising_strength=0.4, checkpoint="alpha")
    assert result.images[0].image.size == (128, 128)
    assert "Hires upscaler: 4x-tiny" in result.images[0].infotext


def test_inpainting_checkpoints_also_do_txt2img_and_hires_fix(tmp_path: Path) -> None:
    """A1111 runs an inpainting checkpoint in txt2img with everything masked; so do we, hires fix included."""
    save_tiny_checkpoint(tmp_path / "models" / "Stable-diffusion", "sd1-inpaint", name="inpainting", seed=0)
    services = build_services(["--data-dir", str(tmp_path)], {})
    services.jobs.start()
    try:
        first = ok(services, seed=3)
        again = ok(services, seed=3)
        assert first.images[0].image.size == (64, 64)
        assert np.array_equal(pixels(first.images[0].image), pixels(again.images[0].image))
        hires = ok(services, seed=3, enable_hr=True, hr_scale=1.5, hr_upscaler="Latent", denoising_strength=0.5)
        assert hires.images[0].image.size == (96, 96)
    finally:
        services.jobs.stop()

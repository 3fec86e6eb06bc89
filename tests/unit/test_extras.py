"""The "extras" job: output sizes for scale by / scale to (+crop), the Upscaler 2 blend, face restoration applied or
skipped with a note (tiny stand-in face networks), files in outputs/extras-images with A1111's postprocessing
infotext (and the source's own parameters kept), batches that skip a corrupt image, folder batches and the LAN
rule, interrupt/skip/cancel. All CPU, all small."""

from __future__ import annotations

import io
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image, PngImagePlugin
from safetensors.torch import save_file

from modules.engine.extras import ExtrasRequest, ExtrasResult
from modules.engine.extras.run import run_extras
from modules.engine.image_input import open_image_bytes
from modules.engine.image_metadata import read_image_info
from modules.engine.infotext import parse_infotext
from modules.engine.postprocess.faces import FaceRestorers
from modules.errors import AccessDenied, UserError
from modules.jobs import Job, JobCancelled, JobContext, JobState
from modules.services import Services, build_services
from tests.fixtures.tiny_faces import EllipseParser, FixedDetector, StandInLoader, face_image
from tests.fixtures.tiny_upscalers import compact

MODEL = "4x-tiny-compact"
SOURCE_INFOTEXT = "a red fox in snow\nNegative prompt: blurry\nSteps: 20, Sampler: Euler, Seed: 42, Size: 64x64"


# -- set-up --------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def services(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Services]:
    data = tmp_path_factory.mktemp("extras")
    esrgan = data / "models" / "ESRGAN"
    esrgan.mkdir(parents=True)
    save_file(compact(), str(esrgan / f"{MODEL}.safetensors"))
    gfpgan = data / "models" / "GFPGAN"
    gfpgan.mkdir(parents=True)
    (gfpgan / "GFPGANv1.4.pth").write_bytes(b"the stand-in loader never reads this")
    built = build_services(["--data-dir", str(data)], {})
    built.jobs.start()
    yield built
    built.jobs.stop()


FACE_SETTINGS = {"code_former_weight": 0.5, "face_restoration_model": "GFPGAN", "face_restoration_unload": False}


class RecordingDetector(FixedDetector):
    """FixedDetector that also records the size of each image it searched."""

    def __init__(self, landmarks: list[np.ndarray]) -> None:
        super().__init__(landmarks)
        self.sizes: list[tuple[int, int]] = []

    def detect(self, image_rgb: np.ndarray) -> Any:
        self.sizes.append((image_rgb.shape[1], image_rgb.shape[0]))
        return super().detect(image_rgb)


def use_faces(services: Services, monkeypatch: pytest.MonkeyPatch, landmarks: list[np.ndarray]) -> RecordingDetector:
    """Give the engine a face restorer registry with stand-in networks (detector finds `landmarks`, the
    'restoration' negates the face) over the module's models folder, which holds a GFPGAN file."""
    detector = RecordingDetector(landmarks)
    restorers = FaceRestorers(services.models, services.engine.memory, FACE_SETTINGS.__getitem__, detector,
                              parser=EllipseParser(), load_model=StandInLoader())
    monkeypatch.setattr(services.engine, "face_restorers", restorers, raising=False)
    return detector


def gradient(width: int, height: int, mode: str = "RGB") -> Image.Image:
    y, x = np.mgrid[0:height, 0:width]
    rgb = np.stack([x * 255 // max(1, width - 1), y * 255 // max(1, height - 1), (x * y) % 256], axis=-1)
    image = Image.fromarray(rgb.astype(np.uint8))
    return image.convert(mode) if mode != "RGB" else image


def png_bytes(image: Image.Image, infotext: str | None = None) -> bytes:
    meta = PngImagePlugin.PngInfo()
    if infotext:
        meta.add_text("parameters", infotext)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", pnginfo=meta)
    return buffer.getvalue()


def truncated_png() -> bytes:
    """A PNG whose header is fine and whose pixel data stops half-way: it opens, and fails when decoded."""
    noise = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    data = png_bytes(Image.fromarray(noise))
    return data[: len(data) // 2]


def submit(services: Services, **fields: Any) -> Job:
    job = services.jobs.submit("extras", fields)
    assert job.wait(120), "the extras job did not finish"
    return job


def done(services: Services, **fields: Any) -> ExtrasResult:
    job = submit(services, **fields)
    assert job.state is JobState.DONE, job.error
    return job.result


def saved_infotext(path: Path) -> str | None:
    with Image.open(path) as image:
        return read_image_info(image)[0]


# -- sizes ---------------------------------------------------------------------------------------------------------


def test_scale_by_rounds_down_to_a_multiple_of_8_and_saves_with_infotext(services: Services) -> None:
    result = done(services, images=[gradient(50, 30)], upscaler_1="Lanczos", upscaling_resize=2)
    (item,) = result.images
    assert item.image.size == (96, 56)  # 100x60 rounded down to multiples of 8, as A1111's upscalers round
    assert item.infotext == "Postprocess upscale by: 2, Postprocess upscaler: Lanczos"
    assert result.info == item.infotext and result.html_info == f"<p>{item.infotext}</p>"
    assert item.path.parent == services.paths.outputs / "extras-images"
    assert re.fullmatch(r"\d{5}\.png", item.path.name), item.path.name  # A1111: a counter only
    assert saved_infotext(item.path) == item.infotext
    with Image.open(item.path) as on_disk:
        assert on_disk.size == (96, 56)


def test_model_upscaler_by_a_fraction_of_its_scale(services: Services) -> None:
    result = done(services, images=[gradient(24, 16)], upscaler_1=MODEL, upscaling_resize=2.5)
    assert result.images[0].image.size == (56, 40)  # 60x40 rounded down to multiples of 8
    assert result.images[0].infotext == f"Postprocess upscale by: 2.5, Postprocess upscaler: {MODEL}"


@pytest.mark.parametrize("crop", [True, False])
def test_scale_to_covers_the_target_and_crops_the_centre(services: Services, crop: bool) -> None:
    source = gradient(40, 30)
    result = done(services, images=[source], resize_mode=1, upscaling_resize_w=100, upscaling_resize_h=100,
                  upscaling_crop=crop, upscaler_1="Lanczos")
    image = result.images[0].image
    cover = source.resize((134, 100), Image.Resampling.LANCZOS)  # by 100/30, the larger ratio; 133.3 rounded up
    if crop:
        assert image.size == (100, 100)
        assert np.array_equal(np.asarray(image), np.asarray(cover.crop((17, 0, 117, 100))))
        assert result.info == ("Postprocess upscale to: 100x100, Postprocess crop to: 100x100, "
                               "Postprocess upscaler: Lanczos")
    else:
        assert image.size == (134, 100)  # the aspect ratio is kept, as A1111 keeps it without "Crop to fit"
        assert result.info == "Postprocess upscale to: 100x100, Postprocess upscaler: Lanczos"


def test_upscaler_2_is_blended_in_by_its_visibility(services: Services) -> None:
    source = gradient(20, 16)
    fields = {"images": [source], "upscaler_1": "Lanczos", "upscaler_2": "Nearest", "upscaling_resize": 2,
              "save_images": False}
    first = source.resize((40, 32), Image.Resampling.LANCZOS)
    second = source.resize((40, 32), Image.Resampling.NEAREST)
    blended = done(services, **fields, extras_upscaler_2_visibility=0.25)
    assert np.array_equal(np.asarray(blended.images[0].image), np.asarray(Image.blend(first, second, 0.25)))
    assert blended.info == ("Postprocess upscale by: 2, Postprocess upscaler: Lanczos, "
                            "Postprocess upscaler 2: Nearest")
    assert blended.images[0].path is None  # save_images off (what the API asks for)
    alone = done(services, **fields, extras_upscaler_2_visibility=0.0)
    assert np.array_equal(np.asarray(alone.images[0].image), np.asarray(first))
    assert "upscaler 2" not in alone.info


def test_transparency_is_kept(services: Services) -> None:
    source = gradient(16, 16, "RGBA")
    source.putpixel((0, 0), (0, 0, 0, 0))
    image = done(services, images=[source], upscaler_1="Nearest", upscaling_resize=2).images[0].image
    assert image.mode == "RGBA" and image.size == (32, 32)
    assert image.getpixel((0, 0))[3] == 0 and image.getpixel((31, 31))[3] == 255


# -- infotext and names --------------------------------------------------------------------------------------------


def test_the_source_parameters_are_kept_in_the_saved_file(services: Services) -> None:
    source = open_image_bytes(png_bytes(gradient(32, 32), SOURCE_INFOTEXT))
    item = done(services, images=[source], upscaler_1="Lanczos", upscaling_resize=2).images[0]
    assert item.infotext == "Postprocess upscale by: 2, Postprocess upscaler: Lanczos"
    expected = f"{SOURCE_INFOTEXT}, Postprocess upscale by: 2, Postprocess upscaler: Lanczos"
    assert item.saved_infotext == expected and saved_infotext(item.path) == expected
    params = parse_infotext(expected)
    assert params["Prompt"] == "a red fox in snow" and params["Seed"] == "42"
    assert params["Postprocess upscaler"] == "Lanczos"


def test_named_images_keep_their_name_and_never_leave_the_folder(services: Services) -> None:
    result = done(services, images=[gradient(16, 16), gradient(16, 16)], names=["holiday photo.png", "../../evil.png"],
                  upscaler_1="Lanczos", upscaling_resize=1)
    first, second = (item.path for item in result.images)
    assert re.fullmatch(r"\d{5}-holiday photo\.png", first.name), first.name
    assert re.fullmatch(r"\d{5}-evil\.png", second.name), second.name
    assert first.parent == second.parent == services.paths.outputs / "extras-images"
    assert [item.name for item in result.images] == ["holiday photo.png", "evil.png"]


# -- mistakes ------------------------------------------------------------------------------------------------------


def test_nothing_to_do_is_refused_with_a_clear_message(services: Services) -> None:
    with pytest.raises(UserError, match="nothing to do: choose Upscaler 1, or set GFPGAN or CodeFormer visibility"):
        services.jobs.submit("extras", {"images": [gradient(8, 8)], "upscaler_2": "Lanczos",
                                        "extras_upscaler_2_visibility": 0.5})


def test_unknown_upscaler_lists_the_valid_ones(services: Services) -> None:
    job = submit(services, images=[gradient(8, 8)], upscaler_1="Lanczos", upscaler_2="R-ESRGAN 4x+",
                 extras_upscaler_2_visibility=0.5)
    assert job.state is JobState.FAILED and job.error_status == 400
    assert "upscaler_2: unknown upscaler 'R-ESRGAN 4x+'" in job.error
    assert f"None, Lanczos, Nearest, {MODEL}" in job.error


def test_a_corrupt_image_is_skipped_in_a_batch_and_fails_a_single_image(services: Services) -> None:
    bad = open_image_bytes(truncated_png(), "b.png")
    result = done(services, images=[gradient(16, 16), bad, gradient(24, 24)], names=["a.png", "b.png", "c.png"],
                  upscaler_1="Lanczos", upscaling_resize=2)
    assert [item.name for item in result.images] == ["a.png", "c.png"]
    assert [item.image.size for item in result.images] == [(32, 32), (48, 48)]
    assert len(result.notes) == 1 and result.notes[0].startswith("Skipped b.png:")
    assert "could not be decoded (truncated or corrupt file)" in result.notes[0]

    job = submit(services, images=[open_image_bytes(truncated_png())], upscaler_1="Lanczos")
    assert job.state is JobState.FAILED and "could not be decoded" in job.error


# -- face restoration ----------------------------------------------------------------------------------------------


def test_gfpgan_restores_the_face_and_records_its_visibility(services: Services, monkeypatch: pytest.MonkeyPatch
                                                             ) -> None:
    pixels, landmarks = face_image()
    use_faces(services, monkeypatch, [landmarks])
    item = done(services, images=[Image.fromarray(pixels)], gfpgan_visibility=1.0).images[0]
    restored = np.asarray(item.image).astype(int)
    centre = tuple(int(v) for v in landmarks.mean(axis=0))
    assert restored.shape == pixels.shape
    # The stand-in 'restoration' negates the face: the middle of the face changed, the far corner did not.
    assert np.abs(restored[centre[1], centre[0]] - pixels[centre[1], centre[0]]).sum() > 100
    assert np.array_equal(restored[-1, -1], pixels[-1, -1])
    assert item.infotext == "GFPGAN visibility: 1"
    assert saved_infotext(item.path) == "GFPGAN visibility: 1"


def test_no_face_found_leaves_the_image_with_a_note(services: Services, monkeypatch: pytest.MonkeyPatch) -> None:
    use_faces(services, monkeypatch, [])
    source = gradient(64, 48)
    result = done(services, images=[source], gfpgan_visibility=0.5, upscaler_1="Lanczos", upscaling_resize=2)
    assert result.images[0].image.size == (128, 96)
    assert result.notes == ["GFPGAN: no face found; image unchanged"]
    assert result.info == "GFPGAN visibility: 0.5, Postprocess upscale by: 2, Postprocess upscaler: Lanczos"


@pytest.mark.parametrize("upscale_first", [False, True])
def test_upscale_first_decides_the_order(services: Services, monkeypatch: pytest.MonkeyPatch,
                                         upscale_first: bool) -> None:
    detector = use_faces(services, monkeypatch, [])
    result = done(services, images=[gradient(40, 32)], gfpgan_visibility=1.0, upscaler_1="Lanczos",
                  upscaling_resize=2, upscale_first=upscale_first, save_images=False)
    assert detector.sizes == [(80, 64) if upscale_first else (40, 32)]
    order = list(parse_infotext(f"x\n{result.info}"))
    assert (order.index("GFPGAN visibility") > order.index("Postprocess upscaler")) is upscale_first


def test_face_restorers_that_cannot_run_are_refused_before_any_work(services: Services,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    use_faces(services, monkeypatch, [])
    job = submit(services, images=[gradient(16, 16)], codeformer_visibility=1.0)
    assert job.state is JobState.FAILED and job.error_status == 400
    assert "codeformer_visibility: CodeFormer is not available" in job.error and "spandrel-extra-arches" in job.error


def test_gfpgan_without_its_file_says_how_to_get_it(services: Services, monkeypatch: pytest.MonkeyPatch,
                                                    tmp_path: Path) -> None:
    bare = build_services(["--data-dir", str(tmp_path)], {})  # a data dir with no face restoration files
    monkeypatch.setattr(services.engine, "face_restorers", bare.engine.face_restorers)
    job = submit(services, images=[gradient(16, 16)], gfpgan_visibility=1.0, upscaler_1="Lanczos")
    assert job.state is JobState.FAILED and job.error_status == 400
    assert job.error.startswith("gfpgan_visibility: face restoration with GFPGAN needs GFPGANv1.4.pth in ")
    assert "gfpgan-v1.4" in job.error  # the download catalogue id


# -- folders -------------------------------------------------------------------------------------------------------


def folder_of_images(root: Path) -> Path:
    source = root / "in"
    source.mkdir(parents=True)
    (source / "a.png").write_bytes(png_bytes(gradient(16, 16), SOURCE_INFOTEXT))
    gradient(20, 12).save(source / "b.jpg", quality=95)
    (source / "broken.png").write_bytes(truncated_png())
    (source / "notes.txt").write_text("not an image")
    return source


def test_folder_batch_saves_under_the_source_names(services: Services, tmp_path: Path) -> None:
    source, out = folder_of_images(tmp_path), tmp_path / "out"
    fields = {"input_dir": str(source), "output_dir": str(out), "upscaler_1": "Lanczos", "upscaling_resize": 2,
              "show_extras_results": False}
    result = done(services, **fields)
    assert sorted(p.name for p in out.iterdir()) == ["a.png", "b.png"]
    assert result.shown == [] and [item.path for item in result.images] == [out / "a.png", out / "b.png"]
    assert result.notes[0].startswith("Skipped broken.png:") and len(result.notes) == 1
    expected = f"{SOURCE_INFOTEXT}, Postprocess upscale by: 2, Postprocess upscaler: Lanczos"
    assert saved_infotext(out / "a.png") == expected
    with Image.open(out / "b.png") as b:
        assert b.size == (40, 24)
    again = done(services, **{**fields, "show_extras_results": True})
    assert [item.path.name for item in again.images] == ["a-1.png", "b-1.png"]  # never over an existing file
    assert [item.image.size for item in again.shown] == [(32, 32), (40, 24)]


def test_folder_batch_without_output_dir_saves_to_extras_images(services: Services, tmp_path: Path) -> None:
    result = done(services, input_dir=str(folder_of_images(tmp_path)), upscaler_1="Nearest", upscaling_resize=1)
    for item, stem in zip(result.images, ("a", "b"), strict=True):
        assert item.path.parent == services.paths.outputs / "extras-images"
        assert re.fullmatch(rf"\d{{5}}-{stem}\.png", item.path.name), item.path.name


def test_missing_folder_is_a_clear_error(services: Services, tmp_path: Path) -> None:
    job = submit(services, input_dir=str(tmp_path / "nope"), upscaler_1="Lanczos")
    assert job.state is JobState.FAILED and "input_dir: the folder" in job.error and "does not exist" in job.error


def test_a_folder_is_refused_when_shared_on_the_network(tmp_path: Path) -> None:
    from modules.ui import extras_tab

    shared = build_services(["--data-dir", str(tmp_path / "data"), "--listen"], {})
    values = {"mode": extras_tab.FOLDER, "input_dir": str(folder_of_images(tmp_path)), "upscaler_1": "Lanczos"}
    with pytest.raises(AccessDenied) as refused:
        extras_tab.build_request(shared, values)
    message = refused.value.message
    assert message.startswith("extras batch from a folder is disabled because the app is shared on the network")
    assert "--enable-insecure-extension-access" in message and refused.value.field == "input_dir"
    # The job itself refuses too, for a folder job sent straight to the job API.
    shared.jobs.start()
    try:
        job = shared.jobs.submit("extras", {"input_dir": values["input_dir"], "upscaler_1": "Lanczos"})
        assert job.wait(60) and job.state is JobState.FAILED and job.error_status == 403
        assert job.error == message
    finally:
        shared.jobs.stop()
    trusted = build_services(["--data-dir", str(tmp_path / "data"), "--listen",
                              "--enable-insecure-extension-access"], {})
    request, _ = extras_tab.build_request(trusted, values)
    assert request["input_dir"] == values["input_dir"]


# -- interrupt, skip, cancel, progress -----------------------------------------------------------------------------


def direct(services: Services, request: ExtrasRequest, *flags: str) -> tuple[ExtrasResult, Job]:
    """Run the job function in this thread with the job's interrupt/skip/cancel flags already set."""
    job = Job(type="extras", request=request)
    for flag in flags:
        getattr(job, f"_{flag}").set()
    return run_extras(services.engine, request, JobContext(job)), job


def test_interrupt_skip_and_cancel(services: Services) -> None:
    request = ExtrasRequest(images=[gradient(8, 8), gradient(16, 16)], upscaler_1="Lanczos", save_images=False)
    result, _ = direct(services, request, "interrupt")
    assert result.images == [] and result.notes == ["Interrupted: 2 image(s) were not processed."]
    result, job = direct(services, request, "skip")
    assert [item.image.size for item in result.images] == [(32, 32)]  # the first was dropped, the second made
    assert result.notes == ["Skipped image 1 (Skip pressed)."]
    assert job.progress.step == job.progress.total == 2000 and job.progress.text == "done"
    with pytest.raises(JobCancelled):
        direct(services, request, "cancel")


def test_interrupt_in_the_middle_of_an_upscale_keeps_the_finished_images(services: Services) -> None:
    class InterruptOnSecondImage(JobContext):
        def progress(self, step: int, total: int, preview: Any = None, text: str | None = None) -> None:
            super().progress(step, total, preview, text)
            if "tiles" in (text or "") and "image 2" in (text or ""):
                self.job._interrupt.set()

    services.settings.update({"upscaler_tile_size": 16, "upscaler_tile_overlap": 4}, save=False)
    try:
        request = ExtrasRequest(images=[gradient(24, 24)] * 3, upscaler_1=MODEL, upscaling_resize=4,
                                save_images=False)
        job = Job(type="extras", request=request)
        result = run_extras(services.engine, request, InterruptOnSecondImage(job))
    finally:
        services.settings.update({"upscaler_tile_size": 192, "upscaler_tile_overlap": 8}, save=False)
    assert [item.image.size for item in result.images] == [(96, 96)]
    assert result.notes == ["Interrupted during image 2: it and any images after it were not processed."]

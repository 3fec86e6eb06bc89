"""/sdapi/v1 (A1111's REST API) in-process, on tiny random-weight checkpoints: what an A1111 client sends and
gets back, the override_settings rules, progress/interrupt while a job runs, and a clear 4xx/501 for every
mistake or missing feature."""

from __future__ import annotations

import base64
import io
import json
import struct
import threading
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from modules.api.sdapi.generate import engine_request
from modules.api.sdapi.models import Txt2ImgApiRequest
from modules.app import create_app
from modules.engine.image_metadata import read_image_info
from modules.engine.infotext import parse_infotext
from modules.services import Services, build_services
from modules.settings import Option, Section
from tests.fixtures.tiny_models import save_tiny_checkpoint

SMALL = {"steps": 3, "width": 64, "height": 64, "sampler_name": "Euler"}
API = "/sdapi/v1"


@dataclass
class Api:
    client: TestClient
    services: Services
    data: Path

    def post(self, path: str, body: Any = None) -> Any:
        return self.client.post(API + path, json=body)

    def get(self, path: str) -> Any:
        return self.client.get(API + path)

    def txt2img(self, **fields: Any) -> dict[str, Any]:
        r = self.post("/txt2img", {**SMALL, **fields})
        assert r.status_code == 200, r.text
        return r.json()


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    data = tmp_path_factory.mktemp("sdapi")
    folder = data / "models" / "Stable-diffusion"
    save_tiny_checkpoint(folder, "sd1", name="alpha", seed=0)
    save_tiny_checkpoint(folder, "sd1", name="beta", seed=1)
    (data / "styles.csv").write_text("name,prompt,negative_prompt\nFilm,\"{prompt}, film grain\",cartoon\n")
    services = build_services(["--data-dir", str(data), "--api"], {})
    services.settings.add_section(Section("test", "Test", (
        Option("test_token", "s3cret-value", "A secret", "str", secret=True),)))
    with TestClient(create_app(services)) as client:
        yield Api(client, services, data)
    services.jobs.stop()


def image_of(b64: str) -> Image.Image:
    return Image.open(io.BytesIO(base64.b64decode(b64)))


def infotext_params(b64: str) -> dict[str, Any]:
    text, _ = read_image_info(image_of(b64))
    assert text, "no infotext embedded"
    return parse_infotext(text)


def saved(data: Path, kind: str = "txt2img-images") -> list[Path]:
    root = data / "outputs" / kind
    return sorted(p for p in root.rglob("*") if p.is_file()) if root.exists() else []


# -- txt2img ---------------------------------------------------------------------------------------------------


def test_txt2img_returns_pngs_with_infotext_and_a1111_info(api: Api) -> None:
    before = saved(api.data)
    body = api.txt2img(prompt="a red fox", negative_prompt="blurry", seed=1234, batch_size=2)
    assert len(body["images"]) == 2  # save_images is false by default: no grid, as in A1111
    for b64, seed in zip(body["images"], (1234, 1235), strict=True):
        img = image_of(b64)
        assert img.format == "PNG" and img.size == (64, 64)
        p = infotext_params(b64)
        assert (p["Seed"], p["Steps"], p["Size-1"], p["Size-2"]) == (str(seed), "3", "64", "64")
        assert p["Prompt"] == "a red fox" and p["Negative prompt"] == "blurry" and p["Sampler"] == "Euler"
    info = json.loads(body["info"])
    assert info["seed"] == 1234 and info["all_seeds"] == [1234, 1235] and info["index_of_first_image"] == 0
    assert info["sd_model_name"] == "alpha" and len(info["infotexts"]) == 2
    assert body["parameters"]["prompt"] == "a red fox" and body["parameters"]["sampler_index"] == "Euler"
    assert saved(api.data) == before  # A1111's API default save_images=false writes nothing


def test_a1111_api_defaults(api: Api) -> None:
    req = Txt2ImgApiRequest()
    assert (req.steps, req.cfg_scale, req.width, req.height, req.sampler_index) == (50, 7.0, 512, 512, "Euler")
    assert req.save_images is False and req.send_images is True and req.override_settings_restore_afterwards
    engine = engine_request(api.services, req, {})
    assert engine.sampler_name == "Euler" and engine.steps == 50 and engine.denoising_strength == 0.75
    assert engine.do_not_save_samples and engine.do_not_save_grid
    # Fields A1111 accepts and we do not use are accepted (and unknown keys ignored, as A1111's model does).
    Txt2ImgApiRequest.model_validate({"s_churn": 0.5, "s_noise": 1, "eta": 1.0, "restore_faces": False,
                                      "tiling": False, "comments": {}, "firstphase_width": 0, "no_such_field": 1})


def test_infotext_fills_only_fields_the_request_did_not_set(api: Api) -> None:
    infotext = ("a lighthouse at dusk\nNegative prompt: fog\nSteps: 9, Sampler: Euler, CFG scale: 5, Seed: 77, "
                "Size: 64x64, Model hash: 0123456789, Model: alpha, RNG: CPU, Version: v1.10.1")
    body = api.txt2img(infotext=infotext, steps=3)
    params = body["parameters"]
    assert (params["prompt"], params["negative_prompt"], params["seed"], params["steps"]) == (
        "a lighthouse at dusk", "fog", 77, 3)
    assert params["cfg_scale"] == 5.0
    p = infotext_params(body["images"][0])
    assert (p["Seed"], p["Steps"], p["CFG scale"]) == ("77", "3", "5")  # "RNG" (a setting we lack) was dropped


def test_override_settings_apply_to_the_job_and_are_restored(api: Api) -> None:
    before = set(saved(api.data))
    body = api.txt2img(seed=4242, save_images=True, override_settings={
        "samples_format": "jpg", "CLIP_stop_at_last_layers": 2, "sd_model_checkpoint": "beta"})
    new = set(saved(api.data)) - before
    assert [p.suffix for p in new] == [".jpg"] and next(iter(new)).name.endswith("-4242.jpg")
    p = infotext_params(body["images"][0])
    assert p["Clip skip"] == "2" and p["Model"] == "beta"
    assert image_of(body["images"][0]).format == "PNG"  # encoded after the restore, as A1111 does
    options = api.get("/options").json()
    assert options["samples_format"] == "png"
    assert options["sd_model_checkpoint"].startswith("alpha.safetensors")


def test_override_settings_kept_when_not_restoring(api: Api) -> None:
    api.txt2img(override_settings={"jpeg_quality": 55}, override_settings_restore_afterwards=False)
    assert api.get("/options").json()["jpeg_quality"] == 55
    assert api.post("/options", {"jpeg_quality": 80}).status_code == 200


def test_concurrent_overrides_never_leak(api: Api) -> None:
    """A request overriding samples_format and one without overrides, at once: each job saves in its own
    format, and the setting is back afterwards."""
    before = set(saved(api.data))
    results: dict[str, int] = {}

    def go(name: str, **fields: Any) -> None:
        results[name] = api.post("/txt2img", {**SMALL, "save_images": True, **fields}).status_code

    threads = [threading.Thread(target=go, args=("jpg",), kwargs={"seed": 501, "override_settings": {
        "samples_format": "jpg"}}), threading.Thread(target=go, args=("plain",), kwargs={"seed": 502})]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert results == {"jpg": 200, "plain": 200}
    names = {p.name.split("-", 1)[1] for p in set(saved(api.data)) - before}
    assert names == {"501.jpg", "502.png"}
    assert api.get("/options").json()["samples_format"] == "png"


def test_a_ui_job_queued_behind_an_override_does_not_see_it(api: Api) -> None:
    """The UI submits straight to the queue; a job it queues while an API override is in force runs under the
    user's own settings."""
    before = set(saved(api.data))
    blocker = api.services.jobs.submit("txt2img", {**SMALL, "steps": 12, "seed": 600, "do_not_save_samples": True})
    thread = threading.Thread(target=api.post, args=("/txt2img", {**SMALL, "seed": 601, "save_images": True,
                                                                   "override_settings": {"samples_format": "jpg"}}))
    thread.start()
    while api.services.jobs.pending_count() < 2:
        time.sleep(0.01)
    ui_job = api.services.jobs.submit("txt2img", {**SMALL, "seed": 602})
    assert ui_job.wait(120) and blocker.wait(1)
    thread.join(120)
    names = {p.name.split("-", 1)[1] for p in set(saved(api.data)) - before}
    assert names == {"601.jpg", "602.png"}


def test_send_images_false_and_save_images_true(api: Api) -> None:
    assert api.txt2img(send_images=False)["images"] == []
    before, grids_before = set(saved(api.data)), set(saved(api.data, "txt2img-grids"))
    body = api.txt2img(seed=9000, batch_size=2, save_images=True)
    files = set(saved(api.data)) - before
    assert sorted(p.name.split("-", 1)[1] for p in files) == ["9000.png", "9001.png"]
    assert len(set(saved(api.data, "txt2img-grids")) - grids_before) == 1
    # With the grid saved, A1111 returns it first and counts images from index 1.
    assert len(body["images"]) == 3 and image_of(body["images"][0]).size == (128, 64)
    info = json.loads(body["info"])
    assert info["index_of_first_image"] == 1 and len(info["infotexts"]) == 3


def test_styles_apply_and_unknown_style_fails_with_its_status(api: Api) -> None:
    p = infotext_params(api.txt2img(prompt="a cat", styles=["Film"])["images"][0])
    assert p["Prompt"] == "a cat, film grain" and p["Negative prompt"] == "cartoon"
    r = api.post("/txt2img", {**SMALL, "styles": ["Nope"]})
    assert r.status_code == 400 and "unknown style Nope" in r.json()["detail"]


# -- png-info --------------------------------------------------------------------------------------------------


def test_png_info_round_trip(api: Api) -> None:
    b64 = api.txt2img(prompt="round trip", seed=31337)["images"][0]
    for image in (b64, "data:image/png;base64," + b64):
        body = api.post("/png-info", {"image": image}).json()
        assert body["info"].startswith("round trip\nSteps: 3, Sampler: Euler")
        assert body["parameters"]["Seed"] == "31337" and body["parameters"]["Prompt"] == "round trip"
    plain = io.BytesIO()
    Image.new("RGB", (8, 8)).save(plain, format="PNG")
    body = api.post("/png-info", {"image": base64.b64encode(plain.getvalue()).decode()}).json()
    assert body["info"] == "" and body["items"] == {}
    assert api.post("/png-info", {"image": ""}).json()["info"] == ""


def _png_header(width: int, height: int) -> str:
    def chunk(kind: bytes, payload: bytes) -> bytes:
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))

    data = (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\0")) + chunk(b"IEND", b""))
    return base64.b64encode(data).decode()


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
@pytest.mark.parametrize(("image", "message"), [
    ("not base64 at all!", "not valid base64"),
    (base64.b64encode(b"hello, not an image").decode(), "is not an image"),
    (_png_header(10000, 10000), "pixel limit"),  # over Pillow's limit: refused before decoding
    (_png_header(30000, 30000), "too large to open safely"),  # Pillow's own bomb error
    ("https://example.invalid/a.png", "URLs are not accepted"),
], ids=["bad-base64", "not-an-image", "over-limit", "bomb", "url"])
def test_png_info_bad_input_is_400(api: Api, image: str, message: str) -> None:
    r = api.post("/png-info", {"image": image})
    assert r.status_code == 400, r.text
    assert message in r.json()["detail"]


# -- errors ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("fields", "status", "message"), [
    ({"sampler_name": "Euler z"}, 400, "Valid samplers: DPM++ 2M"),
    ({"width": 65}, 400, "multiple of 8"),
    ({"steps": 0}, 400, "steps"),
    ({"steps": "many"}, 422, "steps"),
    ({"override_settings": {"no_such_option": 1}}, 400, "valid keys: "),
    ({"override_settings": {"jpeg_quality": 500}}, 400, "jpeg_quality must be at most"),
    ({"override_settings": {"sd_model_checkpoint": "gamma"}}, 400, "unknown checkpoint 'gamma'"),
    ({"override_settings": {"sd_vae": "nope.safetensors"}}, 400, "unknown VAE"),
    ({"enable_hr": True, "hr_upscaler": "R-ESRGAN 4x+"}, 400, "unknown hires upscaler"),
    ({"script_name": "X/Y/Z plot"}, 501, "'X/Y/Z plot'"),
    ({"alwayson_scripts": {"adetailer": {"args": []}}}, 422, "always on script adetailer not found"),
    ({"alwayson_scripts": {"controlnet": {"args": [{"weight": "heavy"}]}}}, 400, "ControlNet unit 0: weight"),
    ({"alwayson_scripts": {"ControlNet": {"args": ["canny"]}}}, 400, "must be an object"),
    ({"restore_faces": True}, 400, "models/GFPGAN"),  # no GFPGAN weights in this data dir: says where they go
    ({"tiling": True}, 501, "tiling is not available yet"),
])
def test_txt2img_mistakes_are_4xx_or_501(api: Api, fields: dict[str, Any], status: int, message: str) -> None:
    r = api.post("/txt2img", {**SMALL, **fields})
    assert r.status_code == status, r.text
    assert message in r.json()["detail"]
    if status == 501:
        assert r.json()["error"] == "NotImplemented"


def test_features_not_landed_answer_501(api: Api) -> None:
    for path in ("/interrogate", "/create/embedding", "/train/hypernetwork"):
        assert api.post(path, {"image": ""}).status_code == 501, path
    assert api.get("/face-restorers").json() == []


# -- options, flags, lists -------------------------------------------------------------------------------------


def test_options_get_set_and_invalid(api: Api) -> None:
    options = api.get("/options").json()
    assert options["sd_model_checkpoint"].startswith("alpha.safetensors")
    assert "test_token" not in options  # secret options are never returned
    assert api.post("/options", {"jpeg_quality": 90}).json() is None
    assert api.get("/options").json()["jpeg_quality"] == 90
    assert json.loads((api.data / "config.json").read_text())["jpeg_quality"] == 90
    # All keys are checked before anything is saved.
    r = api.post("/options", {"jpeg_quality": 70, "no_such_option": True})
    assert r.status_code == 400 and "no_such_option" in r.json()["detail"]
    r = api.post("/options", {"jpeg_quality": 70, "save_txt": "yes"})
    assert r.status_code == 400 and "save_txt" in r.json()["detail"]
    assert api.get("/options").json()["jpeg_quality"] == 90
    r = api.post("/options", {"sd_model_checkpoint": "gamma"})
    assert r.status_code == 400 and "gamma" in r.json()["detail"]
    assert api.post("/options", {"sd_model_checkpoint": "beta", "jpeg_quality": 80}).status_code == 200
    assert api.get("/options").json()["sd_model_checkpoint"].startswith("beta.safetensors")
    assert json.loads(api.txt2img()["info"])["sd_model_name"] == "beta"
    api.post("/options", {"sd_model_checkpoint": ""})


def test_cmd_flags_mask_the_api_password(tmp_path: Path) -> None:
    services = build_services(["--data-dir", str(tmp_path), "--nowebui", "--api-auth", "bot:hunter2"], {})
    client = TestClient(create_app(services))
    assert client.get(API + "/cmd-flags").status_code == 401
    r = client.get(API + "/cmd-flags", auth=("bot", "hunter2"))
    assert r.status_code == 200 and r.json()["api_auth"] == "***" and "hunter2" not in r.text
    services.jobs.stop()


def test_sdapi_only_with_api_flag(tmp_path: Path) -> None:
    services = build_services(["--data-dir", str(tmp_path)], {})
    assert TestClient(create_app(services)).get(API + "/samplers").status_code == 404
    services.jobs.stop()


def test_lists_have_a1111_shapes(api: Api) -> None:
    models = api.get("/sd-models").json()
    assert [m["model_name"] for m in models] == ["alpha", "beta"]
    for m in models:
        assert set(m) == {"title", "model_name", "hash", "sha256", "filename", "config"}
        assert m["title"] == f"{m['model_name']}.safetensors [{m['hash']}]" and m["sha256"].startswith(m["hash"])
    samplers = api.get("/samplers").json()
    assert {"name", "aliases", "options"} <= set(samplers[0]) and "Euler" in [s["name"] for s in samplers]
    assert "Karras" in [s["label"] for s in api.get("/schedulers").json()]
    upscalers = api.get("/upscalers").json()
    assert [u["name"] for u in upscalers] == ["None", "Lanczos", "Nearest"]
    assert set(upscalers[0]) == {"name", "model_name", "model_path", "model_url", "scale"}
    assert {"name": "Latent"} in api.get("/latent-upscale-modes").json()
    assert api.get("/prompt-styles").json() == [{"name": "Film", "prompt": "{prompt}, film grain",
                                                 "negative_prompt": "cartoon"}]
    assert api.get("/scripts").json() == {"txt2img": ["controlnet"], "img2img": ["controlnet"]}
    assert set(api.get("/embeddings").json()) == {"loaded", "skipped"}
    assert api.get("/sd-vae").json() == [] and api.get("/loras").json() == []
    memory = api.get("/memory").json()
    assert set(memory["ram"]) == {"free", "used", "total"}
    assert "error" in memory["cuda"] or "system" in memory["cuda"]
    for ext in api.get("/extensions").json():
        assert {"name", "remote", "branch", "commit_hash", "commit_date", "version", "enabled"} == set(ext)
    for path in ("/refresh-checkpoints", "/refresh-vae", "/refresh-loras", "/refresh-embeddings"):
        assert api.post(path).status_code == 200, path


# -- progress, interrupt ---------------------------------------------------------------------------------------


def test_progress_while_running_then_interrupt_returns_what_is_done(api: Api) -> None:
    idle = api.get("/progress").json()
    assert idle["progress"] == 0 and idle["state"]["job_count"] == 0 and idle["current_image"] is None
    outcome: dict[str, Any] = {}

    def slow() -> None:
        outcome["response"] = api.post("/txt2img", {**SMALL, "steps": 500, "n_iter": 3, "seed": 11})

    worker = threading.Thread(target=slow)
    started = time.monotonic()
    worker.start()
    seen: dict[str, Any] = {}
    while time.monotonic() - started < 60:
        seen = api.get("/progress").json()
        if seen["state"]["sampling_step"] > 5 and seen["current_image"]:
            break
        time.sleep(0.05)
    assert seen["state"]["sampling_step"] > 5 and 0 < seen["progress"] < 1, seen
    assert seen["state"]["job"] == "txt2img" and seen["state"]["job_count"] >= 1
    assert seen["state"]["sampling_steps"] == 1500 and "step" in seen["textinfo"]
    assert image_of(seen["current_image"]).format == "PNG"
    assert api.client.get(API + "/progress?skip_current_image=true").json()["current_image"] is None
    assert api.post("/interrupt").json() == {}
    worker.join(60)
    assert not worker.is_alive()
    response = outcome["response"]
    assert response.status_code == 200
    body = response.json()
    assert len(body["images"]) == 1  # the image in progress is kept; the other two never start
    assert json.loads(body["info"])["all_seeds"] == [11]
    assert time.monotonic() - started < 40  # 3 x 500 steps would take far longer
    assert api.get("/progress").json()["state"]["job_count"] == 0
    assert api.post("/skip").json() == {}  # nothing running: a no-op, as in A1111


def test_alwayson_scripts_are_routed_to_the_extension_that_registered_them(tmp_path: Path) -> None:
    from tests.fixtures import extensions as fx

    save_tiny_checkpoint(tmp_path / "models" / "Stable-diffusion", "sd1", name="alpha")
    fx.write_extension(tmp_path / "extensions", "hello", fx.HELLO)
    services = build_services(["--data-dir", str(tmp_path), "--api"], {})
    with TestClient(create_app(services)) as client:
        def post(scripts: dict[str, Any]):  # type: ignore[no-untyped-def]
            return client.post("/sdapi/v1/txt2img", json={**SMALL, "alwayson_scripts": scripts})

        assert client.get("/sdapi/v1/scripts").json()["txt2img"] == ["controlnet", "hello crash", "hello steps"]
        r = post({"hello steps": {"args": [2]}})  # titles match case-insensitively, as in A1111
        assert r.status_code == 200, r.text
        assert infotext_params(r.json()["images"][0])["Steps"] == "2"
        bad = post({"Hello Steps": {"args": ["two"]}})
        assert bad.status_code == 400 and "positive step count" in bad.json()["detail"]
        unknown = post({"ADetailer": {"args": []}})
        assert unknown.status_code == 422 and "available: ControlNet, Hello Steps" in unknown.json()["detail"]
        crash = post({"Hello Crash": {"args": []}})
        assert crash.status_code == 500 and "failed inside extension hello" in crash.json()["detail"]
        states = {e["id"]: e["state"] for e in client.get("/studio/v1/extensions").json()["extensions"]}
        assert states["hello"] == "failed"  # shown in the Extensions tab, and the app is still up
        assert post({}).status_code == 200
    services.jobs.stop()

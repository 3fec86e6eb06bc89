"""POST /sdapi/v1/img2img and sd-webui-controlnet's API in-process, on tiny random-weight models: what an A1111
client sends (base64 init images, masks, infotext, override_settings, URLs, ControlNet units) and gets back, and a
clear 4xx/501 for every mistake."""

from __future__ import annotations

import base64
import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from modules.app import create_app
from modules.engine.image_metadata import read_image_info
from modules.engine.infotext import parse_infotext
from modules.services import build_services
from tests.fixtures.tiny_controlnet import save_tiny_controlnet
from tests.fixtures.tiny_models import save_tiny_checkpoint

SMALL = {"steps": 3, "width": 64, "height": 64, "sampler_name": "Euler", "denoising_strength": 0.8}


def b64(image: Image.Image, fmt: str = "PNG") -> str:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return base64.b64encode(buffer.getvalue()).decode()


def image_of(text: str) -> Image.Image:
    return Image.open(io.BytesIO(base64.b64decode(text)))


def gradient(size: tuple[int, int] = (64, 64)) -> Image.Image:
    x = np.linspace(0, 255, size[0], dtype=np.uint8)
    rgb = np.stack([np.tile(x, (size[1], 1)), np.tile(x[::-1], (size[1], 1)), np.full((size[1], size[0]), 90,
                                                                                     np.uint8)], axis=-1)
    return Image.fromarray(rgb)


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[TestClient, Path, Any]]:
    data = tmp_path_factory.mktemp("sdapi-i2i")
    folder = data / "models" / "Stable-diffusion"
    save_tiny_checkpoint(folder, "sd1", name="alpha", seed=0)
    save_tiny_checkpoint(folder, "sd1-inpaint", name="alpha-inpainting", seed=0)
    save_tiny_controlnet(data / "models" / "ControlNet", "sd1", "ldm", name="control_tiny_canny", seed=2)
    (data / "models" / "ControlNet" / "annotators").mkdir()
    (data / "models" / "ControlNet" / "annotators" / "body_pose_model.pth").write_bytes(b"weights")
    services = build_services(["--data-dir", str(data), "--api"], {})
    with TestClient(create_app(services)) as c:
        yield c, data, services
    services.jobs.stop()


def post(client: Any, **fields: Any) -> Any:
    c, _, _ = client
    return c.post("/sdapi/v1/img2img", json={**SMALL, "init_images": [b64(gradient())], **fields})


def test_img2img_answers_like_a1111(client: Any) -> None:
    r = post(client, seed=7, prompt="a red house")
    assert r.status_code == 200, r.text
    body = r.json()
    assert len(body["images"]) == 1 and image_of(body["images"][0]).size == (64, 64)
    info = json.loads(body["info"])
    assert info["seed"] == 7 and info["denoising_strength"] == 0.8
    text, _ = read_image_info(image_of(body["images"][0]))
    params = parse_infotext(text or "")
    assert params["Denoising strength"] == "0.8" and params["Seed"] == "7"
    assert body["parameters"]["init_images"], "the request is echoed as A1111 does"


def test_same_seed_same_image_and_size_follows_the_request(client: Any) -> None:
    first = post(client, seed=11).json()["images"][0]
    second = post(client, seed=11).json()["images"][0]
    assert np.array_equal(np.asarray(image_of(first)), np.asarray(image_of(second)))
    wide = post(client, seed=11, width=96, height=64, resize_mode=1).json()["images"][0]
    assert image_of(wide).size == (96, 64)


@pytest.mark.parametrize("checkpoint", ["alpha", "alpha-inpainting"])
def test_inpainting_changes_only_the_masked_area(client: Any, checkpoint: str) -> None:
    mask = Image.new("L", (64, 64), 0)
    mask.paste(255, (16, 16, 40, 40))
    r = post(client, seed=3, mask=b64(mask), mask_blur=0, inpaint_full_res=True, inpainting_fill=1,
             denoising_strength=1.0, override_settings={"sd_model_checkpoint": checkpoint})
    assert r.status_code == 200, r.text
    out = np.asarray(image_of(r.json()["images"][0]).convert("RGB")).astype(int)
    source = np.asarray(gradient()).astype(int)
    inside = np.zeros((64, 64), bool)
    inside[16:40, 16:40] = True
    assert np.array_equal(out[~inside], source[~inside])
    assert np.abs(out[inside] - source[inside]).mean() > 1
    params = parse_infotext(read_image_info(image_of(r.json()["images"][0]))[0] or "")
    assert params["Inpaint area"] == "Only masked" and "Mask blur" not in params  # A1111 omits a 0 blur


def test_save_images_and_include_init_images(client: Any) -> None:
    _, data, _ = client
    r = post(client, seed=21, save_images=True, include_init_images=True)
    assert r.status_code == 200, r.text
    images = r.json()["images"]
    assert len(images) == 2 and image_of(images[1]).size == (64, 64)
    saved = [p.name for p in (data / "outputs" / "img2img-images").rglob("*.png")]
    assert any(name.endswith("-21.png") for name in saved)


def test_infotext_fills_unset_fields(client: Any) -> None:
    c, _, _ = client
    r = c.post("/sdapi/v1/img2img", json={
        "init_images": [b64(gradient())], "steps": 3, "infotext": "a cat\nSteps: 2, Sampler: Euler, CFG scale: 4, "
        "Seed: 99, Size: 64x64, Denoising strength: 0.35"})
    assert r.status_code == 200, r.text
    info = json.loads(r.json()["info"])
    assert info["seed"] == 99 and info["denoising_strength"] == 0.35 and info["prompt"] == "a cat"
    assert info["steps"] == 3 and info["width"] == 64  # steps was set by the request, so the infotext loses


@pytest.mark.parametrize("fields, status, message", [
    ({"init_images": []}, 400, "needs at least one image"),
    ({"init_images": ["bm90IGFuIGltYWdl"]}, 400, "init_images[0] is not an image"),
    ({"init_images": ["%%%"]}, 400, "init_images[0] is not valid base64"),
    ({"init_images": ["https://example.com/cat.png"]}, 400, "api_enable_requests"),
    ({"mask": "bm90IGFuIGltYWdl"}, 400, "mask is not an image"),
    ({"denoising_strength": 2}, 400, "denoising_strength"),
    ({"resize_mode": 7}, 400, "resize_mode"),
    ({"sampler_name": "Nope"}, 400, "Nope"),
    ({"latent_mask": "abc"}, 501, "latent_mask"),
    ({"restore_faces": True}, 400, "models/GFPGAN"),
])
def test_mistakes_are_clear(client: Any, fields: dict[str, Any], status: int, message: str) -> None:
    r = post(client, **fields)
    assert r.status_code == status, r.text
    assert message in r.json()["detail"]


def test_urls_to_the_servers_network_are_refused_even_when_allowed(client: Any) -> None:
    c, _, services = client
    services.settings.update({"api_enable_requests": True}, save=False)
    try:
        r = post(client, init_images=["http://127.0.0.1:9/cat.png"])
    finally:
        services.settings.update({"api_enable_requests": False}, save=False)
    assert r.status_code == 400 and "local or private address" in r.json()["detail"]


def test_a_cmyk_jpeg_and_a_transparent_png_are_converted(client: Any) -> None:
    cmyk = gradient().convert("CMYK")
    rgba = gradient().convert("RGBA")
    rgba.putalpha(128)
    for image, fmt in ((cmyk, "JPEG"), (rgba, "PNG")):
        r = post(client, init_images=[b64(image, fmt)])
        assert r.status_code == 200, r.text


def half_black() -> Image.Image:
    image = Image.new("RGB", (64, 64), (255, 255, 255))
    image.paste((0, 0, 0), (0, 0, 32, 64))
    return image


def test_controlnet_routes_list_models_and_modules_and_detect(client: Any) -> None:
    c, _, _ = client
    models = c.get("/controlnet/model_list").json()["model_list"]
    assert len(models) == 1 and models[0].startswith("control_tiny_canny [")  # annotators/ is not a model
    modules = c.get("/controlnet/module_list").json()
    assert {"none", "canny", "threshold"} <= set(modules["module_list"]) and "canny" in modules["module_detail"]
    assert c.get("/controlnet/version").json() == {"version": 2}
    r = c.post("/controlnet/detect", json={"controlnet_module": "canny", "controlnet_input_images": [b64(half_black())],
                                           "controlnet_threshold_a": 100, "controlnet_threshold_b": 200})
    assert r.status_code == 200, r.text
    edges = np.asarray(image_of(r.json()["images"][0]).convert("L"))
    w = edges.shape[1]  # the processor resolution, not the input's size, as sd-webui-controlnet answers
    assert edges[:, w // 2 - w // 8:w // 2 + w // 8].max() == 255
    assert edges[:, :w // 4].max() == 0 and edges[:, -w // 4:].max() == 0
    bad = c.post("/controlnet/detect", json={"controlnet_module": "nope", "controlnet_input_images": [b64(gradient())]})
    assert bad.status_code in (400, 404) and "nope" in bad.json()["detail"]


def test_controlnet_units_in_alwayson_scripts_change_the_image_and_are_recorded(client: Any) -> None:
    c, _, _ = client
    title = c.get("/controlnet/model_list").json()["model_list"][0]
    unit = {"image": b64(half_black()), "module": "canny", "model": title, "weight": 1.0, "resize_mode": "Just Resize",
            "control_mode": 0, "pixel_perfect": False, "processor_res": 64, "threshold_a": 100, "threshold_b": 200,
            "guidance_start": 0.0, "guidance_end": 1.0, "enabled": True, "low_vram": False, "hr_option": "Both"}
    body = {**SMALL, "seed": 5}
    plain = c.post("/sdapi/v1/txt2img", json=body).json()["images"]
    controlled = c.post("/sdapi/v1/txt2img", json={**body, "alwayson_scripts": {"ControlNet": {"args": [unit]}}})
    assert controlled.status_code == 200, controlled.text
    images = controlled.json()["images"]
    assert len(images) == 2  # the result, then the detected map as sd-webui-controlnet answers
    assert np.abs(np.asarray(image_of(images[0]), int) - np.asarray(image_of(plain[0]), int)).max() > 4
    params = parse_infotext(read_image_info(image_of(images[0]))[0] or "")
    assert "Module: canny" in params["ControlNet 0"]
    i2i = post(client, alwayson_scripts={"controlnet": {"args": [{**unit, "image": None}]}})  # uses the init image
    assert i2i.status_code == 200, i2i.text
    wrong = c.post("/sdapi/v1/txt2img", json={**body, "alwayson_scripts": {"controlnet": {"args": [
        {**unit, "model": "control_v11p_sd15_openpose"}]}}})
    assert wrong.status_code == 404 and "control_tiny_canny" in wrong.json()["detail"]  # lists what there is

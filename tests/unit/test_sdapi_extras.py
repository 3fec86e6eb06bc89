"""POST /sdapi/v1/extra-single-image and /extra-batch-images in-process: A1111's request and answer shapes, nothing
saved (as A1111's API), a 400 naming the image for bad base64 or a corrupt image, a 400 listing the upscalers for an
unknown one; and GET /face-restorers listing the registry's restorers."""

from __future__ import annotations

import base64
import io
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image, PngImagePlugin

from modules.app import create_app
from modules.engine.image_metadata import read_image_info
from modules.services import Services, build_services

API = "/sdapi/v1"
FOX = "a red fox in snow\nSteps: 20, Sampler: Euler, Seed: 42, Size: 32x32"


def b64(image: Image.Image, infotext: str | None = None) -> str:
    meta = PngImagePlugin.PngInfo()
    if infotext:
        meta.add_text("parameters", infotext)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", pnginfo=meta)
    return base64.b64encode(buffer.getvalue()).decode()


def image_of(text: str) -> Image.Image:
    return Image.open(io.BytesIO(base64.b64decode(text)))


def gradient(width: int, height: int) -> Image.Image:
    y, x = np.mgrid[0:height, 0:width]
    rgb = np.stack([x * 255 // max(1, width - 1), y * 255 // max(1, height - 1), (x * y) % 256], axis=-1)
    return Image.fromarray(rgb.astype(np.uint8))


def truncated_b64() -> str:
    noise = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    data = base64.b64decode(b64(Image.fromarray(noise)))
    return base64.b64encode(data[: len(data) // 2]).decode()


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[TestClient, Services, Path]]:
    data = tmp_path_factory.mktemp("sdapi-extras")
    gfpgan = data / "models" / "GFPGAN"
    gfpgan.mkdir(parents=True)
    (gfpgan / "GFPGANv1.4.pth").write_bytes(b"listed by name; never loaded here")
    services = build_services(["--data-dir", str(data), "--api"], {})
    with TestClient(create_app(services)) as client:
        yield client, services, data
    services.jobs.stop()


def post(api: Any, path: str, body: dict[str, Any]) -> Any:
    client, _, _ = api
    return client.post(API + path, json=body)


def test_single_image_in_a1111_shape(api: Any) -> None:
    r = post(api, "/extra-single-image", {"image": b64(gradient(50, 30), FOX), "upscaler_1": "Lanczos",
                                          "upscaling_resize": 2})
    assert r.status_code == 200, r.text
    body = r.json()
    assert set(body) == {"html_info", "image", "notes"}
    assert body["html_info"] == "<p>Postprocess upscale by: 2, Postprocess upscaler: Lanczos</p>"
    result = image_of(body["image"])
    assert result.size == (96, 56)
    # The answer carries the source's parameters and what Extras did, as A1111's API image does.
    assert read_image_info(result)[0] == f"{FOX}, Postprocess upscale by: 2, Postprocess upscaler: Lanczos"
    _, _, data = api
    assert not (data / "outputs" / "extras-images").exists()  # A1111's API saves nothing


def test_scale_to_with_crop(api: Any) -> None:
    r = post(api, "/extra-single-image", {"image": b64(gradient(40, 30)), "resize_mode": 1, "upscaler_1": "Nearest",
                                          "upscaling_resize_w": 64, "upscaling_resize_h": 64})
    assert r.status_code == 200, r.text
    assert image_of(r.json()["image"]).size == (64, 64)
    assert "Postprocess crop to: 64x64" in r.json()["html_info"]


def test_batch_keeps_the_order(api: Any) -> None:
    sizes = [(16, 16), (24, 8), (8, 32)]
    r = post(api, "/extra-batch-images", {
        "imageList": [{"data": b64(gradient(w, h)), "name": f"{i}.png"} for i, (w, h) in enumerate(sizes)],
        "upscaler_1": "Lanczos", "upscaler_2": "Nearest", "extras_upscaler_2_visibility": 0.5, "upscaling_resize": 2})
    assert r.status_code == 200, r.text
    body = r.json()
    assert set(body) == {"html_info", "images", "notes"}
    assert [image_of(text).size for text in body["images"]] == [(32, 32), (48, 16), (16, 64)]
    assert "Postprocess upscaler 2: Nearest" in body["html_info"]


@pytest.mark.parametrize(("kind", "named"), [
    ("bad base64", "imageList[1] (b.png) is not valid base64"),
    ("not an image", "imageList[1] (b.png) is not an image"),
    ("truncated", "imageList[1] (b.png) could not be decoded (truncated or corrupt image)"),
])
def test_bad_images_are_400_naming_the_item(api: Any, kind: str, named: str) -> None:
    data = {"bad base64": "not base64!", "not an image": base64.b64encode(b"GIF89 nope").decode(),
            "truncated": truncated_b64()}[kind]
    r = post(api, "/extra-batch-images", {"upscaler_1": "Lanczos", "imageList": [
        {"data": b64(gradient(8, 8)), "name": "a.png"}, {"data": data, "name": "b.png"}]})
    assert r.status_code == 400, r.text
    assert named in r.json()["detail"]


def test_mistakes_are_400_with_a_clear_message(api: Any) -> None:
    image = b64(gradient(8, 8))
    cases = [
        ({"image": image, "upscaler_1": "R-ESRGAN 4x+"},
         "upscaler_1: unknown upscaler 'R-ESRGAN 4x+'; available: None, Lanczos, Nearest"),
        ({"image": image}, "nothing to do: choose Upscaler 1, or set GFPGAN or CodeFormer visibility above 0"),
        ({"image": image, "upscaler_1": "Lanczos", "upscaling_resize": 10}, "upscaling_resize: "),
        ({"image": "", "upscaler_1": "Lanczos"}, "image: send the image to process"),
        ({"image": image, "codeformer_visibility": 1}, "CodeFormer is not available"),
    ]
    for body, message in cases:
        r = post(api, "/extra-single-image", body)
        assert r.status_code == 400, (body.keys(), r.text)
        assert message in r.json()["detail"], r.json()
    r = post(api, "/extra-batch-images", {"imageList": [], "upscaler_1": "Lanczos"})
    assert r.status_code == 400 and "imageList: send at least one image" in r.json()["detail"]


def test_face_restorers_lists_the_registry(api: Any) -> None:
    client, services, data = api
    r = client.get(API + "/face-restorers")
    assert r.status_code == 200
    assert r.json() == [{"name": "GFPGAN", "cmd_dir": str(data / "models" / "GFPGAN")}]
    assert r.json() == services.engine.face_restorers.api_list()


def test_the_job_api_returns_an_extras_result_as_json(api: Any) -> None:
    client, _, _ = api
    r = client.post("/studio/v1/jobs", json={"type": "extras", "request": {
        "images": [b64(gradient(16, 8))], "names": ["small.png"], "upscaler_1": "Nearest", "upscaling_resize": 2,
        "save_images": False}})
    assert r.status_code == 202, r.text
    job_id = r.json()["id"]
    for _ in range(200):
        body = client.get(f"/studio/v1/jobs/{job_id}").json()
        if body["state"] == "done":
            break
        time.sleep(0.05)
    (item,) = body["result"]["images"]
    assert item["name"] == "small.png" and item["path"] is None
    assert item["infotext"] == "Postprocess upscale by: 2, Postprocess upscaler: Nearest"
    assert image_of(item["image"]).size == (32, 16)

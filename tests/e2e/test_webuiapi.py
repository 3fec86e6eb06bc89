"""The real server driven by the real `webuiapi` client (PyPI), as bots and scripts written for A1111 drive it:
txt2img, PNG info, options, lists, progress and interrupt, HTTP Basic auth, and a client that hangs up."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import webuiapi
from PIL import Image

from tests.e2e.server import RunningServer, start_server
from tests.fixtures.tiny_controlnet import save_tiny_controlnet
from tests.fixtures.tiny_models import save_tiny_checkpoint

pytestmark = pytest.mark.e2e


def _data_with_model(root: Path) -> Path:
    data = root / "data"
    save_tiny_checkpoint(data / "models" / "Stable-diffusion", "sd1", name="tiny", seed=0)
    save_tiny_controlnet(data / "models" / "ControlNet", "sd1", "ldm", name="control_tiny", seed=2)
    return data


def _client(server: RunningServer) -> webuiapi.WebUIApi:
    port = int(server.url.rsplit(":", 1)[1])
    return webuiapi.WebUIApi(host="127.0.0.1", port=port)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    running = start_server(_data_with_model(tmp_path_factory.mktemp("webuiapi")), "--api")
    yield running
    running.stop()


def test_txt2img_and_png_info(server: RunningServer) -> None:
    api = _client(server)
    result = api.txt2img(prompt="a small red fox", seed=42, steps=3, width=64, height=64, sampler_name="Euler")
    assert isinstance(result.image, Image.Image) and result.image.size == (64, 64)
    assert result.info["seed"] == 42 and result.info["sd_model_name"] == "tiny"
    assert result.parameters["prompt"] == "a small red fox"
    info = api.png_info(result.image)
    assert info.info.startswith("a small red fox\nSteps: 3, Sampler: Euler") and "Seed: 42" in info.info
    assert info.parameters["Seed"] == "42"


def test_img2img_inpaint_and_controlnet_units(server: RunningServer) -> None:
    api = _client(server)
    source = Image.new("RGB", (64, 64), (200, 40, 40))
    source.paste((20, 20, 200), (0, 0, 32, 64))
    result = api.img2img(images=[source], prompt="a blue door", seed=7, steps=3, width=64, height=64,
                         sampler_name="Euler", denoising_strength=0.6)
    assert result.image.size == (64, 64) and result.info["denoising_strength"] == 0.6
    mask = Image.new("L", (64, 64), 0)
    mask.paste(255, (16, 16, 48, 48))
    inpainted = api.img2img(images=[source], mask_image=mask, prompt="a window", seed=7, steps=3, width=64,
                            height=64, sampler_name="Euler", denoising_strength=1.0, mask_blur=0,
                            inpaint_full_res=True, inpainting_fill=1)
    corner = inpainted.image.convert("RGB").getpixel((2, 2))
    assert corner == (20, 20, 200)  # outside the mask, the original pixel
    assert "Inpaint area: Only masked" in api.png_info(inpainted.image).info

    models = api.controlnet_model_list()
    assert len(models) == 1 and models[0].startswith("control_tiny [")
    assert "canny" in api.controlnet_module_list()
    unit = webuiapi.ControlNetUnit(image=source, module="canny", model=models[0], processor_res=64)
    # Our own alwayson_scripts dict: webuiapi writes the units into its shared default one, which would send
    # them again with every later call of this client.
    controlled = api.txt2img(prompt="a door", seed=7, steps=3, width=64, height=64, sampler_name="Euler",
                             controlnet_units=[unit], alwayson_scripts={})
    assert len(controlled.images) == 2  # the image, then the canny map, as sd-webui-controlnet answers
    assert "ControlNet 0" in api.png_info(controlled.image).parameters


def test_options_and_lists(server: RunningServer) -> None:
    api = _client(server)
    options = api.get_options()
    assert options["sd_model_checkpoint"].startswith("tiny.safetensors")
    assert api.util_get_current_model().startswith("tiny.safetensors")
    api.set_options({"jpeg_quality": 70})
    assert api.get_options()["jpeg_quality"] == 70
    assert "Euler" in api.util_get_sampler_names()
    assert [m["model_name"] for m in api.get_sd_models()] == ["tiny"]
    assert "automatic" in api.util_get_scheduler_names()
    assert api.get_cmd_flags()["api"] is True
    assert api.get_face_restorers() == [] and api.get_scripts() == {"txt2img": ["controlnet"], "img2img": ["controlnet"]}


def test_progress_and_interrupt(server: RunningServer) -> None:
    api = _client(server)
    assert api.get_progress()["state"]["job_count"] == 0
    outcome: dict[str, Any] = {}

    def slow() -> None:
        outcome["result"] = api.txt2img(prompt="slow", seed=7, steps=500, n_iter=3, width=64, height=64,
                                        sampler_name="Euler")

    worker = threading.Thread(target=slow)
    worker.start()
    deadline = time.monotonic() + 90
    progress: dict[str, Any] = {}
    while time.monotonic() < deadline:
        progress = api.get_progress()
        if progress["state"]["sampling_step"] > 2:
            break
        time.sleep(0.05)
    assert progress["state"]["sampling_step"] > 2 and progress["progress"] > 0, progress
    assert api.interrupt() == {}
    worker.join(90)
    assert not worker.is_alive()
    result = outcome["result"]
    assert len(result.images) == 1 and result.info["all_seeds"] == [7]


def test_client_that_hangs_up_loses_nothing(server: RunningServer, tmp_path: Path) -> None:
    """The job goes on after the client disconnects, and save_images still writes the image."""
    body = {"prompt": "patience", "seed": 9191, "steps": 60, "width": 64, "height": 64, "sampler_name": "Euler",
            "save_images": True}
    with pytest.raises(httpx.TimeoutException):
        httpx.post(server.url + "/sdapi/v1/txt2img", json=body, timeout=0.3)
    data = Path(_server_data(server))
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if list((data / "outputs" / "txt2img-images").rglob("*-9191.png")):
            break
        time.sleep(0.1)
    assert list((data / "outputs" / "txt2img-images").rglob("*-9191.png"))


def _server_data(server: RunningServer) -> str:
    args = server.process.args
    return str(args[args.index("--data-dir") + 1])


def test_api_auth_with_set_auth(tmp_path: Path) -> None:
    running = start_server(_data_with_model(tmp_path), "--api", "--api-auth", "u:p")
    try:
        assert httpx.get(running.url + "/sdapi/v1/sd-models").status_code == 401
        api = _client(running)
        with pytest.raises(RuntimeError, match="401"):
            api.txt2img(prompt="x", steps=3, width=64, height=64)
        api.set_auth("u", "p")
        assert [m["model_name"] for m in api.get_sd_models()] == ["tiny"]
        result = api.txt2img(prompt="authorised", seed=3, steps=3, width=64, height=64, sampler_name="Euler")
        assert result.info["seed"] == 3
        api.set_auth("u", "wrong")
        with pytest.raises(RuntimeError, match="401"):
            api.txt2img(prompt="x", steps=3, width=64, height=64)
    finally:
        running.stop()

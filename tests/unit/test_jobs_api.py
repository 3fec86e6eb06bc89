"""/studio/v1/jobs with real generation: an id at once, progress with a live preview, then the images."""

from __future__ import annotations

import base64
import io
import time
from pathlib import Path

from fastapi.testclient import TestClient
from PIL import Image

from modules.app import create_app
from modules.engine.image_metadata import read_image_info
from modules.services import build_services
from tests.fixtures.tiny_models import save_tiny_checkpoint


def test_txt2img_job_over_rest_returns_images_with_infotext(tmp_path: Path) -> None:
    save_tiny_checkpoint(tmp_path / "models" / "Stable-diffusion", "sd1", name="tiny")
    client = TestClient(create_app(build_services(["--data-dir", str(tmp_path), "--api"], {})))
    request = {"prompt": "a kite", "seed": 31, "steps": 40, "width": 64, "height": 64, "sampler_name": "Euler",
               "batch_size": 2}
    submitted = client.post("/studio/v1/jobs", json={"type": "txt2img", "request": request})
    assert submitted.status_code == 202
    job_id = submitted.json()["id"]
    saw_preview = False
    deadline = time.monotonic() + 120
    while (body := client.get(f"/studio/v1/jobs/{job_id}").json())["state"] in ("queued", "running"):
        saw_preview = saw_preview or "preview" in body
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert body["state"] == "done", body["error"]
    assert saw_preview  # the settings default shows a preview every 5 steps
    result = body["result"]
    assert result["seeds"] == [31, 32] and len(result["images"]) == 2
    image = Image.open(io.BytesIO(base64.b64decode(result["images"][0])))
    infotext, _ = read_image_info(image)
    assert infotext == result["infotexts"][0] and "Seed: 31" in infotext
    assert result["files"][0].endswith("-31.png")
    # Another client (or the same one after a disconnect) can still fetch it later.
    again = TestClient(client.app).get(f"/studio/v1/jobs/{job_id}").json()
    assert again["result"]["seeds"] == [31, 32]

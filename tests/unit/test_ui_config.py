"""ui-config.json: A1111-style UI defaults are written out, read back, and bad values never break the page."""

from __future__ import annotations

import json
from pathlib import Path

from fastapi.testclient import TestClient

from modules.app import create_app
from modules.services import build_services


def start(data: Path):
    services = build_services(["--data-dir", str(data)], {})
    client = TestClient(create_app(services))
    props = {c["props"].get("elem_id"): c["props"] for c in client.get("/config").json()["components"]}
    return services, props


def test_defaults_are_written_with_a1111_keys(tmp_path: Path) -> None:
    start(tmp_path)
    stored = json.loads((tmp_path / "ui-config.json").read_text())
    assert stored["txt2img/Sampling steps/value"] == 20
    assert stored["txt2img/Sampling steps/maximum"] == 150
    assert stored["txt2img/Width/value"] == 512
    assert stored["txt2img/Prompt/value"] == ""


def test_edited_values_apply_and_bad_ones_are_reported(tmp_path: Path) -> None:
    (tmp_path / "ui-config.json").write_text(json.dumps({
        "txt2img/Sampling steps/value": 30,
        "txt2img/Sampling steps/maximum": 200,
        "txt2img/CFG Scale/value": "seven",
        "txt2img/Sampling method/value": "No Such Sampler",
        "txt2img/Width/visible": False,
    }))
    services, props = start(tmp_path)
    assert props["txt2img_steps"]["value"] == 30 and props["txt2img_steps"]["maximum"] == 200
    assert props["txt2img_cfg_scale"]["value"] == 7  # the bad value was ignored
    assert props["txt2img_sampling"]["value"] == "DPM++ 2M"
    assert props["txt2img_width"]["visible"] is False
    assert any("CFG Scale/value: must be a number" in n for n in services.notices)
    assert any("No Such Sampler" in n for n in services.notices)
    assert props["notices"]["visible"] is True


def test_corrupt_file_is_backed_up(tmp_path: Path) -> None:
    (tmp_path / "ui-config.json").write_text("{nope")
    services, props = start(tmp_path)
    assert props["txt2img_steps"]["value"] == 20
    assert list(tmp_path.glob("ui-config.json.corrupt-*"))
    assert any("ui-config.json could not be read" in n for n in services.notices)

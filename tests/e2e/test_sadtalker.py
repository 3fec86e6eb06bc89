"""SadTalker end to end: the app's REST routes and job queue, tiny random-weight checkpoints under the official
names in models/SadTalker (loaded by the real loader), a stub face detector, a synthetic portrait and a voice-like
recording, out to an MP4 checked with ffprobe-like probing: frame count = audio length at 25 fps, the size asked
for, an audio stream, and every setting in the comment tag and the JSON sidecar.

The app runs in this process (FastAPI's TestClient over the app `launch.py` builds) so the face detector can be
swapped for the stub; `test_sadtalker_cli.py` drives the real `launch.py sadtalker` process.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from modules.app import create_app
from modules.services import Services, build_services
from tests.fixtures.talking_head_inputs import StubLandmarker, png_bytes, portrait, voice, wav_bytes
from tests.fixtures.tiny_sadtalker import write_tiny_sadtalker
from tests.sadtalker._pkg import submodule

FPS = 25


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[TestClient, Services]]:
    data = tmp_path_factory.mktemp("sadtalker-data")
    write_tiny_sadtalker(data / "models" / "SadTalker", sizes=(256, 512))
    services = build_services(["--data-dir", str(data), "--nowebui"], {})
    runner = next(t.run for t in services.jobs.types() if t.name == "sadtalker").__self__
    runner.use_landmarker(lambda _folder, _device: StubLandmarker())
    with TestClient(create_app(services)) as client:
        yield client, services
    services.jobs.stop()
    services.download_jobs.stop()


@pytest.fixture(scope="module")
def media() -> dict[str, bytes]:
    return {"image": png_bytes(portrait(320, 288)), "audio": wav_bytes(voice(0.3))}  # 0.3 s: 7 frames


def probe(path: Path) -> Any:
    return submodule("video").probe(path)


def generate(client: TestClient, media: dict[str, bytes], **fields: Any) -> Any:
    files = {"image": ("face.png", media["image"], "image/png"), "audio": ("voice.wav", media["audio"], "audio/wav")}
    data = {k: str(v) for k, v in fields.items()}
    return client.post("/ext/sadtalker/generate", files=files, data=data)


def saved_video(response: Any, tmp_path: Path) -> Path:
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "video/mp4"
    tmp_path.mkdir(parents=True, exist_ok=True)
    path = tmp_path / "answer.mp4"
    path.write_bytes(response.content)
    return path


@pytest.mark.parametrize("preprocess, size, batch_size, still", [
    ("crop", 256, 1, False),
    ("extcrop", 256, 3, False),
    ("resize", 256, 2, False),
    ("full", 256, 3, True),
    ("extfull", 256, 1, False),
    ("crop", 512, 3, True),
])
def test_every_preprocess_mode_makes_an_mp4_with_sound(app: tuple[TestClient, Services], media: dict[str, bytes],
                                                        tmp_path: Path, preprocess: str, size: int, batch_size: int,
                                                        still: bool) -> None:
    client, _ = app
    response = generate(client, media, preprocess=preprocess, size=size, batch_size=batch_size,
                        still_mode=still, seed=7)
    info = probe(saved_video(response, tmp_path))
    assert info.frames == int(0.3 * 16000 / 640) == 7  # the audio's length at 25 fps
    assert info.fps == FPS and info.has_audio
    assert abs(info.audio_seconds - info.frames / FPS) < 0.05
    assert int(response.headers["X-Frames"]) == 7 and response.headers["X-Seed"] == "7"
    if preprocess in ("full", "extfull"):
        assert (info.width, info.height) == (320, 288)  # pasted back into the whole photo
    elif preprocess == "resize":
        assert (info.width, info.height) == (size, 288 * size // 320)  # the photo's aspect, width = size
    else:
        assert info.width == size and abs(info.height - size) <= size // 4  # the face crop's aspect
    parameters = json.loads(info.comment)
    assert parameters["preprocess"] == preprocess and parameters["size"] == size and parameters["seed"] == 7
    assert parameters["still_mode"] is still and parameters["batch_size"] == batch_size


def test_same_seed_same_video_and_outputs_are_numbered_with_a_sidecar(app: tuple[TestClient, Services],
                                                                      media: dict[str, bytes],
                                                                      tmp_path: Path) -> None:
    client, services = app
    first = saved_video(generate(client, media, seed=123, batch_size=2), tmp_path)
    again = client.post("/ext/sadtalker/generate?response=json",
                        files={"image": ("f.png", media["image"]), "audio": ("v.wav", media["audio"])},
                        data={"seed": "123", "batch_size": "3"})
    result = again.json()
    video = Path(result["video"])
    read_frames = submodule("video").read_frames
    frames_a, frames_b = read_frames(first)[0], read_frames(video)[0]
    assert len(frames_a) == len(frames_b) == 7
    # Batch size changes the speed, not the video (up to float rounding in batched convolutions).
    assert max(int(np.abs(a.astype(int) - b).max()) for a, b in zip(frames_a, frames_b)) <= 2
    other_seed = saved_video(generate(client, media, seed=124, batch_size=2), tmp_path / "other")
    assert any(np.abs(a.astype(int) - b).mean() > 0.5 for a, b in zip(frames_a, read_frames(other_seed)[0]))
    assert video.parent.parent == services.paths.outputs / "sadtalker"
    assert video.name.endswith("-123.mp4") and video.name[:5].isdigit()
    sidecar = json.loads(video.with_suffix(".json").read_text())
    assert sidecar["parameters"]["seed"] == 123 and sidecar["frames"] == 7 and sidecar["has_audio"] is True


def test_the_job_api_runs_it_and_the_video_route_serves_it(app: tuple[TestClient, Services],
                                                           media: dict[str, bytes], tmp_path: Path) -> None:
    client, _ = app
    request = {"type": "sadtalker", "request": {
        "image": base64.b64encode(media["image"]).decode(), "audio": base64.b64encode(media["audio"]).decode(),
        "preprocess": "crop", "seed": 5, "input_yaw": [-10, 10], "expression_scale": 1.5, "use_blink": False}}
    submitted = client.post("/studio/v1/jobs", json=request)
    assert submitted.status_code in (200, 201, 202), submitted.text
    job_id = submitted.json()["id"]
    deadline = time.monotonic() + 120
    while (state := client.get(f"/studio/v1/jobs/{job_id}").json())["state"] in ("queued", "running"):
        assert time.monotonic() < deadline, state
        time.sleep(0.1)
    assert state["state"] == "done", state
    assert state["result"]["frames"] == 7 and state["result"]["parameters"]["input_yaw"] == [-10, 10]
    info = probe(saved_video(client.get(f"/ext/sadtalker/jobs/{job_id}/video"), tmp_path))
    assert info.frames == 7 and info.has_audio


def test_models_route_names_what_is_missing(app: tuple[TestClient, Services]) -> None:
    client, _ = app
    assert client.get("/ext/sadtalker/models", params={"size": 256, "preprocess": "full"}).json()["ready"] is True
    wrong = client.get("/ext/sadtalker/models", params={"size": 384})
    assert wrong.status_code == 400 and "256 or 512" in wrong.json()["detail"]


# -- bad inputs: each one a clear message, no file left behind ----------------------------------------------------


def outputs_count(services: Services) -> int:
    folder = services.paths.outputs / "sadtalker"
    return sum(1 for p in folder.rglob("*") if p.is_file()) if folder.exists() else 0


@pytest.mark.parametrize("image, audio, status, message", [
    (b"not an image at all", None, 400, "could not be read as a picture"),
    (None, b"RIFF....WAVEfmt garbage", 400, "is not an audio file we can read"),
    (None, wav_bytes(voice(0.3) * 0), 400, "is silent"),
    (None, wav_bytes(voice(0.02)), 400, "too short"),
])
def test_bad_media_is_refused_with_a_message(app: tuple[TestClient, Services], media: dict[str, bytes],
                                             image: bytes | None, audio: bytes | None, status: int,
                                             message: str) -> None:
    client, services = app
    before = outputs_count(services)
    response = generate(client, {"image": image or media["image"], "audio": audio or media["audio"]})
    assert response.status_code == status and message in response.json()["detail"], response.text
    assert outputs_count(services) == before


def test_a_too_long_recording_is_refused_by_the_limit_setting(app: tuple[TestClient, Services],
                                                              media: dict[str, bytes]) -> None:
    client, services = app
    services.settings.update({"sadtalker_max_seconds": 1.0})
    try:
        response = generate(client, {"image": media["image"], "audio": wav_bytes(voice(1.5))})
    finally:
        services.settings.update({"sadtalker_max_seconds": 600.0})
    assert response.status_code == 400 and "too long" in response.json()["detail"]


def test_no_face_and_several_faces(app: tuple[TestClient, Services], media: dict[str, bytes]) -> None:
    client, services = app
    runner = next(t.run for t in services.jobs.types() if t.name == "sadtalker").__self__
    try:
        runner.use_landmarker(lambda _f, _d: StubLandmarker(faces=[]))
        response = generate(client, media)
        assert response.status_code == 400 and "No face was found" in response.json()["detail"]
        runner.use_landmarker(lambda _f, _d: StubLandmarker(faces=[(20, 20, 80, 90), (100, 40, 260, 250)]))
        result = client.post("/ext/sadtalker/generate?response=json",
                             files={"image": ("f.png", media["image"]), "audio": ("v.wav", media["audio"])}).json()
        assert any("2 faces" in note and "largest" in note for note in result["notes"])
    finally:
        runner.use_landmarker(lambda _f, _d: StubLandmarker())


@pytest.mark.parametrize("fields, message", [
    ({"pose_style": "46"}, "pose_style"),
    ({"size": "384"}, "size"),
    ({"preprocess": "zoom"}, "preprocess"),
    ({"input_yaw": "left"}, "input_yaw"),
    ({"enhancer": "NoSuchRestorer"}, "NoSuchRestorer"),
    ({"background_enhancer": "NoSuchUpscaler"}, "NoSuchUpscaler"),
])
def test_bad_settings_are_refused_before_any_work(app: tuple[TestClient, Services], media: dict[str, bytes],
                                                  fields: dict[str, str], message: str) -> None:
    client, services = app
    before = outputs_count(services)
    response = generate(client, media, **fields)
    assert 400 <= response.status_code < 500 and message in response.text, response.text
    assert outputs_count(services) == before


def test_a_reference_video_that_is_not_a_video(app: tuple[TestClient, Services], media: dict[str, bytes]) -> None:
    client, _ = app
    files = {"image": ("f.png", media["image"]), "audio": ("v.wav", media["audio"]),
             "ref_pose": ("pose.mp4", b"definitely not a video")}
    response = client.post("/ext/sadtalker/generate", files=files)
    assert response.status_code == 400 and "ref_pose" in response.json()["detail"]


def test_missing_checkpoints_are_named(tmp_path: Path, media: dict[str, bytes]) -> None:
    services = build_services(["--data-dir", str(tmp_path / "empty"), "--nowebui"], {})
    with TestClient(create_app(services)) as client:
        models = client.get("/ext/sadtalker/models", params={"size": 512, "preprocess": "full"}).json()
        assert models["ready"] is False
        assert set(models["missing"]["SadTalker"]) == {"SadTalker_V0.0.2_512.safetensors",
                                                       "mapping_00109-model.pth.tar"}
        assert models["downloads"]["SadTalker_V0.0.2_512.safetensors"] == "sadtalker-512"
        response = generate(client, media, size=512, preprocess="full")
        assert response.status_code == 400
        assert "SadTalker_V0.0.2_512.safetensors" in response.json()["detail"]
    services.jobs.stop()
    services.download_jobs.stop()

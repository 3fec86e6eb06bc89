"""Faults (issue 9, part 4): the app under kill -9, out-of-memory, a hanging extension and a full disk.

* kill -9 while an image is being saved, and while a SadTalker video is being encoded (real `launch.py`
  servers): after a restart outputs/ holds no partial or temporary file (the start-up sweep removed them), and
  the jobs that were queued or running are reported lost, by id, in the start notices (`/studio/v1/health`).
  The image case is made deterministic by an extension whose before_image_saved hook holds the save (its file
  name already claimed) until the test kills the server; the video case kills as soon as the encoder's
  temporary file exists, while frames are still being rendered into it.
* Out of memory, injected in the memory manager (its `inject_oom` fault point, at a denoising step) and raised
  by the VAE decoder: the job fails with the advice message, the next job succeeds.
* An extension whose hook hangs: the job goes on after the hook timeout, the extension is marked failed with
  the reason, later jobs do not wait for it, and its late writes to the payload change nothing.
* A full disk (a small tmpfs as outputs/; skipped with the reason when it cannot be mounted): a clear error
  and nothing half-written, for an image, an image with its .txt, and a video.
"""

from __future__ import annotations

import base64
import json
import math
import os
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient

from modules import crash_recovery
from modules.app import create_app
from modules.extensions.hooks import GenerateEvent, HookRegistry, ImageSaveEvent
from modules.jobs import JobState
from modules.jobs.journal import JobJournal
from modules.services import Services, build_services
from tests.e2e.server import RunningServer, start_server
from tests.fixtures import extensions as fx
from tests.fixtures.talking_head_inputs import png_bytes, portrait, voice, wav_bytes, write_random_face_models
from tests.fixtures.tiny_models import save_tiny_checkpoint
from tests.fixtures.tiny_sadtalker import write_tiny_sadtalker
from tests.sadtalker._pkg import submodule
from tests.security.faults_support import (
    HANGS_ON_REQUEST,
    HOLDS_THE_SAVE,
    assert_complete_images,
    fill_disk,
    hidden_files,
    small_tmpfs,
    visible_files,
    wait_job,
    wait_until,
)

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(170)]

SMALL = {"steps": 2, "width": 64, "height": 64, "sampler_name": "Euler", "seed": 7}


def _kill(server: RunningServer) -> None:
    os.kill(server.process.pid, signal.SIGKILL)
    server.process.wait(10)


def _notices(server: RunningServer) -> list[str]:
    return httpx.get(server.url + "/studio/v1/health", timeout=30).json()["notices"]


def _lost_notice(notices: list[str]) -> str:
    found = [n for n in notices if "were lost" in n]
    assert len(found) == 1, notices
    return found[0]


# -- kill -9 -----------------------------------------------------------------------------------------------------


def test_kill_during_image_save(tmp_path: Path) -> None:
    data = tmp_path / "data"
    save_tiny_checkpoint(data / "models" / "Stable-diffusion", "sd1", name="tiny")
    (data / "config.json").write_text(json.dumps({"extension_hook_timeout": 3600}))
    holder = fx.write_extension(data / "extensions", "holds-save", HOLDS_THE_SAVE)
    outputs = data / "outputs"
    server = start_server(data, "--api", "--nowebui")
    try:
        http = httpx.Client(base_url=server.url, timeout=60)
        ids = [http.post("/studio/v1/jobs", json={"type": "txt2img", "request": {**SMALL, "prompt": p}}).json()["id"]
               for p in ("first cat", "second cat", "third cat")]
        wait_until(lambda: (holder / "entered").exists(), 90, "the save to reach before_image_saved")
        at_crash = hidden_files(outputs)
        _kill(server)
    finally:
        server.stop()
    # Killed mid-save: the counter was claimed (a hidden marker), no image is visible.
    assert any(p.name.endswith(".reserve") for p in at_crash), at_crash
    assert visible_files(outputs) == []

    holder.rename(holder.with_name("holds-save.disabled"))  # the restart must not hold its saves again
    server = start_server(data, "--api", "--nowebui")
    try:
        lost = _lost_notice(_notices(server))
        assert "3 job(s)" in lost and all(job_id in lost for job_id in ids), lost
        assert "running" in lost and "queued" in lost and "'first cat'" in lost
        assert hidden_files(outputs) == [], "the start-up sweep left a temporary or marker behind"
        http = httpx.Client(base_url=server.url, timeout=60)
        job = http.post("/studio/v1/jobs", json={"type": "txt2img", "request": {**SMALL, "prompt": "after"}}).json()
        assert wait_job(http, job["id"])["state"] == "done"
    finally:
        server.stop()
    saved = visible_files(outputs)
    assert len(saved) == 1 and saved[0].name.startswith("00000-"), saved  # no counter value lost to the crash
    assert_complete_images(saved)


def test_kill_during_video_encode(tmp_path: Path) -> None:
    data = tmp_path / "data"
    write_tiny_sadtalker(data / "models" / "SadTalker")
    write_random_face_models(data / "models" / "GFPGAN")  # random weights find no face: preprocess "resize"
    videos = data / "outputs" / "sadtalker"
    request = {"image": base64.b64encode(png_bytes(portrait(300, 300))).decode(),
               "audio": base64.b64encode(wav_bytes(voice(4.0))).decode(),  # 100 frames: seconds of rendering
               "preprocess": "resize", "batch_size": 2, "seed": 5}
    server = start_server(data, "--api", "--nowebui")
    try:
        http = httpx.Client(base_url=server.url, timeout=60)
        job_id = http.post("/studio/v1/jobs", json={"type": "sadtalker", "request": request}).json()["id"]
        temps = wait_until(lambda: list(videos.rglob(".*.tmp")) if videos.exists() else [], 120,
                           "the video encoder's temporary file")
        state = http.get(f"/studio/v1/jobs/{job_id}").json()
        _kill(server)
    finally:
        server.stop()
    assert state["state"] == "running" and "render" in state["text"], state  # it died mid-encode
    assert not list(videos.rglob("*.mp4")), "a final-named video exists although the encode never finished"
    # ffmpeg outlives its parent for a moment (it finishes on end of input) but only ever writes the hidden file.
    time.sleep(1.0)
    assert [p for p in visible_files(videos) if p.suffix in (".mp4", ".json")] == []

    server = start_server(data, "--api", "--nowebui")
    try:
        lost = _lost_notice(_notices(server))
        assert "1 job(s)" in lost and job_id in lost and "sadtalker" in lost, lost
        assert hidden_files(videos) == [], f"left behind: {hidden_files(videos)} (temporaries were {temps})"
    finally:
        server.stop()
    assert visible_files(videos) == []


def test_start_up_recovery_removes_only_our_leftovers_and_only_when_alone(tmp_path: Path) -> None:
    outputs, cache = tmp_path / "outputs", tmp_path / "cache"
    day = outputs / "txt2img-images" / "2024-05-01"
    day.mkdir(parents=True)
    ours = [day / ".00003.reserve", day / ".00003-7.png.k2j4h1.tmp", day / ".00001-5.00a1b2c3d4e5.part.mp4.tmp"]
    theirs = [day / "00002-7.png", day / ".DS_Store", day / "notes.tmp", outputs / ".git" / ".index.tmp"]
    for path in ours + theirs:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x")
    journal = JobJournal(cache / crash_recovery.JOURNAL_FOLDER)
    job = SimpleNamespace(id="abc123", type="txt2img", state=JobState.RUNNING, created_at=1.0,
                          request=SimpleNamespace(prompt="a  red\ncat", width=64, height=64))
    journal.update(job)

    other = crash_recovery.DataLease(cache / crash_recovery.LOCK_NAME)  # another live process
    other.share()
    busy = crash_recovery.recover(cache, outputs)
    assert not busy.lease.alone and busy.swept == [] and busy.lost == [] and all(p.exists() for p in ours)
    busy.lease.release()
    other.release()  # it exits (or is killed: the kernel drops its lock the same way)

    alone = crash_recovery.recover(cache, outputs)
    assert alone.lease.alone and sorted(alone.swept) == sorted(ours)
    assert all(p.exists() for p in theirs)
    assert [(j.id, j.state, j.summary) for j in alone.lost] == [("abc123", "running", "'a red cat' 64x64")]
    assert "1 job(s) were lost" in alone.notices[0] and "abc123" in alone.notices[0]
    assert crash_recovery.recover(cache, outputs).lost == []  # reported once
    job.state = JobState.DONE
    journal.update(job)  # a finished job leaves no record
    assert not any(journal.folder.iterdir())


# -- in one process: out of memory, a hanging hook, a full disk -------------------------------------------------


@dataclass
class Studio:
    client: TestClient
    services: Services
    outputs: Path
    tmpfs_problem: str | None

    def txt2img(self, **fields: object) -> httpx.Response:
        return self.client.post("/sdapi/v1/txt2img", json={**SMALL, **fields})


@pytest.fixture(scope="module")
def studio(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Studio]:
    data = tmp_path_factory.mktemp("faults") / "data"
    save_tiny_checkpoint(data / "models" / "Stable-diffusion", "sd1", name="tiny")
    (data / "config.json").write_text(json.dumps({"extension_hook_timeout": 1}))
    fx.write_extension(data / "extensions", "hangs", HANGS_ON_REQUEST)
    with small_tmpfs(data / "outputs", "4m") as problem:
        services = build_services(["--data-dir", str(data), "--nowebui"], {})
        try:
            with TestClient(create_app(services)) as client:
                studio = Studio(client, services, data / "outputs", problem)
                assert studio.txt2img(prompt="warm up").status_code == 200  # torch and the checkpoint load once
                yield studio
        finally:
            services.jobs.stop()
            services.download_jobs.stop()


def test_injected_oom_fails_with_advice_then_the_next_job_succeeds(studio: Studio) -> None:
    studio.services.engine.memory.inject_oom(1)  # the memory manager's fault point: raised at the next step
    r = studio.txt2img(prompt="too big")
    assert r.status_code == 503, r.text
    advice = r.json()["detail"]
    assert advice.startswith("Out of memory on ") and "To fit, try a smaller width/height or batch size" in advice
    assert studio.txt2img(prompt="fits").status_code == 200
    # The same through the job API: the job is failed with the advice, the next one is done.
    studio.services.engine.memory.inject_oom(1)
    job = studio.client.post("/studio/v1/jobs", json={"type": "txt2img", "request": SMALL}).json()
    failed = wait_job(studio.client, job["id"])
    assert failed["state"] == "failed" and failed["error"].startswith("Out of memory on "), failed
    job = studio.client.post("/studio/v1/jobs", json={"type": "txt2img", "request": SMALL}).json()
    assert wait_job(studio.client, job["id"])["state"] == "done"


def test_oom_in_the_vae_decoder_fails_with_advice_then_the_next_job_succeeds(studio: Studio,
                                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    vae = studio.services.engine.checkpoints.current.pipe.vae
    real_decode = vae.decode
    calls = []

    def decode_once_out_of_memory(*args: object, **kwargs: object) -> object:
        calls.append(1)
        if len(calls) == 1:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 1.50 GiB")
        return real_decode(*args, **kwargs)

    monkeypatch.setattr(vae, "decode", decode_once_out_of_memory)
    r = studio.txt2img(prompt="decoder runs out")
    assert r.status_code == 503, r.text
    assert "Out of memory" in r.json()["detail"] and "VAE tiling" in r.json()["detail"]
    assert studio.txt2img(prompt="decoder fits").status_code == 200
    assert len(calls) == 2


def test_hanging_hook_times_out_is_marked_failed_and_the_app_goes_on(studio: Studio) -> None:
    folder = studio.services.paths.extensions / "hangs"
    started = time.monotonic()
    r = studio.txt2img(prompt="please hang here")
    assert r.status_code == 200, r.text  # the job ran after the 1 s hook timeout
    assert (folder / "entered").exists()
    rows = {row["id"]: row for row in studio.client.get("/studio/v1/extensions").json()["extensions"]}
    assert rows["hangs"]["state"] == "failed", rows["hangs"]
    assert "did not return within 1 s" in rows["hangs"]["error"]
    first = time.monotonic() - started
    started = time.monotonic()
    assert studio.txt2img(prompt="please hang here").status_code == 200
    assert time.monotonic() - started < first - 0.5, "a failed extension's hook was waited for again"
    # The hung hook wakes up later and writes garbage into its event: nothing it writes may matter now.
    wait_until(lambda: (folder / "woke").exists(), 10, "the hung hook to wake up")
    assert studio.txt2img(prompt="after it woke").status_code == 200


def test_a_hook_that_fails_or_wakes_late_leaves_the_payload_as_it_was() -> None:
    hooks = HookRegistry(timeout_s=lambda: 0.2)

    def half_done(event: ImageSaveEvent) -> None:
        event.infotext = "half-done"
        raise ValueError("failed after writing")

    def late(event: GenerateEvent) -> None:
        time.sleep(0.5)
        event.request = "garbage"

    hooks.register("before_image_saved", "half", half_done)
    hooks.register("before_generate", "late", late)
    saved = hooks.fire("before_image_saved", ImageSaveEvent(None, Path("x.png"), "Steps: 2", "txt2img"))
    generate = hooks.fire("before_generate", GenerateEvent("txt2img", request="the request"))
    time.sleep(0.6)  # the late hook has woken and written by now
    assert saved.infotext == "Steps: 2" and generate.request == "the request"
    assert set(hooks.failures()) == {"half", "late"}


def _require_tmpfs(studio: Studio) -> None:
    if studio.tmpfs_problem:
        pytest.skip(f"no small tmpfs for outputs/: {studio.tmpfs_problem}")


def test_full_disk_during_image_save_gives_a_clear_error_and_writes_nothing(studio: Studio) -> None:
    _require_tmpfs(studio)
    ok = studio.txt2img(prompt="fits on disk", save_images=True)
    assert ok.status_code == 200, ok.text
    before = visible_files(studio.outputs)
    png = next(p for p in before if p.suffix == ".png")
    for leave, fields in ((0, {}), (math.ceil(png.stat().st_size / 4096) * 4096, {"save_txt": True})):
        # leave=0: the image cannot be written. leave=the image's blocks: the image fits, its .txt does not,
        # so the image must be taken back (a save is all or nothing).
        filler = fill_disk(studio.outputs, leave_bytes=leave)
        try:
            r = studio.txt2img(prompt="fits on disk", save_images=True, override_settings=fields)
            assert r.status_code == 400, r.text
            assert "is full; free space on it and try again (nothing was saved)" in r.json()["detail"]
            assert [p for p in visible_files(studio.outputs) if p != filler] == before
            assert hidden_files(studio.outputs) == []
        finally:
            filler.unlink()
    again = studio.txt2img(prompt="space again", save_images=True)
    assert again.status_code == 200, again.text
    assert len(visible_files(studio.outputs)) == len(before) + 1
    assert_complete_images(visible_files(studio.outputs))


def test_full_disk_during_video_encode_gives_a_clear_error_and_writes_nothing(studio: Studio) -> None:
    _require_tmpfs(studio)
    video = submodule("video")
    folder = studio.outputs / "sadtalker-direct"
    folder.mkdir()
    frames = (np.random.default_rng(0).integers(0, 255, (128, 128, 3), dtype=np.uint8) for _ in range(400))
    filler = fill_disk(studio.outputs, leave_bytes=64 * 1024)
    try:
        with pytest.raises(video.DiskFullError, match="is full; free space on it and try again"):
            video.write_mp4(folder / "talk.mp4", frames, audio=voice(16.0))
        assert list(folder.iterdir()) == []
    finally:
        filler.unlink()
        folder.rmdir()

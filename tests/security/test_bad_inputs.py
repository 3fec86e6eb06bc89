"""The bad-input corpus (tests/security/corpus.py) through the REST API and the UI handlers, and through the real
server in a subprocess.

For every input: a 4xx (or the tab's ⚠️ message) whose text names the problem, never a 500 or a traceback; the
app answers the next request; nothing new or half-written appears under outputs/ or models/ (hidden temporaries
included); the pickle that tries to run code never runs. Unusual but valid inputs (1x1, CMYK, 16-bit, palette
with alpha, animated GIF, a 100 KB infotext) must simply work.

The in-process app (FastAPI's TestClient over `create_app`) uses a tiny random-weight checkpoint, the tiny
SadTalker set and a stub face detector; the subprocess test runs `launch.py` as a user does.
"""

from __future__ import annotations

import base64
import importlib
import json
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from modules.app import create_app
from modules.services import Services, build_services
from modules.ui import extras_tab, img2img_tab, pnginfo_tab, txt2img_tab
from modules.ui import generation_form as form
from tests.e2e.server import start_server
from tests.fixtures.talking_head_inputs import StubLandmarker, png_bytes, portrait, voice, wav_bytes
from tests.fixtures.tiny_models import save_tiny_checkpoint
from tests.fixtures.tiny_sadtalker import write_tiny_sadtalker
from tests.security import corpus as bad
from tests.security.corpus import BodyCase, Corpus, FieldCase, FileCase

SMALL = {"prompt": "a fox", "steps": 2, "width": 64, "height": 64, "sampler_name": "Euler"}
MAX_SECONDS = 15.0  # per input, a model load included; the slow ones took minutes before their fix
GOOD = "good"  # the one loadable checkpoint; the corpus puts the hostile ones beside it


@dataclass
class App:
    client: TestClient
    services: Services
    data: Path
    corpus: Corpus
    runner: Any


@dataclass
class Findings:
    """Every case's problems, collected so one run reports all of them (not just the first)."""

    problems: list[str] = field(default_factory=list)
    checked: int = 0

    def expect(self, ok: bool, what: str) -> None:
        if not ok:
            self.problems.append(what)

    def assert_none(self) -> None:
        assert not self.problems, f"{len(self.problems)} problem(s):\n" + "\n".join(self.problems)


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[App]:
    data = tmp_path_factory.mktemp("bad-inputs")
    checkpoints = data / "models" / "Stable-diffusion"
    save_tiny_checkpoint(checkpoints, "sd1", name=GOOD, seed=0)
    write_tiny_sadtalker(data / "models" / "SadTalker", sizes=(256,))
    corpus = bad.build(tmp_path_factory.mktemp("corpus"), checkpoints)
    services = build_services(["--data-dir", str(data), "--api"], {})
    services.settings.update({"sd_model_checkpoint": GOOD})
    runner = next(t.run for t in services.jobs.types() if t.name == "sadtalker").__self__
    runner.use_landmarker(lambda _folder, _device: StubLandmarker())
    with TestClient(create_app(services), raise_server_exceptions=False) as client:
        yield App(client, services, data, corpus, runner)
    services.jobs.stop()
    services.download_jobs.stop()
    assert not corpus.pickle_marker.exists(), "a pickled checkpoint ran code"


# -- what every case must satisfy ------------------------------------------------------------------------------


def files_under(data: Path) -> dict[str, int]:
    """Every file (hidden temporaries and links included) under outputs/ and models/, with its size."""
    found: dict[str, int] = {}
    for root in (data / "outputs", data / "models"):
        for path in root.rglob("*") if root.exists() else ():
            if path.is_file() or path.is_symlink():
                found[str(path.relative_to(data))] = path.lstat().st_size
    return found


def detail(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text
    return str(body.get("detail", body)) if isinstance(body, dict) else str(body)


def check_refused(findings: Findings, label: str, response: httpx.Response, problem: str) -> None:
    message = detail(response)
    findings.expect(400 <= response.status_code < 500, f"{label}: HTTP {response.status_code}, {message[:200]!r}")
    findings.expect("Traceback" not in response.text, f"{label}: a traceback reached the client")
    findings.expect(bool(re.search(problem, message, re.I | re.S)),
                    f"{label}: the message does not name the problem /{problem}/: {message[:300]!r}")


def check_case(app: App, findings: Findings, label: str, send: Callable[[], httpx.Response],
               problem: str, accepted: bool = False, saves: bool = False) -> httpx.Response:
    """Send one input; check the answer, that it came quickly, that the app still answers, and (unless the route
    saves on success) that outputs/ and models/ are as they were."""
    before = files_under(app.data)
    started = time.monotonic()
    response = send()
    elapsed = time.monotonic() - started
    findings.checked += 1
    # A tiny model answers in about a second; minutes of CPU on one request (a regex or parser gone quadratic
    # on a hostile prompt or infotext) is a denial of service even when the answer is right.
    findings.expect(elapsed < MAX_SECONDS, f"{label}: took {elapsed:.1f} s")
    if accepted:
        findings.expect(response.status_code == 200,
                        f"{label}: a valid input was refused: HTTP {response.status_code} {detail(response)[:300]!r}")
    else:
        check_refused(findings, label, response, problem)
    if not (accepted and saves):
        after = files_under(app.data)
        findings.expect(after == before, f"{label}: files changed under outputs/ or models/: "
                        f"{sorted(set(after.items()) ^ set(before.items()))[:5]}")
    health = app.client.get("/studio/v1/health")
    findings.expect(health.status_code == 200, f"{label}: the app stopped answering ({health.status_code})")
    findings.expect(not app.corpus.pickle_marker.exists(), f"{label}: the pickled checkpoint ran code")
    return response


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def post_json(client: TestClient, path: str, body: dict[str, Any]) -> httpx.Response:
    # NaN and infinity as JSON's non-standard literals (Python clients send them), lone surrogates as \\u escapes.
    raw = json.dumps(body, allow_nan=True).encode("ascii")
    return client.post(path, content=raw, headers={"content-type": "application/json"})


def talking_head(client: TestClient, image: tuple[str, bytes], audio: tuple[str, bytes]) -> httpx.Response:
    return client.post("/ext/sadtalker/generate", files={"image": image, "audio": audio})


# -- the REST API ----------------------------------------------------------------------------------------------

# What each image route does with pixels: PNG Info reads the metadata only (as A1111's does), so a file whose
# header and text chunks are intact but whose pixel data is damaged is not a bad input there.
PIXEL_DAMAGE = {"png-truncated", "png-corrupt-idat"}


def test_images_through_every_api_route(app: App) -> None:
    findings = Findings()
    voice_wav = ("voice.wav", wav_bytes(voice(0.3)))
    for case in app.corpus.images:
        data = b64(case.data)
        routes: list[tuple[str, Callable[[], httpx.Response], bool]] = [
            ("img2img", lambda: post_json(app.client, "/sdapi/v1/img2img", {**SMALL, "init_images": [data]}), False),
            ("extra-single-image", lambda: post_json(app.client, "/sdapi/v1/extra-single-image", {
                "image": data, "upscaler_1": "Lanczos", "upscaling_resize": 1}), False),
            ("controlnet/detect", lambda: post_json(app.client, "/controlnet/detect", {
                "controlnet_module": "canny", "controlnet_input_images": [data]}), False),
        ]
        if case.id not in PIXEL_DAMAGE and case.id != "zero-bytes":  # "" is A1111's "no image": an empty answer
            routes.append(("png-info", lambda: post_json(app.client, "/sdapi/v1/png-info", {"image": data}), False))
        if not case.accepted:  # a valid photo would cost seconds of video rendering; its decoding is upstream's
            routes.append(("sadtalker", lambda: talking_head(app.client, (case.filename, case.data), voice_wav), True))
        for route, send, saves in routes:
            check_case(app, findings, f"{case.id} -> {route}", send, case.problem, case.accepted, saves)
    findings.assert_none()
    assert findings.checked >= 70


def test_prompts_numbers_and_names_through_txt2img(app: App) -> None:
    findings = Findings()
    cases: list[FieldCase] = [*app.corpus.prompts, *app.corpus.numbers, *app.corpus.names]
    for case in cases:
        check_case(app, findings, case.id, lambda: post_json(app.client, "/sdapi/v1/txt2img", case.body(SMALL)),
                   case.problem, case.accepted)
    # The same refusals come from img2img and from the job API, which validate with the same request models.
    init = b64(bad.png(bad.photo()))
    for case in [c for c in app.corpus.numbers if c.id in ("cfg-nan", "denoising-nan", "eta-nan", "width-huge")]:
        check_case(app, findings, f"{case.id} -> img2img", lambda: post_json(
            app.client, "/sdapi/v1/img2img", {**SMALL, "init_images": [init], **case.fields}), case.problem)
    # Refused when the job is submitted; the others (a bad emphasis weight, ...) fail the job when it runs.
    at_submit = {"prompt-nul-byte", "negative-nul-byte", "prompt-100kb", "prompt-100kb-brackets",
                 "prompt-lone-surrogate"}
    for case in [*(c for c in app.corpus.prompts if c.id in at_submit), *app.corpus.numbers]:
        check_case(app, findings, f"{case.id} -> /studio/v1/jobs", lambda: post_json(
            app.client, "/studio/v1/jobs", {"type": "txt2img", "request": {**SMALL, **case.fields}}), case.problem)
    findings.assert_none()


def test_bodies_that_are_not_json_or_not_utf8(app: App) -> None:
    findings = Findings()
    bodies: list[BodyCase] = [*app.corpus.prompt_bodies, *app.corpus.bodies]
    for case in bodies:
        for path in ("/sdapi/v1/txt2img", "/studio/v1/jobs"):
            check_case(app, findings, f"{case.id} -> {path}", lambda: app.client.post(
                path, content=case.body, headers={"content-type": case.content_type}), case.problem)
    findings.assert_none()


def test_audio_and_a_photo_without_a_face(app: App) -> None:
    findings = Findings()
    photo = ("face.png", png_bytes(portrait(160, 160)))
    for case in app.corpus.audio:
        check_case(app, findings, case.id, lambda: talking_head(app.client, photo, (case.filename, case.data)),
                   case.problem)
    # The job API carries the same media as base64.
    for case in app.corpus.audio[:3]:
        check_case(app, findings, f"{case.id} -> /studio/v1/jobs", lambda: _talking_head_job(app, photo[1], case),
                   case.problem)
    no_face = app.corpus.no_face
    assert no_face is not None
    app.runner.use_landmarker(lambda _folder, _device: StubLandmarker(faces=[]))  # a detector that finds none
    try:
        check_case(app, findings, no_face.id, lambda: talking_head(
            app.client, (no_face.filename, no_face.data), ("voice.wav", wav_bytes(voice(0.3)))), no_face.problem)
    finally:
        app.runner.use_landmarker(lambda _folder, _device: StubLandmarker())
    findings.assert_none()


def _talking_head_job(app: App, image: bytes, case: FileCase) -> httpx.Response:
    """Submit through /studio/v1/jobs and answer like a synchronous route: the job's final status and message."""
    submitted = post_json(app.client, "/studio/v1/jobs", {"type": "sadtalker", "request": {
        "image": b64(image), "audio": b64(case.data), "audio_name": case.filename}})
    if submitted.status_code >= 300:
        return submitted
    job = app.services.jobs.get(submitted.json()["id"])
    job.wait(60)
    return httpx.Response(job.error_status or 200, json={"detail": job.error or ""})


def test_hostile_and_broken_checkpoints(app: App) -> None:
    findings = Findings()
    assert app.corpus.models, "the corpus wrote no model files"
    for case in app.corpus.models:
        check_case(app, findings, case.id, lambda: post_json(app.client, "/sdapi/v1/txt2img", {
            **SMALL, "override_settings": {"sd_model_checkpoint": case.filename}}), case.problem)
        # And as the default checkpoint (the sd_model_checkpoint setting), which the next job loads.
        app.services.settings.update({"sd_model_checkpoint": case.filename})
        try:
            check_case(app, findings, f"{case.id} as the default", lambda: post_json(
                app.client, "/sdapi/v1/txt2img", SMALL), case.problem)
        finally:
            app.services.settings.update({"sd_model_checkpoint": GOOD})
    findings.assert_none()
    # Nothing was renamed or deleted either, and the good checkpoint still works after all that.
    assert {m.relative_filename for m in app.services.models.list("Stable-diffusion")} >= {
        c.filename for c in app.corpus.models}
    assert post_json(app.client, "/sdapi/v1/txt2img", SMALL).status_code == 200


# -- the UI handlers ---------------------------------------------------------------------------------------------


def txt2img_values(**overrides: Any) -> dict[str, Any]:
    """The txt2img form's values as Gradio hands them over (sliders as floats)."""
    values: dict[str, Any] = {
        "prompt": "a fox", "negative_prompt": "", "styles": [], "sampler_name": "Euler", "scheduler": "Automatic",
        "steps": 2.0, "width": 64.0, "height": 64.0, "n_iter": 1.0, "batch_size": 1.0, "cfg_scale": 7.0,
        "clip_skip": 1.0, "seed": 5, "subseed": -1, "subseed_strength": 0.0, "checkpoint": "", "vae": "Automatic",
        "enable_hr": False, "hr_upscaler": "Latent", "hr_second_pass_steps": 0.0, "denoising_strength": 0.7,
        "hr_scale": 2.0, "hr_resize_x": 0.0, "hr_resize_y": 0.0, "hr_prompt": "", "hr_negative_prompt": ""}
    values.update(overrides)
    return values


def img2img_values(image: Any, **overrides: Any) -> dict[str, Any]:
    """The img2img form's values with `image` in the img2img sub-tab."""
    values = {k: v for k, v in txt2img_values().items() if not k.startswith("hr_") and k != "enable_hr"}
    values.update({"denoising_strength": 0.75, "resize_mode": "Just resize", "mask_blur": 4.0,
                   "inpainting_mask_invert": "Inpaint masked", "inpainting_fill": "original",
                   "inpaint_full_res": "Whole picture", "inpaint_full_res_padding": 32.0, "mode": "img2img",
                   "size_tab": "to", "scale": 1.0, "init_img": image, "sketch": None, "init_img_with_mask": None,
                   "inpaint_color_sketch": None, "init_img_inpaint": None, "init_mask_inpaint": None,
                   "batch_input_dir": "", "batch_output_dir": "", "batch_mask_dir": ""})
    values.update(overrides)
    return values


def ui_fields(case: FieldCase) -> dict[str, Any] | None:
    """The case's fields as the txt2img form holds them, or None when the form has no such field."""
    fields = dict(case.fields)
    settings = fields.pop("override_settings", {})
    if "sd_model_checkpoint" in settings:
        fields["checkpoint"] = settings["sd_model_checkpoint"]
    if "sd_vae" in settings:
        fields["vae"] = settings["sd_vae"]
    if set(fields) - set(txt2img_values()):
        return None  # eta, infotext and always-on scripts are API-only
    return fields


def final_message(updates: Iterator[tuple[Any, ...]]) -> tuple[str, Any]:
    """The last progress text a tab's generator yields, and its last gallery/video update."""
    last: tuple[Any, ...] = ()
    for last in updates:
        pass
    return str(last[0]), last[1:]


def check_ui(app: App, findings: Findings, label: str, run: Callable[[], str], problem: str,
             accepted: bool = False, saves: bool = True) -> None:
    before = files_under(app.data)
    started = time.monotonic()
    try:
        message = run()
    except Exception as e:  # noqa: BLE001 - any exception would reach the page as a bare error
        findings.expect(False, f"{label}: the handler raised {type(e).__name__}: {e}")
        return
    findings.checked += 1
    findings.expect(time.monotonic() - started < MAX_SECONDS, f"{label}: took {time.monotonic() - started:.1f} s")
    warned = "⚠️" in message or "could not be read" in message
    if accepted:
        findings.expect(not warned, f"{label}: a valid input was refused: {message[:300]!r}")
    else:
        findings.expect(warned, f"{label}: no warning shown: {message[:300]!r}")
        findings.expect(bool(re.search(problem, message, re.I | re.S)),
                        f"{label}: the message does not name the problem /{problem}/: {message[:300]!r}")
        findings.expect("Traceback" not in message, f"{label}: a traceback in the message")
    if not (accepted and saves):
        findings.expect(files_under(app.data) == before, f"{label}: files changed under outputs/ or models/")
    findings.expect(not app.corpus.pickle_marker.exists(), f"{label}: the pickled checkpoint ran code")


def test_txt2img_tab_shows_a_message_for_each_bad_field(app: App) -> None:
    findings = Findings()
    cases = [*app.corpus.prompts, *app.corpus.numbers, *app.corpus.names,
             *(FieldCase(f"{m.id} (checkpoint)", {"override_settings": {"sd_model_checkpoint": m.filename}}, m.problem)
               for m in app.corpus.models),
             # What only a crafted call of the Generate event can send: numbers that are no numbers.
             FieldCase("steps-nan-from-a-slider", {"steps": float("nan")}, r"steps.*finite"),
             FieldCase("width-infinite-from-a-slider", {"width": float("inf")}, r"width.*finite")]
    for case in cases:
        fields = ui_fields(case)
        if fields is None:
            continue
        values = txt2img_values(**fields)
        check_ui(app, findings, case.id, lambda: final_message(form.poll_job(
            app.services, lambda: txt2img_tab.build_request(values)))[0], case.problem, case.accepted)
    findings.assert_none()
    assert findings.checked >= 35


def test_image_tabs_show_a_message_for_each_bad_image(app: App) -> None:
    findings = Findings()
    for case in app.corpus.images:
        path = str(app.corpus.path(case))
        extras = {"mode": extras_tab.SINGLE, "image": path, "upscaler_1": "Lanczos", "upscaling_resize": 1.0,
                  "resize_mode": 0}
        check_ui(app, findings, f"{case.id} -> Extras", lambda: final_message(
            extras_tab.poll(app.services, extras))[0], case.problem, case.accepted)
        check_ui(app, findings, f"{case.id} -> PNG Info", lambda: pnginfo_tab.read_parameters(path)[0],
                 case.problem, case.accepted)
        # img2img gets a PIL image from Gradio: only what Pillow can open reaches the handler at all.
        try:
            image = Image.open(path)
        except (OSError, ValueError, Image.DecompressionBombError):
            continue
        values = img2img_values(image)
        check_ui(app, findings, f"{case.id} -> img2img", lambda: final_message(form.poll_job(
            app.services, lambda: img2img_tab.build_request(app.services, values)))[0], case.problem, case.accepted)
    findings.assert_none()


def test_sadtalker_tab_shows_a_message_for_bad_media(app: App) -> None:
    ui = importlib.import_module(type(app.runner).__module__.rsplit(".", 1)[0] + ".ui")
    api = app.runner._api
    face = app.corpus.folder / "face.png"
    face.write_bytes(png_bytes(portrait(160, 160)))
    speech = app.corpus.folder / "speech.wav"
    speech.write_bytes(wav_bytes(voice(0.3)))

    def values(image: Path, audio: Path, **overrides: Any) -> dict[str, Any]:
        base = {"image": str(image), "audio": str(audio), "pose_style": 0.0, "size": 256, "preprocess": "crop",
                "still_mode": False, "gfpgan": False, "batch_size": 2.0, "expression_scale": 1.0,
                "use_blink": True, "ref_eyeblink": None, "ref_pose": None, "input_yaw": "", "input_pitch": "",
                "input_roll": "", "face_model": "GFPGAN", "background_enhancer": "None", "seed": 7}
        return {**base, **overrides}

    def run(fields: dict[str, Any]) -> Callable[[], str]:
        return lambda: final_message(ui._follow(api, fields))[0]

    findings = Findings()
    for case in app.corpus.audio:
        check_ui(app, findings, f"{case.id} -> SadTalker tab", run(values(face, app.corpus.path(case))), case.problem)
    for case in app.corpus.images:
        if not case.accepted:
            check_ui(app, findings, f"{case.id} -> SadTalker tab", run(values(app.corpus.path(case), speech)),
                     case.problem)
    for key, value in (("input_yaw", "nan"), ("expression_scale", float("nan")), ("pose_style", float("inf")),
                       ("seed", "lots")):
        check_ui(app, findings, f"{key}={value!r} -> SadTalker tab", run(values(face, speech, **{key: value})),
                 key.removeprefix("input_"))
    assert app.corpus.no_face is not None
    app.runner.use_landmarker(lambda _folder, _device: StubLandmarker(faces=[]))
    try:
        check_ui(app, findings, "no face -> SadTalker tab", run(values(app.corpus.path(app.corpus.no_face), speech)),
                 app.corpus.no_face.problem)
    finally:
        app.runner.use_landmarker(lambda _folder, _device: StubLandmarker())
    findings.assert_none()


# -- the real server -------------------------------------------------------------------------------------------


def test_the_real_server_stays_up_and_answers_4xx(app: App, tmp_path: Path) -> None:
    """`launch.py` in a subprocess: the hostile inputs that reach it over HTTP (bodies, prompts, images, model
    files, audio) each get a 4xx, the process never dies, and its log never shows an unexpected error."""
    data = tmp_path / "data"
    checkpoints = data / "models" / "Stable-diffusion"
    save_tiny_checkpoint(checkpoints, "sd1", name=GOOD, seed=0)
    corpus = app.corpus
    marker = tmp_path / "PICKLE-RAN-CODE"
    models = bad.write_models(checkpoints, marker)
    (data / "config.json").write_text(json.dumps({"sd_model_checkpoint": GOOD}))
    server = start_server(data, "--api", timeout=120)
    try:
        with httpx.Client(base_url=server.url, timeout=120) as client:
            sent = [*corpus.prompt_bodies, *corpus.bodies]
            fields = [*corpus.prompts, *corpus.numbers, *corpus.names[:3]]
            sent += [BodyCase(c.id, json.dumps(c.body(SMALL), allow_nan=True).encode(), c.problem)
                     for c in fields if not c.accepted]
            sent += [BodyCase(m.id, json.dumps({**SMALL, "override_settings": {"sd_model_checkpoint": m.filename}})
                              .encode(), m.problem) for m in models]
            for case in sent:
                response = client.post("/sdapi/v1/txt2img", content=case.body,
                                       headers={"content-type": case.content_type})
                _check_alive(server, client, case.id, response, case.problem)
            # The images the in-process test sends everywhere; here, one of each kind of harm.
            for case in [c for c in corpus.images if c.id in ("png-truncated", "png-20000x20000", "png-ztxt-bomb",
                                                             "png-header-claims-100000x100000", "zero-bytes")]:
                response = client.post("/sdapi/v1/img2img", json={**SMALL, "init_images": [b64(case.data)]})
                _check_alive(server, client, case.id, response, case.problem)
            two_hours = corpus.audio[-1]  # 29 MB as multipart
            response = client.post("/ext/sadtalker/generate", files={
                "image": ("face.png", png_bytes(portrait(160, 160))), "audio": (two_hours.filename, two_hours.data)})
            # No face-detector weights here: the route names the missing files before it decodes anything.
            _check_alive(server, client, two_hours.id, response, r"SadTalker needs files")
        assert not marker.exists(), "a pickled checkpoint ran code"
        assert not [name for name in files_under(data) if name.startswith("outputs")]
        assert "Traceback" not in server.log(), server.log()[-3000:]
    finally:
        server.stop()


def _check_alive(server: Any, client: httpx.Client, label: str, response: httpx.Response, problem: str) -> None:
    message = detail(response)
    assert 400 <= response.status_code < 500, f"{label}: HTTP {response.status_code} {message[:300]!r}"
    assert re.search(problem, message, re.I | re.S), f"{label}: /{problem}/ not in {message[:300]!r}"
    assert server.process.poll() is None, f"{label}: the server died:\n{server.log()[-3000:]}"
    assert client.get("/studio/v1/health").status_code == 200, f"{label}: the server stopped answering"

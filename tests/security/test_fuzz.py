"""Fuzzing the REST API of a real server (issue 9, 3a): no request gives a 5xx, hangs, or kills the job worker.

One server (`python launch.py --api --nowebui`, the UI's Gradio routes are not in the OpenAPI schema) runs on a
tiny checkpoint for the whole module. Two fuzzers hit it:

1. schemathesis over every operation of `/openapi.json` (/sdapi/v1, /studio/v1, /controlnet, /ext/sadtalker):
   its examples, coverage and fuzzing phases with its conformance checks (see `fuzz_run` for the two checks we
   replace and why). Deterministic: fixed seed, derandomized, no example database.
2. Hypothesis bodies for txt2img, img2img and extras that pass validation often enough to run real jobs, with
   edge values (NaN, 1x1 images, unknown names) mixed in (`fuzz_bodies`).

Heavy work is capped by the app's own limits, not by leaving routes out: `max_image_pixels` = 64x64 and
`max_job_steps` = 16 (steps x images), so the worst accepted job runs in seconds on one CPU thread. Nothing is
excluded. The server cannot reach the network: git may use only file:// and HTTP goes to a closed proxy port, so
fuzzed extension installs and model downloads fail fast instead of contacting random hosts.

Every request has a timeout (a hang fails the test); at the end the server must still be running and a normal
generation must still succeed through both APIs. The number of cases is printed.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from hypothesis import HealthCheck, Phase, given, settings

from tests.e2e.server import RunningServer, start_server
from tests.fixtures.tiny_models import save_tiny_checkpoint
from tests.security import fuzz_bodies, fuzz_run

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(170)]

SEED = 9
SCHEMA_EXAMPLES = 10  # per operation and generation mode, fuzzing phase; the coverage phase adds its own
JOB_EXAMPLES = 30  # per generation route
REQUEST_TIMEOUT_S = 60.0  # far above the slowest accepted job (~3 s); reaching it means a hang
ACCEPTED = {200, 400, 404, 409, 422}  # what a generation route may answer; 501 only as NotImplemented
LIMITS = {"max_image_pixels": 64 * 64, "max_job_steps": 16}
SMALL_JOB = {"prompt": "a cat", "steps": 2, "width": 64, "height": 64, "sampler_name": "Euler", "seed": 1}
OFFLINE = {"GIT_ALLOW_PROTOCOL": "file", "HTTP_PROXY": "http://127.0.0.1:9", "HTTPS_PROXY": "http://127.0.0.1:9",
           "NO_PROXY": ""}
JOB_SETTINGS = settings(max_examples=JOB_EXAMPLES, derandomize=True, database=None, deadline=None,
                        phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck))


@dataclass
class Target:
    server: RunningServer
    data: Path
    http: httpx.Client
    samplers: list[str]
    schedulers: list[str]
    upscalers: list[str]
    counts: dict[str, int] = field(default_factory=dict)
    answers: dict[str, int] = field(default_factory=dict)  # "route status" -> how many

    def post_raw(self, path: str, body: dict) -> httpx.Response:
        """POST `body` as JSON the way a lax client writes it: NaN and Infinity included (httpx refuses them)."""
        return self.http.post(path, content=json.dumps(body), headers={"content-type": "application/json"})


@pytest.fixture(scope="module")
def target(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Target]:
    data = tmp_path_factory.mktemp("fuzz") / "data"
    save_tiny_checkpoint(data / "models" / "Stable-diffusion", "sd1", name="tiny")
    (data / "styles.csv").write_text('name,prompt,negative_prompt\nFilm,"{prompt}, film grain",cartoon\n')
    (data / "config.json").write_text(json.dumps(LIMITS))
    server = start_server(data, "--api", "--nowebui", env=OFFLINE)
    http = httpx.Client(base_url=server.url, timeout=REQUEST_TIMEOUT_S)
    try:
        def names(path: str) -> list[str]:
            return [item["name"] for item in http.get(path).json()]

        yield Target(server, data, http, names("/sdapi/v1/samplers"), names("/sdapi/v1/schedulers"),
                     names("/sdapi/v1/upscalers"))
    finally:
        http.close()
        server.stop()


def _check_generation_answer(target: Target, route: str, body: dict, response: httpx.Response) -> None:
    target.counts[route] = target.counts.get(route, 0) + 1
    target.answers[f"{route} {response.status_code}"] = target.answers.get(f"{route} {response.status_code}", 0) + 1
    assert target.server.process.poll() is None, f"the server died:\n{target.server.log()[-3000:]}"
    if response.status_code == 501:
        assert response.json()["error"] == fuzz_run.NOT_IMPLEMENTED, response.text
        return
    assert response.status_code in ACCEPTED, (f"{route}: {response.status_code} {response.text[:500]}\n"
                                              f"body: {json.dumps(body)[:2000]}")
    answer = response.json()
    if response.status_code == 200:
        assert answer.get("images") or answer.get("image"), answer
    else:
        assert isinstance(answer.get("detail"), str) and answer["detail"], answer


def test_schemathesis_finds_no_server_error_or_nonconformance(target: Target, capsys: pytest.CaptureFixture) -> None:
    steer = fuzz_run.steering(target.samplers, target.upscalers, "tiny")
    started = time.monotonic()
    report = fuzz_run.run(target.server.url, fuzz_run.config(SCHEMA_EXAMPLES, SEED, REQUEST_TIMEOUT_S, steer))
    target.counts["schemathesis"] = report.cases
    with capsys.disabled():
        print(f"\nschemathesis: {report.cases} cases ({dict(report.by_phase)}) in {time.monotonic() - started:.0f} s;"
              f" slowest {report.slowest[0]:.1f} s ({report.slowest[1]})")
    assert report.cases > 1000, "schemathesis ran far fewer cases than the schema gives; is /openapi.json served?"
    assert not report.failures, "\n".join(report.failures[:30])
    assert target.server.process.poll() is None


def test_txt2img_fuzz(target: Target) -> None:
    @JOB_SETTINGS
    @given(body=fuzz_bodies.txt2img_bodies(target.samplers, target.schedulers, target.upscalers))
    def run(body: dict) -> None:
        _check_generation_answer(target, "txt2img", body, target.post_raw("/sdapi/v1/txt2img", body))

    run()


def test_img2img_fuzz(target: Target) -> None:
    @JOB_SETTINGS
    @given(body=fuzz_bodies.img2img_bodies(target.samplers, target.schedulers))
    def run(body: dict) -> None:
        _check_generation_answer(target, "img2img", body, target.post_raw("/sdapi/v1/img2img", body))

    run()


def test_extras_fuzz(target: Target) -> None:
    @JOB_SETTINGS
    @given(body=fuzz_bodies.extras_bodies(target.upscalers))
    def run(body: dict) -> None:
        _check_generation_answer(target, "extras", body, target.post_raw("/sdapi/v1/extra-single-image", body))

    run()


def test_heavy_requests_are_refused_by_the_apps_limits(target: Target) -> None:
    many = target.http.post("/sdapi/v1/txt2img", json={"width": 64, "height": 64, "steps": 500, "n_iter": 1000,
                                                       "batch_size": 64})
    assert many.status_code == 400 and "max_job_steps" in many.json()["detail"]
    large = target.http.post("/sdapi/v1/txt2img", json={"width": 4096, "height": 4096, "steps": 1})
    assert large.status_code == 400 and "max_image_pixels" in large.json()["detail"]


def test_the_holes_the_fuzzers_found_stay_closed(target: Target) -> None:
    # A repository "URL" longer than a file name may be (ENAMETOOLONG), or naming a user who does not exist.
    for url in ("0" * 300, "~nosuchuser-fuzz/repo"):
        r = target.http.post("/studio/v1/extensions/install", json={"url": url})
        assert r.status_code == 400 and r.json()["field"] == "url", r.text
    # Clip skip past the depth of the text encoder (the tiny one has 2 layers) was an IndexError.
    deep = {**SMALL_JOB, "override_settings": {"CLIP_stop_at_last_layers": 12}}
    r = target.http.post("/sdapi/v1/txt2img", json=deep)
    assert r.status_code == 400 and "clip skip 12" in r.json()["detail"], r.text
    # A 405 lists every method of the path, and errors are documented in the shape they are sent in.
    r = target.http.put("/sdapi/v1/options")
    assert r.status_code == 405 and {"GET", "POST"} <= set(r.headers["allow"].replace(" ", "").split(","))
    assert r.json()["error"] == "MethodNotAllowed"
    schema = target.http.get("/openapi.json").json()
    answers = schema["paths"]["/sdapi/v1/txt2img"]["post"]["responses"]
    assert answers["422"]["content"]["application/json"]["schema"]["$ref"].endswith("/ErrorResponse")
    assert "default" in answers and "HTTPValidationError" not in schema["components"]["schemas"]


def test_worker_is_alive_and_a_normal_job_succeeds(target: Target, capsys: pytest.CaptureFixture) -> None:
    assert target.server.process.poll() is None
    # The settings the fuzzer may have changed through POST /options must not be what makes this fail.
    r = target.http.post("/sdapi/v1/options", json=LIMITS | {"samples_format": "png"})
    assert r.status_code == 200, r.text
    r = target.http.post("/sdapi/v1/txt2img", json={**SMALL_JOB, "prompt": "after the fuzz"})
    assert r.status_code == 200, r.text
    assert r.json()["images"]
    job = target.http.post("/studio/v1/jobs", json={"type": "txt2img", "request": {
        "prompt": "job api", "steps": 2, "width": 64, "height": 64, "seed": 2}})
    assert job.status_code == 202, job.text
    job_id = job.json()["id"]
    deadline = time.monotonic() + REQUEST_TIMEOUT_S
    while (state := target.http.get(f"/studio/v1/jobs/{job_id}").json()["state"]) not in ("done", "failed"):
        assert time.monotonic() < deadline, "the job worker did not finish a 2-step job"
        time.sleep(0.1)
    assert state == "done"
    with capsys.disabled():
        total = sum(target.counts.values())
        print(f"\nfuzz cases run: {total} ({target.counts}); generation answers: {target.answers}")

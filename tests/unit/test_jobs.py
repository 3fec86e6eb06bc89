"""The one job queue: order, progress, cancel, interrupt, skip, failures that leave the worker running, the
generation hooks around every job, and extension job types through the REST routes."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from pydantic import BaseModel

from modules.app import create_app
from modules.errors import NotFound, UserError
from modules.extensions.hooks import HookRegistry
from modules.jobs import JobContext, JobQueue, JobState, JobType
from modules.services import build_services
from tests.fixtures import extensions as fx


class Req(BaseModel):
    name: str
    steps: int = 1
    fail: str = ""


def make_queue(log: list[str], gate: threading.Event | None = None, hooks: HookRegistry | None = None) -> JobQueue:
    def run(req: Req, ctx: JobContext) -> dict:
        if gate is not None:
            gate.wait(5)
        made = []
        for step in range(req.steps):
            ctx.check()
            if ctx.interrupted:
                break
            if ctx.take_skip():
                continue
            made.append(step)
            ctx.progress(step + 1, req.steps, text=f"step {step + 1}")
            time.sleep(0.01)
        if req.fail == "user":
            raise UserError("bad size", field="width")
        if req.fail == "bug":
            raise ZeroDivisionError("oops")
        log.append(req.name)
        return {"name": req.name, "made": made}

    q = JobQueue(hooks or HookRegistry(), retention_s=lambda: 3600)
    q.register(JobType("test", Req, run))
    q.start()
    return q


def test_jobs_run_in_submission_order_with_progress() -> None:
    log: list[str] = []
    gate = threading.Event()
    q = make_queue(log, gate)
    jobs = [q.submit("test", {"name": n, "steps": 3}) for n in "abc"]
    assert [q.position(j) for j in jobs] == [0, 1, 2]
    gate.set()
    for j in jobs:
        assert j.wait(5)
    assert log == ["a", "b", "c"]
    assert all(j.state is JobState.DONE and j.progress.fraction == 1.0 for j in jobs)
    assert jobs[0].result == {"name": "a", "made": [0, 1, 2]}
    q.stop()


def test_cancel_queued_and_running() -> None:
    log: list[str] = []
    gate = threading.Event()
    q = make_queue(log, gate)
    running = q.submit("test", {"name": "r", "steps": 200})
    queued = q.submit("test", {"name": "q"})
    assert q.cancel(queued.id).state is JobState.CANCELLED
    gate.set()
    while running.progress.step < 2:
        time.sleep(0.01)
    q.cancel(running.id)
    assert running.wait(5) and running.state is JobState.CANCELLED
    assert log == []
    after = q.submit("test", {"name": "next"})  # the worker is still alive
    assert after.wait(5) and after.state is JobState.DONE
    q.stop()


def test_interrupt_keeps_what_is_done_and_skip_drops_one_image() -> None:
    q = make_queue([])
    job = q.submit("test", {"name": "i", "steps": 500})
    while job.progress.step < 3:
        time.sleep(0.005)
    q.skip()
    time.sleep(0.05)
    q.interrupt()
    assert job.wait(5) and job.state is JobState.DONE
    made = job.result["made"]
    assert 3 <= len(made) < 500
    assert made != list(range(len(made)))  # one step was skipped
    q.stop()


def test_failures_are_reported_and_the_worker_goes_on() -> None:
    q = make_queue([])
    user = q.submit("test", {"name": "u", "fail": "user"})
    bug = q.submit("test", {"name": "b", "fail": "bug"})
    ok = q.submit("test", {"name": "ok"})
    for j in (user, bug, ok):
        assert j.wait(5)
    assert user.state is JobState.FAILED and user.error == "bad size" and user.error_status == 400
    assert bug.state is JobState.FAILED and bug.error_status == 500 and "ZeroDivisionError" in bug.error
    assert ok.state is JobState.DONE
    q.stop()


def test_unknown_type_invalid_request_and_unknown_id() -> None:
    q = make_queue([])
    with pytest.raises(UserError, match="unknown job type 'nope'; valid types: test"):
        q.submit("nope", {})
    with pytest.raises(UserError, match="invalid test request") as e:
        q.submit("test", {"steps": 1})
    assert e.value.field == "name"
    with pytest.raises(NotFound):
        q.get("missing")
    with pytest.raises(ValueError, match="already registered"):
        q.register(JobType("test", Req, lambda r, c: None))
    q.stop()


def test_finished_jobs_are_kept_for_the_retention_time() -> None:
    retention = [3600.0]
    q = JobQueue(HookRegistry(), retention_s=lambda: retention[0])
    q.register(JobType("test", Req, lambda r, c: r.name))
    q.start()
    job = q.submit("test", {"name": "x"})
    job.wait(5)
    assert q.get(job.id).result == "x"
    retention[0] = 0
    time.sleep(0.01)
    assert job.id not in [j.id for j in q.list()]
    q.stop()


def test_generation_hooks_fire_around_every_job_and_may_replace_the_request(tmp_path: Path) -> None:
    folder = fx.write_extension(tmp_path / "extensions", "hello", fx.HELLO)
    services = build_services(["--data-dir", str(tmp_path)], {})
    services.hooks.register("before_generate", "rewriter",
                            lambda e: setattr(e, "request", e.request.model_copy(update={"text": "rewritten"})))
    services.jobs.start()
    job = services.jobs.submit("hello-echo", {"text": "hi"})
    assert job.wait(5) and job.result == {"echo": "rewritten"}
    events = [json.loads(line)["event"] for line in (folder / "calls.jsonl").read_text().splitlines()]
    assert events == ["before_generate", "after_generate"]
    services.jobs.stop()


def test_extension_job_type_through_the_rest_routes(tmp_path: Path) -> None:
    fx.write_extension(tmp_path / "extensions", "hello", fx.HELLO)
    c = TestClient(create_app(build_services(["--data-dir", str(tmp_path)], {})))
    r = c.post("/studio/v1/jobs", json={"type": "hello-echo", "request": {"text": "yo", "steps": 2}})
    assert r.status_code == 202
    job_id = r.json()["id"]
    deadline = time.monotonic() + 10
    while (body := c.get(f"/studio/v1/jobs/{job_id}").json())["state"] != "done":
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert body["result"] == {"echo": "yo"} and body["progress"] == 1.0
    assert job_id in [j["id"] for j in c.get("/studio/v1/jobs").json()["jobs"]]
    assert "hello-echo" in c.get("/studio/v1/jobs").json()["types"]
    bad = c.post("/studio/v1/jobs", json={"type": "nope", "request": {}})
    assert bad.status_code == 400 and "valid types" in bad.json()["detail"]
    assert c.get("/studio/v1/jobs/missing").status_code == 404

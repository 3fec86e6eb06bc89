"""The Cluster status (`GET /studio/v1/cluster`, `modules.cluster.status`) of a studio without --cluster: this
machine is the one worker, the queue is listed in order, and Ray is never imported, not even by a real job."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import BaseModel

from modules.cluster.status import ClusterStatus, cluster_status
from modules.jobs import JobContext, JobState, JobType
from modules.paths import REPO_ROOT
from modules.services import Services, build_services


@pytest.fixture
def studio(tmp_path: Path) -> Iterator[Services]:
    services = build_services(["--data-dir", str(tmp_path), "--nowebui"], {})
    try:
        yield services
    finally:
        services.jobs.stop()


def test_without_a_cluster_this_machine_is_the_one_idle_worker(studio: Services) -> None:
    status = cluster_status(studio)
    assert isinstance(status, ClusterStatus)
    assert status.cluster is None
    assert [w.name for w in status.workers] == ["this machine"]
    worker = status.workers[0]
    assert worker.state == "idle" and worker.job is None and worker.loaded is None and worker.error is None
    assert worker.host
    assert status.running == [] and status.queue == []


def test_waiting_jobs_are_listed_in_the_order_they_will_start(studio: Services) -> None:
    # The queue is not started, so the jobs wait.
    first = studio.jobs.submit("txt2img", {"prompt": "one", "steps": 1, "width": 64, "height": 64})
    second = studio.jobs.submit("txt2img", {"prompt": "two", "steps": 1, "width": 64, "height": 64})
    status = cluster_status(studio)
    assert [(j.id, j.type, j.state) for j in status.queue] == [(first.id, "txt2img", "queued"),
                                                                (second.id, "txt2img", "queued")]
    assert status.running == [] and status.workers[0].state == "idle"
    studio.jobs.cancel(first.id)
    assert [j.id for j in cluster_status(studio).queue] == [second.id]
    assert first.state is JobState.CANCELLED


class Hold(BaseModel):
    label: str = ""


def test_a_running_job_makes_this_machine_busy_with_it(studio: Services) -> None:
    started, release = threading.Event(), threading.Event()

    def run(request: Hold, ctx: JobContext) -> str:
        ctx.progress(1, 3, text="working")
        started.set()
        release.wait(30)
        return request.label

    studio.jobs.register(JobType("hold", Hold, run))
    studio.jobs.start()
    running = studio.jobs.submit("hold", {"label": "a"})
    waiting = studio.jobs.submit("hold", {"label": "b"})
    try:
        assert started.wait(30)
        status = cluster_status(studio)
        assert [(j.id, j.state, j.text) for j in status.running] == [(running.id, "running", "working")]
        assert [j.id for j in status.queue] == [waiting.id]
        assert (status.workers[0].state, status.workers[0].job) == ("busy", running.id)
    finally:
        release.set()
    assert running.wait(30) and waiting.wait(30)
    # A finished job leaves the running list just after its waiters are woken.
    deadline = time.monotonic() + 30
    while studio.jobs.running() and time.monotonic() < deadline:
        time.sleep(0.01)
    status = cluster_status(studio)
    assert status.workers[0].state == "idle" and status.running == [] and status.queue == []


def test_the_status_is_the_route_s_json_shape(studio: Services) -> None:
    data = json.loads(cluster_status(studio).model_dump_json())
    assert set(data) == {"cluster", "workers", "running", "queue"}
    assert set(data["workers"][0]) >= {"name", "state", "host", "device", "gpu", "cpu_only", "loaded", "job",
                                       "tasks_done", "error"}


# A fresh interpreter, so that nothing this test session imported (a cluster test may import Ray) counts.
_WITHOUT_CLUSTER = textwrap.dedent("""
    import json, sys
    from pathlib import Path

    from fastapi.testclient import TestClient

    from modules.app import create_app
    from modules.services import build_services
    from tests.fixtures.tiny_models import save_tiny_checkpoint

    root = Path(sys.argv[1])
    save_tiny_checkpoint(root / "models" / "Stable-diffusion", "sd1", name="tiny", seed=0)
    services = build_services(["--data-dir", str(root), "--nowebui"], {})
    try:
        with TestClient(create_app(services)) as client:
            before = client.get("/studio/v1/cluster")
            job = services.jobs.submit("txt2img", {"prompt": "x", "steps": 2, "width": 64, "height": 64})
            finished = job.wait(120)
            after = client.get("/studio/v1/cluster")
    finally:
        services.jobs.stop()
    print(json.dumps({"before": [before.status_code, before.json()], "after": [after.status_code, after.json()],
                      "finished": finished, "state": job.state.value, "error": job.error,
                      "images": len(job.result.images) if job.result else 0, "ray": "ray" in sys.modules}))
""")


def test_without_cluster_ray_is_never_imported_even_by_a_real_job(tmp_path: Path) -> None:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    env.pop("COMMANDLINE_ARGS", None)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH", "")) if p)
    done = subprocess.run([sys.executable, "-c", _WITHOUT_CLUSTER, str(tmp_path)], cwd=REPO_ROOT, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-4000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["finished"] and report["state"] == "done", report["error"]
    assert report["images"] == 1

    code, before = report["before"]
    assert code == 200 and before["cluster"] is None and before["queue"] == [] and before["running"] == []
    assert [(w["name"], w["state"], w["loaded"]) for w in before["workers"]] == [("this machine", "idle", None)]
    code, after = report["after"]
    assert code == 200 and after["queue"] == [] and after["running"] == []
    (worker,) = after["workers"]
    # After a job the worker shows what ran it: the device and the checkpoint it loaded.
    assert worker["state"] == "idle" and worker["device"] == "cpu" and worker["cpu_only"] and worker["gpu"] is None
    assert worker["loaded"].startswith("tiny")

    assert report["ray"] is False, "without --cluster, Ray is never imported"

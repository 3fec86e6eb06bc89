"""The studio on a local Ray cluster with two CPU workers (`--cluster auto --cluster-cpu-workers 2`): jobs
split over the workers and give the images one machine gives, survive a worker killed mid-job, obey Interrupt
and Cancel, and the Cluster route lists the workers."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from modules.app import create_app
from modules.jobs import Job, JobState
from modules.services import Services, build_services
from tests.cluster.conftest import data_with_tiny_model

pytestmark = pytest.mark.timeout(600)

REQUEST = {"prompt": "a red fox", "negative_prompt": "blurry", "steps": 3, "width": 64, "height": 64,
           "sampler_name": "Euler", "seed": 1234}


def wait_for(condition: Callable[[], Any], timeout: float = 180, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def idle_workers(services: Services) -> list[Any]:
    return [w for w in services.jobs.executor.workers() if w.state == "idle"]


@pytest.fixture(scope="module")
def farm(local_ray: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Services]:
    server_data = data_with_tiny_model(tmp_path_factory.mktemp("server-data"))
    services = build_services(["--data-dir", str(server_data), "--nowebui", "--cluster", "auto",
                               "--cluster-cpu-workers", "2"], {})
    services.jobs.start()
    wait_for(lambda: len(idle_workers(services)) == 2, what="two idle workers")
    try:
        yield services
    finally:
        services.jobs.stop()


def run(services: Services, **fields: Any) -> Job:
    job = services.jobs.submit("txt2img", {**REQUEST, **fields})
    assert job.wait(300), "job did not finish"
    return job


def pixels(job: Job) -> list[np.ndarray]:
    return [np.asarray(g.image) for g in job.result.images]


def test_batch_count_splits_over_both_workers_with_the_images_of_one_machine(farm: Services, tmp_path: Path) -> None:
    before = {w.name: w.tasks_done for w in farm.jobs.executor.workers()}
    job = run(farm, n_iter=4)
    assert job.state is JobState.DONE, job.error
    used = {w.name for w in farm.jobs.executor.workers() if w.tasks_done > before.get(w.name, 0)}
    assert len(used) == 2, f"the 4 batches ran on {used} only"

    local = build_services(["--data-dir", str(data_with_tiny_model(tmp_path / "local")), "--nowebui"], {})
    local.jobs.start()
    try:
        reference = run(local, n_iter=4)
    finally:
        local.jobs.stop()
    assert job.result.info["all_seeds"] == reference.result.info["all_seeds"] == [1234, 1235, 1236, 1237]
    assert job.result.infotexts == reference.result.infotexts
    for farm_image, local_image in zip(pixels(job), pixels(reference), strict=True):
        np.testing.assert_array_equal(farm_image, local_image)

    # Every image (and the grid of all four) is filed in the server's own outputs tree, numbered in order.
    outputs = farm.paths.outputs
    saved = [g.path for g in job.result.images]
    assert all(p is not None and p.is_file() and outputs in p.parents for p in saved)
    assert [p.name.split("-")[0] for p in saved] == sorted(p.name.split("-")[0] for p in saved)
    assert job.result.grid is not None and job.result.grid.path.is_file()
    assert not [p for p in outputs.rglob(".*")], "temporary or reservation files were left behind"


def test_a_worker_killed_mid_job_the_job_finishes_on_the_other_with_a_note(farm: Services) -> None:
    import ray

    saved_before = len(list(farm.paths.outputs.rglob("*.png")))
    job = farm.jobs.submit("txt2img", {**REQUEST, "steps": 400, "seed": 77})
    victim = wait_for(lambda: next((w for w in farm.jobs.executor.workers()
                                    if w.job_id == job.id and job.progress.step > 0), None), what="the job to run")
    ray.kill(victim.handle)
    assert job.wait(300)
    assert job.state is JobState.DONE, job.error
    assert any(victim.name in note and "run again on another worker" in note for note in job.notes), job.notes
    assert [g.seed for g in job.result.images] == [77]
    # One image, saved once: the dead worker's part left nothing behind.
    assert len(list(farm.paths.outputs.rglob("*.png"))) == saved_before + 1

    # The dead worker is replaced, and the newcomer takes jobs.
    wait_for(lambda: len(idle_workers(farm)) == 2, what="a replacement worker")
    newcomer = max(farm.jobs.executor.workers(), key=lambda w: int(w.name.split("-")[1]))
    assert newcomer.name not in (victim.name,) and newcomer.state == "idle"
    follow_up = run(farm, n_iter=2)
    assert follow_up.state is JobState.DONE and newcomer.tasks_done >= 1


def test_cancel_and_interrupt_reach_the_workers(farm: Services) -> None:
    job = farm.jobs.submit("txt2img", {**REQUEST, "steps": 500, "n_iter": 2})
    wait_for(lambda: job.progress.step > 0, what="the job to start")
    farm.jobs.cancel(job.id)
    assert job.wait(120), "cancel did not stop the job"
    assert job.state is JobState.CANCELLED
    wait_for(lambda: len(idle_workers(farm)) == 2, what="workers to be free again")

    job = farm.jobs.submit("txt2img", {**REQUEST, "steps": 500, "n_iter": 6})
    wait_for(lambda: job.progress.step > 0, what="the job to start")
    farm.jobs.interrupt(job.id)
    assert job.wait(120), "interrupt did not stop the job"
    # Interrupt keeps what was made: each running part stops early with its image; waiting parts never start.
    assert job.state is JobState.DONE, job.error
    assert 0 < len(job.result.images) < 6


def test_extras_runs_on_a_worker_and_is_filed_here_with_its_infotext(farm: Services) -> None:
    from PIL import Image

    source = Image.new("RGB", (40, 24), (200, 30, 90))
    job = farm.jobs.submit("extras", {"images": [source], "upscaler_1": "Lanczos", "upscaling_resize": 2})
    assert job.wait(120)
    assert job.state is JobState.DONE, job.error
    (item,) = job.result.images
    assert item.image.size == (80, 48)
    assert item.path.parent == farm.paths.outputs / "extras-images" and item.path.is_file()
    with Image.open(item.path) as saved:
        assert saved.size == (80, 48) and "Postprocess upscaler: Lanczos" in saved.info.get("parameters", "")


def test_a_checkpoint_no_worker_has_fails_naming_the_file(farm: Services) -> None:
    job = run(farm, checkpoint="missing_model.safetensors")
    assert job.state is JobState.FAILED
    assert "missing_model.safetensors" in job.error and "no cluster worker can run this job" in job.error
    assert job.error_status == 404


def test_the_cluster_route_lists_both_workers_and_the_queue(farm: Services) -> None:
    with TestClient(create_app(farm)) as client:
        status = client.get("/studio/v1/cluster").json()
    assert status["cluster"] == "auto"
    live = [w for w in status["workers"] if w["state"] != "dead"]
    assert len(live) == 2 and all(w["cpu_only"] and w["device"] == "cpu" and w["host"] for w in live)
    assert all(w["loaded"] and w["loaded"].startswith("tiny") for w in live if w["tasks_done"])
    assert status["queue"] == [] and status["running"] == []

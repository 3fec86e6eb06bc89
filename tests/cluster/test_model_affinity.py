"""Workers with different models folders (a farm where not every PC has every file): a job goes to the worker
that has its checkpoint, and the worker that lacks it is remembered and passed over."""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator
from typing import Any

import pytest

from modules.cluster.executor import ClusterExecutor
from modules.cluster.pool import Slot
from modules.cluster.worker import StudioWorker
from modules.jobs import JobQueue, JobState
from modules.services import build_services
from tests.cluster.conftest import data_with_tiny_model

pytestmark = pytest.mark.timeout(600)


@pytest.fixture(scope="module")
def queue(local_ray: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[JobQueue, ClusterExecutor]]:
    import ray

    only_tiny = data_with_tiny_model(tmp_path_factory.mktemp("only-tiny"))
    also_other = data_with_tiny_model(data_with_tiny_model(tmp_path_factory.mktemp("also-other")), name="other")
    folders = itertools.cycle([only_tiny, also_other])

    def spawn(slot: Slot, name: str) -> Any:
        return ray.remote(StudioWorker).options(num_cpus=1, max_concurrency=4).remote(
            ["--data-dir", str(next(folders))], True)

    services = build_services(["--data-dir", str(tmp_path_factory.mktemp("server")), "--nowebui"], {})
    executor = ClusterExecutor("auto", 2, services.settings, services.paths.outputs, services.hooks, spawn=spawn)
    jobs = JobQueue(services.hooks, executor=executor)
    for job_type in services.jobs.types():
        jobs.register(job_type)
    jobs.start()
    deadline = time.monotonic() + 180
    while sum(w.state == "idle" for w in executor.workers()) < 2:
        assert time.monotonic() < deadline, "workers did not start"
        time.sleep(0.2)
    try:
        yield jobs, executor
    finally:
        jobs.stop()


def test_the_job_goes_to_the_worker_that_has_the_checkpoint(queue: tuple[JobQueue, ClusterExecutor]) -> None:
    jobs, executor = queue
    request = {"prompt": "x", "steps": 2, "width": 64, "height": 64, "checkpoint": "other"}
    # Two at once, so one of them first lands on the worker without the file, which says so.
    first = [jobs.submit("txt2img", request) for _ in range(2)]
    then = jobs.submit("txt2img", request)
    for job in [*first, then]:
        assert job.wait(300)
        assert job.state is JobState.DONE, job.error
        assert job.result.info["sd_model_name"] == "other"
    workers = {w.info.data_dir: w for w in executor.workers()}
    lacking = next(w for d, w in workers.items() if "only-tiny" in d)
    having = next(w for d, w in workers.items() if "also-other" in d)
    assert having.tasks_done == 3 and lacking.tasks_done == 0
    assert "other" in lacking.view().lacks, "the worker without the file is not remembered as lacking it"

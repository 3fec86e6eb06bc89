"""What the Cluster tab and `GET /studio/v1/cluster` show: the workers, what each holds and runs, and the queue.

Without --cluster the one in-process worker is listed the same way, so a script reads one shape either way.
Importing this module does not import Ray.
"""

from __future__ import annotations

import socket
import sys
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, Field

if TYPE_CHECKING:
    from modules.services import Services


class WorkerStatus(BaseModel):
    name: str
    state: str = Field(description="starting, idle, busy or dead")
    host: str | None = None
    node_id: str | None = None
    device: str | None = Field(None, description="cuda:0, cpu, ... (auto until the first job on this machine)")
    gpu: str | None = Field(None, description="the GPU's name; null for a CPU worker")
    cpu_only: bool = False
    loaded: str | None = Field(None, description="the checkpoint loaded on it")
    job: str | None = Field(None, description="id of the job it runs")
    tasks_done: int = 0
    error: str | None = Field(None, description="why it is dead")


class QueuedJob(BaseModel):
    id: str
    type: str
    state: str
    text: str = ""


class ClusterStatus(BaseModel):
    cluster: str | None = Field(None, description="the --cluster address; null when jobs run in this process")
    workers: list[WorkerStatus]
    running: list[QueuedJob]
    queue: list[QueuedJob] = Field(description="waiting jobs, in the order they will start")


def cluster_status(services: Services) -> ClusterStatus:
    jobs = services.jobs
    running = [QueuedJob(id=j.id, type=j.type, state=j.state.value, text=j.progress.text) for j in jobs.running()]
    queue = [QueuedJob(id=j.id, type=j.type, state=j.state.value) for j in jobs.queued()]
    workers_of = getattr(jobs.executor, "workers", None)
    if workers_of is None:
        workers = [_in_process(services, running)]
    else:
        workers = [_remote(w) for w in workers_of()]
    return ClusterStatus(cluster=services.args.cluster, workers=workers, running=running, queue=queue)


def _remote(worker: Any) -> WorkerStatus:
    info = worker.info
    return WorkerStatus(
        name=worker.name, state=worker.state, host=info.host if info else None, node_id=worker.slot.node_id,
        device=info.device if info else None, gpu=info.gpu if info else None, cpu_only=not worker.slot.gpu,
        loaded=info.loaded[-1] if info and info.loaded else None, job=worker.job_id, tasks_done=worker.tasks_done,
        error=worker.error)


def _in_process(services: Services, running: list[QueuedJob]) -> WorkerStatus:
    engine = services.engine
    current = engine.checkpoints.current
    device, gpu = services.args.device, None
    if "torch" in sys.modules:  # asking before the first job would import torch just to show a name
        device = str(engine.memory.device)
        if device.startswith("cuda"):
            gpu = sys.modules["torch"].cuda.get_device_name(engine.memory.device)
    return WorkerStatus(name="this machine", state="busy" if running else "idle", host=socket.gethostname(),
                        device=device, gpu=gpu, cpu_only=gpu is None and device == "cpu",
                        loaded=current.title if current else None, job=running[0].id if running else None)

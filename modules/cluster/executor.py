"""The job queue's executor on a Ray cluster: jobs run on the farm's workers, results land here.

For each job: the settings in force (with an API request's overrides) are captured, the request is split into
parts (`split`), each part waits in queue order for a worker (`pool`, `scheduling`), runs there while progress
and previews stream back and Interrupt/Cancel/Skip stream out, and what it saved is filed into this server's
outputs tree. A part whose worker dies is run again once on another worker, with a note on the job; since
files are only filed once a part has come back, nothing is saved twice. Job types that cannot leave this
machine (a folder on the server) run here, one at a time, as without a cluster.
"""

from __future__ import annotations

import itertools
import logging
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import ray
from ray._private.utils import get_ray_client_dependency_error
from ray.exceptions import GetTimeoutError, NodeDiedError, RayActorError, WorkerCrashedError

from modules.cluster.pool import Spawn, Worker, WorkerDied, WorkerPool, spawn_actor
from modules.cluster.protocol import Flags, TaskOutcome, TaskProgress
from modules.cluster.scheduling import TaskView
from modules.cluster.split import merge, remap_paths, split
from modules.engine.outputs import ImageSaver
from modules.engine.outputs.adopt import adopt_files
from modules.engine.requests import GenerationRequest
from modules.engine.results import GenerationResult
from modules.errors import AccessDenied, NotFound, UserError
from modules.extensions.hooks import HookRegistry
from modules.jobs import InProcessExecutor, Job, JobCancelled, JobContext, JobType
from modules.settings import Settings

log = logging.getLogger(__name__)

_DIED = (RayActorError, WorkerCrashedError, NodeDiedError)
POLL_S = 0.3


class WorkerInternalError(UserError):
    """A bug on the worker: its message already says "internal error" and the traceback is in its log."""

    status_code = 500


class ClusterExecutor:
    concurrent = True
    poll_s = 0.5

    def __init__(self, address: str, cpu_workers: int, settings: Settings, outputs: Path,
                 hooks: HookRegistry | None = None, spawn: Spawn = spawn_actor, worker_wait_s: float = 600.0) -> None:
        self.address = address
        self._settings = settings
        self._outputs = outputs
        self._hooks = hooks
        self._pool = WorkerPool(cpu_workers, spawn)
        self._local = InProcessExecutor()
        self._local_lock = threading.Lock()
        self._snapshot_lock = threading.Lock()
        self._sequence = itertools.count()
        self._worker_wait_s = worker_wait_s

    # -- the queue's executor -------------------------------------------------------------------------------

    def connect(self) -> None:
        """Join the cluster (at start-up, so a wrong address stops the app with a clear message)."""
        if ray.is_initialized():
            return
        if self.address.startswith("ray://") and get_ray_client_dependency_error() is not None:
            raise ConnectionError("a ray:// address needs Ray's client extra: venv/bin/pip install "
                                  "'ray[client]==2.60.0' (or give the head's HOST:6379 from inside the LAN)")
        # "auto" finds RAY_ADDRESS or the head started on this machine; the namespace keeps our actors apart
        # from other Ray users of the same cluster.
        ray.init(address=self.address, namespace="sd-studio", log_to_driver=False)

    def start(self) -> None:
        self.connect()
        self._pool.start()

    def stop(self) -> None:
        self._pool.stop()

    def ready(self, running: int) -> bool:
        # With no job running, one may start and wait for a worker in view of the user ("waiting for a cluster
        # worker"), rather than sit in the queue with no word.
        return running == 0 or self._pool.ready()

    def execute(self, job_type: JobType, job: Job, ctx: JobContext) -> Any:
        if job_type.remote is None or not job_type.remote(job.request):
            with self._local_lock:
                return self._local.execute(job_type, job, ctx)
        with self._snapshot_lock, job.scope() if job.scope is not None else nullcontext():
            settings = self._settings.values()
        farm = _Farm(self._pool, self._outputs, self._hooks, self._worker_wait_s)
        return _ClusterJob(farm, next(self._sequence), job, ctx, settings).run()

    # -- for the Cluster page -------------------------------------------------------------------------------

    def workers(self) -> list[Worker]:
        return self._pool.workers()


@dataclass(frozen=True)
class _Farm:
    """What one job's run needs of the executor."""

    pool: WorkerPool
    outputs: Path
    hooks: HookRegistry | None
    worker_wait_s: float


class _ClusterJob:
    """One job's run on the farm: its parts, their progress, and the merged result."""

    def __init__(self, farm: _Farm, seq: int, job: Job, ctx: JobContext, settings: dict[str, Any]) -> None:
        self._farm = farm
        self._job = job
        self._ctx = ctx
        self._settings = settings
        self._parts = split(job.request)
        self._seq = seq
        self._steps = [0] * len(self._parts)
        self._totals = [0] * len(self._parts)
        self._lock = threading.Lock()
        self._stop = threading.Event()  # a part failed: the parts still waiting do not start
        self._checkpoint = str(getattr(job.request, "checkpoint", None) or settings.get("sd_model_checkpoint") or "")

    def run(self) -> Any:
        self._ctx.progress(0, 0, text="waiting for a cluster worker")
        threads = min(len(self._parts), 16)
        with ThreadPoolExecutor(max_workers=threads, thread_name_prefix=f"job-{self._job.id[:8]}") as pool:
            futures = [pool.submit(self._run_part, i, part) for i, part in enumerate(self._parts)]
            outcomes: list[TaskOutcome | BaseException | None] = []
            for future in futures:
                try:
                    outcomes.append(future.result())
                except BaseException as e:  # noqa: BLE001 - reported below, once every part has ended
                    self._stop.set()
                    outcomes.append(e)
        return self._finish(outcomes)

    def _finish(self, outcomes: list[TaskOutcome | BaseException | None]) -> Any:
        results, saved = [], 0
        for outcome in outcomes:  # filed in part order, so the counters follow the seeds as on one machine
            if isinstance(outcome, TaskOutcome):
                self._file(outcome)
                saved += len(outcome.files)
                if outcome.status == "done":
                    results.append(outcome.result)
        errors = [o for o in outcomes if isinstance(o, BaseException)]
        errors += [_as_error(o) for o in outcomes if isinstance(o, TaskOutcome) and o.status == "failed"]
        if errors:
            error = errors[0]
            if saved and isinstance(error, UserError):
                error.message += f" ({saved} file(s) finished before the failure were saved to outputs)"
            raise error
        if self._job._cancel.is_set() or any(isinstance(o, TaskOutcome) and o.status == "cancelled" for o in outcomes):
            raise JobCancelled(self._job.id)
        if not results:  # interrupted before any part started: an empty result, as on one machine
            if isinstance(self._job.request, GenerationRequest):
                return GenerationResult()
            raise JobCancelled(self._job.id)
        saver = ImageSaver(self._farm.outputs, lambda key: self._settings[key], self._farm.hooks)
        result = merge(self._job.request, results, saver, self._job.type)
        total = sum(self._totals)
        self._ctx.progress(total, total, text="done")
        return result

    # -- one part ---------------------------------------------------------------------------------------------

    def _run_part(self, index: int, request: Any) -> TaskOutcome | None:
        task = TaskView((self._seq, index), self._checkpoint)
        missing: list[str] = []
        retried = False
        while True:
            worker = self._acquire(task, missing)
            if worker is None:
                return None
            try:
                outcome = self._call(worker, index, request)
            except WorkerDied as e:
                self._farm.pool.died(worker, str(e))
                task = replace(task, tried=task.tried | {worker.name})
                where = worker.info.host if worker.info else "its node"
                if retried:
                    raise UserError(f"{worker.name} on {where} stopped while running part {index + 1} of this job, "
                                    "which had already been retried once after another worker stopped; the job "
                                    "was not finished. See the Cluster tab.") from None
                retried = True
                self._ctx.note(f"{worker.name} on {where} stopped while running part {index + 1} of this job "
                               f"({e}); that part was run again on another worker.")
                continue
            self._farm.pool.release(worker, done=outcome.status == "done")
            self._farm.pool.update_info(worker, outcome.info)
            if outcome.status == "missing":
                missing.append(f"{worker.name} ({outcome.info.host if outcome.info else '?'}): {outcome.error}")
                if outcome.error_field == "checkpoint":
                    self._farm.pool.lacks(worker, self._checkpoint)
                task = replace(task, tried=task.tried | {worker.name})
                continue
            with self._lock:
                self._steps[index] = self._totals[index]
            return outcome

    def _acquire(self, task: TaskView, missing: list[str]) -> Worker | None:
        job = self._job

        def give_up() -> bool:
            return self._stop.is_set() or job._cancel.is_set() or job.interrupt_requested

        try:
            return self._farm.pool.acquire(task, job.id, give_up, self._farm.worker_wait_s)
        except LookupError as e:
            if missing:
                raise NotFound("no cluster worker can run this job: " + "; ".join(missing),
                               field="checkpoint" if "checkpoint" in " ".join(missing) else None) from None
            raise UserError(f"no cluster worker could take this job: {e}. See the Cluster tab.") from None

    def _call(self, worker: Worker, index: int, request: Any) -> TaskOutcome:
        """Run the part on `worker`, streaming progress back and the job's buttons out until it ends."""
        task_id = f"{self._job.id}-{index}-{uuid.uuid4().hex[:6]}"
        try:
            ref = worker.handle.run.remote(task_id, self._job.type, request, self._settings)
            while True:
                done, _ = ray.wait([ref], timeout=POLL_S)
                if done:
                    return ray.get(ref)
                flags = Flags(self._job._cancel.is_set(), self._job.interrupt_requested, self._ctx.take_skip())
                try:
                    progress = ray.get(worker.handle.poll.remote(task_id, flags), timeout=10)
                except GetTimeoutError:
                    continue
                if progress is not None:
                    self._report(index, progress, worker.name)
        except _DIED as e:
            raise WorkerDied(type(e).__name__) from None
        except ray.exceptions.RayTaskError as e:  # the worker could not send its result (not picklable, ...)
            return TaskOutcome("failed", error=f"internal error on {worker.name}: {e}", error_status=500)

    def _report(self, index: int, progress: TaskProgress, worker_name: str) -> None:
        with self._lock:
            self._steps[index], self._totals[index] = progress.step, progress.total
            known = [t for t in self._totals if t]
            # Parts not started yet count as long as the ones that have, so the bar does not jump back.
            total = sum(self._totals) + (known[0] * self._totals.count(0) if known else 0)
            text = f"{progress.text} ({worker_name})" if progress.text else worker_name
            self._ctx.progress(sum(self._steps), total, preview=progress.preview, text=text)

    def _file(self, outcome: TaskOutcome) -> None:
        """The part's files into this server's outputs, and its result pointing at them. Only parts that came
        back are filed: a part whose worker died left nothing here, so its rerun cannot save twice."""
        for note in outcome.notes:
            if note not in self._job.notes:
                self._ctx.note(note)
        if outcome.files:
            placed = adopt_files(self._farm.outputs, [(f.relative, f.data) for f in outcome.files])
            moved = {f"{outcome.staging}/{relative}": path for relative, path in placed.items()}
            outcome.result = remap_paths(outcome.result, moved)


def _as_error(outcome: TaskOutcome) -> Exception:
    message = outcome.error or "the job failed on a cluster worker"
    if outcome.error_status == 403:
        return AccessDenied(message, field=outcome.error_field)
    if outcome.error_status == 404:
        return NotFound(message, field=outcome.error_field)
    if outcome.error_status and outcome.error_status >= 500:
        return WorkerInternalError(message, field=outcome.error_field)
    return UserError(message, field=outcome.error_field)


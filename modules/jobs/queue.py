"""One ordered queue for all GPU work, and the executor that runs it.

UI clicks, REST calls and extension jobs all land here, so they share the GPU first come, first served. The
queue fires the `before_generate` and `after_generate` hooks around each job. Finished jobs stay retrievable
for the retention time, so a client that disconnected can come back for its result.

Where a job runs is the executor's business: `InProcessExecutor` (the default) runs one job at a time on this
machine; `modules.cluster` runs several at once on a farm of Ray workers. Either way jobs start in the order
they were submitted.
"""

from __future__ import annotations

import logging
import threading
import time
import traceback
from collections import deque
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import Any, Protocol

from pydantic import BaseModel, ValidationError

from modules.errors import NotFound, UserError, from_validation
from modules.extensions.hooks import GenerateEvent, HookRegistry
from modules.jobs.job import Job, JobCancelled, JobContext, JobState

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class JobType:
    name: str
    request_model: type[BaseModel]
    run: Callable[[Any, JobContext], Any]
    owner: str = "core"
    # Whether a request of this type may run on another machine of a cluster (it names no server path and
    # its result comes back whole). None: never.
    remote: Callable[[Any], bool] | None = None


class Executor(Protocol):
    """Runs the jobs the queue hands it. `ready(running)` says whether one more may start now."""

    concurrent: bool  # jobs run on threads of their own (True) or one by one on the queue's worker (False)
    poll_s: float | None  # how often `ready` must be asked again when nothing else wakes the queue

    def ready(self, running: int) -> bool: ...

    def execute(self, job_type: JobType, job: Job, ctx: JobContext) -> Any: ...

    def start(self) -> None: ...

    def stop(self) -> None: ...


class InProcessExecutor:
    """The embedded default: one job at a time, in this process, on this machine's device."""

    concurrent = False
    poll_s = None

    def ready(self, running: int) -> bool:
        return running == 0

    def execute(self, job_type: JobType, job: Job, ctx: JobContext) -> Any:
        with job.scope() if job.scope is not None else nullcontext():
            return job_type.run(job.request, ctx)

    def start(self) -> None:
        pass

    def stop(self) -> None:
        pass


class JobQueue:
    def __init__(self, hooks: HookRegistry, retention_s: Callable[[], float] = lambda: 3600.0,
                 executor: Executor | None = None, on_change: Callable[[Job], None] | None = None) -> None:
        self._hooks = hooks
        self._retention_s = retention_s
        # Told of every queued, started and finished job (modules.jobs.journal): a crash cannot lose jobs silently.
        self._on_change: Callable[[Job], None] = on_change or (lambda job: None)
        self._executor: Executor = executor or InProcessExecutor()
        self._types: dict[str, JobType] = {}
        self._jobs: dict[str, Job] = {}
        self._queue: deque[Job] = deque()
        self._running: list[Job] = []
        self._cond = threading.Condition()
        self._worker: threading.Thread | None = None
        self._stopping = False

    # -- job types -----------------------------------------------------------------------------------------

    def register(self, job_type: JobType) -> None:
        with self._cond:
            if job_type.name in self._types:
                other = self._types[job_type.name].owner
                raise ValueError(f"job type '{job_type.name}' is already registered by {other}")
            self._types[job_type.name] = job_type

    def types(self) -> list[JobType]:
        return list(self._types.values())

    def type(self, name: str) -> JobType:
        """The registered type `name`; a UserError listing the valid ones otherwise."""
        return self._type(name)

    @property
    def executor(self) -> Executor:
        return self._executor

    def _type(self, name: str) -> JobType:
        try:
            return self._types[name]
        except KeyError:
            valid = ", ".join(sorted(self._types)) or "none"
            raise UserError(f"unknown job type '{name}'; valid types: {valid}", field="type") from None

    # -- submitting and reading ----------------------------------------------------------------------------

    def submit(self, type_name: str, request: BaseModel | dict[str, Any],
               scope: Callable[[], AbstractContextManager[Any]] | None = None) -> Job:
        """Queue a job. `scope`, when given, is entered by the worker around this job alone."""
        job_type = self._type(type_name)
        if not isinstance(request, job_type.request_model):
            try:
                request = job_type.request_model.model_validate(request)
            except ValidationError as e:
                raise from_validation(e, prefix=f"invalid {type_name} request: ") from None
        job = Job(type=type_name, request=request, scope=scope)
        self._on_change(job)  # before the worker can see it, so the journal's records stay in order
        with self._cond:
            self._prune()
            self._jobs[job.id] = job
            self._queue.append(job)
            self._cond.notify_all()
        return job

    def get(self, job_id: str) -> Job:
        with self._cond:
            job = self._jobs.get(job_id)
        if job is None:
            raise NotFound(f"no job with id '{job_id}' (finished jobs are kept for a limited time)", field="id")
        return job

    def list(self) -> list[Job]:
        with self._cond:
            self._prune()
            return list(self._jobs.values())

    def position(self, job: Job) -> int | None:
        """How many jobs run before this one starts: 0 when running or next; None when finished."""
        with self._cond:
            if job.state is JobState.RUNNING:
                return 0
            try:
                ahead = list(self._queue).index(job)
            except ValueError:
                return None
            return ahead + (1 if self._running else 0)

    def current(self) -> Job | None:
        """The running job (the oldest one, when a cluster runs several)."""
        with self._cond:
            return self._running[0] if self._running else None

    def running(self) -> list[Job]:
        with self._cond:
            return list(self._running)

    def queued(self) -> list[Job]:
        with self._cond:
            return list(self._queue)

    def pending_count(self) -> int:
        with self._cond:
            return len(self._queue) + len(self._running)

    def wake(self) -> None:
        """Ask the worker to look again: the executor may have room now (a cluster worker came or went)."""
        with self._cond:
            self._cond.notify_all()

    # -- controlling ---------------------------------------------------------------------------------------

    def cancel(self, job_id: str) -> Job:
        job = self.get(job_id)
        with self._cond:
            if job.state is JobState.QUEUED:
                self._queue.remove(job)
                self._finish(job, JobState.CANCELLED)
            elif job.state is JobState.RUNNING:
                job._cancel.set()
        return job

    def interrupt(self, job_id: str | None = None) -> None:
        """Stop a job early, keeping what it has finished (A1111's Interrupt). No id: the running job."""
        job = self.get(job_id) if job_id else self.current()
        if job is not None:
            job._interrupt.set()

    def skip(self, job_id: str | None = None) -> None:
        """Skip the image a job is making and go on with the next (A1111's Skip). No id: the running job."""
        job = self.get(job_id) if job_id else self.current()
        if job is not None:
            job._skip.set()

    # -- the worker ----------------------------------------------------------------------------------------

    def start(self) -> None:
        with self._cond:
            if self._worker is None:
                self._stopping = False
                self._executor.start()
                self._worker = threading.Thread(target=self._work, name="job-worker", daemon=True)
                self._worker.start()

    def stop(self, timeout: float = 5.0) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
            worker = self._worker
        if worker is not None:
            worker.join(timeout)
        self._worker = None
        self._executor.stop()

    def _work(self) -> None:
        while True:
            with self._cond:
                while not self._stopping and not (self._queue and self._executor.ready(len(self._running))):
                    self._cond.wait(self._executor.poll_s)
                if self._stopping:
                    return
                job = self._queue.popleft()
                job.state, job.started_at = JobState.RUNNING, time.time()
                self._running.append(job)
            self._on_change(job)
            if self._executor.concurrent:
                threading.Thread(target=self._run_and_release, args=(job,), name=f"job-{job.id[:8]}",
                                 daemon=True).start()
            else:
                self._run_and_release(job)

    def _run_and_release(self, job: Job) -> None:
        try:
            self._run(job)
        finally:
            with self._cond:  # normally done already by _finish; here for a job that ended without one
                if job in self._running:
                    self._running.remove(job)
                self._cond.notify_all()

    def _run(self, job: Job) -> None:
        job_type = self._types[job.type]
        try:
            event = self._hooks.fire("before_generate", GenerateEvent(job.type, job.request))
            if isinstance(event.request, job_type.request_model):
                job.request = event.request
            else:
                log.warning("a before_generate hook replaced the %s request with a %s; ignored", job.type,
                            type(event.request).__name__)
            job.result = self._executor.execute(job_type, job, JobContext(job))
            self._hooks.fire("after_generate", GenerateEvent(job.type, job.request, job.result))
        except JobCancelled:
            self._finish(job, JobState.CANCELLED)
        except UserError as e:
            job.error, job.error_status = e.message, e.status_code
            self._finish(job, JobState.FAILED)
        except Exception as e:  # noqa: BLE001 - a failed job must never stop the worker
            log.error("job %s (%s) failed:\n%s", job.id, job.type, traceback.format_exc())
            job.error, job.error_status = f"internal error: {type(e).__name__}: {e}", 500
            self._finish(job, JobState.FAILED)
        else:
            self._finish(job, JobState.DONE)

    def _finish(self, job: Job, state: JobState) -> None:
        # Off the running list and journalled before anyone waiting on the job wakes: a client that got its
        # result must not then see the job still counted in /progress.
        with self._cond:
            if job in self._running:
                self._running.remove(job)
            self._cond.notify_all()
        job.state, job.finished_at = state, time.time()
        self._on_change(job)
        job._finished.set()

    def _prune(self) -> None:
        cutoff = time.time() - self._retention_s()
        for job_id in [j.id for j in self._jobs.values() if j.finished_at and j.finished_at < cutoff]:
            del self._jobs[job_id]

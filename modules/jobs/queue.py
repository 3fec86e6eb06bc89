"""One ordered queue and one worker for all GPU work.

UI clicks, REST calls and extension jobs all land here, so they share the GPU first come, first served. The
worker fires the `before_generate` and `after_generate` hooks around each job. Finished jobs stay retrievable
for the retention time, so a client that disconnected can come back for its result.
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
from typing import Any

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


class JobQueue:
    def __init__(self, hooks: HookRegistry, retention_s: Callable[[], float] = lambda: 3600.0) -> None:
        self._hooks = hooks
        self._retention_s = retention_s
        self._types: dict[str, JobType] = {}
        self._jobs: dict[str, Job] = {}
        self._queue: deque[Job] = deque()
        self._current: Job | None = None
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
            return ahead + (1 if self._current is not None else 0)

    def current(self) -> Job | None:
        return self._current

    def pending_count(self) -> int:
        with self._cond:
            return len(self._queue) + (1 if self._current else 0)

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
        job = self.get(job_id) if job_id else self._current
        if job is not None:
            job._interrupt.set()

    def skip(self, job_id: str | None = None) -> None:
        """Skip the image a job is making and go on with the next (A1111's Skip). No id: the running job."""
        job = self.get(job_id) if job_id else self._current
        if job is not None:
            job._skip.set()

    # -- the worker ----------------------------------------------------------------------------------------

    def start(self) -> None:
        with self._cond:
            if self._worker is None:
                self._stopping = False
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

    def _work(self) -> None:
        while True:
            with self._cond:
                while not self._queue and not self._stopping:
                    self._cond.wait()
                if self._stopping:
                    return
                job = self._queue.popleft()
                job.state, job.started_at = JobState.RUNNING, time.time()
                self._current = job
            try:
                self._run(job)
            finally:
                with self._cond:
                    self._current = None

    def _run(self, job: Job) -> None:
        job_type = self._types[job.type]
        try:
            event = self._hooks.fire("before_generate", GenerateEvent(job.type, job.request))
            if isinstance(event.request, job_type.request_model):
                job.request = event.request
            else:
                log.warning("a before_generate hook replaced the %s request with a %s; ignored", job.type,
                            type(event.request).__name__)
            with job.scope() if job.scope is not None else nullcontext():
                job.result = job_type.run(job.request, JobContext(job))
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
        job.state, job.finished_at = state, time.time()
        job._finished.set()

    def _prune(self) -> None:
        cutoff = time.time() - self._retention_s()
        for job_id in [j.id for j in self._jobs.values() if j.finished_at and j.finished_at < cutoff]:
            del self._jobs[job_id]

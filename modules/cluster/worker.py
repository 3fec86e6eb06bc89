"""The worker: one whole engine (model cache, memory manager, extensions) on one GPU of a farm node.

The pool runs `StudioWorker` as a Ray actor; it is plain Python, so it can be driven without Ray too. It is
built from this node's own install (`SD_STUDIO_WORKER_ARGS` names its data dir, models and device), runs a
job type's function exactly as the in-process queue would, and hands back what the job saved instead of
keeping it: images and videos are written to a private staging folder and returned as bytes, so the studio
server files them in its one outputs tree.

Its methods are called from several threads at once (Ray `max_concurrency`): `run` blocks for the length of a
task while `poll` reports progress and carries the job's buttons.
"""

from __future__ import annotations

import logging
import os
import shlex
import shutil
import socket
import tempfile
import threading
import traceback
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from modules.cluster.protocol import Flags, StagedFile, TaskOutcome, TaskProgress, WorkerInfo
from modules.errors import NotFound, UserError
from modules.jobs import Job, JobCancelled, JobContext

log = logging.getLogger(__name__)

WORKER_ARGS_ENV = "SD_STUDIO_WORKER_ARGS"


class StudioWorker:
    def __init__(self, argv: list[str] | None = None, cpu_only: bool = False,
                 env: Mapping[str, str] | None = None) -> None:
        """`argv`: app flags (data dir, models, device); default: this node's SD_STUDIO_WORKER_ARGS."""
        from modules.services import build_services

        env = dict(os.environ if env is None else env)
        # The node's own COMMANDLINE_ARGS may hold the server's flags (--listen, --cluster): a worker serves nothing.
        env.pop("COMMANDLINE_ARGS", None)
        argv = list(argv) if argv is not None else shlex.split(env.get(WORKER_ARGS_ENV, ""))
        self._staging_root = Path(tempfile.mkdtemp(prefix="sd-studio-worker-"))
        self._staging = self._staging_root / "outputs"
        forced = ["--nowebui", "--skip-install", "--outputs-dir", str(self._staging)]
        self._services = build_services([*argv, *forced, *(["--device", "cpu"] if cpu_only else [])], env)
        self._cpu_only = cpu_only
        self._lock = threading.Lock()
        self._tasks: dict[str, tuple[Job, list[int]]] = {}  # task id -> job, [id of the last preview sent]

    # -- what it is -----------------------------------------------------------------------------------------

    def describe(self) -> WorkerInfo:
        engine = self._services.engine
        device = str(engine.memory.device)
        gpu = None
        if device.startswith("cuda"):
            import torch

            gpu = torch.cuda.get_device_name(engine.memory.device)
        current = engine.checkpoints.current
        loaded: tuple[str, ...] = ()
        if current is not None:
            f = current.file
            loaded = tuple(dict.fromkeys([f.name, f.relative_filename, f.filename.name, f.basename, current.title]))
        return WorkerInfo(host=socket.gethostname(), node_id=_node_id(), pid=os.getpid(), device=device, gpu=gpu,
                          data_dir=str(self._services.paths.data), loaded=loaded)

    # -- running --------------------------------------------------------------------------------------------

    def run(self, task_id: str, type_name: str, request: BaseModel, settings: Mapping[str, Any]) -> TaskOutcome:
        """Run one task to its end. Never raises for the job's own failures: the outcome says what happened."""
        try:
            job_type = self._services.jobs.type(type_name)
        except UserError:
            return TaskOutcome("missing", error=f"the job type '{type_name}' is not installed on "
                               f"{socket.gethostname()} (an extension missing there?)", info=self.describe())
        job = Job(type=type_name, request=request)
        with self._lock:
            self._tasks[task_id] = (job, [0])
        outcome = TaskOutcome("done")
        try:
            self._apply_settings(settings)
            outcome.result = job_type.run(request, JobContext(job))
        except JobCancelled:
            outcome.status = "cancelled"
        except NotFound as e:
            outcome.status, outcome.error, outcome.error_status = "missing", e.message, e.status_code
            outcome.error_field = e.field
        except UserError as e:
            outcome.status, outcome.error, outcome.error_status = "failed", e.message, e.status_code
        except Exception as e:  # noqa: BLE001 - a failed task must come back as a failure, not kill the worker
            log.error("task %s (%s) failed:\n%s", task_id, type_name, traceback.format_exc())
            outcome.status, outcome.error, outcome.error_status = "failed", f"internal error: {type(e).__name__}: {e}", 500
        finally:
            with self._lock:
                self._tasks.pop(task_id, None)
        # Saves that finished before a cancel or a failure are kept, as they would be on a single machine.
        outcome.files, outcome.staging = self._take_staged(), str(self._staging)
        outcome.notes, outcome.info = list(job.notes), self.describe()
        return outcome

    def poll(self, task_id: str, flags: Flags) -> TaskProgress | None:
        """Pass the job's buttons on and report its progress; None when the task is not running here."""
        with self._lock:
            entry = self._tasks.get(task_id)
        if entry is None:
            return None
        job, last_preview = entry
        if flags.cancel:
            job._cancel.set()
        if flags.interrupt:
            job._interrupt.set()
        if flags.skip:
            job._skip.set()
        p = job.progress
        preview = p.preview if p.preview is not None and id(p.preview) != last_preview[0] else None
        if preview is not None:
            last_preview[0] = id(p.preview)
        return TaskProgress(p.step, p.total, p.text, p.eta_s, preview, tuple(job.notes))

    def shutdown(self) -> None:
        shutil.rmtree(self._staging_root, ignore_errors=True)

    # -- inside ---------------------------------------------------------------------------------------------

    def _apply_settings(self, values: Mapping[str, Any]) -> None:
        """The server's settings for this task. Keys this node does not know (an extension not installed here)
        or cannot take are left as they are, so one odd setting cannot stop the farm."""
        settings = self._services.settings
        for key, value in values.items():
            try:
                settings.update({key: value}, save=False)
            except UserError:
                continue

    def _take_staged(self) -> list[StagedFile]:
        """Every finished file of the task, read and removed; hidden names (temporary files, name reservations)
        are not finished files."""
        files: list[StagedFile] = []
        if not self._staging.exists():
            return files
        for path in sorted(p for p in self._staging.rglob("*") if p.is_file()):
            relative = path.relative_to(self._staging)
            if not any(part.startswith(".") for part in relative.parts):
                files.append(StagedFile(relative.as_posix(), path.read_bytes()))
        shutil.rmtree(self._staging, ignore_errors=True)
        self._staging.mkdir(parents=True, exist_ok=True)
        return files


def _node_id() -> str:
    try:
        import ray

        return ray.get_runtime_context().get_node_id()
    except Exception:  # noqa: BLE001 - outside Ray (tests, a direct call) there is no node
        return socket.gethostname()

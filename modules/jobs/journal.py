"""A record on disk of the jobs that are queued or running, so that a crash cannot lose them silently.

The job queue lives in memory. When the process dies (kill -9, a driver crash, the OOM killer, power loss)
every job that was waiting or running is gone. We do not re-run them at the next start: the job that was
running may be what killed the process (it would kill it again, in a loop), and a request that waited through
a crash and a restart may no longer be wanted. Instead they are reported lost, visibly: a notice on the first
screen and in `GET /studio/v1/health` names each one, so the user can submit it again.

One small JSON file per unfinished job in `cache/jobs/` (written atomically, removed when the job finishes),
so a crash mid-write leaves either the old record or the new one. Records hold what a user recognises a job
by (type, the start of the prompt, the size) and never the request itself, which can carry images.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from modules import atomic

log = logging.getLogger(__name__)

_SUFFIX = ".json"
_PROMPT_CHARS = 60


@dataclass(frozen=True)
class LostJob:
    """A job that was queued or running when the process stopped."""

    id: str
    type: str
    state: str  # "queued" or "running"
    submitted_at: float
    summary: str

    def describe(self) -> str:
        when = time.strftime("%Y-%m-%d %H:%M", time.localtime(self.submitted_at))
        what = f" {self.summary}" if self.summary else ""
        return f"{self.type}{what} ({self.state}, submitted {when}, id {self.id})"


class JobJournal:
    """Keeps `folder` in step with the unfinished jobs; `update(job)` is called at every state change."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def update(self, job: Any) -> None:
        """Record a queued or running job, forget a finished one. Never raises: the journal must not fail a job."""
        path = self._path(job.id)
        try:
            if job.state.finished:
                path.unlink(missing_ok=True)
            else:
                atomic.write_json(path, asdict(LostJob(job.id, job.type, job.state.value, job.created_at,
                                                       _summary(job.request))))
        except OSError as e:
            log.warning("could not update the job journal for %s: %s", job.id, e.strerror or e)

    def take_lost(self) -> list[LostJob]:
        """The jobs recorded by a process that is gone, oldest first; their records are removed.

        Only call this when no other process uses the same data folder (see `modules.crash_recovery`): its
        queued jobs would be reported lost too.
        """
        lost = []
        for path in sorted(self.folder.glob(f"*{_SUFFIX}")) if self.folder.is_dir() else []:
            try:
                lost.append(LostJob(**json.loads(path.read_text(encoding="utf-8"))))
            except (OSError, ValueError, TypeError) as e:
                log.warning("unreadable job record %s (%s); removing it", path.name, e)
            path.unlink(missing_ok=True)
        return sorted(lost, key=lambda job: job.submitted_at)

    def _path(self, job_id: str) -> Path:
        # Job ids are uuid4 hex, but extensions can submit too: keep the name to one safe path component.
        safe = "".join(c for c in job_id if c.isalnum() or c in "-_")[:64] or "job"
        return self.folder / f"{safe}{_SUFFIX}"


def lost_jobs_notice(lost: list[LostJob]) -> str | None:
    """The first-screen notice for `lost`, or None when nothing was lost."""
    if not lost:
        return None
    shown = "; ".join(job.describe() for job in lost[:10])
    more = f"; and {len(lost) - 10} more" if len(lost) > 10 else ""
    return (f"{len(lost)} job(s) were lost when SD Studio last stopped unexpectedly; they were not re-run. "
            f"Submit them again if you still want them: {shown}{more}.")


def _summary(request: Any) -> str:
    """What a user knows a request by: the start of its prompt and its size, when it has them."""
    prompt = getattr(request, "prompt", None)
    parts = []
    if isinstance(prompt, str) and prompt.strip():
        text = " ".join(prompt.split())
        parts.append(repr(text if len(text) <= _PROMPT_CHARS else text[:_PROMPT_CHARS] + "…"))
    width, height = getattr(request, "width", None), getattr(request, "height", None)
    if isinstance(width, int) and isinstance(height, int):
        parts.append(f"{width}x{height}")
    return " ".join(parts)

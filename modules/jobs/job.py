"""A job: one typed request, its state, its progress, and its result or error."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from pydantic import BaseModel


class JobState(str, Enum):
    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def finished(self) -> bool:
        return self in (JobState.DONE, JobState.FAILED, JobState.CANCELLED)


class JobCancelled(Exception):
    """Raised inside a runner (by JobContext.check) when its job was cancelled."""


@dataclass
class Progress:
    step: int = 0
    total: int = 0
    text: str = ""
    preview: Any = None  # a PIL image, shown as the live preview
    eta_s: float | None = None

    @property
    def fraction(self) -> float:
        return min(1.0, self.step / self.total) if self.total else 0.0


@dataclass
class Job:
    type: str
    request: BaseModel
    id: str = field(default_factory=lambda: uuid.uuid4().hex)
    state: JobState = JobState.QUEUED
    created_at: float = field(default_factory=time.time)
    started_at: float | None = None
    finished_at: float | None = None
    progress: Progress = field(default_factory=Progress)
    result: Any = None
    error: str | None = None
    error_status: int | None = None  # the HTTP status an API answer should carry for this failure
    notes: list[str] = field(default_factory=list)
    # Entered by the worker around this job only (an API request's temporary settings), so no other job can
    # run while it is in force.
    scope: Callable[[], AbstractContextManager[Any]] | None = field(default=None, repr=False)
    _cancel: threading.Event = field(default_factory=threading.Event, repr=False)
    _interrupt: threading.Event = field(default_factory=threading.Event, repr=False)
    _skip: threading.Event = field(default_factory=threading.Event, repr=False)
    _finished: threading.Event = field(default_factory=threading.Event, repr=False)

    def wait(self, timeout: float | None = None) -> bool:
        return self._finished.wait(timeout)

    @property
    def skip_requested(self) -> bool:
        """A Skip is pending: the image being made will be dropped (A1111's `state.skipped`)."""
        return self._skip.is_set()

    @property
    def interrupt_requested(self) -> bool:
        return self._interrupt.is_set()

    def summary(self) -> dict[str, Any]:
        """State and progress for listings and polling (no result, no preview)."""
        return {
            "id": self.id,
            "type": self.type,
            "state": self.state.value,
            "created_at": self.created_at,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "progress": round(self.progress.fraction, 4),
            "step": self.progress.step,
            "total": self.progress.total,
            "eta_s": self.progress.eta_s,
            "text": self.progress.text,
            "error": self.error,
            "notes": list(self.notes),
        }


class JobContext:
    """What a runner sees of its job: report progress, check for cancel/interrupt/skip, add notes."""

    def __init__(self, job: Job) -> None:
        self.job = job
        self._started = time.monotonic()

    def progress(self, step: int, total: int, preview: Any = None, text: str | None = None) -> None:
        p = self.job.progress
        p.step, p.total = step, total
        if preview is not None:
            p.preview = preview
        if text is not None:
            p.text = text
        elapsed = time.monotonic() - self._started
        p.eta_s = round(elapsed / step * (total - step), 2) if step and total else None

    def check(self) -> None:
        """Call between steps: raises JobCancelled when the job was cancelled."""
        if self.job._cancel.is_set():
            raise JobCancelled(self.job.id)

    @property
    def interrupted(self) -> bool:
        """Interrupt (A1111): stop early and keep what is finished."""
        return self.job._interrupt.is_set() or self.job._cancel.is_set()

    def take_skip(self) -> bool:
        """Skip (A1111): drop the current image of a batch and go on; True once per request."""
        if self.job._skip.is_set():
            self.job._skip.clear()
            return True
        return False

    def note(self, text: str) -> None:
        self.job.notes.append(text)

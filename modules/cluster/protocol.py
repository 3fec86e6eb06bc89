"""What crosses the network between the studio server and a worker: plain picklable records, no Ray types."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class WorkerInfo:
    """What a worker says about itself when it starts and after every task."""

    host: str
    node_id: str
    pid: int
    device: str  # "cuda:0", "cpu", ...
    gpu: str | None  # the GPU's name; None for a CPU-only worker
    data_dir: str
    loaded: tuple[str, ...] = ()  # names the loaded checkpoint answers to (name, file name, title)


@dataclass(frozen=True)
class Flags:
    """The server's view of the job's buttons, sent with every poll."""

    cancel: bool = False
    interrupt: bool = False
    skip: bool = False


@dataclass(frozen=True)
class TaskProgress:
    step: int
    total: int
    text: str
    eta_s: float | None
    preview: Any = None  # a PIL image, only when it changed since the last poll
    notes: tuple[str, ...] = ()


@dataclass
class StagedFile:
    """A file the task saved, relative to the worker's outputs folder, with its bytes."""

    relative: str  # posix path, e.g. "txt2img-images/2026-11-22/00000-1234.png"
    data: bytes


@dataclass
class TaskOutcome:
    """How a task ended on the worker. `status`: done, cancelled, missing (the worker lacks a model file or the
    job type; another worker may have it) or failed."""

    status: str
    result: Any = None
    error: str | None = None
    error_status: int | None = None
    error_field: str | None = None  # the request field the error is about ("checkpoint" for a missing model)
    staging: str = ""  # the worker's outputs folder: paths in `result` under it name `files`
    files: list[StagedFile] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    info: WorkerInfo | None = None

"""Which free worker takes which waiting task: pure decisions, no Ray, so they are tested on their own.

The rules, in order:
1. Tasks are taken in queue order (a job's parts keep their job's place), so the queue's fairness holds.
2. A task never goes back to a worker it already tried (one that died on it, or lacks its model).
3. A worker known to lack the task's checkpoint is passed over while it still lacks it.
4. Among the rest, a worker that already has the checkpoint loaded wins (no load, often the slowest step);
   then the one that has run the fewest tasks, then the one idle longest, so work spreads evenly.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field


@dataclass
class WorkerView:
    name: str
    loaded: frozenset[str] = frozenset()  # names the loaded checkpoint answers to
    lacks: frozenset[str] = frozenset()  # checkpoints it said it does not have
    tasks_done: int = 0
    idle_since: float = 0.0


@dataclass
class TaskView:
    key: tuple[int, int]  # (job sequence, part index): queue order
    checkpoint: str  # the checkpoint the task asks for ("" when it needs none, or the worker's default)
    tried: frozenset[str] = field(default_factory=frozenset)


def may_take(worker: WorkerView, task: TaskView) -> bool:
    """Rules 2 and 3: not tried on this task, and not known to lack its checkpoint."""
    wanted = _plain(task.checkpoint)
    return worker.name not in task.tried and not (wanted and wanted in worker.lacks)


def choose(task: TaskView, free: Sequence[WorkerView]) -> WorkerView | None:
    """The free worker for `task`, or None when none of them may take it."""
    wanted = _plain(task.checkpoint)
    candidates = [w for w in free if may_take(w, task)]
    if not candidates:
        return None
    return min(candidates, key=lambda w: (not (wanted and wanted in w.loaded), w.tasks_done, w.idle_since, w.name))


def assign(tasks: Sequence[TaskView], free: Sequence[WorkerView]) -> list[tuple[TaskView, WorkerView]]:
    """Pairs for as many waiting tasks as free workers allow, in queue order."""
    pairs: list[tuple[TaskView, WorkerView]] = []
    available = list(free)
    for task in sorted(tasks, key=lambda t: t.key):
        worker = choose(task, available)
        if worker is not None:
            pairs.append((task, worker))
            available.remove(worker)
        if not available:
            break
    return pairs


def checkpoint_names(*names: str) -> frozenset[str]:
    """The forms a checkpoint may be named by, compared without its " [hash]" title suffix."""
    return frozenset(_plain(n) for n in names if n)


def _plain(name: str) -> str:
    """"sd15.safetensors [abc123]" and "sd15.safetensors" name the same file."""
    name = name.strip()
    if name.endswith("]") and " [" in name:
        name = name[: name.rindex(" [")]
    return name.casefold()

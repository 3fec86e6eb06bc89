"""The Ray actors that do the work: one per GPU of every node, kept in step with the cluster as it changes.

A reconcile pass every few seconds starts workers for GPUs that have none (a node that joined, a worker that
died), pings idle ones, and marks the unreachable dead. Tasks wait here, in queue order, for a free worker;
`scheduling.assign` decides who takes what.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import ray
from ray.exceptions import GetTimeoutError
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from modules.cluster.protocol import WorkerInfo
from modules.cluster.scheduling import TaskView, WorkerView, assign, checkpoint_names, may_take
from modules.cluster.worker import StudioWorker

log = logging.getLogger(__name__)

RECONCILE_S = 3.0
START_TIMEOUT_S = 900.0  # a worker's first start may install nothing, but imports torch and scans models
LACKS_FORGET_S = 60.0  # a worker that lacked a model is asked again after this (the file may have been copied)


class WorkerDied(Exception):
    """The worker's process or machine went away during a call."""


@dataclass(frozen=True)
class Slot:
    """Where a worker runs: a node, and whether it has a GPU of its own."""

    node_id: str
    gpu: bool


@dataclass
class Worker:
    name: str
    slot: Slot
    handle: Any  # ray.actor.ActorHandle
    state: str = "starting"  # starting, idle, busy, dead
    info: WorkerInfo | None = None
    job_id: str | None = None
    tasks_done: int = 0
    idle_since: float = field(default_factory=time.time)
    lacks: dict[str, float] = field(default_factory=dict)  # checkpoint -> when it said it lacks it
    error: str | None = None

    def view(self) -> WorkerView:
        now = time.time()
        lacks = frozenset(k for k, t in self.lacks.items() if now - t < LACKS_FORGET_S)
        loaded = checkpoint_names(*(self.info.loaded if self.info else ()))
        return WorkerView(self.name, loaded, lacks, self.tasks_done, self.idle_since)


Spawn = Callable[[Slot, str], Any]


def spawn_actor(slot: Slot, name: str) -> Any:
    """A StudioWorker actor pinned to its node: one GPU of its own, or one CPU for a GPU-less node."""
    actor = ray.remote(StudioWorker).options(
        name=None, num_gpus=1 if slot.gpu else 0, num_cpus=0 if slot.gpu else 1, max_concurrency=4,
        scheduling_strategy=NodeAffinitySchedulingStrategy(slot.node_id, soft=False))
    return actor.remote(None, not slot.gpu)


class WorkerPool:
    def __init__(self, cpu_workers: int, spawn: Spawn = spawn_actor) -> None:
        self._cpu_workers = cpu_workers
        self._spawn = spawn
        self._workers: list[Worker] = []
        self._waiting: dict[tuple[int, int], TaskView] = {}
        self._assigned: dict[tuple[int, int], Worker] = {}
        self._names = itertools.count(1)
        self._cond = threading.Condition()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    # -- life -----------------------------------------------------------------------------------------------

    def start(self) -> None:
        self.reconcile()
        self._thread = threading.Thread(target=self._reconcile_loop, name="cluster-reconcile", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        with self._cond:
            workers, self._workers = list(self._workers), []
            self._cond.notify_all()
        for worker in workers:
            try:
                ray.kill(worker.handle)
            except Exception:  # noqa: BLE001 - already gone
                pass

    def _reconcile_loop(self) -> None:
        while not self._stopping.wait(RECONCILE_S):
            try:
                self.reconcile()
            except Exception:  # noqa: BLE001 - a hiccup of the cluster must not end the loop
                log.exception("cluster: reconcile failed")

    def reconcile(self) -> None:
        """Start workers for slots without one; check that idle workers still answer."""
        wanted = self._wanted_slots()
        with self._cond:
            have: dict[Slot, int] = {}
            for w in self._workers:
                if w.state != "dead":
                    have[w.slot] = have.get(w.slot, 0) + 1
            missing = [s for s, n in wanted.items() for _ in range(n - have.get(s, 0))]
            idle = [w for w in self._workers if w.state == "idle"]
        for slot in missing:
            self._add(slot)
        for worker in idle:
            self._ping(worker)

    def _wanted_slots(self) -> dict[Slot, int]:
        wanted: dict[Slot, int] = {}
        for node in ray.nodes():
            if not node.get("Alive"):
                continue
            gpus = int(node.get("Resources", {}).get("GPU", 0))
            slot = Slot(node["NodeID"], gpu=gpus > 0)
            count = gpus or self._cpu_workers
            if count:
                wanted[slot] = count
        return wanted

    def _add(self, slot: Slot) -> None:
        name = f"worker-{next(self._names)}"
        worker = Worker(name, slot, self._spawn(slot, name))
        with self._cond:
            self._workers.append(worker)
        log.info("cluster: starting %s on node %s (%s)", name, slot.node_id[:8], "GPU" if slot.gpu else "CPU")
        threading.Thread(target=self._await_start, args=(worker,), name=f"{name}-start", daemon=True).start()

    def _await_start(self, worker: Worker) -> None:
        try:
            info = ray.get(worker.handle.describe.remote(), timeout=START_TIMEOUT_S)
        except Exception as e:  # noqa: BLE001 - any failure to start is shown on the Cluster page
            self._set_dead(worker, f"did not start: {type(e).__name__}: {e}")
            return
        with self._cond:
            if worker.state == "starting":
                worker.info, worker.state, worker.idle_since = info, "idle", time.time()
            self._cond.notify_all()
        log.info("cluster: %s is ready on %s (%s)", worker.name, info.host, info.gpu or info.device)

    def _ping(self, worker: Worker) -> None:
        try:
            info = ray.get(worker.handle.describe.remote(), timeout=30)
        except GetTimeoutError:
            return  # busy with something slow (a model scan); it will answer next time
        except Exception as e:  # noqa: BLE001 - gone
            self._set_dead(worker, f"stopped answering: {type(e).__name__}")
            return
        with self._cond:
            worker.info = info

    def _set_dead(self, worker: Worker, reason: str) -> None:
        with self._cond:
            if worker.state != "dead":
                log.warning("cluster: %s is gone (%s)", worker.name, reason)
            worker.state, worker.error, worker.job_id = "dead", reason, None
            self._cond.notify_all()

    # -- tasks ----------------------------------------------------------------------------------------------

    def ready(self) -> bool:
        """A new job may start: a worker is idle and no task of an earlier job is waiting for one."""
        with self._cond:
            return not self._waiting and any(w.state == "idle" for w in self._workers)

    def acquire(self, task: TaskView, job_id: str, give_up: Callable[[], bool], wait_s: float) -> Worker | None:
        """Block until a worker is assigned to `task` (None when `give_up()` turns true first). Raises
        LookupError when every live worker has been ruled out for it, or none came within `wait_s`."""
        deadline = time.monotonic() + wait_s
        with self._cond:
            self._waiting[task.key] = task
            try:
                while True:
                    self._assign_locked()
                    worker = self._assigned.pop(task.key, None)
                    if worker is not None:
                        worker.state, worker.job_id = "busy", job_id
                        return worker
                    if give_up():
                        return None
                    live = [w for w in self._workers if w.state != "dead"]
                    if live and all(w.name in task.tried for w in live):
                        raise LookupError("every worker was tried")
                    if live and not any(may_take(w.view(), task) for w in live):
                        raise LookupError("no worker has the checkpoint")
                    if not live and time.monotonic() > deadline:
                        raise LookupError(f"no cluster worker came up within {wait_s:.0f} s")
                    self._cond.wait(0.25)
            finally:
                self._waiting.pop(task.key, None)

    def release(self, worker: Worker, done: bool) -> None:
        with self._cond:
            if worker.state == "busy":
                worker.state, worker.job_id, worker.idle_since = "idle", None, time.time()
            worker.tasks_done += int(done)
            self._cond.notify_all()

    def died(self, worker: Worker, reason: str) -> None:
        self._set_dead(worker, reason)

    def lacks(self, worker: Worker, checkpoint: str) -> None:
        with self._cond:
            worker.lacks[next(iter(checkpoint_names(checkpoint)), "")] = time.time()

    def update_info(self, worker: Worker, info: WorkerInfo | None) -> None:
        if info is not None:
            with self._cond:
                worker.info = info

    def _assign_locked(self) -> None:
        free = {w.name: w for w in self._workers if w.state == "idle" and w not in self._assigned.values()}
        waiting = [t for k, t in self._waiting.items() if k not in self._assigned]
        pairs = assign(waiting, [w.view() for w in free.values()])
        for task, view in pairs:
            self._assigned[task.key] = free[view.name]
            free[view.name].state = "busy"  # taken: not free for the next task while its owner wakes up
        if pairs:
            self._cond.notify_all()

    # -- what the Cluster page shows ------------------------------------------------------------------------

    def workers(self) -> list[Worker]:
        with self._cond:
            return list(self._workers)

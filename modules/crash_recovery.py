"""Start-up after a crash: clean outputs/ and report the jobs that were lost, when it is safe to.

Both are only safe when no other SD Studio process is using the same data folder: a `launch.py sadtalker`
command running beside the server has hidden temporaries in outputs/ and jobs in the journal that are very
much alive. So every process holds a shared lock on `cache/running.lock` for its whole life (the kernel drops
it when the process dies, kill -9 included), and recovery runs only in a process that can first take it
exclusively, i.e. when it is the only one. Where there is no `fcntl` (Windows) the process assumes it is alone.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from modules.engine.outputs.sweep import sweep
from modules.jobs.journal import JobJournal, LostJob, lost_jobs_notice

log = logging.getLogger(__name__)

LOCK_NAME = "running.lock"
JOURNAL_FOLDER = "jobs"


class DataLease:
    """A lock on the data folder for as long as this object lives (or until `release`).

    It starts exclusive when no other process holds it (`alone`), so recovery can run undisturbed; `share()`
    then lets other processes start beside this one. When another process holds it, it starts shared.
    """

    def __init__(self, lock_path: Path) -> None:
        lock_path.parent.mkdir(parents=True, exist_ok=True)
        self._file: IO[bytes] | None = lock_path.open("a+b")
        self.alone = self._flock(exclusive=True, wait=False)
        if not self.alone:
            self._flock(exclusive=False, wait=True)  # waits at most for another process's recovery

    def share(self) -> None:
        """From now on other processes may use the data folder too."""
        if self.alone:
            self._flock(exclusive=False, wait=True)

    def _flock(self, exclusive: bool, wait: bool) -> bool:
        try:
            import fcntl
        except ImportError:
            return True
        assert self._file is not None
        flags = (fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH) | (0 if wait else fcntl.LOCK_NB)
        try:
            fcntl.flock(self._file.fileno(), flags)
        except OSError:
            return False
        return True

    def release(self) -> None:
        if self._file is not None:
            self._file.close()  # closing drops the lock
            self._file = None


@dataclass
class Recovery:
    """What start-up found and did; keep it referenced for the life of the process (it holds the lease)."""

    lease: DataLease
    journal: JobJournal
    swept: list[Path] = field(default_factory=list)
    lost: list[LostJob] = field(default_factory=list)

    @property
    def notices(self) -> list[str]:
        notice = lost_jobs_notice(self.lost)
        return [notice] if notice else []


def recover(cache: Path, outputs: Path) -> Recovery:
    """Take the lease; when alone, sweep `outputs` and collect the jobs an earlier process lost, then share it."""
    lease = DataLease(cache / LOCK_NAME)
    recovery = Recovery(lease, JobJournal(cache / JOURNAL_FOLDER))
    if not lease.alone:
        log.info("another SD Studio process uses this data folder; crash recovery is left to the next process "
                 "that starts alone")
        return recovery
    try:
        recovery.swept = sweep(outputs)
        recovery.lost = recovery.journal.take_lost()
    finally:
        lease.share()
    for notice in recovery.notices:
        log.warning("%s", notice)
    log.debug("crash recovery in pid %d: %d file(s) swept, %d lost job(s)", os.getpid(), len(recovery.swept),
              len(recovery.lost))
    return recovery

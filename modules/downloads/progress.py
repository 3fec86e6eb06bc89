"""Download progress: one report goes to the job (the UI's progress bar), a callback, and the console.

A1111 users watch downloads in the terminal, so a tqdm bar is drawn there too.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType

from tqdm import tqdm

from modules.jobs import JobContext

# Reporting every chunk would redraw the UI hundreds of times a second; a few times a second is plenty.
MIN_INTERVAL_S = 0.2


@dataclass(frozen=True)
class DownloadProgress:
    """Where one download stands.

    Attributes:
        entry_id: The catalogue id.
        filename: The file being downloaded.
        done: Bytes of the file on disk so far, including what an earlier, resumed attempt fetched.
        total: Size of the whole file in bytes, or None when neither the catalogue nor the server says.
        speed_bps: Average speed of this attempt in bytes per second.
    """

    entry_id: str
    filename: str
    done: int
    total: int | None
    speed_bps: float

    @property
    def eta_s(self) -> float | None:
        """Seconds left at the current speed, or None when it cannot be told."""
        if self.total is None or self.speed_bps <= 0:
            return None
        return max(0.0, (self.total - self.done) / self.speed_bps)

    def text(self) -> str:
        """A line for the progress bar, e.g. "GFPGANv1.4.pth: 120.5 MB of 332.5 MB, 5.2 MB/s"."""
        of = f" of {format_bytes(self.total)}" if self.total is not None else ""
        return f"Downloading {self.filename}: {format_bytes(self.done)}{of}, {format_bytes(self.speed_bps)}/s"


ProgressCallback = Callable[[DownloadProgress], None]


def format_bytes(value: float) -> str:
    """Bytes in decimal units as people read them on download pages: "4.3 GB", "512.0 kB"."""
    for unit in ("B", "kB", "MB", "GB"):
        if abs(value) < 1000:
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{value:.1f} TB"


class ProgressReporter:
    """Sends progress to a job context, a callback and a console bar; use it as a context manager."""

    def __init__(self, entry_id: str, filename: str, ctx: JobContext | None, callback: ProgressCallback | None,
                 console: bool) -> None:
        self._entry_id = entry_id
        self._filename = filename
        self._ctx = ctx
        self._callback = callback
        self._console = console
        self._bar: tqdm | None = None
        self._started = time.monotonic()
        self._start_done = 0
        self._done = 0
        self._total: int | None = None
        self._last_report = 0.0

    def __enter__(self) -> ProgressReporter:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def start(self, done: int, total: int | None) -> None:
        """A new attempt begins with `done` bytes already on disk (a resume) out of `total`."""
        self._started = time.monotonic()
        self._start_done = self._done = done
        self._total = total
        if self._console:
            self._close_bar()
            self._bar = tqdm(total=total, initial=done, unit="B", unit_scale=True, unit_divisor=1024,
                             desc=self._filename, file=sys.stderr, dynamic_ncols=True, leave=False)
        self._report(force=True)

    def update(self, done: int) -> None:
        """`done` bytes of the file are now on disk."""
        if self._bar is not None:
            self._bar.update(done - self._done)
        self._done = done
        self._report(force=False)

    def finish(self) -> None:
        """Report the final numbers even if the last update was throttled away."""
        self._report(force=True)

    def close(self) -> None:
        self._close_bar()

    def snapshot(self) -> DownloadProgress:
        elapsed = time.monotonic() - self._started
        speed = (self._done - self._start_done) / elapsed if elapsed > 0 else 0.0
        return DownloadProgress(self._entry_id, self._filename, self._done, self._total, speed)

    def _report(self, force: bool) -> None:
        now = time.monotonic()
        if not force and now - self._last_report < MIN_INTERVAL_S:
            return
        self._last_report = now
        progress = self.snapshot()
        if self._ctx is not None:
            self._ctx.progress(progress.done, progress.total or 0, text=progress.text())
            # JobContext guesses the ETA from the time since the job began, which is wrong after a resume
            # (the first bytes came "for free"); the download speed gives the real one.
            self._ctx.job.progress.eta_s = round(progress.eta_s, 2) if progress.eta_s is not None else None
        if self._callback is not None:
            self._callback(progress)

    def _close_bar(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

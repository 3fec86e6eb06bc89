"""Named hooks that extensions register on, and how they are fired.

Every callback runs isolated: an exception or a hang (past the timeout) is recorded against its extension,
whose remaining callbacks are then skipped for this run, and the caller carries on as if that callback were
absent. A broken extension can slow one event down by at most the timeout; it never takes the app down.
"""

from __future__ import annotations

import copy
import logging
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

# The hooks of extension API v1 and what each receives. Payloads are typed objects, never the engine's
# internals, so that the engine can change without breaking extensions.
HOOKS: dict[str, str] = {
    "app_started": "AppStarted: the server is up; payload.url is where it listens",
    "before_generate": "GenerateEvent: a job is about to run; a hook may replace payload.request",
    "after_generate": "GenerateEvent: a job finished; payload.result holds what it made",
    "before_image_saved": "ImageSaveEvent: an image is about to be written; a hook may change image or infotext",
    "image_saved": "ImageSaveEvent: an image was written to payload.path",
}


@dataclass
class AppStarted:
    url: str


@dataclass
class GenerateEvent:
    job_type: str
    request: Any
    result: Any = None


@dataclass
class ImageSaveEvent:
    image: Any  # PIL.Image.Image
    path: Path
    infotext: str | None
    kind: str
    params: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class HookFailure:
    extension: str
    hook: str
    message: str
    traceback: str


class HookRegistry:
    """Callbacks by hook name, fired in registration order."""

    def __init__(self, timeout_s: Callable[[], float] = lambda: 30.0) -> None:
        self._callbacks: dict[str, list[tuple[str, Callable[[Any], Any]]]] = {name: [] for name in HOOKS}
        self._failed: dict[str, HookFailure] = {}
        self._timeout_s = timeout_s
        self._lock = threading.Lock()

    def register(self, hook: str, extension: str, callback: Callable[[Any], Any]) -> None:
        if hook not in self._callbacks:
            raise ValueError(f"unknown hook '{hook}'; hooks are: {', '.join(HOOKS)}")
        if not callable(callback):
            raise TypeError(f"hook '{hook}' needs a callable, not {type(callback).__name__}")
        with self._lock:
            self._callbacks[hook].append((extension, callback))

    def count(self, hook: str) -> int:
        return len(self._callbacks[hook])

    def failures(self) -> dict[str, HookFailure]:
        """The first failure of each extension whose hook raised or hung."""
        with self._lock:
            return dict(self._failed)

    def disable(self, extension: str, reason: str) -> None:
        """Skip `extension`'s callbacks from now on (it failed somewhere else)."""
        with self._lock:
            self._failed.setdefault(extension, HookFailure(extension, "", reason, ""))

    def fire(self, hook: str, payload: Any) -> Any:
        """Run every callback of `hook` with `payload` and return the payload (callbacks may mutate it)."""
        with self._lock:
            callbacks = list(self._callbacks[hook])
        for extension, callback in callbacks:
            if extension in self._failed:
                continue
            self._run_one(hook, extension, callback, payload)
        return payload

    def _run_one(self, hook: str, extension: str, callback: Callable[[Any], Any], payload: Any) -> None:
        outcome: dict[str, BaseException] = {}
        # The callback gets its own shallow copy, taken back only when it returns in time. A hook that raises
        # half-way, or times out and wakes up later (its thread cannot be stopped), would otherwise still change
        # the payload the caller is using: "as if that callback were absent" must hold then too.
        work = copy.copy(payload)

        def target() -> None:
            try:
                callback(work)
            except BaseException as e:  # noqa: BLE001 - an extension may raise anything, SystemExit included
                outcome["error"] = e

        timeout = self._timeout_s()
        started = time.monotonic()
        # A daemon thread: a callback that never returns must not keep the process alive at exit.
        worker = threading.Thread(target=target, name=f"hook-{hook}-{extension}", daemon=True)
        worker.start()
        worker.join(timeout)
        if worker.is_alive():
            self._fail(extension, hook, f"hook '{hook}' did not return within {timeout:g} s", "")
        elif "error" in outcome:
            err = outcome["error"]
            tb = "".join(traceback.format_exception(type(err), err, err.__traceback__))
            self._fail(extension, hook, f"hook '{hook}' raised {type(err).__name__}: {err}", tb)
        else:
            _take_back(payload, work)
            log.debug("hook %s of %s took %.1f ms", hook, extension, (time.monotonic() - started) * 1000)

    def _fail(self, extension: str, hook: str, message: str, tb: str) -> None:
        log.error("extension %s failed: %s; its hooks are skipped from now on\n%s", extension, message, tb)
        with self._lock:
            self._failed.setdefault(extension, HookFailure(extension, hook, message, tb))


def _take_back(payload: Any, work: Any) -> None:
    """Copy what a callback set on its copy of the payload back onto the payload."""
    if work is not payload and hasattr(work, "__dict__"):
        payload.__dict__.update(work.__dict__)

"""`override_settings` of A1111 API requests: per-request fields where we have them, otherwise global settings
applied for the one job and restored afterwards.

A1111 applies overrides inside its single `queue_lock`, so no other generation ever sees them. Here the UI and
the API share one job queue, so settings that only exist globally are applied by `OverrideGate`:

* three popular keys become fields of the request itself and never touch global state:
  `sd_model_checkpoint` -> `checkpoint`, `sd_vae` -> `vae`, `CLIP_stop_at_last_layers` -> `clip_skip`;
* any other registered setting is validated up front (unknown keys are a 400 listing the valid ones), then
  the job is queued with a scope that the worker enters around that job alone: it applies them in memory
  (config.json is not written, as in A1111) and restores the previous values when
  `override_settings_restore_afterwards` is true. Jobs run one at a time, so no other job, from the API or the
  UI, ever runs under another request's overrides, and POST /options waits for the scope's lock so it never
  saves a temporary value.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from modules.errors import UserError
from modules.jobs import Job, JobQueue
from modules.settings import Settings
from modules.settings.options import InvalidValue

# A1111 option name -> our request field: these are per-request here, so they need no global change.
REQUEST_FIELDS: Mapping[str, str] = MappingProxyType({
    "sd_model_checkpoint": "checkpoint",
    "sd_vae": "vae",
    "CLIP_stop_at_last_layers": "clip_skip",
})


@dataclass
class OverridePlan:
    """What `override_settings` turns into: request fields, and global settings to apply around the job."""

    request_fields: dict[str, Any] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)


def overridable_keys(settings: Settings) -> list[str]:
    """Setting keys a request may override: every visible option that applies without a restart, plus the
    mapped A1111 keys."""
    keys = {o.key for s in settings.sections() for o in s.options if not o.hidden and not o.restart}
    return sorted(keys | set(REQUEST_FIELDS))


def plan_overrides(overrides: Mapping[str, Any], settings: Settings, restore: bool,
                   lenient: Iterable[str] = ()) -> OverridePlan:
    """Split and validate `overrides`.

    Args:
        overrides: The request's `override_settings`.
        settings: The app's settings (definitions and current values).
        restore: `override_settings_restore_afterwards`; when false, mapped keys that are settings
            (checkpoint, VAE) are also kept globally afterwards, as in A1111.
        lenient: Keys that came from the request's `infotext` rather than from the client: unknown ones are
            dropped instead of refused (A1111 infotexts carry settings such as RNG or ENSD that we lack).

    Raises:
        UserError: 400 for unknown keys (listing the valid ones) or a value a setting does not accept.
    """
    plan = OverridePlan()
    valid = overridable_keys(settings)
    unknown: list[str] = []
    skip_unknown = set(lenient)
    for key, value in overrides.items():
        if key in REQUEST_FIELDS:
            plan.request_fields[REQUEST_FIELDS[key]] = value
            if not restore and key != "CLIP_stop_at_last_layers":
                plan.settings[key] = _checked(settings, key, value)
        elif key in valid:
            checked = _checked(settings, key, value)
            if checked != settings.get(key):
                plan.settings[key] = checked
        elif key not in skip_unknown:
            unknown.append(key)
    if unknown:
        raise UserError(f"unknown override_settings key(s): {', '.join(sorted(unknown))}; valid keys: "
                        f"{', '.join(valid)}", field="override_settings")
    return plan


def _checked(settings: Settings, key: str, value: Any) -> Any:
    try:
        return settings.option(key).validate(value)
    except InvalidValue as e:
        raise UserError(f"override_settings: {e}", field="override_settings") from None


class OverrideGate:
    """Runs API jobs so that global overrides apply to their own job only (see the module docstring)."""

    def __init__(self, settings: Settings, jobs: JobQueue) -> None:
        self._settings = settings
        self._jobs = jobs
        self._lock = threading.Lock()

    def run(self, type_name: str, request: Any, changes: Mapping[str, Any], restore: bool) -> Job:
        """Submit a job with `changes` in force while it runs and wait for it to finish. Blocks: call it from
        a worker thread, never from the event loop."""
        scope = (lambda: self._applied(dict(changes), restore)) if changes else None
        job = self._jobs.submit(type_name, request, scope=scope)
        job.wait()
        return job

    @contextmanager
    def _applied(self, changes: dict[str, Any], restore: bool) -> Iterator[None]:
        with self._lock:
            previous = {key: self._settings.get(key) for key in changes}
            self._settings.update(changes, save=False)
            try:
                yield
            finally:
                if restore:
                    self._settings.update(previous, save=False)

    def exclusive(self) -> threading.Lock:
        """The lock itself, for changes that must not land in the middle of an override (POST /options)."""
        return self._lock

"""`override_settings` of A1111 API requests: per-request fields where we have them, otherwise global settings
applied for the one job and restored afterwards.

A1111 applies overrides inside its single `queue_lock`, so no other generation ever sees them. Here the UI and
the API share one job queue, so settings that only exist globally are applied by `OverrideGate`:

* three popular keys become fields of the request itself and never touch global state:
  `sd_model_checkpoint` -> `checkpoint`, `sd_vae` -> `vae`, `CLIP_stop_at_last_layers` -> `clip_skip`;
* any other registered setting is validated up front (unknown keys are a 400 listing the valid ones), then,
  under the gate's lock, the gate waits for the queue to drain (so no job queued earlier runs with them),
  applies them in memory (config.json is not written, as in A1111), runs the job, and restores the previous
  values when `override_settings_restore_afterwards` is true. API requests without overrides pass the same lock
  to submit, so they never start under another request's overrides, and two requests can never restore each
  other's values. A job submitted from the UI while an override is in force is not gated (known limitation).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Mapping
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
_IDLE_POLL_S = 0.05


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

    def run(self, changes: Mapping[str, Any], restore: bool, submit: Callable[[], Job]) -> Job:
        """Submit a job with `changes` in force while it runs and wait for it to finish. Blocks: call it from
        a worker thread, never from the event loop."""
        if not changes:
            with self._lock:
                job = submit()
            job.wait()
            return job
        with self._lock:
            while self._jobs.pending_count():
                time.sleep(_IDLE_POLL_S)
            previous = {key: self._settings.get(key) for key in changes}
            self._settings.update(changes, save=False)
            try:
                job = submit()
                job.wait()
            finally:
                if restore:
                    self._settings.update(previous, save=False)
        return job

    def exclusive(self) -> threading.Lock:
        """The lock itself, for changes that must not land in the middle of an override (POST /options)."""
        return self._lock

"""Turning what a user or an A1111 client sent into a checked sampler + schedule type.

Follows A1111 1.10's `get_sampler_and_scheduler`: names match in any case, aliases count, and an old combined
name such as "DPM++ 2M Karras" is split into sampler and schedule type, the suffix winning over the separate
field. Unlike A1111, which quietly falls back to its default sampler or to Automatic, anything unknown or
unsupported is refused with a `UserError` that lists what is valid.
"""

from __future__ import annotations

from dataclasses import dataclass

from modules.engine.samplers.schedules import (
    AUTOMATIC,
    SCHEDULE_LABELS,
    all_schedule_spellings,
    find_schedule,
    find_unsupported_schedule,
)
from modules.engine.samplers.table import SAMPLER_NAMES, SamplerSpec, find_sampler, find_unsupported_sampler
from modules.errors import UserError


@dataclass(frozen=True)
class SamplerChoice:
    """A sampler and schedule type that exist and work together; made by `resolve_sampler`.

    Attributes:
        sampler: Canonical sampler name ("DPM++ 2M").
        scheduler: Canonical schedule type label as requested ("Automatic", "Karras", ...).
        effective_scheduler: The schedule type actually used: the sampler's A1111 default when `scheduler` is
            "Automatic", else `scheduler`. It stays "Automatic" for samplers with no default (Euler, DDIM...),
            meaning the spacing A1111 uses for that sampler.
    """

    sampler: str
    scheduler: str
    effective_scheduler: str


def _valid_samplers_text() -> str:
    return (
        f"Valid samplers: {', '.join(SAMPLER_NAMES)} (A1111 aliases such as k_euler_a and old names such as "
        "'DPM++ 2M Karras' work too)."
    )


def unknown_sampler_error(name: str) -> UserError:
    """The UserError for a sampler name SD Studio does not know, listing the valid names."""
    known = find_unsupported_sampler(name)
    if known is not None:
        message = f"The sampler '{known}' is not available in SD Studio: diffusers has no equivalent."
    else:
        message = f"Unknown sampler '{name}'."
    return UserError(f"{message} {_valid_samplers_text()}", field="sampler_name")


def _unknown_schedule(name: str) -> UserError:
    known = find_unsupported_schedule(name)
    if known is not None:
        message = f"The schedule type '{known}' is not available in SD Studio: diffusers cannot produce it."
    else:
        message = f"Unknown schedule type '{name}'."
    return UserError(f"{message} Valid schedule types: {', '.join(SCHEDULE_LABELS)}.", field="scheduler")


def _schedule_label(scheduler: str | None) -> str:
    if scheduler is None or not scheduler.strip():
        return AUTOMATIC
    schedule = find_schedule(scheduler)
    if schedule is None:
        raise _unknown_schedule(scheduler)
    return schedule.label


def _split_legacy_name(name: str) -> tuple[SamplerSpec, str] | None:
    """("DPM++ 2M", "Karras") for "DPM++ 2M Karras"; None when no suffix leaves a known sampler.

    The longest suffix is tried first so "Euler SGM Uniform" is never read as "Euler SGM" + "Uniform".
    """
    lowered = name.lower()
    for spelling, label in all_schedule_spellings():
        suffix = " " + spelling.lower()
        if not lowered.endswith(suffix):
            continue
        prefix = name[: -len(suffix)].strip()
        spec = find_sampler(prefix)
        if spec is not None:
            if find_schedule(spelling) is None:
                raise _unknown_schedule(spelling)
            return spec, label
        if find_unsupported_sampler(prefix) is not None:
            raise unknown_sampler_error(prefix)
    return None


def check_supported(spec: SamplerSpec, schedule_label: str) -> None:
    """Refuse a schedule type the sampler cannot use, naming the ones it can."""
    if schedule_label not in spec.schedules:
        raise UserError(
            f"The sampler '{spec.name}' cannot use the '{schedule_label}' schedule type. "
            f"It supports: {', '.join(spec.schedules)}.",
            field="scheduler",
        )


def resolve_sampler(name: str, scheduler: str | None = None) -> SamplerChoice:
    """Resolve an A1111-style sampler name and schedule type into a `SamplerChoice`.

    Args:
        name: A sampler name or alias in any case ("DPM++ 2M", "k_dpmpp_2m", "dpm++ 2m"), or an old combined
            name ("DPM++ 2M Karras", "Euler a Exponential").
        scheduler: A schedule type label, A1111 id or alias ("Karras", "karras"); None, "" and "Automatic"
            mean the sampler's default. A schedule suffix in `name` takes precedence, as in A1111.

    Raises:
        UserError: Unknown or unsupported sampler (field "sampler_name"), or unknown schedule type or one the
            sampler cannot use (field "scheduler"); the message lists the valid values.
    """
    raw = (name or "").strip()
    if not raw:
        raise UserError(f"Choose a sampler. {_valid_samplers_text()}", field="sampler_name")
    label = _schedule_label(scheduler)
    spec = find_sampler(raw)
    if spec is None:
        split = _split_legacy_name(raw)
        if split is None:
            raise unknown_sampler_error(raw)
        spec, label = split
    effective = spec.default_schedule if label == AUTOMATIC else label
    check_supported(spec, effective)
    return SamplerChoice(sampler=spec.name, scheduler=label, effective_scheduler=effective)

"""Sampler and schedule type lists in A1111 1.10's API shapes, plus what the UI needs to grey out choices.

`GET /sdapi/v1/samplers` items are `SamplerItem{name, aliases, options: dict[str, str]}` and
`GET /sdapi/v1/schedulers` items are `SchedulerItem{name, label, aliases, default_rho, need_inner_model}`
(A1111 `modules/api/models.py`). A1111 coerced option values to strings through pydantic, so they are strings
here too ("True", not true).
"""

from __future__ import annotations

from typing import Any

from modules.engine.samplers.resolve import unknown_sampler_error
from modules.engine.samplers.schedules import AUTOMATIC, SCHEDULE_TYPES, schedule_by_label
from modules.engine.samplers.table import SAMPLERS, find_sampler


def list_samplers() -> list[dict[str, Any]]:
    """Every sampler as A1111's `/sdapi/v1/samplers` returns it, in A1111's order.

    `options["scheduler"]` is the A1111 id of the default schedule type, as in A1111. Other A1111 option keys
    appear only where they are true of SD Studio's implementation (`second_order` for samplers that call the
    model twice per step); A1111's `brownian_noise`, `uses_ensd` and `discard_next_to_last_sigma` are left out
    because SD Studio does none of those.
    """
    items = []
    for spec in SAMPLERS:
        options: dict[str, str] = {}
        if spec.default_schedule != AUTOMATIC:
            options["scheduler"] = schedule_by_label(spec.default_schedule).name
        options.update(spec.options)
        items.append({"name": spec.name, "aliases": list(spec.aliases), "options": options})
    return items


def list_schedulers() -> list[dict[str, Any]]:
    """Every schedule type SD Studio supports, as A1111's `/sdapi/v1/schedulers` returns it, in A1111's order."""
    return [
        {
            "name": schedule.name,
            "label": schedule.label,
            "aliases": list(schedule.aliases) if schedule.aliases else None,
            "default_rho": schedule.default_rho,
            "need_inner_model": schedule.need_inner_model,
        }
        for schedule in SCHEDULE_TYPES
    ]


def supported_schedulers(sampler: str) -> tuple[str, ...]:
    """The schedule type labels `sampler` (a name or alias) can use, "Automatic" first.

    Raises:
        UserError: unknown sampler (field "sampler_name").
    """
    spec = find_sampler(sampler)
    if spec is None:
        raise unknown_sampler_error(sampler)
    return spec.schedules

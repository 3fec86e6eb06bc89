"""A1111 sampler names and schedule types, mapped onto diffusers schedulers.

Users coming from AUTOMATIC1111 pick "DPM++ 2M" + "Karras" (or send the old "DPM++ 2M Karras"); this package
turns that into a diffusers scheduler built from the loaded model's config:

    choice = resolve_sampler("DPM++ 2M Karras", None)       # SamplerChoice(sampler="DPM++ 2M", ...)
    pipe.scheduler = make_scheduler(choice, original_scheduler_config)

Layout: `schedules` (schedule types and their config flags), `table` (the sampler table), `resolve` (names ->
`SamplerChoice`), `build` (`make_scheduler`), `listing` (A1111 API shapes). Importing this package imports
neither torch nor diffusers, so the web page can list samplers before torch is loaded; only `make_scheduler`
imports diffusers.
"""

from __future__ import annotations

from modules.engine.samplers.build import SchedulerRecipe, make_scheduler, scheduler_recipe
from modules.engine.samplers.listing import list_samplers, list_schedulers, supported_schedulers
from modules.engine.samplers.resolve import SamplerChoice, resolve_sampler
from modules.engine.samplers.schedules import AUTOMATIC, SCHEDULE_LABELS, ScheduleType
from modules.engine.samplers.table import DEFAULT_SAMPLER, SAMPLER_NAMES, SAMPLERS, SamplerSpec

__all__ = [
    "AUTOMATIC",
    "DEFAULT_SAMPLER",
    "SAMPLERS",
    "SAMPLER_NAMES",
    "SCHEDULE_LABELS",
    "SamplerChoice",
    "SamplerSpec",
    "ScheduleType",
    "SchedulerRecipe",
    "list_samplers",
    "list_schedulers",
    "make_scheduler",
    "resolve_sampler",
    "scheduler_recipe",
    "supported_schedulers",
]

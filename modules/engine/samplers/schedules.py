"""A1111 schedule types (the "Schedule type" dropdown) and the diffusers scheduler config that gives each one.

A1111 1.10 computes a sigma list per schedule type (`modules/sd_schedulers.py`). diffusers has no such list, but
its schedulers take config flags that reproduce the common ones:

- Uniform / Normal: k-diffusion's `get_sigmas(n)` (A1111 1.10's `normal` is the same linspace in t), which is
  diffusers' `timestep_spacing="linspace"`.
- SGM Uniform / Simple: evenly spaced t ending one interval above 0, which is `timestep_spacing="trailing"`
  (exact for Simple, equal up to rounding t to whole steps for SGM Uniform).
- Karras / Exponential / Beta: `use_karras_sigmas` / `use_exponential_sigmas` / `use_beta_sigmas`. diffusers uses
  the same rho (7) and Beta alpha/beta (0.6/0.6) as A1111's defaults. The spacing is pinned to "linspace" too,
  because Euler-type schedulers take sigma_max/sigma_min from the *spaced* timesteps: with the "leading" spacing
  SD configs ship, Karras would start at sigma(951) instead of sigma(999).

"Automatic" has no config of its own: it means the sampler's A1111 default schedule type, or the sampler's own
spacing when it has none (see `table.SamplerSpec`). Schedule types A1111 has but diffusers cannot express are
listed in `UNSUPPORTED_SCHEDULE_TYPES`, so a request for one gets a clear refusal rather than "unknown".
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

AUTOMATIC = "Automatic"

SIGMA_FLAGS: tuple[str, ...] = ("use_karras_sigmas", "use_exponential_sigmas", "use_beta_sigmas")
"""Scheduler config flags that pick a sigma schedule; at most one is True."""


def frozen(**values: Any) -> Mapping[str, Any]:
    """A read-only mapping, so tables built from it stay immutable."""
    return MappingProxyType(dict(values))


LINSPACE = frozen(timestep_spacing="linspace")
TRAILING = frozen(timestep_spacing="trailing")


@dataclass(frozen=True)
class ScheduleType:
    """One schedule type, with A1111's fields for `GET /sdapi/v1/schedulers` and the diffusers config it needs.

    Attributes:
        name: A1111's id (`karras`), accepted as input and shown by the API.
        label: A1111's display name (`Karras`), the canonical spelling used everywhere in SD Studio.
        config: Scheduler config overrides that produce this schedule.
        aliases: Other spellings A1111 accepts (only SGM Uniform has one).
        default_rho: A1111's value (-1 = rho does not apply).
        need_inner_model: A1111's value, kept only so the API response matches.
    """

    name: str
    label: str
    config: Mapping[str, Any]
    aliases: tuple[str, ...] = ()
    default_rho: float = -1.0
    need_inner_model: bool = False

    @property
    def spellings(self) -> tuple[str, ...]:
        """Every spelling A1111 accepts for this type, as a request field or as a legacy name suffix."""
        return (self.label, self.name, *self.aliases)


# In A1111 1.10's order, leaving out the types in UNSUPPORTED_SCHEDULE_TYPES.
SCHEDULE_TYPES: tuple[ScheduleType, ...] = (
    ScheduleType("automatic", AUTOMATIC, frozen()),
    ScheduleType("uniform", "Uniform", LINSPACE, need_inner_model=True),
    ScheduleType("karras", "Karras", frozen(use_karras_sigmas=True, timestep_spacing="linspace"), default_rho=7.0),
    ScheduleType("exponential", "Exponential", frozen(use_exponential_sigmas=True, timestep_spacing="linspace")),
    ScheduleType("sgm_uniform", "SGM Uniform", TRAILING, aliases=("SGMUniform",), need_inner_model=True),
    ScheduleType("simple", "Simple", TRAILING, need_inner_model=True),
    ScheduleType("normal", "Normal", LINSPACE, need_inner_model=True),
    ScheduleType("beta", "Beta", frozen(use_beta_sigmas=True, timestep_spacing="linspace"), need_inner_model=True),
)

UNSUPPORTED_SCHEDULE_TYPES: Mapping[str, tuple[str, ...]] = frozen(
    **{
        # label: spellings; none of these has a diffusers config flag in 0.42.1.
        "Polyexponential": ("Polyexponential", "polyexponential"),
        "KL Optimal": ("KL Optimal", "kl_optimal"),
        "Align Your Steps": ("Align Your Steps", "align_your_steps"),
        # A1111's "DDIM" schedule can give n+1 steps for some n; diffusers' "leading" spacing is close but not it.
        "DDIM": ("DDIM", "ddim"),
    }
)


def _index_supported() -> Mapping[str, ScheduleType]:
    index: dict[str, ScheduleType] = {}
    for schedule in SCHEDULE_TYPES:
        for spelling in schedule.spellings:
            index[spelling.lower()] = schedule
    return MappingProxyType(index)


def _index_unsupported() -> Mapping[str, str]:
    return MappingProxyType(
        {spelling.lower(): label for label, spellings in UNSUPPORTED_SCHEDULE_TYPES.items() for spelling in spellings}
    )


_BY_SPELLING = _index_supported()
_UNSUPPORTED_BY_SPELLING = _index_unsupported()
SCHEDULE_LABELS: tuple[str, ...] = tuple(schedule.label for schedule in SCHEDULE_TYPES)


def find_schedule(spelling: str) -> ScheduleType | None:
    """The schedule type for a label, A1111 id or alias, any case; None if SD Studio has no such type."""
    return _BY_SPELLING.get(spelling.strip().lower())


def find_unsupported_schedule(spelling: str) -> str | None:
    """The label of an A1111 schedule type SD Studio cannot build (e.g. "Polyexponential"), else None."""
    return _UNSUPPORTED_BY_SPELLING.get(spelling.strip().lower())


def schedule_by_label(label: str) -> ScheduleType:
    """The schedule type with this canonical label; a KeyError means a bug in the sampler table."""
    schedule = find_schedule(label)
    if schedule is None or schedule.label != label:
        raise KeyError(label)
    return schedule


def all_schedule_spellings() -> tuple[tuple[str, str], ...]:
    """(spelling, label) for every supported and unsupported type, longest first, for splitting legacy names."""
    pairs = [(spelling, schedule.label) for schedule in SCHEDULE_TYPES for spelling in schedule.spellings]
    pairs += [(spelling, label) for label, spellings in UNSUPPORTED_SCHEDULE_TYPES.items() for spelling in spellings]
    return tuple(sorted(pairs, key=lambda pair: len(pair[0]), reverse=True))

"""The sampler table: every A1111 sampler name SD Studio offers, and the diffusers scheduler that runs it.

Names, aliases, order and default schedule types are A1111 1.10's (`modules/sd_samplers_kdiffusion.py`,
`sd_samplers_timesteps.py`, `sd_samplers_lcm.py`); DDPM and DEIS come from Forge. Each entry names a diffusers
scheduler class (a string, so this module imports nothing heavy) and the constructor overrides that make it the
same algorithm. Where diffusers cannot do exactly what A1111 does, `note` says how it differs; a sampler with no
faithful diffusers counterpart is left out and listed in `UNSUPPORTED_SAMPLERS` instead.

`schedules` is written out per sampler rather than derived from the scheduler's signature because the UI shows
it before torch is imported; `tests/unit/test_samplers.py` builds every listed combination to keep it honest.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from modules.engine.samplers.schedules import AUTOMATIC, LINSPACE, frozen

# Supported schedule types per scheduler family, in A1111's order.
EVERY_SCHEDULE = (AUTOMATIC, "Uniform", "Karras", "Exponential", "SGM Uniform", "Simple", "Normal", "Beta")
SPACING_ONLY = (AUTOMATIC, "Uniform", "SGM Uniform", "Simple", "Normal")
# DPMSolverSinglestepScheduler has no timestep_spacing; its fixed grid equals DPMSolverMultistep's "linspace".
NO_TRAILING = (AUTOMATIC, "Uniform", "Karras", "Exponential", "Normal", "Beta")

# DDIM and PLMS in A1111 use `range(0, 1000, 1000 // steps) + 1`, which is diffusers' "leading" with offset 1.
A1111_TIMESTEP_SAMPLER_SPACING = frozen(timestep_spacing="leading", steps_offset=1)

# DPM-Solver++(1) with SDE noise is algebraically the Euler ancestral step (eta=1): with h = log(s/t),
# x_t = (t/s)^2 x + (1 - (t/s)^2) x0 + t * sqrt(1 - (t/s)^2) * noise in both. diffusers' Euler ancestral
# scheduler has no sigma-schedule flags, so "Euler a" with Karras/Exponential/Beta runs this one instead.
EULER_ANCESTRAL_AS_SDE_DPM = ("DPMSolverMultistepScheduler", frozen(algorithm_type="sde-dpmsolver++", solver_order=1))

# Shared by the two A1111 samplers diffusers has no exact scheduler for (see their notes).
SDE_SINGLESTEP_2ND_ORDER = frozen(algorithm_type="sde-dpmsolver++", solver_order=2, lower_order_final=True)

DPM_SOLVER_NOTE = (
    "Uniform/Normal use diffusers' linspace spacing, which for DPM-Solver schedulers ends one interval above t=0 "
    "instead of taking a last sigma_min->0 step. "
)
SDE_NOISE_NOTE = (
    "Noise is fresh Gaussian noise from the generator, not A1111's seeded Brownian tree, so images differ from "
    "A1111's for the same seed. "
)


@dataclass(frozen=True)
class SamplerSpec:
    """One sampler: A1111's identity for it and how to build it with diffusers.

    Attributes:
        name: The A1111 display name ("DPM++ 2M"), canonical everywhere in SD Studio.
        aliases: A1111's aliases ("k_dpmpp_2m").
        scheduler_class: Name of the diffusers scheduler class.
        overrides: Constructor overrides that select the algorithm (solver order, SDE variant...).
        schedules: Schedule type labels this sampler can use, "Automatic" first.
        default_schedule: A1111 1.10's default schedule type label, used when "Automatic" is chosen.
        automatic: Config used when the effective schedule is "Automatic" (no default schedule type): the spacing
            A1111 itself uses for this sampler.
        variants: Per schedule label, a (class, overrides) pair replacing the default one.
        native_spacing: For a class without `timestep_spacing`, the spacing its fixed grid equals.
        options: Extra entries for the API's `options` (A1111 keys, describing what SD Studio actually does).
        source: Where the name comes from.
        note: How the result differs from A1111's sampler ("" when it is the same algorithm).
    """

    name: str
    aliases: tuple[str, ...]
    scheduler_class: str
    overrides: Mapping[str, Any]
    schedules: tuple[str, ...] = EVERY_SCHEDULE
    default_schedule: str = AUTOMATIC
    # Read-only mappings count as mutable defaults to dataclasses, hence the factories.
    automatic: Mapping[str, Any] = field(default_factory=lambda: LINSPACE)
    variants: Mapping[str, tuple[str, Mapping[str, Any]]] = field(default_factory=frozen)
    native_spacing: str | None = None
    options: Mapping[str, str] = field(default_factory=frozen)
    source: str = "A1111 1.10"
    note: str = ""


def _dpm_multistep(name: str, alias: str, default: str, note: str = "", **overrides: Any) -> SamplerSpec:
    return SamplerSpec(
        name, (alias,), "DPMSolverMultistepScheduler", frozen(**overrides), default_schedule=default, note=note
    )


def _dpm_singlestep(name: str, alias: str, note: str) -> SamplerSpec:
    return SamplerSpec(
        name,
        (alias,),
        "DPMSolverSinglestepScheduler",
        SDE_SINGLESTEP_2ND_ORDER,
        schedules=NO_TRAILING,
        default_schedule="Karras",
        automatic=frozen(),
        native_spacing="linspace",
        note=note,
    )


SECOND_ORDER = frozen(second_order="True")

SAMPLERS: tuple[SamplerSpec, ...] = (
    _dpm_multistep("DPM++ 2M", "k_dpmpp_2m", "Karras", DPM_SOLVER_NOTE, algorithm_type="dpmsolver++", solver_order=2),
    _dpm_singlestep(
        "DPM++ SDE",
        "k_dpmpp_sde",
        "diffusers' own DPM++ SDE (DPMSolverSDEScheduler) needs torchsde, which is not installed; this is the "
        "stochastic single-step 2nd-order DPM-Solver++ instead. Each step is one model call, so N steps make N/2 "
        "two-stage steps (A1111: N two-stage steps, about twice the model calls). " + SDE_NOISE_NOTE,
    ),
    _dpm_multistep(
        "DPM++ 2M SDE",
        "k_dpmpp_2m_sde",
        "Exponential",
        DPM_SOLVER_NOTE + SDE_NOISE_NOTE,
        algorithm_type="sde-dpmsolver++",
        solver_order=2,
        solver_type="midpoint",
    ),
    _dpm_multistep(
        "DPM++ 2M SDE Heun",
        "k_dpmpp_2m_sde_heun",
        "Exponential",
        DPM_SOLVER_NOTE + SDE_NOISE_NOTE,
        algorithm_type="sde-dpmsolver++",
        solver_order=2,
        solver_type="heun",
    ),
    _dpm_singlestep(
        "DPM++ 2S a",
        "k_dpmpp_2s_a",
        "diffusers has no DPM++ 2S ancestral scheduler; this is the same stochastic single-step 2nd-order "
        "DPM-Solver++ as DPM++ SDE (noise enters through the SDE update at both stages, not as ancestral noise "
        "after a deterministic step), with one model call per step (A1111: two).",
    ),
    _dpm_multistep(
        "DPM++ 3M SDE",
        "k_dpmpp_3m_sde",
        "Exponential",
        DPM_SOLVER_NOTE + SDE_NOISE_NOTE + "A1111 discards the next-to-last sigma for this sampler; diffusers cannot.",
        algorithm_type="sde-dpmsolver++",
        solver_order=3,
    ),
    SamplerSpec(
        "Euler a",
        ("k_euler_a", "k_euler_ancestral"),
        "EulerAncestralDiscreteScheduler",
        frozen(),
        variants=frozen(
            Karras=EULER_ANCESTRAL_AS_SDE_DPM, Exponential=EULER_ANCESTRAL_AS_SDE_DPM, Beta=EULER_ANCESTRAL_AS_SDE_DPM
        ),
        note="With Karras, Exponential or Beta it runs as DPMSolverMultistepScheduler(sde-dpmsolver++, order 1), "
        "the same update, because EulerAncestralDiscreteScheduler cannot take those schedules.",
    ),
    SamplerSpec("Euler", ("k_euler",), "EulerDiscreteScheduler", frozen()),
    SamplerSpec("LMS", ("k_lms",), "LMSDiscreteScheduler", frozen()),
    SamplerSpec("Heun", ("k_heun",), "HeunDiscreteScheduler", frozen(), options=SECOND_ORDER),
    SamplerSpec(
        "DPM2",
        ("k_dpm_2",),
        "KDPM2DiscreteScheduler",
        frozen(),
        default_schedule="Karras",
        options=SECOND_ORDER,
        note="A1111 discards the next-to-last sigma for DPM2; diffusers cannot, so the last step differs.",
    ),
    SamplerSpec(
        "DPM2 a",
        ("k_dpm_2_a",),
        "KDPM2AncestralDiscreteScheduler",
        frozen(),
        default_schedule="Karras",
        options=SECOND_ORDER,
        note="A1111 discards the next-to-last sigma for DPM2 a; diffusers cannot, so the last step differs.",
    ),
    SamplerSpec(
        "DDIM",
        ("ddim",),
        "DDIMScheduler",
        frozen(clip_sample=False, set_alpha_to_one=False),
        schedules=SPACING_ONLY,
        automatic=A1111_TIMESTEP_SAMPLER_SPACING,
        note="A1111 ignores the schedule type for DDIM; SD Studio applies the spacing types and refuses sigma types.",
    ),
    SamplerSpec(
        "PLMS",
        ("plms",),
        "PNDMScheduler",
        frozen(skip_prk_steps=True, set_alpha_to_one=False),
        schedules=SPACING_ONLY,
        automatic=A1111_TIMESTEP_SAMPLER_SPACING,
        note="A1111 ignores the schedule type for PLMS; SD Studio applies the spacing types and refuses sigma types.",
    ),
    SamplerSpec(
        "UniPC",
        ("unipc",),
        "UniPCMultistepScheduler",
        # A1111 1.10's defaults: uni_pc_variant bh1, uni_pc_order 3, lower order final, time_uniform skip.
        # A1111's UniPC stops at t=1/1000 (sigma_min), not at sigma 0; diffusers' bh1 also needs that, as its
        # last step divides by h, which is infinite when the final sigma is 0 (NaN latents).
        frozen(
            solver_type="bh1", solver_order=3, lower_order_final=True, predict_x0=True, final_sigmas_type="sigma_min"
        ),
        note="A1111 always uses time-uniform steps for UniPC (= Automatic here); SD Studio also applies the other "
        "schedule types.",
    ),
    SamplerSpec(
        "LCM",
        ("k_lcm",),
        "LCMScheduler",
        frozen(),
        schedules=(AUTOMATIC,),
        automatic=frozen(),
        note="Same 50-step LCM grid and boundary scalings as A1111, but diffusers picks steps by skipping along that "
        "grid (4 steps: t=999,759,499,259) where A1111 spaces them evenly; other schedule types are refused.",
    ),
    SamplerSpec(
        "DDPM",
        ("ddpm",),
        "DDPMScheduler",
        frozen(clip_sample=False, variance_type="fixed_small"),
        schedules=SPACING_ONLY,
        source="Forge",
    ),
    SamplerSpec(
        "DEIS",
        ("deis",),
        "DEISMultistepScheduler",
        frozen(solver_order=3),
        source="Forge",
        note="diffusers' DEIS is the log-rho (rhoAB) variant; Forge's defaults to tAB. Both are 3rd-order DEIS. "
        + DPM_SOLVER_NOTE,
    ),
)

UNSUPPORTED_SAMPLERS: Mapping[str, tuple[str, ...]] = frozen(
    **{
        # name: aliases. diffusers 0.42.1 has no scheduler implementing these (IPNDMScheduler ignores the
        # model's beta schedule, so it is not a faithful IPNDM for SD either).
        "DPM fast": ("k_dpm_fast",),
        "DPM adaptive": ("k_dpm_ad",),
        "Restart": ("restart",),
        "DDIM CFG++": ("ddim_cfgpp",),
        "HeunPP2": ("heunpp2",),
        "IPNDM": ("ipndm",),
        "IPNDM_V": ("ipndm_v",),
    }
)

DEFAULT_SAMPLER = "DPM++ 2M"
"""A1111's UI default (its API defaults to "Euler" through `sampler_index`)."""

SAMPLER_NAMES: tuple[str, ...] = tuple(spec.name for spec in SAMPLERS)


def _index() -> Mapping[str, SamplerSpec]:
    index: dict[str, SamplerSpec] = {}
    for spec in SAMPLERS:
        for spelling in (spec.name, *spec.aliases):
            index[spelling.lower()] = spec
    return MappingProxyType(index)


def _index_unsupported() -> Mapping[str, str]:
    return MappingProxyType(
        {spelling.lower(): name for name, aliases in UNSUPPORTED_SAMPLERS.items() for spelling in (name, *aliases)}
    )


_BY_SPELLING = _index()
_UNSUPPORTED_BY_SPELLING = _index_unsupported()


def find_sampler(spelling: str) -> SamplerSpec | None:
    """The sampler for a name or alias, any case; None if SD Studio has no such sampler."""
    return _BY_SPELLING.get(spelling.strip().lower())


def find_unsupported_sampler(spelling: str) -> str | None:
    """The name of an A1111/Forge sampler SD Studio cannot run (e.g. "DPM fast"), else None."""
    return _UNSUPPORTED_BY_SPELLING.get(spelling.strip().lower())

"""Building the diffusers scheduler for a `SamplerChoice` from a model's scheduler config.

Only the keys that describe the *model* are taken from the base config (its beta schedule, prediction type,
zero-SNR rescaling...). Everything that describes a *sampler* (solver order, SDE variant, sigma flags, spacing)
comes from the sampler table or the class defaults. That matters because callers usually pass
`pipe.scheduler.config`, which after the first swap is the previous sampler's config: copying it whole would
carry e.g. `use_karras_sigmas=True` from "DPM++ 2M" into a later "Euler" request.

diffusers (and with it torch) is imported inside the functions that need it, never at module import.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, NamedTuple

from modules.engine.samplers.resolve import SamplerChoice, resolve_sampler
from modules.engine.samplers.schedules import AUTOMATIC, SIGMA_FLAGS, schedule_by_label
from modules.engine.samplers.table import SAMPLERS, SamplerSpec, find_sampler
from modules.errors import UserError

if TYPE_CHECKING:
    from diffusers import SchedulerMixin

MODEL_CONFIG_KEYS: tuple[str, ...] = (
    "num_train_timesteps",
    "beta_start",
    "beta_end",
    "beta_schedule",
    "trained_betas",
    "prediction_type",
    "rescale_betas_zero_snr",
    "steps_offset",
)
"""Base-config keys that belong to the model and are kept; all other keys are dropped."""

MODEL_KEYS_THAT_MUST_APPLY: tuple[str, ...] = ("rescale_betas_zero_snr", "trained_betas")
"""If the model sets one of these, a scheduler that cannot take it would sample the wrong noise schedule."""


class SchedulerRecipe(NamedTuple):
    """The diffusers class and sampler-specific constructor overrides for a choice (model keys not included)."""

    class_name: str
    overrides: Mapping[str, Any]
    native_spacing: str | None


def scheduler_recipe(choice: SamplerChoice) -> SchedulerRecipe:
    """What `make_scheduler` will build for `choice`, without importing diffusers.

    Raises:
        UserError: if `choice` names an unknown sampler or an unsupported combination.
    """
    checked = resolve_sampler(choice.sampler, choice.scheduler)  # also refuses unsupported combinations
    spec = _spec(checked.sampler)
    label = checked.effective_scheduler
    class_name, sampler_overrides = spec.variants.get(label, (spec.scheduler_class, spec.overrides))
    schedule_config = spec.automatic if label == AUTOMATIC else schedule_by_label(label).config
    native = spec.native_spacing if class_name == spec.scheduler_class else None
    return SchedulerRecipe(class_name, {**schedule_config, **sampler_overrides}, native)


def make_scheduler(choice: SamplerChoice, base_config: Mapping[str, Any]) -> SchedulerMixin:
    """Build the diffusers scheduler for `choice`, keeping the model's noise schedule from `base_config`.

    Args:
        choice: From `resolve_sampler`.
        base_config: The model's scheduler config, typically `pipe.scheduler.config`. Its beta schedule,
            prediction type (v-prediction for SD 2.x 768), zero-SNR rescaling and steps offset are kept.

    Raises:
        UserError: the combination is unsupported, the model is a flow-matching model (SD3/Flux), or the model
            needs a config key (zero-terminal-SNR betas, trained betas) the sampler's scheduler cannot take.
    """
    import diffusers  # deferred: importing diffusers imports torch

    recipe = scheduler_recipe(choice)
    _refuse_flow_matching(base_config)
    cls = getattr(diffusers, recipe.class_name)
    accepted = _init_parameters(cls)
    _refuse_unusable_model_keys(choice.sampler, base_config, accepted)

    config: dict[str, Any] = {
        key: base_config[key] for key in MODEL_CONFIG_KEYS if key in base_config and key in accepted
    }
    # Explicit rather than class defaults, so the built config says which sigma schedule is in use.
    config.update({flag: False for flag in SIGMA_FLAGS if flag in accepted})
    for key, value in recipe.overrides.items():
        if key in accepted:
            config[key] = value
        elif not (key == "timestep_spacing" and value == recipe.native_spacing):
            # The table promised a combination this class cannot do: a bug here, not the user's mistake.
            raise RuntimeError(f"sampler table error: {recipe.class_name} has no '{key}' (for {choice})")
    return cls.from_config(config)


def _spec(name: str) -> SamplerSpec:
    spec = find_sampler(name)
    if spec is None:  # resolve_sampler already refused unknown names
        raise KeyError(name)
    return spec


def _init_parameters(cls: type) -> frozenset[str]:
    return frozenset(inspect.signature(cls.__init__).parameters) - {"self", "args", "kwargs"}


def _refuse_flow_matching(base_config: Mapping[str, Any]) -> None:
    class_name = str(base_config.get("_class_name", ""))
    if class_name.startswith("FlowMatch") or base_config.get("prediction_type") == "flow_prediction":
        raise UserError(
            "This model uses a flow-matching scheduler (SD3/Flux style); the A1111 samplers apply to "
            "SD 1.x/2.x/SDXL-type models only.",
            field="sampler_name",
        )


def _refuse_unusable_model_keys(sampler: str, base_config: Mapping[str, Any], accepted: frozenset[str]) -> None:
    import diffusers

    for key in MODEL_KEYS_THAT_MUST_APPLY:
        value = base_config.get(key)
        if value is None or value is False or key in accepted:
            continue
        able = [
            spec.name
            for spec in SAMPLERS
            if key in _init_parameters(getattr(diffusers, spec.scheduler_class))
            and all(key in _init_parameters(getattr(diffusers, cls)) for cls, _ in spec.variants.values())
        ]
        raise UserError(
            f"This model's scheduler config sets '{key}', which the '{sampler}' sampler cannot use. "
            f"Samplers that can: {', '.join(able)}.",
            field="sampler_name",
        )

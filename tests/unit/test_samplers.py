"""The A1111 sampler table: name resolution, the diffusers schedulers it builds, and the API list shapes.

Building diffusers schedulers on CPU is cheap, so every sampler x schedule type the table offers is built and
run for a few steps with a stand-in model.
"""

from __future__ import annotations

import inspect
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from modules.engine.samplers import (
    AUTOMATIC,
    SAMPLER_NAMES,
    SAMPLERS,
    SCHEDULE_LABELS,
    SamplerChoice,
    list_samplers,
    list_schedulers,
    make_scheduler,
    resolve_sampler,
    scheduler_recipe,
    supported_schedulers,
)
from modules.errors import UserError

REPO = Path(__file__).resolve().parents[2]

# Scheduler configs as the models ship them (SD 1.5, SD 2.x 768-v, SDXL).
SD15_CONFIG: dict[str, Any] = {
    "_class_name": "PNDMScheduler",
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "beta_start": 0.00085,
    "clip_sample": False,
    "num_train_timesteps": 1000,
    "set_alpha_to_one": False,
    "skip_prk_steps": True,
    "steps_offset": 1,
    "trained_betas": None,
}
SD2_V_CONFIG: dict[str, Any] = {**SD15_CONFIG, "_class_name": "DDIMScheduler", "prediction_type": "v_prediction"}
SDXL_CONFIG: dict[str, Any] = {
    **SD15_CONFIG,
    "_class_name": "EulerDiscreteScheduler",
    "interpolation_type": "linear",
    "timestep_spacing": "leading",
    "use_karras_sigmas": False,
}

# Written out here rather than read from the table, so an accidental table edit fails a test.
EXPECTED_CLASS = {
    "DPM++ 2M": "DPMSolverMultistepScheduler",
    "DPM++ SDE": "DPMSolverSinglestepScheduler",
    "DPM++ 2M SDE": "DPMSolverMultistepScheduler",
    "DPM++ 2M SDE Heun": "DPMSolverMultistepScheduler",
    "DPM++ 2S a": "DPMSolverSinglestepScheduler",
    "DPM++ 3M SDE": "DPMSolverMultistepScheduler",
    "Euler a": "EulerAncestralDiscreteScheduler",
    "Euler": "EulerDiscreteScheduler",
    "LMS": "LMSDiscreteScheduler",
    "Heun": "HeunDiscreteScheduler",
    "DPM2": "KDPM2DiscreteScheduler",
    "DPM2 a": "KDPM2AncestralDiscreteScheduler",
    "DDIM": "DDIMScheduler",
    "PLMS": "PNDMScheduler",
    "UniPC": "UniPCMultistepScheduler",
    "LCM": "LCMScheduler",
    "DDPM": "DDPMScheduler",
    "DEIS": "DEISMultistepScheduler",
}
EXPECTED_SETTINGS: dict[str, dict[str, Any]] = {
    "DPM++ 2M": {"algorithm_type": "dpmsolver++", "solver_order": 2},
    "DPM++ SDE": {"algorithm_type": "sde-dpmsolver++", "solver_order": 2},
    "DPM++ 2M SDE": {"algorithm_type": "sde-dpmsolver++", "solver_order": 2, "solver_type": "midpoint"},
    "DPM++ 2M SDE Heun": {"algorithm_type": "sde-dpmsolver++", "solver_order": 2, "solver_type": "heun"},
    "DPM++ 2S a": {"algorithm_type": "sde-dpmsolver++", "solver_order": 2},
    "DPM++ 3M SDE": {"algorithm_type": "sde-dpmsolver++", "solver_order": 3},
    "DDIM": {"clip_sample": False, "set_alpha_to_one": False},
    "PLMS": {"skip_prk_steps": True, "set_alpha_to_one": False},
    "UniPC": {"solver_type": "bh1", "solver_order": 3, "predict_x0": True, "final_sigmas_type": "sigma_min"},
    "DDPM": {"clip_sample": False, "variance_type": "fixed_small"},
    "DEIS": {"solver_order": 3},
}
# A1111 1.10's default schedule types; the rest are Automatic.
A1111_DEFAULT_SCHEDULE = {
    "DPM++ 2M": "Karras",
    "DPM++ SDE": "Karras",
    "DPM++ 2M SDE": "Exponential",
    "DPM++ 2M SDE Heun": "Exponential",
    "DPM++ 2S a": "Karras",
    "DPM++ 3M SDE": "Exponential",
    "DPM2": "Karras",
    "DPM2 a": "Karras",
}
REQUIRED = ("Euler", "Euler a", "LMS", "Heun", "DPM2", "DPM2 a", "DPM++ 2M", "DPM++ SDE", "DPM++ 2M SDE")
REQUIRED += ("DPM++ 2S a", "UniPC", "DDIM", "PLMS", "LCM")
SIGMA_FLAG = {"Karras": "use_karras_sigmas", "Exponential": "use_exponential_sigmas", "Beta": "use_beta_sigmas"}
SPACING = {"Uniform": "linspace", "Normal": "linspace", "SGM Uniform": "trailing", "Simple": "trailing"}
SD_SIGMA_MAX = 14.6146  # sigma at t=999 for SD's scaled_linear betas

COMBINATIONS = [(spec.name, label) for spec in SAMPLERS for label in spec.schedules]
REFUSED = [(spec.name, label) for spec in SAMPLERS for label in SCHEDULE_LABELS if label not in spec.schedules]


def _params(class_name: str) -> set[str]:
    import diffusers

    return set(inspect.signature(getattr(diffusers, class_name).__init__).parameters)


def _denoise(scheduler: Any, steps: int = 4, seed: int = 0) -> Any:
    """Run the scheduler the way a pipeline does, with a stand-in model that predicts a fixed fraction."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    scheduler.set_timesteps(steps)
    latents = torch.randn((1, 4, 8, 8), generator=torch.Generator().manual_seed(seed)) * scheduler.init_noise_sigma
    takes_generator = "generator" in inspect.signature(scheduler.step).parameters
    for t in scheduler.timesteps:
        model_output = 0.5 * scheduler.scale_model_input(latents, t)
        extra = {"generator": generator} if takes_generator else {}
        latents = scheduler.step(model_output, t, latents, **extra).prev_sample
    return latents


def test_importing_does_not_import_torch_or_diffusers() -> None:
    code = "import modules.engine.samplers, sys; assert 'torch' not in sys.modules and 'diffusers' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True, timeout=60)


def test_table_has_every_required_sampler_in_a1111_order() -> None:
    assert set(REQUIRED) <= set(SAMPLER_NAMES)
    assert set(EXPECTED_CLASS) == set(SAMPLER_NAMES)
    assert SAMPLER_NAMES[:3] == ("DPM++ 2M", "DPM++ SDE", "DPM++ 2M SDE")
    assert SAMPLER_NAMES[-2:] == ("DDPM", "DEIS")  # Forge's additions after A1111's own
    for spec in SAMPLERS:
        assert spec.schedules[0] == AUTOMATIC
        assert spec.default_schedule == A1111_DEFAULT_SCHEDULE.get(spec.name, AUTOMATIC)


@pytest.mark.parametrize(("sampler", "schedule"), COMBINATIONS)
def test_every_offered_combination_builds_and_samples(sampler: str, schedule: str) -> None:
    import torch

    choice = resolve_sampler(sampler, schedule)
    scheduler = make_scheduler(choice, SD15_CONFIG)
    config = scheduler.config
    effective = choice.effective_scheduler

    if sampler == "Euler a" and effective in SIGMA_FLAG:
        # Euler ancestral runs as the algebraically identical SDE-DPM-Solver++(1); see the equivalence test.
        assert type(scheduler).__name__ == "DPMSolverMultistepScheduler"
        assert (config.algorithm_type, config.solver_order) == ("sde-dpmsolver++", 1)
    else:
        assert type(scheduler).__name__ == EXPECTED_CLASS[sampler]
        for key, value in EXPECTED_SETTINGS.get(sampler, {}).items():
            assert config[key] == value, key
    for label, flag in SIGMA_FLAG.items():
        if flag in config:
            assert config[flag] is (effective == label), flag
    if "timestep_spacing" in _params(type(scheduler).__name__):
        if effective in SPACING:
            assert config.timestep_spacing == SPACING[effective]
        elif effective == AUTOMATIC and sampler in ("DDIM", "PLMS"):
            assert (config.timestep_spacing, config.steps_offset) == ("leading", 1)  # A1111's range(0, 1000, k) + 1
        elif effective == AUTOMATIC and sampler != "LCM":
            assert config.timestep_spacing == "linspace"  # k-diffusion's get_sigmas / UniPC time_uniform
    assert (config.beta_schedule, config.beta_start, config.beta_end) == ("scaled_linear", 0.00085, 0.012)

    latents = _denoise(scheduler)
    assert torch.isfinite(latents).all()
    if effective in SIGMA_FLAG:
        # The sigma schedule spans the model's whole range, as A1111's does (not sigma(951) from "leading").
        scheduler.set_timesteps(10)
        assert float(scheduler.sigmas.max()) == pytest.approx(SD_SIGMA_MAX, rel=1e-3)


@pytest.mark.parametrize(("sampler", "schedule"), REFUSED)
def test_refused_combinations_name_what_works(sampler: str, schedule: str) -> None:
    with pytest.raises(UserError) as error:
        resolve_sampler(sampler, schedule)
    assert error.value.field == "scheduler"
    assert all(label in error.value.message for label in supported_schedulers(sampler))


@pytest.mark.parametrize(("sampler", "schedule"), REFUSED)
def test_refused_combinations_are_ones_diffusers_cannot_do(sampler: str, schedule: str) -> None:
    """The table only refuses what diffusers 0.42.1 would otherwise silently ignore or reject."""
    import diffusers

    class_name = EXPECTED_CLASS[sampler]
    if schedule in SIGMA_FLAG:
        assert SIGMA_FLAG[schedule] not in _params(class_name)
    elif "timestep_spacing" in _params(class_name):
        # Accepted but unused (LCM): every spacing gives the same timesteps.
        spaced = []
        for spacing in ("linspace", "trailing"):
            scheduler = getattr(diffusers, class_name).from_config({**SD15_CONFIG, "timestep_spacing": spacing})
            scheduler.set_timesteps(4)
            spaced.append(scheduler.timesteps.tolist())
        assert spaced[0] == spaced[1]


def test_euler_a_with_a_sigma_schedule_is_the_euler_ancestral_update() -> None:
    """The "Euler a" + Karras stand-in gives Euler ancestral's results when both use the same sigmas."""
    import torch

    euler_a = make_scheduler(resolve_sampler("Euler a", "SGM Uniform"), SD15_CONFIG)
    as_dpm = make_scheduler(resolve_sampler("Euler a", "Karras"), SD15_CONFIG)
    as_dpm = type(as_dpm).from_config({**as_dpm.config, "use_karras_sigmas": False, "timestep_spacing": "trailing"})

    def run(scheduler: Any, start_scale: float) -> torch.Tensor:
        generator = torch.Generator().manual_seed(1)
        scheduler.set_timesteps(6)
        latents = torch.randn((1, 4, 8, 8), generator=torch.Generator().manual_seed(0)) * start_scale
        for t in scheduler.timesteps:
            model_output = 0.5 * scheduler.scale_model_input(latents, t) + 0.1
            latents = scheduler.step(model_output, t, latents, generator=generator).prev_sample
        return latents

    euler_a.set_timesteps(6)
    as_dpm.set_timesteps(6)
    assert torch.allclose(euler_a.sigmas, as_dpm.sigmas)
    # Same starting point: Euler keeps variance-exploding latents, DPM-Solver variance-preserving ones.
    start = float((euler_a.sigmas[0] ** 2 + 1) ** 0.5)
    assert torch.allclose(run(euler_a, start), run(as_dpm, 1.0), atol=1e-4)


@pytest.mark.parametrize(
    ("name", "sampler", "schedule"),
    [
        ("DPM++ 2M Karras", "DPM++ 2M", "Karras"),
        ("Euler a Exponential", "Euler a", "Exponential"),
        ("DPM++ SDE Karras", "DPM++ SDE", "Karras"),
        ("DPM++ 2M SDE Heun Exponential", "DPM++ 2M SDE Heun", "Exponential"),
        ("dpm++ 2m sde karras", "DPM++ 2M SDE", "Karras"),
        ("LMS Karras", "LMS", "Karras"),
        ("DPM2 a Karras", "DPM2 a", "Karras"),
        ("Euler SGM Uniform", "Euler", "SGM Uniform"),
        ("Euler SGMUniform", "Euler", "SGM Uniform"),
        ("Euler sgm_uniform", "Euler", "SGM Uniform"),
        ("UniPC Beta", "UniPC", "Beta"),
        ("k_dpmpp_2m karras", "DPM++ 2M", "Karras"),
    ],
)
def test_legacy_combined_names_are_split(name: str, sampler: str, schedule: str) -> None:
    assert resolve_sampler(name, None) == SamplerChoice(sampler, schedule, schedule)
    # As in A1111, the suffix wins over the separate field.
    assert resolve_sampler(name, "Uniform").scheduler == schedule


@pytest.mark.parametrize(
    ("name", "sampler"),
    [
        ("k_euler_a", "Euler a"),
        ("k_euler_ancestral", "Euler a"),
        ("k_euler", "Euler"),
        ("K_LMS", "LMS"),
        ("k_heun", "Heun"),
        ("k_dpm_2", "DPM2"),
        ("k_dpm_2_a", "DPM2 a"),
        ("k_dpmpp_2m", "DPM++ 2M"),
        ("k_dpmpp_sde", "DPM++ SDE"),
        ("k_dpmpp_2m_sde", "DPM++ 2M SDE"),
        ("k_dpmpp_2m_sde_heun", "DPM++ 2M SDE Heun"),
        ("k_dpmpp_2s_a", "DPM++ 2S a"),
        ("k_dpmpp_3m_sde", "DPM++ 3M SDE"),
        ("ddim", "DDIM"),
        ("plms", "PLMS"),
        ("unipc", "UniPC"),
        ("k_lcm", "LCM"),
        ("euler A", "Euler a"),
        ("  dpm++ 2m  ", "DPM++ 2M"),
    ],
)
def test_aliases_and_case_resolve(name: str, sampler: str) -> None:
    assert resolve_sampler(name, None).sampler == sampler


def test_automatic_means_the_a1111_default_schedule() -> None:
    assert resolve_sampler("DPM++ 2M", None) == SamplerChoice("DPM++ 2M", AUTOMATIC, "Karras")
    assert resolve_sampler("DPM++ 2M SDE", "automatic") == SamplerChoice("DPM++ 2M SDE", AUTOMATIC, "Exponential")
    assert resolve_sampler("Euler", "") == SamplerChoice("Euler", AUTOMATIC, AUTOMATIC)
    assert resolve_sampler("Euler", "karras") == SamplerChoice("Euler", "Karras", "Karras")
    assert resolve_sampler("DPM++ 2M", "Exponential").effective_scheduler == "Exponential"


@pytest.mark.parametrize("name", ["Foo", "", "DPM++ 9M", "Euler z Karras"])
def test_unknown_sampler_lists_valid_names(name: str) -> None:
    with pytest.raises(UserError) as error:
        resolve_sampler(name, None)
    assert error.value.field == "sampler_name"
    assert all(valid in error.value.message for valid in SAMPLER_NAMES)


@pytest.mark.parametrize("name", ["DPM fast", "k_dpm_ad", "Restart", "DDIM CFG++", "DPM fast Karras"])
def test_a1111_samplers_without_a_diffusers_equivalent_say_so(name: str) -> None:
    with pytest.raises(UserError, match="not available in SD Studio") as error:
        resolve_sampler(name, None)
    assert error.value.field == "sampler_name"


@pytest.mark.parametrize(
    ("name", "schedule"), [("Euler", "bogus"), ("Euler", "Polyexponential"), ("Euler KL Optimal", None)]
)
def test_unknown_schedule_type_lists_valid_types(name: str, schedule: str | None) -> None:
    with pytest.raises(UserError) as error:
        resolve_sampler(name, schedule)
    assert error.value.field == "scheduler"
    assert all(label in error.value.message for label in SCHEDULE_LABELS)


@pytest.mark.parametrize("sampler", SAMPLER_NAMES)
def test_v_prediction_and_beta_schedule_are_kept(sampler: str) -> None:
    for schedule in supported_schedulers(sampler):
        config = make_scheduler(resolve_sampler(sampler, schedule), SD2_V_CONFIG).config
        assert config.prediction_type == "v_prediction"
        assert (config.beta_schedule, config.beta_start, config.beta_end) == ("scaled_linear", 0.00085, 0.012)


def test_settings_of_a_previous_sampler_do_not_leak() -> None:
    """Callers pass pipe.scheduler.config, which after a swap is the previous sampler's config."""
    previous = make_scheduler(resolve_sampler("DPM++ 2M SDE Karras", None), SDXL_CONFIG).config
    config = make_scheduler(resolve_sampler("Euler", None), previous).config
    assert (config.use_karras_sigmas, config.timestep_spacing) == (False, "linspace")
    assert "algorithm_type" not in config
    unipc = make_scheduler(resolve_sampler("UniPC", "SGM Uniform"), previous).config
    assert (unipc.use_karras_sigmas, unipc.timestep_spacing, unipc.solver_order) == (False, "trailing", 3)


def test_zero_snr_models_keep_it_or_are_refused() -> None:
    zero_snr = {**SD2_V_CONFIG, "rescale_betas_zero_snr": True}
    assert make_scheduler(resolve_sampler("Euler", "Uniform"), zero_snr).config.rescale_betas_zero_snr is True
    with pytest.raises(UserError, match="rescale_betas_zero_snr") as error:
        make_scheduler(resolve_sampler("DPM++ SDE", None), zero_snr)
    assert error.value.field == "sampler_name"
    assert "Euler" in error.value.message


def test_flow_matching_models_are_refused() -> None:
    flow = {"_class_name": "FlowMatchEulerDiscreteScheduler", "num_train_timesteps": 1000, "shift": 3.0}
    with pytest.raises(UserError, match="flow-matching"):
        make_scheduler(resolve_sampler("Euler", None), flow)


def test_scheduler_recipe_needs_no_diffusers() -> None:
    recipe = scheduler_recipe(resolve_sampler("DPM++ 2M", None))
    assert recipe.class_name == "DPMSolverMultistepScheduler"
    assert recipe.overrides["use_karras_sigmas"] is True
    with pytest.raises(UserError):
        scheduler_recipe(SamplerChoice("PLMS", "Karras", "Karras"))


def test_list_samplers_has_a1111_shape() -> None:
    items = list_samplers()
    assert [item["name"] for item in items] == list(SAMPLER_NAMES)
    for item in items:
        assert set(item) == {"name", "aliases", "options"}
        assert all(isinstance(alias, str) for alias in item["aliases"])
        assert all(isinstance(key, str) and isinstance(value, str) for key, value in item["options"].items())
    by_name = {item["name"]: item for item in items}
    assert by_name["DPM++ 2M"] == {"name": "DPM++ 2M", "aliases": ["k_dpmpp_2m"], "options": {"scheduler": "karras"}}
    assert by_name["Euler a"]["aliases"] == ["k_euler_a", "k_euler_ancestral"]
    assert by_name["DPM++ 2M SDE"]["options"]["scheduler"] == "exponential"
    assert by_name["Heun"]["options"] == {"second_order": "True"}


def test_list_schedulers_has_a1111_shape() -> None:
    items = list_schedulers()
    assert [item["label"] for item in items] == list(SCHEDULE_LABELS)
    for item in items:
        assert set(item) == {"name", "label", "aliases", "default_rho", "need_inner_model"}
    by_name = {item["name"]: item for item in items}
    assert by_name["automatic"] == {
        "name": "automatic",
        "label": "Automatic",
        "aliases": None,
        "default_rho": -1.0,
        "need_inner_model": False,
    }
    assert by_name["karras"]["default_rho"] == 7.0
    assert by_name["sgm_uniform"]["aliases"] == ["SGMUniform"]
    assert by_name["uniform"]["need_inner_model"] is True
    assert {"automatic", "uniform", "karras", "exponential", "sgm_uniform", "beta"} <= set(by_name)


def test_supported_schedulers_takes_aliases_and_refuses_unknown() -> None:
    assert supported_schedulers("k_lcm") == (AUTOMATIC,)
    assert "Karras" in supported_schedulers("euler a")
    with pytest.raises(UserError) as error:
        supported_schedulers("nope")
    assert error.value.field == "sampler_name"

"""Load A1111-style checkpoints (single files or diffusers folders) and VAEs into diffusers, offline.

Single files go through `from_single_file(config=<complete local config folder>, local_files_only=True)`, so
nothing ever asks the hub. Which folder, in A1111's order of precedence:

1. `<name>/` beside the checkpoint (weightless diffusers config folder): used as `config=` as is, with the
   family's tokenizers filled in if it has none. This is how custom-sized models (the tiny test models) load.
2. `<name>.yaml` beside the checkpoint (LDM config, A1111's rule): passed as `original_config=`, so diffusers
   builds the UNet and VAE from it; the text encoders, tokenizers and scheduler come from the family folder
   (`sd2-v` when the YAML says `parameterization: "v"`).
3. Otherwise the bundled config of the detected family (`families.py`).

Every failure a user can cause (missing file, not an SD model, corrupt file, refused pickle, unsupported family,
a config that does not fit the weights) becomes a `UserError` with a message that says what to do.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from modules.engine.models import checkpoint_files
from modules.engine.models.families import CheckpointInfo, describe_non_sd, detect_checkpoint
from modules.engine.models.family_config import complete_config_dir, ensure_family_config
from modules.errors import NotFound, UserError

if TYPE_CHECKING:
    import torch
    from diffusers import AutoencoderKL, DiffusionPipeline

logger = logging.getLogger(__name__)


_SUPPORTED_PIPELINES = (
    "StableDiffusionPipeline",
    "StableDiffusionInpaintPipeline",
    "StableDiffusionXLPipeline",
    "StableDiffusionXLInpaintPipeline",
)


def _pipeline_class_name(family: str) -> str:
    xl = family.startswith("sdxl")
    if family.endswith("-inpaint"):
        return "StableDiffusionXLInpaintPipeline" if xl else "StableDiffusionInpaintPipeline"
    return "StableDiffusionXLPipeline" if xl else "StableDiffusionPipeline"


def _does_not_fit(path: Path, config: Path, exc: BaseException) -> UserError:
    detail = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__
    return UserError(
        f"{path.name} could not be loaded with the config in {config}: the weights do not fit it ({detail}). "
        "If the model has an unusual size, put a matching diffusers config folder or .yaml beside it.",
        field="checkpoint",
    )


def _require_complete(pipe: Any, path: Path, config: Path) -> None:
    """Fail loudly if a component kept placeholder (meta) weights because the file lacked them."""
    import torch

    for name, component in pipe.components.items():
        if not isinstance(component, torch.nn.Module):
            continue
        missing = [key for key, value in component.state_dict().items() if value.is_meta]
        if missing:
            raise UserError(
                f"{path.name} has no weights for part of its {name} (e.g. {missing[0]}); the config in {config} "
                "does not fit it, or the file is incomplete.",
                field="checkpoint",
            )


def _apply_prediction(pipe: Any, info: CheckpointInfo) -> None:
    """Make the scheduler match what detection decided when the config folder did not already say so."""
    config = pipe.scheduler.config
    updates: dict[str, Any] = {}
    if config.get("prediction_type", "epsilon") != info.prediction_type:
        updates["prediction_type"] = info.prediction_type
    if info.zero_terminal_snr and not config.get("rescale_betas_zero_snr", False):
        updates["rescale_betas_zero_snr"] = True
    if updates:
        pipe.scheduler = type(pipe.scheduler).from_config({**config, **updates})


def _load_single_file(info: CheckpointInfo, cache_dir: Path, dtype: torch.dtype | None) -> DiffusionPipeline:
    import diffusers

    if not info.has_text_encoder:
        raise UserError(f"{info.path.name} has a UNet but no text encoder; UNet-only files are not supported.",
                        field="checkpoint")
    if info.config_dir is not None:
        config = complete_config_dir(info.config_dir, info.family, cache_dir)
    else:
        config = ensure_family_config(info.family, cache_dir)
    index = json.loads((config / "model_index.json").read_text(encoding="utf-8"))
    class_name = _pipeline_class_name(info.family)
    if info.config_dir is not None:  # the user's folder may pick, say, the inpaint pipeline for its model
        class_name = str(index.get("_class_name") or class_name)
        if class_name not in _SUPPORTED_PIPELINES:
            raise UserError(f"{info.config_dir}/model_index.json names {class_name}; supported: "
                            f"{', '.join(_SUPPORTED_PIPELINES)}", field="checkpoint")
    pipeline_class = getattr(diffusers, class_name)
    kwargs: dict[str, Any] = {"config": str(config), "local_files_only": True, "torch_dtype": dtype}
    if "safety_checker" in index:
        kwargs.update(safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    if info.original_config is not None:
        kwargs["original_config"] = str(info.original_config)
    logger.info("loading %s as %s (%s) with config %s", info.path.name, info.family, info.reason, config)
    try:
        pipe = pipeline_class.from_single_file(str(info.path), **kwargs)
    except (ValueError, RuntimeError, KeyError, IndexError, TypeError, OSError) as exc:
        raise _does_not_fit(info.path, config, exc) from exc
    _require_complete(pipe, info.path, config)
    if info.config_dir is None:
        _apply_prediction(pipe, info)
    return pipe


def _load_diffusers_folder(info: CheckpointInfo, dtype: torch.dtype | None) -> DiffusionPipeline:
    from diffusers import DiffusionPipeline

    index = json.loads((info.path / "model_index.json").read_text(encoding="utf-8"))
    kwargs: dict[str, Any] = {"local_files_only": True, "torch_dtype": dtype}
    if "safety_checker" in index:
        # A1111 has no safety checker; skipping it also saves loading 1.2 GB.
        kwargs.update(safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    try:
        return DiffusionPipeline.from_pretrained(str(info.path), **kwargs)
    except (ValueError, RuntimeError, KeyError, TypeError, OSError) as exc:
        raise UserError(f"The diffusers folder {info.path.name} could not be loaded: {exc}", "checkpoint") from exc


def load_checkpoint(path: Path, cache_dir: Path, dtype: torch.dtype | None = None) -> DiffusionPipeline:
    """Load an SD 1.x / 2.x / SDXL checkpoint as a diffusers pipeline, without network access.

    Args:
        path: A `.safetensors`/`.ckpt` file in A1111/LDM layout, or a diffusers model folder.
        cache_dir: The app's cache root (`<data>/cache`): assembled config folders and tokenizers live there.
        dtype: Load weights in this dtype (e.g. `torch.float16`); None keeps float32.

    Returns:
        `StableDiffusionPipeline`, `StableDiffusionXLPipeline`, or their inpaint variants for 9-channel models,
        without a safety checker. Use `detect_checkpoint` for the family and how it was decided.

    Raises:
        NotFound: nothing at `path`.
        UserError: not an SD checkpoint, corrupt or truncated, a pickle that wants to run code, an unsupported
            family (e.g. SDXL refiner), or weights that do not fit the config.
    """
    path = Path(path)
    if not path.exists():
        raise NotFound(f"Checkpoint not found: {path}", field="checkpoint")
    info = detect_checkpoint(path)
    if info.layout == "diffusers":
        return _load_diffusers_folder(info, dtype)
    return _load_single_file(info, Path(cache_dir), dtype)


def _vae_config(path: Path, family: str, cache_dir: Path) -> tuple[Path, str | None]:
    """(config folder, subfolder) for a VAE: a `<name>/` folder beside it, else the family's `vae/` config."""
    beside = path.parent / path.stem
    if (beside / "config.json").is_file():
        return beside, None
    if (beside / "vae" / "config.json").is_file():
        return beside, "vae"
    return ensure_family_config(family, cache_dir), "vae"


def load_vae(
    path: Path, cache_dir: Path, family: str = "sd1", dtype: torch.dtype | None = None
) -> AutoencoderKL:
    """Load a standalone VAE file (`models/VAE/*.safetensors|.pt|.ckpt`, LDM or diffusers keys) offline.

    Args:
        path: The VAE file.
        cache_dir: The app's cache root, as for `load_checkpoint`.
        family: The family of the checkpoint it will be used with; picks the config (SDXL's VAE has a different
            scaling factor). A `<name>/config.json` beside the file overrides it.
        dtype: Load weights in this dtype; None keeps float32.
    """
    from diffusers import AutoencoderKL

    path = Path(path)
    if not path.is_file():
        raise NotFound(f"VAE not found: {path}", field="vae")
    shapes = checkpoint_files.read_shapes(path)  # raises UserError when corrupt or a refused pickle
    if any(key.startswith("model.diffusion_model.") for key in shapes):
        raise UserError(f"{path.name} is a full checkpoint, not a VAE; put it in models/Stable-diffusion.", "vae")
    if not any(key.endswith(("encoder.conv_in.weight", "decoder.conv_in.weight")) for key in shapes):
        raise UserError(f"{path.name} is not a VAE; it looks like {describe_non_sd(shapes)}.", field="vae")
    config, subfolder = _vae_config(path, family, Path(cache_dir))
    try:
        vae = AutoencoderKL.from_single_file(
            str(path), config=str(config), subfolder=subfolder, local_files_only=True, torch_dtype=dtype
        )
    except (ValueError, RuntimeError, KeyError, TypeError, OSError) as exc:
        raise _does_not_fit(path, config, exc) from exc
    if any(value.is_meta for value in vae.state_dict().values()):
        raise UserError(f"{path.name} lacks some VAE weights for the config in {config}.", field="vae")
    return vae

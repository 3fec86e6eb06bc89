"""Which Stable Diffusion family a checkpoint belongs to, decided from tensor names and shapes alone.

Families (each has a bundled weightless config folder in `configs/<family>/`):

| family        | how it is recognised (A1111/LDM single-file layout)                                          |
|---------------|-----------------------------------------------------------------------------------------------|
| `sd1`         | `model.diffusion_model.*`, cross-attention context 768 / CLIP-L `cond_stage_model.transformer.*` |
| `sd2`         | context 1024 / OpenCLIP text encoder `cond_stage_model.model.*`; epsilon                      |
| `sd2-v`       | `sd2` with v-prediction (SD 2.x 768-v); see "v-prediction" below                             |
| `sdxl`        | two text encoders: `conditioner.embedders.0.transformer.*` and `conditioner.embedders.1.model.*` |
| `*-inpaint`   | the UNet's first conv takes 9 channels (4 latent + 4 masked-image latent + 1 mask)            |

`sdxl-refiner` (only `conditioner.embedders.0.model.*`) is recognised and refused as not supported yet; so are
instruct-pix2pix (8 channels), depth (5) and the x4 upscaler. Files without a `model.diffusion_model.` UNet are
not SD checkpoints: the error says what they look like (LoRA, VAE, upscaler, ...) and where they belong.

v-prediction cannot be read off the tensor names, because SD 2.x 512 (epsilon) and 768-v have the same shapes.
How others decide: A1111 uses the `<name>.yaml` beside the checkpoint (`parameterization: "v"`), and without one
runs the UNet once on a constant input and calls it v-prediction when the output mean is far below the input;
diffusers' legacy loader assumes v-prediction for every SD2 file except the one with `global_step == 875000`
(2.x-base); ComfyUI looks at the spread of one LayerNorm bias. What we do, first match wins:

1. a `<name>/` diffusers config folder beside the file: its scheduler's `prediction_type`;
2. a `<name>.yaml` beside the file: `model.params.parameterization` (`"v"` → v-prediction, else epsilon);
3. a `v_pred` marker tensor in the file (community v-pred fine-tunes, SDXL ones included, add it);
4. SD2 only: the standard deviation of `output_blocks.11.1.transformer_blocks.0.norm1.bias` above 0.09 means
   v-prediction (the 768-v training moved that bias far more than the 512 one; cheap, reads one small tensor);
5. otherwise epsilon.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from modules.engine.models import checkpoint_files
from modules.errors import UserError

logger = logging.getLogger(__name__)

Family = Literal["sd1", "sd1-inpaint", "sd2", "sd2-v", "sd2-inpaint", "sdxl", "sdxl-inpaint"]
PredictionType = Literal["epsilon", "v_prediction"]

FAMILIES: tuple[Family, ...] = ("sd1", "sd1-inpaint", "sd2", "sd2-v", "sd2-inpaint", "sdxl", "sdxl-inpaint")

UNET = "model.diffusion_model."
_V_PRED_PROBE = UNET + "output_blocks.11.1.transformer_blocks.0.norm1.bias"
_V_PRED_STD_THRESHOLD = 0.09


@dataclass(frozen=True)
class CheckpointInfo:
    """What a checkpoint is and which side files change how it loads."""

    path: Path
    family: Family
    prediction_type: PredictionType
    reason: str
    """How the family and prediction type were decided, for logs and the model details view."""
    layout: Literal["single_file", "diffusers"] = "single_file"
    zero_terminal_snr: bool = False
    has_text_encoder: bool = True
    config_dir: Path | None = None
    """A `<name>/` weightless diffusers config folder beside the file: it overrides the bundled config."""
    original_config: Path | None = None
    """A `<name>.yaml` LDM config beside the file (A1111's override rule)."""


def _has_prefix(shapes: Mapping[str, tuple[int, ...]], prefix: str) -> bool:
    return any(key.startswith(prefix) for key in shapes)


def describe_non_sd(shapes: Mapping[str, tuple[int, ...]]) -> str:
    """A short guess at what a non-SD state dict is, worded to tell the user where it belongs."""
    keys = list(shapes)

    def has(*fragments: str) -> bool:
        return any(fragment in key for key in keys for fragment in fragments)

    if not keys:
        return "an empty file (no tensors)"
    if has("lora_down", "lora_up", "lora_A.", "lora_B.", "lora_unet_", "lora_te"):
        return "a LoRA; put it in models/Lora"
    if has("hada_w1", "lokr_w1", "oft_blocks"):
        return "a LyCORIS network; put it in models/Lora"
    if has("string_to_param", "emb_params") or set(keys) <= {"clip_l", "clip_g"}:
        return "a textual-inversion embedding; put it in embeddings/"
    if has("control_model.", "input_hint_block", "controlnet_cond_embedding"):
        return "a ControlNet; put it in models/ControlNet"
    if any(key.endswith("encoder.conv_in.weight") for key in keys) and has("decoder.conv_in.weight"):
        return "a VAE; put it in models/VAE"
    if has("double_blocks.", "single_blocks."):
        return "a Flux model, which is not supported"
    if has("joint_blocks."):
        return "a Stable Diffusion 3 model, which is not supported"
    if has("stylegan_decoder", "conv_body_first", "quantize.embedding"):
        return "a face-restoration model (GFPGAN/CodeFormer); put it in models/GFPGAN"
    if has("RRDB_trunk", "conv_first.", "body.0.rdb1", "rdb1.conv1") or keys[0].startswith("model.0."):
        return "an upscaler (ESRGAN-style); put it in models/ESRGAN"
    if has("down_blocks.") and has("conv_in.weight"):
        return "a single diffusers-format component (a UNet or VAE), not a whole checkpoint"
    sample = ", ".join(keys[:3])
    return f"an unknown model ({len(keys)} tensors, e.g. {sample})"


def _context_dim(shapes: Mapping[str, tuple[int, ...]]) -> int | None:
    """The cross-attention context width (768 SD1, 1024 SD2, 2048 SDXL) from any attn2.to_k weight."""
    for key, shape in shapes.items():
        if key.startswith(UNET) and key.endswith("attn2.to_k.weight") and len(shape) == 2:
            return shape[1]
    return None


def family_from_shapes(shapes: Mapping[str, tuple[int, ...]], name: str = "checkpoint") -> tuple[str, str]:
    """Classify an LDM-layout state dict by its keys and shapes; v-prediction is decided elsewhere.

    Returns:
        `(family, reason)`, where family is `sd1`, `sd2`, `sdxl` or one of their `-inpaint` variants.

    Raises:
        UserError: not an SD checkpoint, or an SD variant that is not supported yet.
    """
    if not _has_prefix(shapes, UNET):
        raise UserError(
            f"{name} is not a Stable Diffusion checkpoint: it has no UNet (model.diffusion_model.*). "
            f"It looks like {describe_non_sd(shapes)}.",
            field="checkpoint",
        )
    conv_in = shapes.get(UNET + "input_blocks.0.0.weight")
    in_channels = conv_in[1] if conv_in is not None and len(conv_in) == 4 else None
    context = _context_dim(shapes)
    is_xl_text = _has_prefix(shapes, "conditioner.embedders.1.model.")
    is_refiner_text = _has_prefix(shapes, "conditioner.embedders.0.model.") and not is_xl_text

    if is_refiner_text:
        if _has_prefix(shapes, UNET + "label_emb."):
            raise UserError(
                f"{name} is an SDXL refiner checkpoint; refiners are not supported yet. Use an SDXL base model.",
                field="checkpoint",
            )
        raise UserError(f"{name} is an SD 2.x checkpoint in SGM layout, which is not supported yet.", "checkpoint")
    if is_xl_text or (_has_prefix(shapes, "conditioner.") and _has_prefix(shapes, UNET + "label_emb.")):
        base, reason = "sdxl", "two text encoders (conditioner.embedders.0/1)"
    # The UNet's context width is the surest sign for full-size models (a few SD2 files carry their text encoder
    # in Hugging Face layout); the text encoder layout decides for models of other widths, such as tiny tests.
    elif context == 1024:
        base, reason = "sd2", "cross-attention context 1024"
    elif context == 768:
        base, reason = "sd1", "cross-attention context 768"
    elif _has_prefix(shapes, "cond_stage_model.model."):
        base, reason = "sd2", "OpenCLIP text encoder (cond_stage_model.model.*)"
    else:
        base, reason = "sd1", "CLIP text encoder (cond_stage_model.transformer.*)"

    if in_channels in (4, None):
        return base, reason
    if in_channels == 9:
        return f"{base}-inpaint", f"{reason}; 9-channel UNet input (inpainting)"
    kind = {8: "an instruct-pix2pix model", 5: "a depth-conditioned model", 7: "the x4 upscaler"}.get(
        in_channels, f"a model whose UNet takes {in_channels} input channels"
    )
    raise UserError(f"{name} is {kind}, which is not supported yet.", field="checkpoint")


def _prediction_from_config_dir(config_dir: Path) -> PredictionType | None:
    scheduler_config = config_dir / "scheduler" / "scheduler_config.json"
    try:
        value = json.loads(scheduler_config.read_text(encoding="utf-8")).get("prediction_type")
    except (OSError, ValueError):
        return None
    if value == "v_prediction":
        return "v_prediction"
    return "epsilon" if value is not None else None


def _v_pred_by_weights(path: Path) -> bool | None:
    """SD2 heuristic (module docstring, step 4); None when the probe tensor is missing (unusual topology)."""
    bias = checkpoint_files.read_tensor(path, _V_PRED_PROBE)
    if bias is None or bias.size < 2:
        return None
    return float(bias.std()) > _V_PRED_STD_THRESHOLD  # numpy's std is the population (biased) one


def _decide_prediction(
    path: Path, base: str, shapes: Mapping[str, tuple[int, ...]], config_dir: Path | None, yaml_path: Path | None
) -> tuple[PredictionType, str]:
    if config_dir is not None:
        found = _prediction_from_config_dir(config_dir)
        if found is not None:
            return found, f"prediction type from {config_dir.name}/scheduler"
    if yaml_path is not None:
        value = checkpoint_files.read_yaml_parameterization(yaml_path)
        return ("v_prediction" if value == "v" else "epsilon"), f"parameterization from {yaml_path.name}"
    if "v_pred" in shapes:
        return "v_prediction", "v_pred marker tensor"
    if base == "sd2":
        by_weights = _v_pred_by_weights(path)
        if by_weights is not None:
            return ("v_prediction" if by_weights else "epsilon"), "SD2 v-prediction weight heuristic"
    return "epsilon", "default epsilon"


def detect_single_file(path: Path) -> CheckpointInfo:
    """Detect the family of a single-file (A1111/LDM layout) checkpoint, honouring its side files."""
    shapes = checkpoint_files.read_shapes(path)
    family, reason = family_from_shapes(shapes, name=path.name)
    config_dir = checkpoint_files.sidecar_config_dir(path)
    yaml_path = checkpoint_files.sidecar_yaml(path)
    if config_dir is not None and yaml_path is not None:
        logger.warning("%s has both %s/ and %s; the config folder wins", path.name, config_dir.name, yaml_path.name)
        yaml_path = None
    prediction: PredictionType = "epsilon"
    if not family.endswith("-inpaint"):  # inpainting models are all epsilon
        prediction, why = _decide_prediction(path, family, shapes, config_dir, yaml_path)
        reason = f"{reason}; {why}"
        if family == "sd2" and prediction == "v_prediction":
            family = "sd2-v"
    return CheckpointInfo(
        path=path,
        family=family,  # type: ignore[arg-type]  # family_from_shapes only returns members of Family
        prediction_type=prediction,
        reason=reason,
        zero_terminal_snr="ztsnr" in shapes,
        has_text_encoder=any(key.startswith(("cond_stage_model.", "conditioner.embedders.")) for key in shapes),
        config_dir=config_dir,
        original_config=yaml_path,
    )


def _read_json(path: Path) -> dict[str, object]:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise UserError(f"{path} is missing or not valid JSON: {exc}", field="checkpoint") from exc
    return value if isinstance(value, dict) else {}


def _text_act(folder: Path) -> str | None:
    config = folder / "text_encoder" / "config.json"
    return str(_read_json(config).get("hidden_act")) if config.is_file() else None


def detect_diffusers_folder(path: Path) -> CheckpointInfo:
    """Detect the family of a diffusers-layout folder from its `model_index.json` and component configs."""
    index = _read_json(path / "model_index.json")
    class_name = str(index.get("_class_name", ""))
    unet = _read_json(path / "unet" / "config.json")
    if "XL" in class_name and "text_encoder" not in index:
        raise UserError(f"{path.name} is an SDXL refiner; refiners are not supported yet.", field="checkpoint")
    if "XL" in class_name or unet.get("addition_embed_type") == "text_time":
        base = "sdxl"
    elif unet.get("cross_attention_dim") == 1024 or _text_act(path) not in (None, "quick_gelu"):
        base = "sd2"  # SD2's OpenCLIP text tower uses exact GELU where SD1's CLIP-L uses quick_gelu
    else:
        base = "sd1"
    prediction = _prediction_from_config_dir(path) or "epsilon"
    family = f"{base}-inpaint" if unet.get("in_channels") == 9 else base
    if family == "sd2" and prediction == "v_prediction":
        family = "sd2-v"
    return CheckpointInfo(
        path=path,
        family=family,  # type: ignore[arg-type]
        prediction_type=prediction,
        reason=f"diffusers folder ({class_name})",
        layout="diffusers",
    )


def detect_checkpoint(path: Path) -> CheckpointInfo:
    """Detect a checkpoint's family: a single file (`.safetensors`, `.ckpt`) or a diffusers folder.

    Raises:
        NotFound: nothing at `path`.
        UserError: not an SD checkpoint, a corrupt or refused file, or an unsupported SD variant.
    """
    path = Path(path)
    if path.is_dir():
        if not (path / "model_index.json").is_file():
            raise UserError(f"{path.name} is a folder without model_index.json, not a diffusers model", "checkpoint")
        return detect_diffusers_folder(path)
    return detect_single_file(path)


def detect_family(path: Path) -> Family:
    """Shorthand for `detect_checkpoint(path).family`."""
    return detect_checkpoint(path).family

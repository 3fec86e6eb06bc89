"""LoRA files: reading, converting to peft's layout, checking against the loaded model, and hashing.

The file-level half of :mod:`modules.engine.lora` (steps 2-4 of the order described there); that module finds
files, applies and removes adapters, and keeps the cache. What is here:

* **Reading.** :func:`prepare_lora` reads ``.safetensors`` directly (its header first, so a full checkpoint is
  refused without reading it) and ``.pt``/``.ckpt`` only with ``torch.load(weights_only=True)``, and checks that
  the file is a loadable LoRA (not a checkpoint, an embedding or a LyCORIS variant).
* **Converting.** kohya's ``alpha`` is folded into ``lora_up``, diffusers' ``lora_state_dict`` renames kohya/SGM
  keys, every layer is brought to peft's ``<module>.lora_A/lora_B`` layout, and the ``lora_alpha``/
  ``alpha_pattern`` of diffusers-saved files are folded too. The result is a :class:`PreparedLora`.
* **Checking.** :func:`_fitted` matches every layer to a module of the loaded model with the same sizes and
  explains a LoRA made for another family (from the file's metadata, its kohya keys or its layer widths).
* **Hashing.** :func:`addnet_hash` (kohya's hash of the tensor data) and the ``sshs_model_hash`` stored in the
  metadata; ``HASH_LENGTH`` digits of either are A1111's "Lora hashes" value.

Log messages keep the ``modules.engine.lora`` logger they had before this module was split out.

Importing this module imports neither torch nor diffusers.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from modules.errors import UserError

if TYPE_CHECKING:
    from modules.engine.prompts.extra_networks import ExtraNetwork

log = logging.getLogger(__name__)

HASH_LENGTH = 12  # A1111's NetworkOnDisk.shorthash: the first 12 hex digits
_TEXT_ENCODERS = ("text_encoder", "text_encoder_2")
_COMPONENTS = ("unet", *_TEXT_ENCODERS)
_MAX_HEADER_BYTES = 100 * 1024 * 1024  # a safetensors header beyond this is a corrupt file, not metadata
_CHUNK = 1024 * 1024
# Key fragments of LyCORIS variants that diffusers cannot load (LoHa, LoKr, OFT, full diffs, CP-decomposed LoCon).
_LYCORIS_FRAGMENTS = (".hada_", ".lokr_", ".oft_", ".diff", ".lora_mid.", ".on_input", ".w_norm")
_SGM_UNET_PREFIXES = ("lora_unet_input_blocks_", "lora_unet_middle_block_", "lora_unet_output_blocks_")
_CONTEXT_WIDTH_FAMILY = {768: "SD1", 1024: "SD2", 2048: "SDXL"}


@dataclass
class PreparedLora:
    """A LoRA file converted to peft's layout, ready for any pipeline of one layout (SD or SDXL).

    Attributes:
        layers: Per component (``unet``, ``text_encoder``, ``text_encoder_2``), ``<module>.lora_A.weight`` and
            ``<module>.lora_B.weight`` tensors (alpha already folded into ``lora_B``).
        family_hint: The family the file says or looks like it was trained for ("SD1", "SD2", "SDXL"), or None.
        metadata: The safetensors ``__metadata__`` strings (empty for pickled files).
    """

    layers: dict[str, dict[str, Any]]
    family_hint: str | None
    metadata: dict[str, str] = field(default_factory=dict)


_FileKey = tuple[str, int, int]  # real path, size, mtime_ns


def _file_key(path: Path) -> _FileKey:
    st = path.stat()
    return str(path.resolve()), st.st_size, st.st_mtime_ns


# -- hashes -----------------------------------------------------------------------------------------------------


def addnet_hash(path: Path) -> str:
    """The kohya / sd-webui-additional-networks hash of a safetensors file: sha256 of everything after the
    8-byte header length and the JSON header, i.e. of the tensor data only (so editing metadata keeps it).

    Raises:
        OSError: the file cannot be read.
    """
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        header_length = int.from_bytes(f.read(8), "little")
        f.seek(8 + header_length)
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _metadata_hash(path: Path) -> str | None:
    value = file_metadata(path).get("sshs_model_hash")
    # Only a real hex digest: the metadata is user-controlled text that ends up in infotext and HTML.
    if isinstance(value, str) and re.fullmatch(r"[0-9a-fA-F]{12,64}", value):
        return value[:HASH_LENGTH].lower()
    return None


# -- reading and converting ------------------------------------------------------------------------------------


def prepare_lora(pipe: Any, path: Path, label: str | None = None) -> PreparedLora:
    """Read a LoRA file and convert it to peft's layout for pipelines shaped like ``pipe`` (no model changes).

    Raises:
        UserError: unreadable, not a LoRA, or a LoRA variant that cannot be loaded.
    """
    label = label or path.stem
    metadata: dict[str, str] = {}
    if path.suffix.lower() == ".safetensors":
        header = _header_or_error(path, label)
        metadata = _string_metadata(header)
        # Rejecting a 6 GB checkpoint from its header saves reading it.
        _check_is_lora(label, [k for k in header if k != "__metadata__"])
    raw = _read_tensors(path, label)
    _check_is_lora(label, list(raw))
    family_hint = _family_from_metadata(metadata) or _family_from_kohya_keys(raw)
    converted = _convert_to_diffusers(pipe, raw, label)
    layers = _peft_layers(converted, label)
    if not _is_kohya(raw):
        layers = _fold_metadata_alphas(layers, metadata)
    return PreparedLora(layers, family_hint or _family_from_widths(layers), metadata)


def _header_or_error(path: Path, label: str) -> dict[str, Any]:
    try:
        return _read_header(path)[1]
    except OSError as e:
        raise UserError(f"LoRA '{label}' cannot be read: {e}", field="prompt") from e
    except ValueError as e:
        raise UserError(f"LoRA '{label}' ({path.name}) is corrupt or not a safetensors file: {e}. "
                        "Re-download it.", field="prompt") from e


def _read_header(path: Path) -> tuple[int, dict[str, Any]]:
    """The safetensors header length and JSON header. Raises ValueError when it is not one, OSError on I/O."""
    with open(path, "rb") as f:
        prefix = f.read(8)
        if len(prefix) != 8:
            raise ValueError("file too short")
        length = int.from_bytes(prefix, "little")
        if length > _MAX_HEADER_BYTES or length > os.fstat(f.fileno()).st_size - 8:
            raise ValueError("bad header length")
        header = json.loads(f.read(length))
    if not isinstance(header, dict):
        raise ValueError("header is not a JSON object")
    return length, header


def file_metadata(path: Path) -> dict[str, str]:
    """The safetensors ``__metadata__`` of ``path``; empty for an unreadable file or one without metadata."""
    try:
        return _string_metadata(_read_header(path)[1])
    except (OSError, ValueError):
        return {}


def _string_metadata(header: Mapping[str, Any]) -> dict[str, str]:
    metadata = header.get("__metadata__")
    if not isinstance(metadata, dict):
        return {}
    return {k: v for k, v in metadata.items() if isinstance(k, str) and isinstance(v, str)}


def _read_tensors(path: Path, label: str) -> dict[str, Any]:
    """Every tensor in the file (non-tensor entries such as a step counter are dropped)."""
    import torch

    if path.suffix.lower() == ".safetensors":
        import safetensors.torch

        try:
            state = safetensors.torch.load_file(str(path), device="cpu")
        except Exception as e:  # SafetensorError has no importable base worth naming: any failure = bad file
            raise UserError(f"LoRA '{label}' ({path.name}) is corrupt: {e}. Re-download it.", field="prompt") from e
    else:
        from modules.engine.models.checkpoint_files import load_pickled_state_dict

        try:
            state = load_pickled_state_dict(path)
        except UserError as e:
            raise UserError(f"LoRA '{label}': {e.message}", field="prompt") from e
    return {k: v for k, v in state.items() if isinstance(v, torch.Tensor)}


def _check_is_lora(label: str, keys: list[str]) -> None:
    if not keys:
        raise UserError(f"LoRA '{label}' is not a LoRA: the file holds no tensors.", field="prompt")
    foreign = [k for k in keys if not _looks_like_lora_key(k)]
    if foreign:
        raise UserError(f"LoRA '{label}' is not a LoRA: {_describe_foreign(keys, foreign)}", field="prompt")
    lycoris = [k for k in keys if any(fragment in k for fragment in _LYCORIS_FRAGMENTS)]
    if lycoris:
        raise UserError(f"LoRA '{label}' is a LyCORIS network (LoHa/LoKr/OFT/LoCon-CP, e.g. '{lycoris[0]}'), "
                        "which cannot be loaded yet; only plain LoRA (and LoCon) files work.", field="prompt")


def _looks_like_lora_key(key: str) -> bool:
    return "lora" in key.lower() or key.endswith((".alpha", ".dora_scale"))


def _describe_foreign(keys: list[str], foreign: list[str]) -> str:
    if any(k.startswith(("model.diffusion_model.", "first_stage_model.", "conditioner.")) for k in keys):
        return "it is a full Stable Diffusion checkpoint; put it in models/Stable-diffusion."
    if any("string_to_param" in k or k in ("emb_params", "clip_l", "clip_g") for k in keys):
        return "it is a textual-inversion embedding; put it in embeddings/."
    return f"it has {len(foreign)} tensors that are not LoRA layers (e.g. '{foreign[0]}')."


def _is_kohya(raw: Mapping[str, Any]) -> bool:
    return all(k.startswith(("lora_unet_", "lora_te_", "lora_te1_", "lora_te2_")) for k in raw)


def _fold_kohya_alphas(raw: dict[str, Any]) -> dict[str, Any]:
    """kohya: ``W + up @ down * (alpha / rank)``; fold the factor into ``lora_up`` and drop the alphas."""
    folded = {k: v for k, v in raw.items() if not k.endswith(".alpha")}
    for key, alpha in raw.items():
        if not key.endswith(".alpha"):
            continue
        base = key[: -len(".alpha")]
        down, up = folded.get(f"{base}.lora_down.weight"), folded.get(f"{base}.lora_up.weight")
        if down is None or up is None:
            continue  # an alpha without its layer: nothing to scale (diffusers ignores it too)
        scale = float(alpha.float().reshape(-1)[0]) / down.shape[0]
        folded[f"{base}.lora_up.weight"] = (up.float() * scale).to(up.dtype)
    return folded


def _convert_to_diffusers(pipe: Any, raw: dict[str, Any], label: str) -> dict[str, Any]:
    """diffusers' own conversion (kohya names, SDXL's SGM block numbers), after folding kohya's alphas."""
    source = _fold_kohya_alphas(raw) if _is_kohya(raw) else dict(raw)
    kwargs: dict[str, Any] = {}
    if _is_sdxl(pipe):
        kwargs["unet_config"] = pipe.unet.config  # maps SGM input_blocks/output_blocks numbering, as diffusers does
    try:
        converted, alphas = pipe.lora_state_dict(source, **kwargs)
    except (ValueError, KeyError, IndexError) as e:
        raise UserError(f"LoRA '{label}' has a layout that cannot be loaded: {str(e).splitlines()[0][:200]}",
                        field="prompt") from e
    if alphas:
        log.debug("LoRA %s: %d alphas left after folding; ignored", label, len(alphas))
    return converted


def _peft_layers(converted: Mapping[str, Any], label: str) -> dict[str, dict[str, Any]]:
    """Split by component and bring every key to ``<module>.lora_A.weight`` / ``lora_B`` form."""
    from diffusers.utils import convert_unet_state_dict_to_peft

    by_component: dict[str, dict[str, Any]] = {}
    for key, tensor in converted.items():
        component, _, rest = key.partition(".")
        if component not in _COMPONENTS or not rest:
            raise UserError(f"LoRA '{label}' has a layer for an unknown part of the model ('{key}').", field="prompt")
        by_component.setdefault(component, {})[rest] = tensor
    layers = {}
    for component, state in by_component.items():
        # The UNet mapping also drops the ".processor." of old attention-processor files.
        renamed = convert_unet_state_dict_to_peft(state) if component == "unet" else _text_encoder_to_peft(state)
        layers[component] = renamed
    return layers


def _text_encoder_to_peft(state: Mapping[str, Any]) -> dict[str, Any]:
    """Text-encoder keys to peft form, key by key.

    diffusers guesses one format for the whole dict (old format only if some key has ``to_out_lora``), which drops
    the ``q/k/v`` layers of files trained without ``out_proj``; renaming each key on its own has no such guess.
    """
    renames = (
        (".to_q_lora.", ".q_proj.lora_"), (".to_k_lora.", ".k_proj.lora_"), (".to_v_lora.", ".v_proj.lora_"),
        (".to_out_lora.", ".out_proj.lora_"), (".lora_linear_layer.", ".lora_"), (".lora.", ".lora_"),
    )
    out = {}
    for key, tensor in state.items():
        for old, new in renames:
            if old in key:
                key = key.replace(old, new)
                break
        key = key.replace(".lora_down.", ".lora_A.").replace(".lora_up.", ".lora_B.")
        out[key] = tensor
    return out


def _fold_metadata_alphas(layers: dict[str, dict[str, Any]], metadata: Mapping[str, str]) -> dict[str, dict[str, Any]]:
    """diffusers-saved files keep ``lora_alpha``/``alpha_pattern`` in ``lora_adapter_metadata``; fold them too."""
    raw = metadata.get("lora_adapter_metadata")
    if not raw:
        return layers
    try:
        config = json.loads(raw)
    except ValueError:
        return layers
    if not isinstance(config, dict):
        return layers
    return {component: _fold_component_alphas(state, _component_config(config, component))
            for component, state in layers.items()}


def _component_config(config: Mapping[str, Any], component: str) -> dict[str, Any]:
    prefix = f"{component}."
    return {k[len(prefix):]: v for k, v in config.items() if k.startswith(prefix)}


def _fold_component_alphas(state: dict[str, Any], config: Mapping[str, Any]) -> dict[str, Any]:
    lora_alpha, alpha_pattern = config.get("lora_alpha"), config.get("alpha_pattern") or {}
    if not isinstance(lora_alpha, (int, float)) and not alpha_pattern:
        return state
    out = dict(state)
    for key, tensor in state.items():
        if not key.endswith(".lora_B.weight"):
            continue
        module = key[: -len(".lora_B.weight")]
        alpha = _pattern_value(module, alpha_pattern, lora_alpha)
        if isinstance(alpha, (int, float)) and tensor.ndim >= 2:
            out[key] = (tensor.float() * (alpha / tensor.shape[1])).to(tensor.dtype)  # rank = lora_B's 2nd dim
    return out


def _pattern_value(module: str, pattern: Mapping[str, Any], default: Any) -> Any:
    """peft's rule for ``alpha_pattern``: a key matches a module name it ends (at a dot), or as a ``^`` regex."""
    for key, value in pattern.items():
        if key.startswith("^"):
            if re.match(key, module):
                return value
        elif module == key or module.endswith(f".{key}"):
            return value
    return default


# -- checking the LoRA against the loaded model ----------------------------------------------------------------


def _fitted(pipe: Any, network: ExtraNetwork, prepared: PreparedLora, model_family: str) -> dict[str, Any]:
    """The flat state dict to load: layers of components with a non-zero multiplier, named as the model names
    its modules.

    Raises:
        UserError: the LoRA was made for another model family (a missing part, layers of other sizes, or most
            layers without a counterpart).
    """
    fitted: dict[str, Any] = {}
    mismatched: list[str] = []
    missing: list[str] = []
    modules_total = 0
    for component, state in prepared.layers.items():
        model = getattr(pipe, component, None)
        if model is None:
            mismatched.append(f"{component} (the loaded checkpoint has none)")
            continue
        match = _match_component(model, state)
        modules_total += match.modules_total
        mismatched += [f"{component}.{m}" for m in match.mismatched]
        missing += [f"{component}.{m}" for m in match.missing]
        multiplier = network.unet_multiplier if component == "unet" else network.te_multiplier
        if multiplier != 0:  # a zero multiplier leaves the component untouched, not merely scaled to 0
            fitted.update({f"{component}.{key}": tensor for key, tensor in match.layers.items()})
    if mismatched or len(missing) * 2 >= max(modules_total, 1):
        raise UserError(_family_message(network.name, prepared.family_hint, model_family, mismatched, missing),
                        field="prompt")
    if missing:
        # A1111 skips keys it cannot match and says so in the console; so do we.
        log.warning("LoRA %s: %d layers have no counterpart in the model and are skipped (e.g. %s)",
                    network.name, len(missing), missing[0])
    return fitted


@dataclass
class _ComponentMatch:
    layers: dict[str, Any]  # renamed to the model's module paths
    mismatched: list[str]  # modules whose sizes differ (or keys that are not LoRA layers)
    missing: list[str]  # modules the model does not have
    modules_total: int


def _match_component(model: Any, state: Mapping[str, Any]) -> _ComponentMatch:
    modules = dict(model.named_modules())
    layers: dict[str, Any] = {}
    bad: dict[str, None] = {}  # dicts as ordered sets
    absent: dict[str, None] = {}
    seen: set[str] = set()
    for key, tensor in state.items():
        cut = key.find(".lora_")
        if cut < 0:
            bad[key] = None
            continue
        module_path, parameter = key[:cut], key[cut + 1:]
        seen.add(module_path)
        resolved = _resolve_module(module_path, modules)
        if resolved is None:
            absent[module_path] = None
        elif not _shape_fits(modules[resolved], parameter, tensor):
            bad[module_path] = None
        else:
            layers[f"{resolved}.{parameter}"] = tensor
    return _ComponentMatch(layers, list(bad), list(absent), len(seen))


def _resolve_module(path: str, modules: Mapping[str, Any]) -> str | None:
    """The module's name in this model: transformers 5 dropped CLIPTextModel's ``text_model.`` level (files keep
    it), while CLIPTextModelWithProjection still has it (new files may lack it)."""
    for candidate in (path, path.removeprefix("text_model."), f"text_model.{path}"):
        if candidate in modules:
            return candidate
    return None


def _shape_fits(module: Any, parameter: str, tensor: Any) -> bool:
    in_size = getattr(module, "in_features", None) or getattr(module, "in_channels", None)
    out_size = getattr(module, "out_features", None) or getattr(module, "out_channels", None)
    if in_size is None or out_size is None or tensor.ndim < 1:
        return False  # peft can only wrap Linear and Conv layers
    if parameter.startswith("lora_A."):
        return tensor.ndim >= 2 and tensor.shape[1] == in_size
    if parameter.startswith("lora_B."):
        return tensor.shape[0] == out_size
    if parameter.startswith("lora_magnitude_vector"):
        return tensor.numel() == out_size
    return False


def _family_message(name: str, hint: str | None, model_family: str, mismatched: list[str], missing: list[str]) -> str:
    if hint and hint != model_family:
        return (f"LoRA '{name}' was made for {hint}; the loaded checkpoint is {model_family}. "
                f"Pick a LoRA made for {model_family}, or load a {hint} checkpoint.")
    example = (mismatched or missing)[0]
    return (f"LoRA '{name}' does not fit the loaded {model_family} checkpoint ({_layers(len(mismatched))} of other "
            f"sizes, {_layers(len(missing))} missing, e.g. {example}); it was probably made for another model family.")


def _layers(count: int) -> str:
    return f"{count} layer" if count == 1 else f"{count} layers"


def _family_from_metadata(metadata: Mapping[str, str]) -> str | None:
    """The family kohya/sd-scripts and modelspec write into the file, as A1111's ``detect_version`` reads it."""
    base = metadata.get("ss_base_model_version", "").lower()
    arch = metadata.get("modelspec.architecture", "").lower()
    if base.startswith("sdxl") or arch.startswith("stable-diffusion-xl"):
        return "SDXL"
    if base.startswith("sd_v2") or metadata.get("ss_v2") == "True" or arch.startswith("stable-diffusion-v2"):
        return "SD2"
    if base.startswith("sd_v1") or arch.startswith("stable-diffusion-v1"):
        return "SD1"
    return None


def _family_from_kohya_keys(raw: Mapping[str, Any]) -> str | None:
    # sd-scripts trains SDXL on its SGM-layout UNet and two text encoders; SD1/SD2 on the diffusers UNet.
    if any(k.startswith(("lora_te2_", *_SGM_UNET_PREFIXES)) for k in raw):
        return "SDXL"
    return None


def _family_from_widths(layers: Mapping[str, Mapping[str, Any]]) -> str | None:
    if "text_encoder_2" in layers:
        return "SDXL"
    for key, tensor in layers.get("unet", {}).items():
        if key.endswith("attn2.to_k.lora_A.weight") and tensor.ndim == 2:
            return _CONTEXT_WIDTH_FAMILY.get(int(tensor.shape[1]))
    return None


# -- small helpers ---------------------------------------------------------------------------------------------


def _is_sdxl(pipe: Any) -> bool:
    return getattr(pipe, "text_encoder_2", None) is not None or hasattr(pipe, "tokenizer_2")

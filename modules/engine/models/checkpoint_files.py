"""Reading checkpoint files safely: tensor names and shapes, one tensor, and the A1111 side files.

`.safetensors` headers are read with `safe_open` (numpy framework, so torch is not imported just to list keys),
which also checks that the file is as long as its header says: a truncated download is caught here with a message
naming the file. Pickled checkpoints (`.ckpt`, `.pt`, `.pth`, `.bin`) are only ever opened with
`torch.load(weights_only=True)`, which refuses any pickle that would call code, so a malicious file is reported,
never run.
"""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from modules.errors import NotFound, UserError

if TYPE_CHECKING:
    import numpy as np

TensorShapes = dict[str, tuple[int, ...]]

SAFETENSORS_SUFFIXES = (".safetensors",)
PICKLE_SUFFIXES = (".ckpt", ".pt", ".pth", ".bin")


def _corrupt(path: Path, detail: object) -> UserError:
    return UserError(f"{path.name} is corrupt or truncated; re-download it. ({detail})", field="checkpoint")


def require_file(path: Path) -> Path:
    """Return `path` if it is a file we know how to read, else raise a UserError saying what is wrong."""
    if not path.exists():
        raise NotFound(f"Checkpoint not found: {path}", field="checkpoint")
    if path.is_file() and path.suffix.lower() not in SAFETENSORS_SUFFIXES + PICKLE_SUFFIXES:
        raise UserError(
            f"{path.name}: unsupported file type {path.suffix!r}; expected .safetensors or .ckpt", field="checkpoint"
        )
    return path


def load_pickled_state_dict(path: Path) -> dict[str, Any]:
    """Load a pickled checkpoint with `weights_only=True`, unwrapping A1111's top-level `"state_dict"`.

    Zip-format files (everything torch has written since 1.6) are memory-mapped, so this reads the index, not the
    gigabytes of weights. Raises UserError when the pickle wants to run code or the file is damaged.
    """
    import pickle

    import torch

    mmap = zipfile.is_zipfile(path)  # the legacy (pre-1.6) format cannot be memory-mapped
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as exc:
        # weights_only refused a global: the file wants to construct objects or call functions on load. That is
        # how malicious .ckpt files work, and also how some old training checkpoints store their callbacks.
        raise UserError(
            f"{path.name} was not loaded: it contains pickled code or objects, not just weights "
            f"(refused: {str(exc).splitlines()[0][:200]}). Only load .ckpt files you trust; prefer .safetensors.",
            field="checkpoint",
        ) from exc
    except (RuntimeError, EOFError, OSError, ValueError, zipfile.BadZipFile) as exc:
        if "weights only" in str(exc).lower():  # how some torch versions word the same refusal
            raise UserError(f"{path.name} was not loaded: it contains pickled code or objects, not just weights. "
                            "Only load .ckpt files you trust; prefer .safetensors.", field="checkpoint") from exc
        raise _corrupt(path, exc) from exc
    # Some trainers nest the weights more than once ({"state_dict": {"state_dict": ...}}).
    while isinstance(loaded, dict) and isinstance(loaded.get("state_dict"), dict):
        loaded = loaded["state_dict"]
    if not isinstance(loaded, dict):
        raise UserError(f"{path.name} does not hold a state dict (found {type(loaded).__name__})", field="checkpoint")
    return loaded


def read_shapes(path: Path) -> TensorShapes:
    """Tensor names and shapes in a checkpoint file, without reading the tensor data where the format allows.

    Raises:
        NotFound: the file does not exist.
        UserError: the file is corrupt, truncated, a refused pickle, or of an unknown type.
    """
    require_file(path)
    if path.suffix.lower() in SAFETENSORS_SUFFIXES:
        from safetensors import safe_open

        try:
            with safe_open(str(path), framework="numpy") as handle:
                return {key: tuple(handle.get_slice(key).get_shape()) for key in handle.keys()}
        except Exception as exc:  # SafetensorError has no importable base class worth naming; any failure = bad file
            raise _corrupt(path, exc) from exc
    state = load_pickled_state_dict(path)
    # Non-tensor entries (a step counter, an epoch number) carry no shape; keep them out of the key analysis.
    return {key: tuple(value.shape) for key, value in state.items() if hasattr(value, "shape")}


def read_tensor(path: Path, key: str) -> np.ndarray | None:
    """One tensor from a checkpoint as a float32 numpy array, or None when the file has no such key.

    Safetensors are read through numpy so that detection does not import torch; bfloat16 (which numpy lacks)
    falls back to torch.
    """
    if path.suffix.lower() in SAFETENSORS_SUFFIXES:
        from safetensors import safe_open

        try:
            with safe_open(str(path), framework="numpy") as handle:
                if key not in handle.keys():
                    return None
                if handle.get_slice(key).get_dtype() != "BF16":
                    return handle.get_tensor(key).astype("float32")
            with safe_open(str(path), framework="pt") as handle:
                return handle.get_tensor(key).float().numpy()
        except Exception as exc:
            raise _corrupt(path, exc) from exc
    value = load_pickled_state_dict(path).get(key)
    return value.float().numpy() if value is not None else None


def sidecar_yaml(path: Path) -> Path | None:
    """`<name>.yaml` beside a checkpoint: A1111's per-checkpoint LDM config override."""
    candidate = path.with_suffix(".yaml")
    return candidate if candidate.is_file() else None


def sidecar_config_dir(path: Path) -> Path | None:
    """`<name>/` beside a checkpoint holding a weightless diffusers config folder (`model_index.json` at its top).

    This is our counterpart of the `.yaml` rule for configs in diffusers layout: it is how checkpoints with custom
    sizes (the tiny test models, or an unusual fine-tune) tell the loader what they are.
    """
    candidate = path.parent / path.stem
    return candidate if (candidate / "model_index.json").is_file() else None


def read_yaml_parameterization(yaml_path: Path) -> str | None:
    """`model.params.parameterization` of an LDM config (A1111 uses `"v"` for v-prediction), if set."""
    import yaml

    try:
        config = yaml.safe_load(yaml_path.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise UserError(f"{yaml_path.name} is not a readable YAML config: {exc}", field="checkpoint") from exc
    if not isinstance(config, dict):
        return None
    params = (config.get("model") or {}).get("params") or {}
    # Also accept a bare top-level key, the short form users write by hand for an override.
    value = params.get("parameterization", config.get("parameterization"))
    return str(value) if value is not None else None

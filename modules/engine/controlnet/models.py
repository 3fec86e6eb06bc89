"""ControlNet models: what `models/ControlNet` holds, finding one by the names clients use, loading it offline,
and a small cache of loaded models on the memory manager's device.

Files are `.safetensors`/`.pth`/`.bin`/`.ckpt` in lllyasviel's original layout or with diffusers keys, and diffusers
folders. `topology.py` reads a file's family and config off its tensor shapes; diffusers' `from_single_file`
then converts the weights with that config (written to the cache folder), so nothing ever asks the hub. A
`<name>/config.json` beside a file overrides the derived config, and lllyasviel's `<name>.yaml` beside a file says
whether it is a global-pooling (shuffle) model.

`models/ControlNet/annotators/` holds the preprocessors' weights, not ControlNets: it is never listed.

Titles follow sd-webui-controlnet: `name [hash]` with A1111's short legacy hash of the file, so infotext written by
that extension finds its model here (the registry's lookup reads names, titles and legacy hashes alike).
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from modules.engine.controlnet.topology import (
    LDM_PREFIX,
    base_family,
    family_from_config,
    family_label,
    strip_prefix,
    topology_from_shapes,
)
from modules.errors import NotFound, UserError
from modules.model_registry import ModelFile, ModelRegistry, legacy_hash

if TYPE_CHECKING:
    import torch

    from modules.engine.controlnet.annotators import Annotators

log = logging.getLogger(__name__)

KIND = "ControlNet"
ANNOTATORS_FOLDER = "annotators"
DEFAULT_CACHE_SIZE = 2  # sd-webui-controlnet's default model cache size
_SAFETENSORS = ".safetensors"


@dataclass(frozen=True)
class LoadedControlNet:
    """A ControlNet ready to run: its file, sd-webui-controlnet title, family and the diffusers model."""

    file: ModelFile
    title: str
    family: str  # "sd1", "sd2" or "sdxl"
    reason: str  # how the family was decided
    model: Any  # diffusers.ControlNetModel

    @property
    def name(self) -> str:
        return self.file.basename


# -- the folder ---------------------------------------------------------------------------------------------------


def is_annotator_file(model: ModelFile) -> bool:
    """True for anything under `models/ControlNet/annotators/` (preprocessor weights, not ControlNets)."""
    return model.name.split("/", 1)[0].casefold() == ANNOTATORS_FOLDER


def annotators_folder(registry: ModelRegistry) -> Path:
    """Where the preprocessors' weights go: `models/ControlNet/annotators`."""
    return registry.kind(KIND).folders[0] / ANNOTATORS_FOLDER


def list_controlnets(registry: ModelRegistry) -> list[ModelFile]:
    """The ControlNet models, sorted by name; the annotators folder left out."""
    return [m for m in registry.list(KIND) if not is_annotator_file(m)]


def controlnet_title(registry: ModelRegistry, model: ModelFile) -> str:
    """sd-webui-controlnet's title: `name [legacy hash]`; a folder gets its cached short hash, if any."""
    if not registry.hashing_enabled:
        return model.basename
    if model.is_dir:
        short = registry.shorthash(model, compute=False)
        return f"{model.basename} [{short[:8]}]" if short else model.basename
    try:
        return f"{model.basename} [{legacy_hash(model.filename)}]"
    except OSError:
        return model.basename


def controlnet_titles(registry: ModelRegistry) -> list[str]:
    """Every ControlNet's title, for the UI's model list and the API's `/controlnet/model_list`."""
    return [controlnet_title(registry, m) for m in list_controlnets(registry)]


def find_controlnet(registry: ModelRegistry, query: str, field: str = "controlnet") -> ModelFile:
    """The model `query` names: a title (`name [hash]`), name, file name or hash, as for checkpoints.

    Raises:
        NotFound: no such model; the message lists the available ones (or says where to put them).
    """
    found = registry.find(KIND, query)
    if found is not None and not is_annotator_file(found):
        return found
    available = list_controlnets(registry)
    if not available:
        folder = registry.kind(KIND).folders[0]
        raise NotFound(f"unknown ControlNet model '{query}': there are none; put ControlNet models (.safetensors, "
                       f".pth or diffusers folders) in {folder}", field=field)
    names = ", ".join(m.basename for m in available[:30])
    raise NotFound(f"unknown ControlNet model '{query}'; available: {names}", field=field)


def check_family(controlnet: LoadedControlNet, checkpoint_name: str, checkpoint_family: str) -> None:
    """Refuse a ControlNet made for another model family than the checkpoint's (the shapes would not fit)."""
    if base_family(checkpoint_family) == controlnet.family:
        return
    cn, ckpt = family_label(controlnet.family), family_label(checkpoint_family)
    raise UserError(f"ControlNet '{controlnet.name}' is made for {cn}, but the checkpoint '{checkpoint_name}' is "
                    f"{ckpt}; choose a ControlNet made for {ckpt}, or switch to an {cn} checkpoint",
                    field="controlnet")


# -- loading ------------------------------------------------------------------------------------------------------


def load_controlnet(model: ModelFile, cache_dir: Path, dtype: torch.dtype | None = None) -> tuple[Any, str, str]:
    """Load a ControlNet offline as a diffusers `ControlNetModel` (on the CPU).

    Returns:
        (model, family, reason): family is "sd1", "sd2" or "sdxl"; reason says how it was decided.

    Raises:
        UserError: not a ControlNet, corrupt or refused file, or weights that do not fit the config.
    """
    if model.is_dir:
        return _load_folder(model.filename, dtype)
    return _load_file(model.filename, cache_dir, dtype)


def _load_folder(folder: Path, dtype: torch.dtype | None) -> tuple[Any, str, str]:
    from diffusers import ControlNetModel

    try:
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise UserError(f"{folder.name}/config.json is missing or not valid JSON: {e}", field="controlnet") from None
    if config.get("_class_name") not in (None, "ControlNetModel"):
        raise UserError(f"{folder.name} holds a {config.get('_class_name')}, not a ControlNet model this app can run",
                        field="controlnet")
    family, reason = family_from_config(config)
    weights = {p.name for p in folder.iterdir()}
    variant = None
    if not any(n.startswith("diffusion_pytorch_model.") and n.count(".") == 1 for n in weights):
        variant = "fp16" if any(".fp16." in n for n in weights) else None
    try:
        net = ControlNetModel.from_pretrained(str(folder), local_files_only=True, torch_dtype=dtype, variant=variant)
    except (OSError, ValueError, RuntimeError, KeyError, TypeError) as e:
        raise UserError(f"The ControlNet folder {folder.name} could not be loaded: {_first_line(e)}",
                        field="controlnet") from None
    return net, family, f"diffusers folder; {reason}"


def _load_file(path: Path, cache_dir: Path, dtype: torch.dtype | None) -> tuple[Any, str, str]:
    from diffusers import ControlNetModel

    from modules.engine.models import checkpoint_files

    shapes = _refield(lambda: checkpoint_files.read_shapes(path))
    topology = topology_from_shapes(shapes, path.name, _global_pool(path))
    beside = path.parent / path.stem
    if (beside / "config.json").is_file():
        config_dir = beside
    elif topology.unsure:
        raise UserError(f"{path.name} cannot be loaded with a derived config: {topology.unsure}. Put its diffusers "
                        f"config.json in a folder {beside}", field="controlnet")
    else:
        config_dir = _write_config(cache_dir, topology.config)
    # diffusers converts lllyasviel's layout but drops SDXL's size embedding (`label_emb`) on the way; such a file
    # is loaded from its state dict without the meta-device shortcut, and that embedding is copied in after.
    own = strip_prefix(shapes)
    needs_label_emb = topology.layout == "ldm" and "label_emb.0.0.weight" in own
    source: Any = str(path)
    if needs_label_emb or path.suffix.lower() != _SAFETENSORS:
        source = _refield(lambda: _state_dict(path))  # pickles only ever through the weights-only loader
    kwargs: dict[str, Any] = {"config": str(config_dir), "local_files_only": True, "torch_dtype": dtype}
    if needs_label_emb:
        kwargs["low_cpu_mem_usage"] = False
    try:
        net = ControlNetModel.from_single_file(source, **kwargs)
        if needs_label_emb:
            _copy_label_emb(net, source)
    except (ValueError, RuntimeError, KeyError, IndexError, TypeError, OSError) as e:
        raise UserError(f"{path.name} could not be loaded as a ControlNet with the config in {config_dir}: "
                        f"{_first_line(e)}", field="controlnet") from None
    _require_complete(net, path)
    return net, topology.family, topology.reason


def _state_dict(path: Path) -> dict[str, Any]:
    if path.suffix.lower() == _SAFETENSORS:
        from safetensors.torch import load_file

        return load_file(str(path))
    from modules.engine.models.checkpoint_files import load_pickled_state_dict

    return load_pickled_state_dict(path)


def _copy_label_emb(net: Any, state: dict[str, Any]) -> None:
    import torch

    prefix = LDM_PREFIX if any(k.startswith(LDM_PREFIX) for k in state) else ""
    pairs = {"linear_1": "label_emb.0.0", "linear_2": "label_emb.0.2"}
    with torch.no_grad():
        for layer, ldm in pairs.items():
            target = getattr(net.add_embedding, layer)
            target.weight.copy_(state[f"{prefix}{ldm}.weight"])
            target.bias.copy_(state[f"{prefix}{ldm}.bias"])


def _require_complete(net: Any, path: Path) -> None:
    missing = [key for key, value in net.state_dict().items() if value.is_meta]
    if missing:
        raise UserError(f"{path.name} has no weights for part of the ControlNet (e.g. {missing[0]}); the file is "
                        "incomplete or of a kind this app cannot load", field="controlnet")


def _global_pool(path: Path) -> bool:
    """Whether the model pools its control globally (the shuffle model): its `.yaml`, else its name."""
    yaml_path = path.with_suffix(".yaml")
    if yaml_path.is_file():
        import yaml

        try:
            data = yaml.safe_load(yaml_path.read_text(encoding="utf-8")) or {}
            params = data["model"]["params"]["control_stage_config"]["params"]
            return bool(params.get("global_average_pooling", False))
        except (OSError, ValueError, KeyError, TypeError, yaml.YAMLError):
            log.warning("could not read %s; deciding global pooling by the name", yaml_path.name)
    return "shuffle" in path.stem.lower()


def _write_config(cache_dir: Path, config: dict[str, Any]) -> Path:
    """A config folder for `config` in the cache, named by its content so equal configs share one folder."""
    from modules import atomic

    text = json.dumps(config, sort_keys=True, indent=1)
    folder = Path(cache_dir) / "controlnet-configs" / hashlib.sha256(text.encode()).hexdigest()[:12]
    target = folder / "config.json"
    if not target.is_file():
        folder.mkdir(parents=True, exist_ok=True)
        atomic.write_text(target, text)
    return folder


def _refield(read: Any) -> Any:
    """Run a checkpoint-file reader, reporting its errors against the ControlNet field."""
    try:
        return read()
    except UserError as e:
        raise type(e)(e.message, field="controlnet") from None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:300] if text else type(exc).__name__


# -- the cache ----------------------------------------------------------------------------------------------------


class ControlNetCache:
    """Loaded ControlNets, least recently used dropped first, held on the memory manager's device and dtype.

    Also owns the preprocessors' annotator cache (`annotators`), so one object holds everything ControlNet keeps
    in memory and `unload()` frees it all.
    """

    def __init__(self, registry: ModelRegistry, memory: Any, cache_dir: Path, size: int = DEFAULT_CACHE_SIZE) -> None:
        self._registry = registry
        self._memory = memory
        self._cache_dir = Path(cache_dir)
        self._size = max(1, size)
        self._loaded: OrderedDict[tuple[str, float], LoadedControlNet] = OrderedDict()
        self._lock = threading.Lock()  # held while a model loads
        self._annotators_lock = threading.Lock()  # separate: a UI preview must not wait for a model load
        self._annotators: Annotators | None = None

    @property
    def registry(self) -> ModelRegistry:
        return self._registry

    def titles(self) -> list[str]:
        """The models on disk, as sd-webui-controlnet titles them."""
        return controlnet_titles(self._registry)

    def loaded(self) -> list[str]:
        """Titles of the models in memory, least recently used first."""
        with self._lock:
            return [entry.title for entry in self._loaded.values()]

    def get(self, query: str, field: str = "controlnet") -> LoadedControlNet:
        """The model `query` names, loaded on the device (from the cache when it is there)."""
        model = find_controlnet(self._registry, query, field)
        key = (str(model.filename), model.mtime)
        with self._lock:
            hit = self._loaded.get(key)
            if hit is not None:
                self._loaded.move_to_end(key)
                return hit
            while len(self._loaded) >= self._size:
                _, dropped = self._loaded.popitem(last=False)
                log.info("dropping ControlNet %s from the cache", dropped.title)
            net, family, reason = load_controlnet(model, self._cache_dir, dtype=self._memory.dtype)
            net.to(self._memory.device).eval().requires_grad_(False)
            entry = LoadedControlNet(model, controlnet_title(self._registry, model), family, reason, net)
            log.info("loaded ControlNet %s (%s: %s)", entry.title, family, reason)
            self._loaded[key] = entry
            return entry

    @property
    def annotators(self) -> Annotators:
        """The preprocessors' weights folder and their loaded detectors."""
        from modules.engine.controlnet.annotators import Annotators

        with self._annotators_lock:
            if self._annotators is None:
                self._annotators = Annotators(annotators_folder(self._registry))
            return self._annotators

    def unload(self) -> None:
        """Free every loaded ControlNet and annotator."""
        with self._lock:
            self._loaded.clear()
        with self._annotators_lock:
            if self._annotators is not None:
                self._annotators.unload()
        self._memory.collect()

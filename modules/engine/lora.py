"""LoRA from A1111 prompt tags: find the file, convert it, apply it to the pipeline for one job, then remove it.

This module holds the job-facing side: finding a tag's file, applying and removing the adapters, the cache and the
public helpers (:func:`apply_loras`, :func:`find_lora`, :func:`lora_hashes_infotext`, :func:`lora_layer_count`).
Reading, converting and checking LoRA files and hashing them (steps 2-4 below) live in
:mod:`modules.engine.lora_files`; :class:`PreparedLora`, :func:`prepare_lora`, :func:`addnet_hash` and
``HASH_LENGTH`` are re-exported here, so they can still be imported from this module.

How a job uses it::

    prompt, networks = extract_extra_networks(request.prompt)
    with apply_loras(pipe, networks, registry, cache=lora_cache, family=model.family) as applied:
        ...  # encode the prompts and denoise inside the block
    params["Lora hashes"] = lora_hashes_infotext(applied)

What happens, in order:

1. **Find.** ``<lora:name:te:unet>`` (and A1111's ``lyco`` alias) is looked up in the registry's ``Lora`` kind by
   everything the registry accepts (the name with folders, the file stem, the file name), then by the alias A1111
   shows (``ss_output_name`` in the safetensors metadata); on a miss the folder is rescanned once, as A1111 does.
   Every tag is found, read and checked before the model is touched, so a typo costs nothing; the error lists
   close matches.
2. **Read.** ``.safetensors`` directly; ``.pt``/``.ckpt`` only with ``torch.load(weights_only=True)``.
3. **Convert.** kohya's ``alpha`` is folded into ``lora_up`` (A1111 computes ``W + up @ down * alpha / rank``, so
   ``up * alpha / rank`` is the same product), then diffusers' ``lora_state_dict`` translates kohya/SGM names to
   diffusers ones, and every layer is brought to peft's ``<module>.lora_A/lora_B`` layout. With no alphas left,
   diffusers gives each layer ``lora_alpha == rank`` (scale 1), which sidesteps its alpha-pattern guessing (it
   misses the flattened text encoder of transformers 5 and text-encoder files without ``out_proj`` layers).
4. **Check.** Every layer must exist in the loaded model with the same sizes. A LoRA for another family fails
   with "made for SDXL; the loaded checkpoint is SD1" instead of a shape error deep inside peft. (A few layers
   without a counterpart are skipped with a warning, as A1111 skips keys it cannot match.) Only then is the file
   hashed for "Lora hashes", so a checkpoint dropped into the Lora folder is refused without reading it all.
5. **Apply.** ``pipe.load_lora_weights(state_dict, adapter_name=...)`` per tag, then one ``pipe.set_adapters``
   with per-component weights: ``unet`` gets the tag's UNet multiplier, ``text_encoder``/``text_encoder_2`` its
   text-encoder multiplier (A1111 uses ``te`` for both SDXL encoders). A component whose multiplier is 0 gets no
   LoRA layers at all, so it stays bit-for-bit the base model.
6. **Remove.** On exit, also after an exception, ``pipe.unload_lora_weights()``. peft wraps the base layers
   without changing their weights (nothing is fused), so removing the wrappers gives back the very same modules
   and tensors. (The style guide prefers patching a clone; a clone of a whole SDXL UNet would double its memory,
   and exact restoration gives the same guarantee, because one job worker owns the pipeline at a time.)

Caching: converting a LoRA means reading the whole file and renaming hundreds of keys. :class:`LoraCache` keeps the
converted layers of the last ``max_entries`` (default 8) files, keyed by real path, size and mtime, so a LoRA used
job after job is read once; an edited file has a new mtime and is read again. The engine should hold one cache for
its lifetime. Its memory cost is the LoRA files' size (typically 10-200 MB each). It also remembers the "addnet"
hashes and A1111 aliases of files it has seen, by the same key.

Importing this module (or :mod:`modules.engine.lora_files`) imports neither torch nor diffusers.
"""

from __future__ import annotations

import difflib
import logging
import threading
import warnings
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from modules.engine.lora_files import (
    HASH_LENGTH,
    PreparedLora,
    _file_key,
    _FileKey,
    _fitted,
    _is_sdxl,
    _metadata_hash,
    addnet_hash,
    file_metadata,
    prepare_lora,
)
from modules.engine.prompts.extra_networks import LORA_KINDS, ExtraNetwork
from modules.errors import UserError

if TYPE_CHECKING:
    import torch

    from modules.model_registry import ModelFile, ModelRegistry

log = logging.getLogger(__name__)

KIND = "Lora"
DEFAULT_CACHE_ENTRIES = 8
_ADAPTER_PREFIX = "sdstudio_lora_"  # peft keeps adapters in ModuleDicts, so no dots
_SIDE_CACHE_LIMIT = 4096  # hashes and aliases: a few dozen bytes each, trimmed oldest-first past this


@dataclass(frozen=True)
class AppliedLora:
    """A LoRA that was active during the job.

    Attributes:
        name: The name as written in the prompt tag (A1111 writes this one into "Lora hashes").
        path: The file that was loaded.
        te_multiplier: Strength on the text encoder(s).
        unet_multiplier: Strength on the UNet.
        short_hash: A1111's "Lora hashes" value: the first 12 hex digits of the kohya "addnet" hash (sha256 of a
            safetensors file's tensor data, header excluded) or, for pickled files, of the whole file's sha256.
            None when hashing is off (``--no-hashing``) and the file carries no ``sshs_model_hash``.
    """

    name: str
    path: Path
    te_multiplier: float
    unet_multiplier: float
    short_hash: str | None


class LoraCache:
    """Converted LoRAs of the last ``max_entries`` files, plus the hashes and aliases of files seen.

    Keys are (real path, size, mtime_ns), so an edited or replaced file is read again. Thread-safe.
    """

    def __init__(self, max_entries: int = DEFAULT_CACHE_ENTRIES) -> None:
        if max_entries < 0:
            raise ValueError("max_entries must be >= 0")
        self.max_entries = max_entries
        self.hits = 0
        self.misses = 0
        self._lock = threading.Lock()
        self._prepared: OrderedDict[tuple[_FileKey, str], PreparedLora] = OrderedDict()
        self._hashes: OrderedDict[_FileKey, str] = OrderedDict()
        self._aliases: OrderedDict[_FileKey, str | None] = OrderedDict()

    def prepared(self, key: tuple[_FileKey, str]) -> PreparedLora | None:
        """The converted LoRA for ``(file key, pipeline layout)``, or None; counts hits and misses."""
        with self._lock:
            hit = self._prepared.get(key)
            if hit is None:
                self.misses += 1
                return None
            self.hits += 1
            self._prepared.move_to_end(key)
            return hit

    def store(self, key: tuple[_FileKey, str], value: PreparedLora) -> None:
        """Remember a converted LoRA, dropping the least recently used one beyond ``max_entries``."""
        with self._lock:
            self._prepared[key] = value
            self._prepared.move_to_end(key)
            while len(self._prepared) > self.max_entries:
                self._prepared.popitem(last=False)

    def addnet_hash(self, key: _FileKey) -> str | None:
        with self._lock:
            return self._hashes.get(key)

    def store_addnet_hash(self, key: _FileKey, value: str) -> None:
        with self._lock:
            _bounded_put(self._hashes, key, value)

    def alias(self, key: _FileKey) -> tuple[bool, str | None]:
        """``(known, alias)``: whether the alias of this file version was read before, and what it was."""
        with self._lock:
            if key in self._aliases:
                return True, self._aliases[key]
            return False, None

    def store_alias(self, key: _FileKey, value: str | None) -> None:
        with self._lock:
            _bounded_put(self._aliases, key, value)

    def clear(self) -> None:
        """Forget everything (e.g. after the user deleted LoRA files and wants the memory back)."""
        with self._lock:
            self._prepared.clear()
            self._hashes.clear()
            self._aliases.clear()


def _bounded_put(store: OrderedDict[Any, Any], key: Any, value: Any) -> None:
    store[key] = value
    store.move_to_end(key)
    while len(store) > _SIDE_CACHE_LIMIT:
        store.popitem(last=False)


# -- public API ------------------------------------------------------------------------------------------------


def apply_loras(
    pipe: Any,
    networks: Sequence[ExtraNetwork],
    registry: ModelRegistry,
    *,
    cache: LoraCache | None = None,
    family: str | None = None,
) -> AbstractContextManager[list[AppliedLora]]:
    """Apply the job's ``<lora:...>`` tags to ``pipe`` for the duration of a ``with`` block.

    Args:
        pipe: A diffusers SD/SDXL pipeline (it must have diffusers' LoRA loader mixin).
        networks: The tags from :func:`extract_extra_networks`; kinds other than ``lora``/``lyco`` are ignored.
        registry: The model registry; LoRA files are looked up in its ``Lora`` kind.
        cache: Where converted LoRAs are kept between jobs; without one every job reads its files again.
        family: The loaded checkpoint's family (``sd1``, ``sd2-v``, ``sdxl-inpaint``...), used in messages; guessed
            from the pipeline when None.

    Returns:
        A context manager yielding one :class:`AppliedLora` per LoRA tag, in prompt order. On exit (normal or
        exception) every LoRA layer is removed and the pipeline is exactly as before.

    Raises:
        UserError: (when entering) a LoRA that is not installed (with close matches), a file that is not a LoRA,
            a LyCORIS variant that cannot be loaded, or a LoRA made for another model family. Nothing has been
            changed on the pipeline when it is raised.
    """
    return _applied(pipe, [n for n in networks if n.kind in LORA_KINDS], registry, cache, family)


def lora_hashes_infotext(applied: Sequence[AppliedLora]) -> str | None:
    """A1111's "Lora hashes" infotext value, ``"name: 0123456789ab, other: ba9876543210"``, or None if empty.

    As A1111, the name is the one written in the prompt with ``:`` and ``,`` removed, and LoRAs without a hash
    are left out. The infotext writer quotes the value (it contains ``:`` and ``,``).
    """
    parts = [f"{_infotext_name(a.name)}: {a.short_hash}" for a in applied if a.short_hash and _infotext_name(a.name)]
    return ", ".join(parts) or None

# -- the context manager ---------------------------------------------------------------------------------------


@contextmanager
def _applied(
    pipe: Any, networks: list[ExtraNetwork], registry: ModelRegistry, cache: LoraCache | None, family: str | None
) -> Iterator[list[AppliedLora]]:
    if not networks:
        yield []
        return
    import torch

    # 1. Find every file first: a typo in the third tag must not leave two LoRAs half-applied.
    files = [find_lora(registry, network.name, cache) for network in networks]
    # 2.-4. Read, convert and check every LoRA before the first one touches the model. Outside inference mode
    # (also below), so that cached tensors and LoRA parameters are ordinary tensors whatever the caller's mode:
    # peft cannot make parameters of inference tensors.
    layout = "sdxl" if _is_sdxl(pipe) else "sd"
    model_family = _pipeline_family(pipe, family)
    with torch.inference_mode(False):
        state_dicts = [
            _fitted(pipe, n, _prepare_cached(pipe, n.name, f, layout, cache), model_family)
            for n, f in zip(networks, files, strict=True)
        ]
    # Hashed only now: a checkpoint put in the Lora folder by mistake is refused without reading its gigabytes.
    applied = [
        AppliedLora(n.name, f.filename, n.te_multiplier, n.unet_multiplier, _short_hash(registry, f, cache))
        for n, f in zip(networks, files, strict=True)
    ]
    _remove_stale_adapters(pipe)
    try:
        with torch.inference_mode(False):
            # 5. Load and weight.
            names = _load_adapters(pipe, state_dicts)
            _set_weights(pipe, names, networks)
        log.info("applied LoRA %s", ", ".join(f"{a.name} (te {a.te_multiplier}, unet {a.unet_multiplier})"
                                              for a in applied))
        yield applied
    finally:
        # 6. Remove, also after an exception: the next job must see the base model.
        pipe.unload_lora_weights()


def _load_adapters(pipe: Any, state_dicts: list[dict[str, Any]]) -> list[str | None]:
    """Load each LoRA as its own adapter; None for a tag whose multipliers are both 0 (nothing to load)."""
    names: list[str | None] = []
    for index, state_dict in enumerate(state_dicts):
        if not state_dict:
            names.append(None)
            continue
        name = f"{_ADAPTER_PREFIX}{index}"
        with warnings.catch_warnings():
            # peft warns when a second adapter joins a model; several LoRAs per job are the point here.
            warnings.filterwarnings("ignore", message="Already found a `peft_config` attribute")
            # low_cpu_mem_usage=False: peft copies the weights into its own parameters, so the tensors in the
            # cache are never shared with (or moved along with) the model.
            pipe.load_lora_weights(state_dict, adapter_name=name, low_cpu_mem_usage=False)
        names.append(name)
    return names


def _set_weights(pipe: Any, names: list[str | None], networks: list[ExtraNetwork]) -> None:
    """One ``set_adapters`` call with A1111's two multipliers as diffusers' per-component weights."""
    present = pipe.get_list_adapters()  # {"unet": [...], "text_encoder": [...]}
    active: list[str] = []
    weights: list[dict[str, float]] = []
    for name, network in zip(names, networks, strict=True):
        if name is None:
            continue
        per_component: dict[str, float] = {}
        for component, adapters in present.items():
            if name in adapters:
                unet = component == "unet"
                per_component[component] = network.unet_multiplier if unet else network.te_multiplier
        active.append(name)
        weights.append(per_component)
    if active:
        pipe.set_adapters(active, adapter_weights=weights)


def _remove_stale_adapters(pipe: Any) -> None:
    """A pipeline should never carry adapters between jobs; if one does (a crash mid-cleanup), drop it."""
    if any(pipe.get_list_adapters().values()):
        log.warning("pipeline still had LoRA adapters %s from an earlier job; removing them", pipe.get_list_adapters())
        pipe.unload_lora_weights()


# -- finding ---------------------------------------------------------------------------------------------------


def find_lora(registry: ModelRegistry, name: str, cache: LoraCache | None = None) -> ModelFile:
    """The LoRA file that a prompt tag names: by name/file name (registry rules), else by unique A1111 alias.

    A name that is not found makes the ``Lora`` folder be scanned again first, as A1111 does, so a file copied
    there a moment ago works without pressing "refresh".

    Raises:
        UserError: not found (the message lists close matches), or an alias shared by several files.
    """
    found = _find_once(registry, name, cache)
    if found is None:
        registry.refresh(KIND)
        found = _find_once(registry, name, cache)
    if found is None:
        raise UserError(_not_found_message(registry, name, registry.list(KIND), cache), field="prompt")
    return found


def _find_once(registry: ModelRegistry, name: str, cache: LoraCache | None) -> ModelFile | None:
    # compute_hashes=False: a hex-looking name must not make us hash every LoRA on disk.
    found = registry.find(KIND, name, compute_hashes=False)
    if found is not None:
        return found
    by_alias = [f for f in registry.list(KIND) if _alias(f, cache) == name]
    if len(by_alias) > 1:
        raise UserError(f"LoRA '{name}' is ambiguous: it is the alias of {', '.join(f.name for f in by_alias)}. "
                        "Use the file name in the tag instead.", field="prompt")
    return by_alias[0] if by_alias else None


def _not_found_message(registry: ModelRegistry, name: str, files: list[ModelFile], cache: LoraCache | None) -> str:
    candidates: dict[str, None] = {}  # ordered set
    for f in files:
        for candidate in (f.name, f.basename, _alias(f, cache)):
            if candidate:
                candidates[candidate] = None
    close = difflib.get_close_matches(name, list(candidates), n=3, cutoff=0.6)
    folder = registry.kind(KIND).folders[0]
    if close:
        return f"LoRA '{name}' not found. Did you mean: {', '.join(close)}?"
    if not files:
        return f"LoRA '{name}' not found: no LoRA is installed. Put LoRA files in {folder}."
    return f"LoRA '{name}' not found in {folder} ({len(files)} LoRA files installed, none with a similar name)."


def _alias(model: ModelFile, cache: LoraCache | None) -> str | None:
    """A1111's alias: ``ss_output_name`` from the safetensors metadata; None for other files or without one."""
    if model.filename.suffix.lower() != ".safetensors":
        return None
    try:
        key = _file_key(model.filename)
    except OSError:
        return None
    known, alias = cache.alias(key) if cache is not None else (False, None)
    if known:
        return alias
    alias = file_metadata(model.filename).get("ss_output_name") or None
    if cache is not None:
        cache.store_alias(key, alias)
    return alias


# -- hashes ----------------------------------------------------------------------------------------------------


def _short_hash(registry: ModelRegistry, model: ModelFile, cache: LoraCache | None) -> str | None:
    """A1111's 12-hex LoRA hash: addnet hash for safetensors, whole-file sha256 for pickles (cached both)."""
    safetensors = model.filename.suffix.lower() == ".safetensors"
    if not registry.hashing_enabled:
        # A1111 with --no-hashing still shows the hash kohya stored in the file.
        return _metadata_hash(model.filename) if safetensors else None
    if not safetensors:
        sha = registry.sha256(model)
        return sha[:HASH_LENGTH] if sha else None
    try:
        key = _file_key(model.filename)
        digest = cache.addnet_hash(key) if cache is not None else None
        if digest is None:
            digest = addnet_hash(model.filename)
            if cache is not None:
                cache.store_addnet_hash(key, digest)
    except OSError as e:
        log.warning("cannot hash LoRA %s: %s", model.filename, e)
        return None
    return digest[:HASH_LENGTH]


def _infotext_name(name: str) -> str:
    return name.replace(":", "").replace(",", "")


# -- converting, through the cache -----------------------------------------------------------------------------


def _prepare_cached(pipe: Any, label: str, model: ModelFile, layout: str, cache: LoraCache | None) -> PreparedLora:
    try:
        key = (_file_key(model.filename), layout)
    except OSError as e:
        raise UserError(f"LoRA '{label}' cannot be read: {e}", field="prompt") from e
    hit = cache.prepared(key) if cache is not None else None
    if hit is not None:
        return hit
    prepared = prepare_lora(pipe, model.filename, label)
    if cache is not None:
        cache.store(key, prepared)
    return prepared


# -- small helpers ---------------------------------------------------------------------------------------------


def _pipeline_family(pipe: Any, family: str | None) -> str:
    """"SD1", "SD2" or "SDXL" for messages: from the checkpoint's family when known, else from the pipeline."""
    if family:
        for prefix, label in (("sdxl", "SDXL"), ("sd2", "SD2"), ("sd1", "SD1")):
            if family.startswith(prefix):
                return label
        return family
    if _is_sdxl(pipe):
        return "SDXL"
    width = getattr(pipe.unet.config, "cross_attention_dim", None)
    return "SD2" if width == 1024 else "SD1"


def lora_layer_count(model: torch.nn.Module) -> int:
    """How many peft LoRA layers ``model`` holds now (0 for a clean model); for tests and diagnostics."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    return sum(1 for module in model.modules() if isinstance(module, BaseTunerLayer))

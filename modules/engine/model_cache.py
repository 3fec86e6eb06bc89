"""The loaded checkpoint. One at a time: switching frees the old pipeline before loading the next, so RAM and
VRAM stay flat over any number of switches (A1111's #2180 and #5691 are the bugs this avoids)."""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from modules.errors import NotFound, UserError
from modules.model_registry import ModelFile, ModelRegistry

log = logging.getLogger(__name__)
KIND = "Stable-diffusion"


BESIDE_VAE_SUFFIXES = (".vae.safetensors", ".vae.pt", ".vae.ckpt")


@dataclass
class LoadedCheckpoint:
    file: ModelFile
    title: str
    shorthash: str | None
    family: str
    pipe: Any
    scheduler_config: dict[str, Any]  # the checkpoint's own scheduler settings, before any sampler change
    vae_path: Path | None = None  # a separate VAE file, or None for the checkpoint's own
    vae_hash: str | None = None

    @property
    def vae_name(self) -> str | None:
        """A1111's `VAE:` infotext value: the VAE file name."""
        return self.vae_path.name if self.vae_path else None

    @property
    def name(self) -> str:
        """A1111's `Model:` infotext value (its name_for_extra): the file name without folder or extension."""
        return self.file.basename


class CheckpointCache:
    def __init__(self, registry: ModelRegistry, memory: Any, cache_dir: Path, default: Any,
                 default_vae: Any = lambda: "Automatic") -> None:
        """`default()` returns the checkpoint to use when a request names none (setting or --ckpt);
        `default_vae()` the VAE choice when a request names none (the sd_vae setting)."""
        self._registry = registry
        self._memory = memory
        self._cache_dir = cache_dir
        self._default = default
        self._default_vae = default_vae
        self._current: LoadedCheckpoint | None = None
        self._lock = threading.Lock()

    @property
    def current(self) -> LoadedCheckpoint | None:
        return self._current

    def get(self, query: str | None, vae: str | None = None) -> LoadedCheckpoint:
        """The loaded checkpoint for `query` (title, name, file name or hash) with the VAE choice `vae`
        ("Automatic", "None" or a file in models/VAE), loading it if needed."""
        model = self._find(query or self._default())
        vae_path = self.resolve_vae(vae or self._default_vae(), model)
        with self._lock:
            current = self._current
            if current is not None and current.file.filename == model.filename and current.vae_path == vae_path:
                return current
            self._unload_locked()
            self._current = self._load(model, vae_path)
            return self._current

    def resolve_vae(self, choice: str, model: ModelFile) -> Path | None:
        """A1111's VAE rule: "None" is the checkpoint's own; "Automatic" is `<ckpt>.vae.safetensors` beside
        the checkpoint, else a same-named file in models/VAE, else the checkpoint's own; anything else names a
        file in models/VAE."""
        if choice == "None":
            return None
        if choice == "Automatic":
            if model.is_dir:
                return None
            stem = model.filename.name[: -len(model.filename.suffix)] if model.filename.suffix else model.filename.name
            for suffix in BESIDE_VAE_SUFFIXES:
                beside = model.filename.with_name(stem + suffix)
                if beside.is_file():
                    return beside
            same_name = self._registry.find("VAE", stem, compute_hashes=False)
            return same_name.filename if same_name else None
        found = self._registry.find("VAE", choice, compute_hashes=False)
        if found is None:
            names = ", ".join(f.name for f in self._registry.list("VAE")) or "none"
            raise NotFound(f"unknown VAE '{choice}'; use Automatic, None or one of: {names}", field="vae")
        return found.filename

    def unload(self) -> None:
        with self._lock:
            self._unload_locked()

    def _find(self, query: str | None) -> ModelFile:
        files = self._registry.list(KIND)
        if not files:
            folder = self._registry.kind(KIND).folders[0]
            raise NotFound(f"No checkpoint found. Put a Stable Diffusion .safetensors or .ckpt file (or a diffusers "
                           f"folder) in {folder}, or use 'Download default model'.", field="checkpoint")
        if not query:
            return files[0]
        model = self._registry.find(KIND, query)
        if model is None:
            names = ", ".join(f.name for f in files[:20])
            raise NotFound(f"unknown checkpoint '{query}'; available: {names}", field="checkpoint")
        return model

    def _load(self, model: ModelFile, vae_path: Path | None) -> LoadedCheckpoint:
        from modules.engine.models.families import detect_checkpoint
        from modules.engine.models.single_file import load_checkpoint, load_vae

        info = detect_checkpoint(model.filename)
        log.info("loading checkpoint %s (%s)%s", model.name, info.family, f" with VAE {vae_path.name}" if vae_path else "")
        try:
            pipe = load_checkpoint(model.filename, self._cache_dir, dtype=self._memory.dtype)
            if vae_path is not None:
                # Swapped in before the memory policy runs, so the new VAE gets the same dtype and placement.
                pipe.vae = load_vae(vae_path, self._cache_dir, family=info.family, dtype=self._memory.vae_dtype)
        except UserError:
            raise
        except (OSError, ValueError, RuntimeError, KeyError) as e:
            raise UserError(f"{model.filename.name} could not be loaded: {e}", field="checkpoint") from None
        self._memory.prepare_pipeline(pipe, info.family)
        pipe.set_progress_bar_config(disable=True)  # progress goes to the job (UI, API), not to tqdm on stderr
        vae_hash = self._registry.file_shorthash(vae_path) if vae_path else None
        return LoadedCheckpoint(
            file=model, title=self._registry.title(model), shorthash=self._registry.shorthash(model),
            family=info.family, pipe=pipe, scheduler_config=dict(pipe.scheduler.config), vae_path=vae_path,
            vae_hash=vae_hash)

    def _unload_locked(self) -> None:
        if self._current is None:
            return
        old, self._current = self._current, None
        self._memory.forget(old.pipe)
        del old
        self._memory.collect()

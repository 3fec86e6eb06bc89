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


@dataclass
class LoadedCheckpoint:
    file: ModelFile
    title: str
    shorthash: str | None
    family: str
    pipe: Any
    scheduler_config: dict[str, Any]  # the checkpoint's own scheduler settings, before any sampler change

    @property
    def name(self) -> str:
        """A1111's `Model:` infotext value: the file name without extension, folders included."""
        return self.file.name


class CheckpointCache:
    def __init__(self, registry: ModelRegistry, memory: Any, cache_dir: Path, default: Any) -> None:
        """`default()` returns the checkpoint to use when a request names none (setting or --ckpt)."""
        self._registry = registry
        self._memory = memory
        self._cache_dir = cache_dir
        self._default = default
        self._current: LoadedCheckpoint | None = None
        self._lock = threading.Lock()

    @property
    def current(self) -> LoadedCheckpoint | None:
        return self._current

    def get(self, query: str | None) -> LoadedCheckpoint:
        """The loaded checkpoint for `query` (title, name, file name or hash), loading it if needed."""
        model = self._find(query or self._default())
        with self._lock:
            if self._current is not None and self._current.file.filename == model.filename:
                return self._current
            self._unload_locked()
            self._current = self._load(model)
            return self._current

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

    def _load(self, model: ModelFile) -> LoadedCheckpoint:
        from modules.engine.models.families import detect_checkpoint
        from modules.engine.models.single_file import load_checkpoint

        info = detect_checkpoint(model.filename)
        log.info("loading checkpoint %s (%s)", model.name, info.family)
        try:
            pipe = load_checkpoint(model.filename, self._cache_dir, dtype=self._memory.dtype)
        except UserError:
            raise
        except (OSError, ValueError, RuntimeError, KeyError) as e:
            raise UserError(f"{model.filename.name} could not be loaded: {e}", field="checkpoint") from None
        self._memory.prepare_pipeline(pipe, info.family)
        return LoadedCheckpoint(
            file=model, title=self._registry.title(model), shorthash=self._registry.shorthash(model),
            family=info.family, pipe=pipe, scheduler_config=dict(pipe.scheduler.config))

    def _unload_locked(self) -> None:
        if self._current is None:
            return
        old, self._current = self._current, None
        self._memory.forget(old.pipe)
        del old
        self._memory.collect()

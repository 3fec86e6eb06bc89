"""The one device and memory manager: the only code that moves weights between devices or empties caches.

The app builds one `MemoryManager` from the flags and settings and hands it to the model cache and the GPU
worker; there is no module-level instance. Its lifecycle for a checkpoint:

    record = memory.prepare_pipeline(pipe, family="sd1")      # once, after loading
    memory.vae_tiling_for(pipe, width, height)                # per job
    with memory.use(pipe):                                    # per job, on the worker thread
        pipe(..., callback_on_step_end=...)                   # the callback calls memory.check_allocation()
    memory.forget(pipe); del pipe; memory.collect()           # on checkpoint switch

Threads: one worker does GPU work; UI and API threads call `describe()` and `inject_oom()`. Shared state (the
chosen device, the pipeline registry, the config, the injected-OOM counter) is guarded by one re-entrant lock,
held only for bookkeeping, never while weights move, so `describe()` answers during a long load. Methods that
move weights (`prepare_pipeline`, `use`, `release*`, `forget`, `collect`) belong on the worker thread.
"""

from __future__ import annotations

import gc
import logging
import threading
import traceback
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, TypeVar

from modules.engine.memory import policy
from modules.engine.memory.config import MemoryConfig
from modules.engine.memory.devices import (
    DeviceChoice,
    choose_device,
    device_label,
    dtype_name,
    empty_cache,
    free_and_total,
    memory_figures,
    ram_available_and_total,
    trim_process_heap,
)
from modules.engine.memory.oom import OomGuard, OutOfMemory, oom_message, simulated_oom
from modules.engine.memory.policy import PreparedRecord
from modules.errors import UserError

if TYPE_CHECKING:
    import torch
    from diffusers import DiffusionPipeline

logger = logging.getLogger(__name__)

P = TypeVar("P", bound="DiffusionPipeline")

# Config fields that can change while pipelines are loaded; `use()` re-applies them before the next job.
_LIVE_FIELDS = ("attention_slicing", "vae_slicing")
# Config fields fixed at start (they are flags): changing them needs a restart.
_FLAG_FIELDS = ("device", "precision", "medvram", "lowvram", "no_half_vae", "xformers", "sdp")


@dataclass
class _Tracked:
    """A prepared pipeline, held weakly so that the model cache alone decides how long it lives."""

    ref: weakref.ReferenceType[Any]
    record: PreparedRecord
    live_settings: tuple[bool, ...]
    forgotten: bool = False


class MemoryManager:
    """Chooses the device and dtypes, prepares pipelines, places and frees weights, and turns OOMs into advice."""

    def __init__(self, config: MemoryConfig) -> None:
        self._config = config
        self._lock = threading.RLock()
        self._choice: DeviceChoice | None = None
        self._tracked: dict[int, _Tracked] = {}
        self._injected_ooms = 0
        # Models that are not diffusers pipelines (SadTalker's networks): name -> how to move them off the device,
        # and which of them may be on it now.
        self._guests: dict[str, Callable[[], object]] = {}
        self._guests_on_device: set[str] = set()

    # -- device and config ------------------------------------------------------------------------------------

    @property
    def config(self) -> MemoryConfig:
        """The policy in force."""
        with self._lock:
            return self._config

    def resolve(self) -> DeviceChoice:
        """Choose the device and dtypes on first call (imports torch), then return the same choice.

        The app calls this at start, after torch is imported, so a bad `--device` fails before the first job.

        Raises:
            UserError: The requested device does not exist here.
        """
        with self._lock:
            if self._choice is None:
                self._choice = choose_device(self._config)
                for note in self._choice.notes:
                    logger.warning("%s", note)
                logger.info("device %s, dtype %s, VAE %s", device_label(self._choice.device),
                            dtype_name(self._choice.dtype), dtype_name(self._choice.vae_dtype))
            return self._choice

    @property
    def device(self) -> torch.device:
        """The device jobs run on."""
        return self.resolve().device

    @property
    def dtype(self) -> torch.dtype:
        """The compute dtype of UNet and text encoders."""
        return self.resolve().dtype

    @property
    def vae_dtype(self) -> torch.dtype:
        """The VAE dtype the flags ask for (a pipeline's record says what it actually got)."""
        return self.resolve().vae_dtype

    def reconfigure(self, config: MemoryConfig) -> None:
        """Adopt changed settings. Slicing settings reach loaded pipelines at their next `use()`; channels-last,
        compile and TF32 at the next load; VAE tiling at the next job.

        Raises:
            ValueError: A flag field changed; flags need a restart.
        """
        with self._lock:
            changed = [f for f in _FLAG_FIELDS if getattr(config, f) != getattr(self._config, f)]
            if changed:
                raise ValueError(f"{', '.join(changed)} come from command-line flags; restart to change them")
            self._config = config

    def describe(self) -> dict[str, Any]:
        """Device, dtypes, policy, prepared pipelines and memory figures, for display (`/memory`) and logs."""
        try:
            choice: DeviceChoice | None = self.resolve()
            error = None
        except UserError as e:
            choice, error = None, e.message
        with self._lock:
            config = self._config
            self._prune()
            records = [t.record.as_dict() for t in self._tracked.values() if not t.forgotten]
            live = len(self._tracked)
        info: dict[str, Any] = {
            "device": str(choice.device) if choice else None,
            "device_name": device_label(choice.device) if choice else None,
            "dtype": dtype_name(choice.dtype) if choice else None,
            "vae_dtype": dtype_name(choice.vae_dtype) if choice else None,
            "offload": config.offload if choice is None or choice.is_accelerator else "none",
            "notes": list(choice.notes) if choice else [],
            "config": config.as_dict(),
            "pipelines": records,
            "live_pipelines": live,
            "error": error,
        }
        info.update(memory_figures(choice.device if choice else None))
        return info

    # -- pipelines --------------------------------------------------------------------------------------------

    def prepare_pipeline(self, pipe: DiffusionPipeline, family: str) -> PreparedRecord:
        """Apply the policy to a freshly loaded pipeline and start tracking it (weakly).

        Steps: dtypes (the VAE's own) and placement, channels-last, attention kernel and slicing, VAE slicing,
        the fp32-VAE dtype adapters, CPU offload (`--medvram`/`--lowvram`, accelerators only), torch.compile,
        TF32. Preparing an already-prepared pipeline returns its record unchanged.

        Args:
            pipe: A diffusers pipeline, normally still on the CPU where it was loaded.
            family: The checkpoint family (`sd1`, `sd2-v`, `sdxl`, ...); it sets the VAE tiling threshold and
                whether the VAE's `force_upcast` applies.
        """
        with self._lock:
            known = self._entry(pipe)
            if known is not None:
                if known.forgotten and known.record.offload != "none":
                    raise ValueError("a forgotten pipeline lost its offload hooks; load the checkpoint again")
                known.forgotten = False  # without offload, use() simply moves its weights back
                return known.record
            config = self._config
        choice = self.resolve()
        record = policy.prepare(pipe, family, config, choice)
        with self._lock:
            self._tracked[id(pipe)] = _Tracked(weakref.ref(pipe), record, _live_settings(config))
        logger.info("prepared %s pipeline: %s", family, record.as_dict())
        return record

    def record_for(self, pipe: DiffusionPipeline) -> PreparedRecord | None:
        """What was applied to `pipe`, or None when this manager has not prepared it."""
        with self._lock:
            entry = self._entry(pipe)
            return entry.record if entry else None

    def vae_tiling_for(self, pipe: DiffusionPipeline, width: int, height: int) -> bool:
        """Turn VAE tiling on or off for a job of this size; returns whether it is on.

        `on`/`off` are fixed; `auto` tiles above the family's pixel threshold (the VAE's peak grows with area).
        """
        entry = self._require(pipe)
        config = self.config
        tile = config.vae_tiling == "on" or (
            config.vae_tiling == "auto" and width * height > config.tile_threshold(entry.record.family)
        )
        return policy.set_vae_tiling(pipe, tile)

    @contextmanager
    def use(self, pipe: P) -> Iterator[P]:
        """Run a job with `pipe`: on the device for the block, OOMs turned into `OutOfMemory`.

        Weights released earlier (after an OOM or `release_all`) move back first; with offload, diffusers' hooks
        place them. After a failed block, offloaded pipelines are reset so no part stays on the GPU.

        Raises:
            OutOfMemory: The block ran out of memory; every pipeline was released and caches emptied.
            ValueError: `pipe` was not prepared by this manager (or was forgotten).
        """
        entry = self._require(pipe)
        with self.oom_guard():
            self._release_guests()
            self._refresh_live_settings(pipe, entry)
            self._ensure_on_device(pipe, entry.record)
            try:
                yield pipe
            except BaseException:
                self._reset_offload(pipe, entry.record)
                raise

    def add_guest(self, name: str, release: Callable[[], object]) -> None:
        """Register a user of the device that is not a diffusers pipeline (SadTalker's networks).

        `release()` must move its weights off the accelerator; it is called before a pipeline or another guest
        runs, so the two never hold VRAM at once.
        """
        with self._lock:
            self._guests[name] = release

    @contextmanager
    def guest(self, name: str) -> Iterator[DeviceChoice]:
        """Run a guest's job: pipelines and other guests leave the accelerator first, OOMs become `OutOfMemory`.

        Yields the device choice; the guest moves its own weights there inside the block.
        """
        with self._lock:
            if name not in self._guests:
                raise ValueError(f"'{name}' is not a registered guest of the memory manager")
        with self.oom_guard():
            self._release_guests(keep=name)
            if self.release_all():
                logger.info("moved Stable Diffusion weights off the device for %s", name)
            with self._lock:
                self._guests_on_device.add(name)
            yield self.resolve()

    def _release_guests(self, keep: str | None = None) -> None:
        with self._lock:
            leaving = [(n, self._guests[n]) for n in self._guests_on_device if n != keep]
            self._guests_on_device.difference_update(n for n, _ in leaving)
        for name, release in leaving:
            logger.info("moving %s off the device", name)
            release()
        if leaving:
            empty_cache(self._resolved_device())

    def release(self, pipe: DiffusionPipeline) -> bool:
        """Move `pipe`'s weights off the accelerator (to CPU RAM) and empty the cache. True if anything moved."""
        with self._lock:
            entry = self._entry(pipe)
        if entry is None:
            return False
        moved = self._offload_weights(pipe, entry.record)
        empty_cache(self._resolved_device())
        return moved

    def release_all(self) -> int:
        """Release every tracked pipeline, for jobs that need the whole GPU (SadTalker) and after an OOM.

        Returns:
            How many pipelines had weights on the accelerator.
        """
        with self._lock:
            self._prune()
            entries = list(self._tracked.values())
        moved = 0
        for entry in entries:
            pipe = entry.ref()
            if pipe is not None and self._offload_weights(pipe, entry.record):
                moved += 1
            del pipe  # no strong reference may outlive this loop
        gc.collect()
        empty_cache(self._resolved_device())
        return moved

    def forget(self, pipe: DiffusionPipeline) -> None:
        """Stop managing `pipe` (checkpoint switch): its weights leave the accelerator and its offload hooks go.

        The pipeline stays watched (weakly) until it is gone, so `collect()` can report one that something
        still holds: the RAM-leak-on-switch bug A1111 users know.
        """
        with self._lock:
            entry = self._entry(pipe)
        if entry is None:
            return
        self._offload_weights(pipe, entry.record)
        if entry.record.offload != "none":
            pipe.remove_all_hooks()  # accelerate hooks hold module references; drop them with the pipeline
        with self._lock:
            entry.forgotten = True

    def collect(self) -> int:
        """Free what forgotten pipelines held: gc, empty the device cache, give freed heap back to the OS.

        Returns the number of forgotten pipelines that are still alive (0 when the switch freed everything).
        """
        gc.collect()
        empty_cache(self._resolved_device())
        trim_process_heap()
        with self._lock:
            self._prune()
            survivors = sum(1 for t in self._tracked.values() if t.forgotten)
        if survivors:
            logger.warning("%d forgotten pipeline(s) are still referenced somewhere and keep their memory", survivors)
        return survivors

    def live_pipelines(self) -> int:
        """Tracked pipelines that are still alive, prepared or forgotten (a test hook for leak checks)."""
        with self._lock:
            self._prune()
            return len(self._tracked)

    # -- out of memory ----------------------------------------------------------------------------------------

    def oom_guard(self) -> OomGuard:
        """A context manager that turns any OOM in its block into `OutOfMemory`, after freeing memory."""
        return OomGuard(self._recover_from_oom)

    def inject_oom(self, times: int = 1) -> None:
        """Make the next `times` calls of `check_allocation()` raise a simulated `torch.OutOfMemoryError`."""
        if times < 1:
            raise ValueError("times must be at least 1")
        with self._lock:
            self._injected_ooms += times

    def check_allocation(self) -> None:
        """Called by the engine at every denoising step; raises an injected OOM if one is pending.

        This is the fault-injection point for tests and the robustness suite: an OOM raised here travels the same
        path as a real one from inside the UNet, mid-job, deterministically and on any device.
        """
        with self._lock:
            if self._injected_ooms <= 0:
                return
            self._injected_ooms -= 1
        raise simulated_oom()

    def _recover_from_oom(self, exc: BaseException) -> OutOfMemory:
        """Free memory after an OOM and build the error for the user.

        Free memory is read before freeing, so the message shows what the job had to work with.
        """
        choice = self.resolve()
        # A CPU allocator failure on a GPU machine is a RAM shortage: report RAM, not VRAM.
        in_ram = not choice.is_accelerator or isinstance(exc, MemoryError) or "can't allocate" in str(exc).lower()
        free, total = ram_available_and_total() if in_ram else free_and_total(choice.device)
        label = device_label(choice.device)
        logger.warning("out of memory on %s: %s", label, str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
        # The traceback's finished frames still hold the job's activations; clearing them is what actually lets
        # the allocator take that memory back before we empty the cache.
        traceback.clear_frames(exc.__traceback__)
        if in_ram and choice.is_accelerator:
            # Moving GPU weights into RAM would make a RAM shortage worse; give back what the job held instead.
            gc.collect()
            trim_process_heap()
        else:
            self._release_guests()
            self.release_all()
        message = oom_message(self.config, label, not in_ram, free, total)
        return OutOfMemory(message, device=str(choice.device), free_bytes=free)

    # -- internals --------------------------------------------------------------------------------------------

    def _entry(self, pipe: DiffusionPipeline) -> _Tracked | None:
        entry = self._tracked.get(id(pipe))
        # An id can be reused by a new object after the old one died; the weak reference tells them apart.
        return entry if entry is not None and entry.ref() is pipe else None

    def _require(self, pipe: DiffusionPipeline) -> _Tracked:
        with self._lock:
            entry = self._entry(pipe)
        if entry is None or entry.forgotten:
            raise ValueError("this pipeline was not prepared by the memory manager (call prepare_pipeline first)")
        return entry

    def _prune(self) -> None:
        dead = [key for key, t in self._tracked.items() if t.ref() is None]
        for key in dead:
            del self._tracked[key]

    def _resolved_device(self) -> torch.device | None:
        with self._lock:
            return self._choice.device if self._choice else None

    def _refresh_live_settings(self, pipe: DiffusionPipeline, entry: _Tracked) -> None:
        config = self.config
        wanted = _live_settings(config)
        if wanted == entry.live_settings:
            return
        choice = self.resolve()
        attention, notes = policy.set_attention(pipe, config, choice)
        vae_slicing = policy.set_vae_slicing(pipe, config.vae_slicing)
        with self._lock:
            entry.record = replace(entry.record, attention=attention, vae_slicing=vae_slicing,
                                   notes=entry.record.notes + tuple(notes))
            entry.live_settings = wanted

    def _ensure_on_device(self, pipe: DiffusionPipeline, record: PreparedRecord) -> None:
        if record.offload != "none":
            return  # diffusers' offload hooks place each part when it runs
        device = self.device
        for name, module in policy.modules_of(pipe).items():
            first = next(module.parameters(), None)
            if first is not None and first.device != device:
                logger.info("moving %s back to %s", name, device)
                module.to(device)

    def _offload_weights(self, pipe: DiffusionPipeline, record: PreparedRecord) -> bool:
        choice = self.resolve()
        if not choice.is_accelerator:
            return False  # weights already live in RAM; there is nothing to move
        if record.offload == "model":
            pipe.maybe_free_model_hooks()  # diffusers' own reset: every part back to CPU, hooks re-armed
            return True
        if record.offload == "sequential":
            return False  # layers only visit the GPU during their forward
        moved = False
        for module in policy.modules_of(pipe).values():
            first = next(module.parameters(), None)
            if first is not None and first.device.type != "cpu":
                module.to("cpu")
                moved = True
        return moved

    def _reset_offload(self, pipe: DiffusionPipeline, record: PreparedRecord) -> None:
        if record.offload != "model":
            return
        try:
            pipe.maybe_free_model_hooks()
        except Exception:  # noqa: BLE001 - the job's own error matters more; this one is only logged
            logger.exception("could not reset CPU offload after a failed job")


def _live_settings(config: MemoryConfig) -> tuple[bool, ...]:
    return tuple(bool(getattr(config, f)) for f in _LIVE_FIELDS)

"""Device and dtype choice, memory figures, and cache emptying: the torch-facing helpers of the memory manager.

Every function imports torch inside its body, so that importing this module stays cheap (the web page is served
before torch is imported). They hold no state; the `MemoryManager` decides when to call them.
"""

from __future__ import annotations

import logging
import platform
import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from modules.engine.memory.config import MemoryConfig
from modules.errors import UserError

if TYPE_CHECKING:
    import torch

logger = logging.getLogger(__name__)

GIB = 1024**3


@dataclass(frozen=True)
class DeviceChoice:
    """Where models run and in which dtypes, with the reasons for any fallback (logged once, shown in describe)."""

    device: torch.device
    dtype: torch.dtype
    vae_dtype: torch.dtype
    notes: tuple[str, ...] = ()

    @property
    def is_accelerator(self) -> bool:
        """True for CUDA/MPS: offload, cache emptying and VRAM figures only mean something there."""
        return self.device.type != "cpu"


def available_devices() -> list[str]:
    """Devices this machine can run on, labelled for error messages: `cpu`, `cuda:0 (NVIDIA H100)`, `mps`."""
    import torch

    found = ["cpu"]
    if torch.cuda.is_available():
        found += [f"cuda:{i} ({torch.cuda.get_device_name(i)})" for i in range(torch.cuda.device_count())]
    if torch.backends.mps.is_available():
        found.append("mps")
    return found


def choose_device(config: MemoryConfig) -> DeviceChoice:
    """Resolve `config.device` and `config.precision` into a device and dtypes.

    `auto` prefers CUDA, then MPS, then CPU. Half precision on CPU is refused with a note (slow, and some ops have
    no fp16 CPU kernel); bf16 on CPU is used only when asked for explicitly.

    Raises:
        UserError: The requested device does not exist here; the message lists the ones that do.
    """
    device = _resolve_device(config.device)
    dtype, notes = _choose_dtype(device, config.precision)
    vae_dtype = _vae_dtype(dtype, config.no_half_vae)
    return DeviceChoice(device=device, dtype=dtype, vae_dtype=vae_dtype, notes=tuple(notes))


def _resolve_device(requested: str) -> torch.device:
    import torch

    if requested == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", torch.cuda.current_device())
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if requested == "cpu":
        return torch.device("cpu")
    if requested == "mps":
        if not torch.backends.mps.is_available():
            raise _missing_device(requested, "MPS (Apple GPU) is not available to this torch build or machine")
        return torch.device("mps")
    return _resolve_cuda(requested)


def _resolve_cuda(requested: str) -> torch.device:
    import torch

    if not torch.cuda.is_available():
        built = f"built for CUDA {torch.version.cuda}" if torch.version.cuda else "built without CUDA"
        raise _missing_device(requested, f"CUDA is not available (torch {torch.__version__}, {built}; no GPU seen)")
    index = int(requested.split(":")[1]) if ":" in requested else torch.cuda.current_device()
    count = torch.cuda.device_count()
    if index >= count:
        raise _missing_device(requested, f"there is no GPU {index}; this machine has {count}")
    return torch.device("cuda", index)


def _missing_device(requested: str, why: str) -> UserError:
    return UserError(
        f"--device {requested}: {why}. Available devices: {', '.join(available_devices())}. "
        "Start with --device auto to pick the best one.",
        field="device",
    )


def _choose_dtype(device: torch.device, precision: str) -> tuple[torch.dtype, list[str]]:
    import torch

    notes: list[str] = []
    if precision == "fp32":
        return torch.float32, notes
    if device.type == "cpu":
        if precision == "bf16":
            return torch.bfloat16, notes
        if precision == "fp16":
            notes.append("fp16 on CPU is slow and some ops lack fp16 CPU kernels; using fp32 (bf16 works on CPU)")
        return torch.float32, notes
    if precision == "bf16":
        if device.type == "cuda" and not _cuda_supports_bf16(device):
            notes.append(f"{device} does not support bf16 (needs compute capability 8.0+); using fp16")
            return torch.float16, notes
        return torch.bfloat16, notes
    return torch.float16, notes


def _cuda_supports_bf16(device: torch.device) -> bool:
    import torch

    major, _minor = torch.cuda.get_device_capability(device)
    return major >= 8


def _vae_dtype(dtype: torch.dtype, no_half_vae: bool) -> torch.dtype:
    import torch

    return torch.float32 if no_half_vae else dtype


def vae_dtype_for(dtype: torch.dtype, no_half_vae: bool, family: str, force_upcast: bool) -> torch.dtype:
    """The dtype one pipeline's VAE is held in.

    fp32 when `--no-half-vae` is on, and also for SDXL-family VAEs that ask for it (`config.force_upcast`) under
    fp16: SDXL pipelines would otherwise upcast the VAE on every decode through diffusers' deprecated
    `upcast_vae()` and cast it back afterwards. Holding it in fp32 costs ~160 MB and gives the same numbers.
    SD1/SD2 pipelines ignore `force_upcast`, so their VAE follows `dtype` (as in A1111 without --no-half-vae).
    bf16 has fp32's range and never needs the upcast.
    """
    import torch

    if no_half_vae:
        return torch.float32
    if dtype == torch.float16 and force_upcast and family.startswith("sdxl"):
        return torch.float32
    return dtype


def device_label(device: torch.device) -> str:
    """`cuda:0 (NVIDIA H100 80GB HBM3)`, `mps (Apple GPU)` or `cpu (x86_64)`, for messages."""
    import torch

    if device.type == "cuda":
        return f"{device} ({torch.cuda.get_device_name(device)})"
    if device.type == "mps":
        return "mps (Apple GPU)"
    return f"cpu ({platform.processor() or platform.machine() or 'unknown'})"


def free_and_total(device: torch.device) -> tuple[int | None, int | None]:
    """Free and total bytes where this device's models live: VRAM on CUDA/MPS, RAM on CPU. None if unknown."""
    import torch

    if device.type == "cuda":
        free, total = torch.cuda.mem_get_info(device)
        return int(free), int(total)
    if device.type == "mps":
        # MPS shares system memory; the recommended working-set size is the budget Metal enforces.
        total = int(torch.mps.recommended_max_memory())
        return max(0, total - int(torch.mps.driver_allocated_memory())), total
    return ram_available_and_total()


def ram_available_and_total() -> tuple[int | None, int | None]:
    """System RAM available/total via psutil, or (None, None) when psutil is missing."""
    try:
        import psutil
    except ImportError:
        return None, None
    vm = psutil.virtual_memory()
    return int(vm.available), int(vm.total)


def memory_figures(device: torch.device | None) -> dict[str, Any]:
    """VRAM (CUDA/MPS) and RAM figures in bytes, for describe(). Works before the device is chosen (RAM only)."""
    figures: dict[str, Any] = {"vram": _vram_figures(device) if device is not None else None, "ram": _ram_figures()}
    return figures


def _vram_figures(device: torch.device) -> dict[str, int] | None:
    import torch

    if device.type == "cuda":
        free, total = torch.cuda.mem_get_info(device)
        return {
            "total": int(total),
            "free": int(free),
            "allocated": int(torch.cuda.memory_allocated(device)),
            "reserved": int(torch.cuda.memory_reserved(device)),
            "peak_allocated": int(torch.cuda.max_memory_allocated(device)),
        }
    if device.type == "mps":
        return {
            "total": int(torch.mps.recommended_max_memory()),
            "allocated": int(torch.mps.current_allocated_memory()),
            "reserved": int(torch.mps.driver_allocated_memory()),
        }
    return None


def _ram_figures() -> dict[str, int] | None:
    try:
        import psutil
    except ImportError:
        return None
    vm = psutil.virtual_memory()
    rss = int(psutil.Process().memory_info().rss)
    return {"total": int(vm.total), "available": int(vm.available), "process_rss": rss}


def empty_cache(device: torch.device | None) -> None:
    """Return cached allocator blocks to the driver. Only the memory manager calls this (see the package doc)."""
    if device is None or "torch" not in sys.modules:
        return  # nothing was ever allocated through torch, so there is no cache to empty
    import torch

    if device.type == "cuda":
        with torch.cuda.device(device):
            torch.cuda.empty_cache()
    elif device.type == "mps":
        torch.mps.empty_cache()


def trim_process_heap() -> None:
    """Give freed heap pages back to the OS (glibc only).

    After a checkpoint is dropped, glibc keeps the freed arenas mapped, so RSS stays high and the next load grows
    it further: the A1111 "RAM leak on checkpoint switch" reports (#2180, #5691). malloc_trim(0) returns them.
    """
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass  # musl or another libc without malloc_trim: memory is still reused, just not returned early


M_ARENA_MAX = -8  # glibc's mallopt parameter number


def share_heap_between_threads() -> None:
    """Make every thread allocate from glibc's main arena. Call once at start, before worker threads exist.

    By default glibc gives a new thread (our job worker) its own arena, which hands freed pages back to the OS
    eagerly, so each sampling step faults its large tensors in again: measured at ~2.8 M page faults per small
    job and UNet calls ~40% slower than on the main thread (bench/generate.py). One shared arena keeps the
    pages; the same effect as MALLOC_ARENA_MAX=1 (A1111 preloads tcmalloc for a similar reason).
    """
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    try:
        ctypes.CDLL("libc.so.6").mallopt(M_ARENA_MAX, 1)
    except (OSError, AttributeError):
        pass  # not glibc: nothing to tune


def format_gib(value: int | None) -> str:
    """`3.2 GiB`, or `?` when the figure is unknown."""
    return "?" if value is None else f"{value / GIB:.1f} GiB"


def dtype_name(dtype: torch.dtype) -> str:
    """`float16` rather than `torch.float16`, for records and JSON."""
    return str(dtype).removeprefix("torch.")

"""Out-of-memory errors: how to recognise one, and the message that tells the user what to change.

An OOM is neither a bug nor a typo in the request: the request is valid, this machine cannot hold it right now.
So `OutOfMemory` is a `UserError` (the API answers with its message, the UI shows it, the app stays up) with
status 503 Service Unavailable, the HTTP code for "the server cannot do this at the moment"; a smaller request
or different flags make it work, and nothing about the request itself is wrong (which 400 would claim).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from types import TracebackType

from modules.engine.memory.config import MemoryConfig
from modules.engine.memory.devices import format_gib
from modules.errors import UserError

# Lower-cased fragments of the messages torch and its backends use for allocation failures that are not (or not
# in every torch version) raised as torch.OutOfMemoryError.
_OOM_FRAGMENTS = (
    "out of memory",  # CUDA/HIP ("CUDA out of memory"), MPS ("MPS backend out of memory"), XPU
    "can't allocate memory",  # CPU: DefaultCPUAllocator
    "invalid buffer size",  # MPS: a single buffer above Metal's limit
    "cudnn_status_alloc_failed",
    "cublas_status_alloc_failed",
)

SIMULATED_MESSAGE = "CUDA out of memory. Tried to allocate 2.00 GiB (simulated by MemoryManager.inject_oom)"


class OutOfMemory(UserError):
    """The job did not fit in memory; the message says what to change. Models were freed, so the app goes on."""

    status_code = 503

    def __init__(self, message: str, device: str, free_bytes: int | None) -> None:
        super().__init__(message)
        self.device = device
        self.free_bytes = free_bytes


def is_oom(exc: BaseException) -> bool:
    """True for allocation failures from any backend: torch.OutOfMemoryError, OOM RuntimeErrors, MemoryError."""
    if isinstance(exc, MemoryError):
        return True
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(exc, torch.OutOfMemoryError):
        return True
    if isinstance(exc, RuntimeError):
        text = str(exc).lower()
        return any(fragment in text for fragment in _OOM_FRAGMENTS)
    return False


def simulated_oom() -> BaseException:
    """The error an injected OOM raises: a real torch.OutOfMemoryError, so every handler sees what CUDA raises."""
    import torch

    return torch.OutOfMemoryError(SIMULATED_MESSAGE)


def oom_message(config: MemoryConfig, device: str, on_accelerator: bool, free: int | None, total: int | None) -> str:
    """The text of an OutOfMemory: where it ran out, how much was free, and what to change, most useful first."""
    memory = "VRAM" if on_accelerator else "RAM"
    head = f"Out of memory on {device}: {format_gib(free)} of {format_gib(total)} {memory} was free."
    tips = ", ".join(_tips(config, on_accelerator))
    tail = "The models were moved off the GPU, so the next job starts clean." if on_accelerator else ""
    return " ".join(part for part in (head, f"To fit, try {tips}.", tail) if part)


def _tips(config: MemoryConfig, on_accelerator: bool) -> list[str]:
    tips = ["a smaller width/height or batch size"]
    if on_accelerator:
        if config.offload == "none":
            tips.append("starting with --medvram (keeps only the running model part on the GPU)")
        if config.offload != "sequential":
            tips.append("--lowvram (slowest, least VRAM)")
        if config.precision == "fp32":
            tips.append("dropping --no-half / --precision fp32 (half precision needs half the memory)")
    else:
        tips.append("closing other programs")
    if config.vae_tiling != "on":
        tips.append('setting VAE tiling to "on" in Settings (helps when it fails at the end, in the VAE)')
    return tips


class OomGuard:
    """A context manager that hands any OOM raised in its block to `recover` and raises what that returns.

    A class rather than a generator so that `__exit__` sees the exception with its traceback; `recover` clears
    the traceback's frames, which hold the failed job's tensors.
    """

    def __init__(self, recover: Callable[[BaseException], OutOfMemory]) -> None:
        self._recover = recover

    def __enter__(self) -> None:
        return None

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> bool:
        if exc is None or not is_oom(exc):
            return False
        # "from None": the user-facing error must not carry the original traceback (and its tensors) along.
        raise self._recover(exc) from None

"""Device and memory management: the only package that moves weights between devices or empties caches.

It owns the device and dtype choice, the VRAM policy (`--medvram`/`--lowvram` offload, attention kernels,
slicing, tiling, the fp32 VAE), and OOM recovery. Modelled on ComfyUI's and Forge's model management, but as one
object with explicit state (`MemoryManager`), built by the app and passed to whoever needs it.

Importing this package does not import torch; every torch or diffusers import happens inside a call.

Modules:
    config: `MemoryConfig`, the flags and settings (plain data).
    devices: device/dtype choice, memory figures, cache emptying (stateless, torch-facing).
    policy: the per-pipeline steps `prepare_pipeline` applies, and the `PreparedRecord` it returns.
    oom: `OutOfMemory` (a UserError, HTTP 503), OOM detection and the advice text.
    manager: `MemoryManager`, which ties them together and tracks prepared pipelines weakly.
"""

from modules.engine.memory.config import CompileMode, MemoryConfig, Offload, Precision, VaeTiling
from modules.engine.memory.devices import DeviceChoice, available_devices, share_heap_between_threads
from modules.engine.memory.manager import MemoryManager
from modules.engine.memory.oom import OutOfMemory, is_oom
from modules.engine.memory.policy import PreparedRecord

__all__ = [
    "CompileMode",
    "DeviceChoice",
    "MemoryConfig",
    "MemoryManager",
    "Offload",
    "OutOfMemory",
    "Precision",
    "PreparedRecord",
    "VaeTiling",
    "share_heap_between_threads",
    "available_devices",
    "is_oom",
]

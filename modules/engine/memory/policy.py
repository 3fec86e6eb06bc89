"""Applying the memory policy to one diffusers pipeline: dtypes, placement or offload, attention, slicing,
channels-last, the fp32 VAE, and torch.compile.

Each step is a small function that changes the pipeline through diffusers' or torch's public API (no patching)
and returns what it did, so `MemoryManager.prepare_pipeline` can hand back one record for logs and tests.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from modules.engine.memory.config import MemoryConfig, Offload
from modules.engine.memory.devices import DeviceChoice, dtype_name, vae_dtype_for

if TYPE_CHECKING:
    import torch
    from diffusers import DiffusionPipeline
    from torch.utils.hooks import RemovableHandle

logger = logging.getLogger(__name__)

Attention = Literal["sdpa", "xformers", "sliced"]

# The VAE parts that `encode`/`decode` (tiled or not) run through; each one gets the dtype-adapter hooks.
_VAE_STAGES = ("encoder", "quant_conv", "post_quant_conv", "decoder")


@dataclass(frozen=True)
class PreparedRecord:
    """What `prepare_pipeline` applied to one pipeline, for logs, describe() and tests."""

    family: str
    device: str
    dtype: str
    vae_dtype: str
    offload: Offload
    attention: Attention
    vae_slicing: bool
    vae_cast_hooks: bool
    channels_last: bool
    tf32: bool | None
    compiled: str | None
    notes: tuple[str, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        """Plain values, for logs and JSON."""
        return dataclasses.asdict(self)


def modules_of(pipe: DiffusionPipeline) -> dict[str, torch.nn.Module]:
    """The pipeline's torch modules by component name (unet, vae, text_encoder, ...); tokenizers etc. left out."""
    import torch

    return {name: c for name, c in pipe.components.items() if isinstance(c, torch.nn.Module)}


def component_dtype(name: str, choice: DeviceChoice, vae_dtype: torch.dtype) -> torch.dtype:
    """The dtype a component is held in: the VAE's own, everything else the compute dtype."""
    return vae_dtype if name == "vae" else choice.dtype


def pipeline_vae_dtype(
    pipe: DiffusionPipeline, choice: DeviceChoice, config: MemoryConfig, family: str
) -> torch.dtype:
    """The dtype this pipeline's VAE will be held in (see `vae_dtype_for`)."""
    vae = getattr(pipe, "vae", None)
    force_upcast = bool(getattr(getattr(vae, "config", None), "force_upcast", False))
    return vae_dtype_for(choice.dtype, config.no_half_vae, family, force_upcast)


def cast_and_place(pipe: DiffusionPipeline, choice: DeviceChoice, vae_dtype: torch.dtype, offload: Offload) -> None:
    """Cast every module to its dtype and, without offload, move it to the device in the same call.

    With offload the modules stay where they are (normally CPU): diffusers' hooks move them when they run.
    """
    for name, module in modules_of(pipe).items():
        dtype = component_dtype(name, choice, vae_dtype)
        if offload == "none":
            module.to(device=choice.device, dtype=dtype)
        else:
            module.to(dtype=dtype)


def effective_offload(config: MemoryConfig, choice: DeviceChoice) -> tuple[Offload, list[str]]:
    """The offload mode that applies here: the flags' on an accelerator, none on CPU (weights already in RAM)."""
    if config.offload != "none" and not choice.is_accelerator:
        flag = "--lowvram" if config.lowvram else "--medvram"
        return "none", [f"{flag} only matters on a GPU; on CPU every model already lives in RAM"]
    return config.offload, []


def enable_offload(pipe: DiffusionPipeline, choice: DeviceChoice, offload: Offload) -> None:
    """Install diffusers' CPU-offload hooks for `--medvram` (whole models) or `--lowvram` (layer by layer)."""
    if offload == "model":
        pipe.enable_model_cpu_offload(device=choice.device)
    elif offload == "sequential":
        pipe.enable_sequential_cpu_offload(device=choice.device)


def apply_channels_last(pipe: DiffusionPipeline, enabled: bool) -> bool:
    """Store the UNet's 4-D weights channels-last; placement and offload keep the layout (`preserve_format`)."""
    import torch

    unet = getattr(pipe, "unet", None)
    if not enabled or not isinstance(unet, torch.nn.Module):
        return False
    unet.to(memory_format=torch.channels_last)
    return True


def set_attention(pipe: DiffusionPipeline, config: MemoryConfig, choice: DeviceChoice) -> tuple[Attention, list[str]]:
    """Pick the attention kernel: xformers when asked for and usable, else PyTorch SDPA; slicing on top if set.

    Slicing is applied last and replaces the kernel (diffusers' sliced processor), because a user who turns it
    on is trading speed for memory on purpose; the note says it is slower than SDPA.
    """
    from diffusers.models.attention_processor import AttnProcessor2_0

    notes: list[str] = []
    attention: Attention = "sdpa"
    for module in modules_of(pipe).values():
        if hasattr(module, "set_attn_processor"):
            module.set_attn_processor(AttnProcessor2_0())
    if config.xformers:
        usable, why = _xformers_usable(choice)
        if usable:
            pipe.enable_xformers_memory_efficient_attention()
            attention = "xformers"
        else:
            notes.append(f"--xformers: {why}; using PyTorch SDPA attention, which is as fast on torch 2")
    if config.attention_slicing:
        pipe.enable_attention_slicing("auto")
        attention = "sliced"
        notes.append("attention slicing is on: less memory, but slower than SDPA/xformers")
    return attention, notes


def _xformers_usable(choice: DeviceChoice) -> tuple[bool, str]:
    if choice.device.type != "cuda":
        return False, f"xformers needs a CUDA GPU, the device is {choice.device}"
    if importlib.util.find_spec("xformers") is None:
        return False, "xformers is not installed"
    try:
        import xformers.ops  # noqa: F401  (a wheel built for another torch fails here, not at find_spec)
    except Exception as e:  # noqa: BLE001 - any import failure means "not usable", with the reason logged
        return False, f"xformers does not import ({type(e).__name__}: {e})"
    return True, ""


def set_vae_slicing(pipe: DiffusionPipeline, enabled: bool) -> bool:
    """Decode batches one image at a time (same images, lower peak)."""
    vae = getattr(pipe, "vae", None)
    if vae is None or not hasattr(vae, "enable_slicing"):
        return False
    if enabled:
        vae.enable_slicing()
    else:
        vae.disable_slicing()
    return enabled


def set_vae_tiling(pipe: DiffusionPipeline, enabled: bool) -> bool:
    """Turn tiled VAE encode/decode on or off for the next job; returns the state now in force."""
    vae = getattr(pipe, "vae", None)
    if vae is None or not hasattr(vae, "enable_tiling"):
        return False
    if enabled:
        vae.enable_tiling()
    else:
        vae.disable_tiling()
    return enabled


def install_vae_casts(pipe: DiffusionPipeline, vae_dtype: torch.dtype, dtype: torch.dtype) -> list[RemovableHandle]:
    """Let an fp32 VAE sit in an fp16/bf16 pipeline: cast inputs to the VAE dtype and outputs back.

    SD1/SD2 pipelines hand the VAE latents in the UNet's dtype and expect its output in the same dtype, so a VAE
    held in another dtype fails with "Input type (Half) and bias type (float)". Torch forward hooks on the VAE's
    stages adapt the dtypes at the boundary; the numerically fragile part (inside the decoder) runs in fp32,
    which is what --no-half-vae is for. No diffusers code is patched.
    """
    vae = getattr(pipe, "vae", None)
    if vae is None or vae_dtype == dtype:
        return []
    handles: list[RemovableHandle] = []
    for stage_name in _VAE_STAGES:
        stage = getattr(vae, stage_name, None)
        if stage is None:
            continue  # e.g. use_quant_conv=False
        handles.append(stage.register_forward_pre_hook(_cast_inputs_hook(vae_dtype)))
        handles.append(stage.register_forward_hook(_cast_output_hook(dtype)))
    return handles


def _cast_inputs_hook(dtype: torch.dtype) -> Callable[[torch.nn.Module, tuple[Any, ...]], tuple[Any, ...]]:
    def hook(_module: torch.nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...]:
        return tuple(_cast_floating(a, dtype) for a in args)

    return hook


def _cast_output_hook(dtype: torch.dtype) -> Callable[[torch.nn.Module, tuple[Any, ...], Any], Any]:
    def hook(_module: torch.nn.Module, _args: tuple[Any, ...], output: Any) -> Any:
        return _cast_floating(output, dtype)

    return hook


def _cast_floating(value: Any, dtype: torch.dtype) -> Any:
    import torch

    if isinstance(value, torch.Tensor) and value.is_floating_point() and value.dtype != dtype:
        return value.to(dtype)
    return value


def apply_tf32(config: MemoryConfig, choice: DeviceChoice) -> bool | None:
    """Set TF32 for CUDA matmuls and convolutions (process-wide). None off CUDA, where it means nothing.

    Uses the `fp32_precision` API where torch has it (2.9+); mixing it with the legacy `allow_tf32` flags raises.
    """
    import torch

    if choice.device.type != "cuda":
        return None
    if hasattr(torch.backends.cuda.matmul, "fp32_precision"):
        precision = "tf32" if config.tf32 else "ieee"
        torch.backends.cuda.matmul.fp32_precision = precision
        torch.backends.cudnn.conv.fp32_precision = precision
    else:
        torch.backends.cuda.matmul.allow_tf32 = config.tf32
        torch.backends.cudnn.allow_tf32 = config.tf32
    return config.tf32


def compile_unet(
    pipe: DiffusionPipeline, config: MemoryConfig, choice: DeviceChoice, offload: Offload
) -> tuple[str | None, list[str]]:
    """torch.compile the UNet in place (`Module.compile`, so state-dict keys and LoRA loading are unchanged).

    Only on CUDA without offload: offload hooks move weights between calls, which invalidates compiled guards,
    and CPU/MPS inductor builds are not worth the compile time for this workload.
    """
    unet = getattr(pipe, "unet", None)
    if not config.compile or unet is None:
        return None, []
    if choice.device.type != "cuda":
        return None, [f"torch.compile is only used on CUDA; skipped on {choice.device}"]
    if offload != "none":
        return None, ["torch.compile is skipped with --medvram/--lowvram (offload moves weights between calls)"]
    unet.compile(mode=config.compile_mode)
    return config.compile_mode, ["the UNet compiles on the first job at each new size; that job is slow"]


def prepare(pipe: DiffusionPipeline, family: str, config: MemoryConfig, choice: DeviceChoice) -> PreparedRecord:
    """Run the preparation steps in order and say what was applied.

    The order matters: dtype casts, placement and layout first, offload hooks after
    every cast (they capture the weights as they are then), compile last (it traces the final module).
    """
    offload, notes = effective_offload(config, choice)
    vae_dtype = pipeline_vae_dtype(pipe, choice, config, family)
    cast_and_place(pipe, choice, vae_dtype, offload)
    channels_last = apply_channels_last(pipe, config.channels_last)
    attention, attention_notes = set_attention(pipe, config, choice)
    vae_slicing = set_vae_slicing(pipe, config.vae_slicing)
    cast_hooks = install_vae_casts(pipe, vae_dtype, choice.dtype)
    enable_offload(pipe, choice, offload)
    compiled, compile_notes = compile_unet(pipe, config, choice, offload)
    tf32 = apply_tf32(config, choice)
    return PreparedRecord(
        family=family,
        device=str(choice.device),
        dtype=dtype_name(choice.dtype),
        vae_dtype=dtype_name(vae_dtype),
        offload=offload,
        attention=attention,
        vae_slicing=vae_slicing,
        vae_cast_hooks=bool(cast_hooks),
        channels_last=channels_last,
        tf32=tf32,
        compiled=compiled,
        notes=tuple(notes + attention_notes + compile_notes),
    )

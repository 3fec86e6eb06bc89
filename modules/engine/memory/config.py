"""What the memory manager is told to do: the device/VRAM flags plus the memory settings from the Settings tab.

The flags keep A1111's names and meanings (`--medvram`, `--lowvram`, `--no-half-vae`, `--xformers`,
`--opt-sdp-attention`, `--no-half`); the settings are the knobs A1111 hides under "Optimizations". Nothing here
imports torch: a config is plain data, built before the first model loads.
"""

from __future__ import annotations

import argparse
import dataclasses
import re
from dataclasses import dataclass
from typing import Any, Literal

Precision = Literal["auto", "fp32", "fp16", "bf16"]
VaeTiling = Literal["auto", "on", "off"]
Offload = Literal["none", "model", "sequential"]
# "max-autotune-no-cudagraphs" is the default on purpose: CUDA graphs ("reduce-overhead") keep a private memory
# pool per captured input shape, which empty_cache() cannot return, which breaks when offload moves weights, and
# which is re-captured for every new width/height/batch. SD UNet kernels are large, so launch overhead (what
# graphs remove) is a small share of a step anyway; autotuned kernels are where the gain is.
CompileMode = Literal["max-autotune-no-cudagraphs", "reduce-overhead", "default"]

_PRECISIONS = ("auto", "fp32", "fp16", "bf16")
_TILING = ("auto", "on", "off")
_COMPILE_MODES = ("max-autotune-no-cudagraphs", "reduce-overhead", "default")
_DEVICE = re.compile(r"auto|cpu|mps|cuda(:\d+)?")

# VAE tiling in "auto" starts above these pixel counts. SD1/SD2 VAEs decode 1024² in about 10 GB at fp16 without
# tiling on typical cards; SDXL was trained at 1024² and users expect untiled (seam-free) output up to 2048².
SD_TILE_THRESHOLD = 1024 * 1024
SDXL_TILE_THRESHOLD = 2048 * 2048


@dataclass(frozen=True)
class MemoryConfig:
    """The device and memory policy. Frozen: a change of settings builds a new one (`MemoryManager.reconfigure`).

    Attributes:
        device: `auto`, `cpu`, `cuda`, `cuda:N` or `mps` (`--device`).
        precision: `auto`, `fp32`, `fp16` or `bf16` (`--precision`; `--no-half` means fp32).
        medvram: Keep only the running model part on the GPU (`--medvram`, diffusers model CPU offload).
        lowvram: Offload layer by layer (`--lowvram`, diffusers sequential CPU offload). Wins over medvram.
        no_half_vae: Run the VAE in fp32 (`--no-half-vae`), the fix for black/NaN images from fp16 VAEs.
        xformers: Use xformers attention when it is importable (`--xformers`).
        sdp: `--opt-sdp-attention` was given. SDPA is the default anyway; kept so flags round-trip.
        attention_slicing: Compute attention in slices (less memory, slower than SDPA; useful on MPS).
        vae_slicing: Decode a batch one image at a time, so the VAE peak does not grow with batch size.
        vae_tiling: `on`, `off`, or `auto` (tile only above the family's pixel threshold).
        vae_tile_threshold_sd: Pixel count above which `auto` tiles for SD1/SD2 families.
        vae_tile_threshold_sdxl: Pixel count above which `auto` tiles for SDXL families.
        channels_last: Store UNet weights channels-last (often faster convolutions on tensor cores).
        tf32: Allow TF32 matmuls/convolutions on CUDA for the fp32 parts (A1111 enables this by default).
        compile: torch.compile the UNet (opt-in: the first job at each new size pays minutes of compilation).
        compile_mode: torch.compile mode; see the comment on `CompileMode` for why the default has no graphs.
    """

    device: str = "auto"
    precision: Precision = "auto"
    medvram: bool = False
    lowvram: bool = False
    no_half_vae: bool = False
    xformers: bool = False
    sdp: bool = False
    attention_slicing: bool = False
    vae_slicing: bool = True
    vae_tiling: VaeTiling = "auto"
    vae_tile_threshold_sd: int = SD_TILE_THRESHOLD
    vae_tile_threshold_sdxl: int = SDXL_TILE_THRESHOLD
    channels_last: bool = False
    tf32: bool = True
    compile: bool = False
    compile_mode: CompileMode = "max-autotune-no-cudagraphs"

    def __post_init__(self) -> None:
        # Flags are validated by the CLI parser and settings by their options; these checks catch code that
        # builds a config by hand with a typo, where a silent fallback would hide the mistake.
        if not _DEVICE.fullmatch(self.device):
            raise ValueError(f"device {self.device!r} is not auto, cpu, cuda, cuda:N or mps")
        _check_choice("precision", self.precision, _PRECISIONS)
        _check_choice("vae_tiling", self.vae_tiling, _TILING)
        _check_choice("compile_mode", self.compile_mode, _COMPILE_MODES)
        for name in ("vae_tile_threshold_sd", "vae_tile_threshold_sdxl"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be a positive pixel count")

    @classmethod
    def from_args(cls, args: argparse.Namespace, **settings: Any) -> MemoryConfig:
        """Build a config from parsed flags (`modules.cli.parse_strict`) plus settings-driven fields.

        Args:
            args: Parsed command-line flags. Missing attributes take their defaults, so a namespace from an
                older flag set still works.
            **settings: Values for the settings-driven fields (`attention_slicing`, `vae_tiling`, ...).

        Raises:
            TypeError: A settings key that is not a field (a typo in the caller).
        """
        flags = cls(
            device=getattr(args, "device", "auto"),
            # parse_strict already maps --no-half to fp32; repeated so a hand-built namespace agrees.
            precision="fp32" if getattr(args, "no_half", False) else getattr(args, "precision", "auto"),
            medvram=bool(getattr(args, "medvram", False)),
            lowvram=bool(getattr(args, "lowvram", False)),
            no_half_vae=bool(getattr(args, "no_half_vae", False)),
            xformers=bool(getattr(args, "xformers", False)),
            sdp=bool(getattr(args, "opt_sdp_attention", False)),
        )
        return flags.with_settings(**settings)

    def with_settings(self, **settings: Any) -> MemoryConfig:
        """A copy with some fields changed (settings edits). Unknown names raise TypeError."""
        return dataclasses.replace(self, **settings)

    @property
    def offload(self) -> Offload:
        """The CPU offload mode the flags ask for; `--lowvram` wins over `--medvram`, as in A1111."""
        if self.lowvram:
            return "sequential"
        if self.medvram:
            return "model"
        return "none"

    def tile_threshold(self, family: str) -> int:
        """The pixel count above which `vae_tiling="auto"` tiles for a model family (`sd1`, `sdxl-inpaint`, ...)."""
        return self.vae_tile_threshold_sdxl if family.startswith("sdxl") else self.vae_tile_threshold_sd

    def as_dict(self) -> dict[str, Any]:
        """Plain values, for `describe()` and logs."""
        return dataclasses.asdict(self)


def _check_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"{name} {value!r} is not one of {', '.join(choices)}")

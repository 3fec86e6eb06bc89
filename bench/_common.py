"""Shared helpers for the benchmarks: random-weight checkpoints at true model size, peak memory, machine facts.

Random weights: `random_checkpoint("sd1")` builds a model from the repo's bundled configs
(`modules/engine/models/configs/<family>/`) with PyTorch's default random initialisation, and writes it as an
A1111-style single-file `.safetensors` (fp16 on disk) with the project's own `save_ldm_checkpoint`. Nothing is
downloaded. The file is cached in `bench/.cache/` (gitignored) under a name that carries a hash of the bundled
configs, so a config change builds a new file and reruns reuse the old one. The images such a model makes are
noise; every tensor has the real shape, so compute and memory are those of the real model.

Peak memory: `PeakMemory` reads `torch.cuda.max_memory_allocated()` on CUDA and samples the process RSS in a
thread (every 10 ms) on every device, because CPU offload (`--medvram`/`--lowvram`) moves weights into RAM.
"""

from __future__ import annotations

import hashlib
import os
import platform
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any

import psutil
import torch

REPO = Path(__file__).resolve().parents[1]
CACHE = REPO / "bench" / ".cache"
GIB = 1024**3


# -- random-weight checkpoints -------------------------------------------------------------------------------


def family_config_dir(family: str) -> Path:
    """A complete diffusers config folder for `family` (bundled JSON configs plus tokenizers), cached."""
    from modules.engine.models.family_config import ensure_family_config

    return ensure_family_config(family, CACHE)


def random_checkpoint(family: str, say: Callable[[str], object] = print) -> Path:
    """The cached random-weight single-file checkpoint of `family` (`sd1`, `sdxl`, ...), built on first use.

    Args:
        family: A family with a bundled config folder.
        say: Where progress lines go (building SDXL takes about two minutes on two CPU cores).
    """
    from modules.engine.models.family_config import bundled_config_dir
    from modules.engine.models.ldm_convert import save_ldm_checkpoint

    path = CACHE / f"random-{family}-{_config_digest(bundled_config_dir(family))}-fp16.safetensors"
    if path.is_file():
        return path
    say(f"building random {family} weights at full size (once; cached as {path.relative_to(REPO)}) ...")
    started = time.perf_counter()
    pipe = _random_pipeline(family, family_config_dir(family))
    save_ldm_checkpoint(pipe, path, metadata={"format": "pt", "note": "random weights for benchmarks, not a model"})
    del pipe
    release_memory(torch.device("cpu"))  # so the first measurement's peak RSS does not include the build's heap
    say(f"  built and saved in {time.perf_counter() - started:.0f} s ({path.stat().st_size / GIB:.2f} GiB)")
    return path


def _config_digest(folder: Path) -> str:
    digest = hashlib.sha256()
    for file in sorted(p for p in folder.rglob("*.json") if p.is_file()):
        digest.update(file.relative_to(folder).as_posix().encode())
        digest.update(file.read_bytes())
    return digest.hexdigest()[:10]


def _random_pipeline(family: str, config_dir: Path) -> Any:
    """The family's pipeline with freshly initialised fp16 modules (each halved right after it is built, so the
    fp32 peak is one module, not the whole model: SDXL's fp32 UNet alone is 10 GiB)."""
    import diffusers
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

    torch.manual_seed(0)
    half = torch.float16
    unet = UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(config_dir / "unet")).to(half)
    vae = AutoencoderKL.from_config(AutoencoderKL.load_config(config_dir / "vae")).to(half)
    text_encoder = CLIPTextModel(CLIPTextConfig.from_pretrained(config_dir / "text_encoder")).to(half)
    tokenizer = CLIPTokenizer.from_pretrained(config_dir / "tokenizer")
    scheduler = diffusers.EulerDiscreteScheduler.from_config(
        diffusers.EulerDiscreteScheduler.load_config(config_dir / "scheduler"))
    if family.startswith("sdxl"):
        text_encoder_2 = CLIPTextModelWithProjection(
            CLIPTextConfig.from_pretrained(config_dir / "text_encoder_2")).to(half)
        tokenizer_2 = CLIPTokenizer.from_pretrained(config_dir / "tokenizer_2")
        return diffusers.StableDiffusionXLPipeline(vae=vae, text_encoder=text_encoder, text_encoder_2=text_encoder_2,
                                                   tokenizer=tokenizer, tokenizer_2=tokenizer_2, unet=unet,
                                                   scheduler=scheduler)
    return diffusers.StableDiffusionPipeline(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet,
                                             scheduler=scheduler, safety_checker=None, feature_extractor=None,
                                             requires_safety_checker=False)


def parameter_counts(path: Path) -> dict[str, int]:
    """Parameters per part of a single-file checkpoint (`unet`, `vae`, `text`), read from the header only."""
    from safetensors import safe_open

    counts = {"unet": 0, "vae": 0, "text": 0}
    with safe_open(str(path), framework="numpy") as handle:
        for key in handle.keys():
            size = 1
            for dim in handle.get_slice(key).get_shape():
                size *= dim
            part = ("unet" if key.startswith("model.diffusion_model.")
                    else "vae" if key.startswith("first_stage_model.") else "text")
            counts[part] += size
    return counts


def warm_page_cache(path: Path) -> None:
    """Read a file once so that every loader after this one reads it from the page cache, not the disk."""
    with open(path, "rb") as handle:
        while handle.read(64 * 1024 * 1024):
            pass


# -- memory --------------------------------------------------------------------------------------------------


class PeakMemory:
    """Peak memory over a `with` block: CUDA allocated bytes (on CUDA) and sampled process RSS (always)."""

    def __init__(self, device: torch.device, interval_s: float = 0.01) -> None:
        self.device = device
        self.interval_s = interval_s
        self.cuda_bytes: int | None = None
        self.rss_bytes = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, name="rss-sampler", daemon=True)

    def __enter__(self) -> PeakMemory:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
        self.rss_bytes = psutil.Process().memory_info().rss
        self._thread.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self._stop.set()
        self._thread.join()
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.cuda_bytes = int(torch.cuda.max_memory_allocated(self.device))

    def _sample(self) -> None:
        process = psutil.Process()
        while True:
            self.rss_bytes = max(self.rss_bytes, process.memory_info().rss)
            if self._stop.wait(self.interval_s):
                return


def release_memory(device: torch.device) -> None:
    """Collect garbage, empty the CUDA cache and give freed heap back to the OS, between measurements."""
    import gc

    from modules.engine.memory.devices import trim_process_heap

    gc.collect()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.empty_cache()
    trim_process_heap()


def format_gib(value: int | None) -> str:
    return "-" if value is None else f"{value / GIB:.2f} GiB"


# -- the machine ---------------------------------------------------------------------------------------------


def machine_description(device: torch.device) -> str:
    """One line: the GPU (name, memory, CUDA) or the CPU (model, cores, torch threads), plus RAM."""
    ram = f"RAM {psutil.virtual_memory().total / GIB:.0f} GiB"
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        return (f"GPU {props.name} ({props.total_memory / GIB:.0f} GiB, compute {props.major}.{props.minor}, "
                f"CUDA {torch.version.cuda}); CPU {cpu_model()}, {os.cpu_count()} cores; {ram}")
    return f"CPU {cpu_model()}, {os.cpu_count()} cores, {torch.get_num_threads()} torch threads; {ram}"


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"

"""Tiled model upscaling speed (input megapixels per second) of SD Studio's upscalers, against untiled spandrel.

What is measured, in one process, on one image and one set of weights:

* The model: a random-weight Real-ESRGAN x4plus (basicsr RRDBNet layout: num_feat 64, num_grow_ch 32, 4x), saved as
  `.safetensors` in `models/RealESRGAN` of a temporary data dir and loaded by the app's `UpscalerRegistry`
  (spandrel underneath), so it runs on the device and in the dtype the app would use: fp16 on CUDA, fp32 on CPU.
  On CUDA it is the real topology (23 RRDB blocks, 16.7 M parameters) on a 1024x1024 image. On CPU the run is
  REDUCED, and says so: 2 RRDB blocks on a 160x160 image, because one full-size pass at 160x160 takes minutes on
  two cores. The weights are random; compute and memory are those of the real network at that size.
* Rows: `UpscalerRegistry.upscale(image, name, tile=T, overlap=O)` at each tile size (end to end: PIL to tensor,
  tiles, feathered blending on the CPU, tensor to PIL); the same call with `tile=0` (untiled, our overhead only);
  the baseline, spandrel's untiled model call on the same image tensor already on the device (one
  `descriptor(x)` plus the copy back, no PIL); and PIL's Lanczos resize to the same 4x size, for scale.
* MP/s is input megapixels per second (output is 16x that); "vs untiled" is the ratio to the spandrel baseline.
  The model is loaded and run once on a small image first; on CUDA each row also runs once untimed (cuDNN
  autotunes each new shape). Then `--runs` rounds, each timing every row once in turn (so a change in the
  machine's load hits all rows alike); the median is shown, and "spread" is (max - min) / median.

    venv/bin/python bench/upscale.py                       # CUDA if available, else the reduced CPU run
    venv/bin/python bench/upscale.py --device cpu --blocks 23 --size 128 --tiles 64
    venv/bin/python bench/upscale.py --tiles 128,192,256,512 --overlap 16 --runs 5
    venv/bin/python bench/upscale.py --threads 1           # on a CPU shared with another busy process
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._common import machine_description  # noqa: E402
from modules.engine.memory import MemoryConfig, MemoryManager  # noqa: E402
from modules.engine.postprocess import UpscalerRegistry, extra_model_kinds  # noqa: E402
from modules.model_registry import ModelRegistry, core_kinds  # noqa: E402
from modules.paths import DataPaths  # noqa: E402

MODEL_NAME = "RealESRGAN_x4plus-random"


@dataclass(frozen=True)
class Plan:
    device: str
    blocks: int
    size: int
    tiles: tuple[int, ...]
    overlap: int
    runs: int
    reduced: bool


@dataclass(frozen=True)
class Row:
    label: str
    tiles: int | None
    seconds: float
    spread: float

    def mps(self, pixels: int) -> float:
        return pixels / 1e6 / self.seconds


def main() -> None:
    args = parse_args()
    if args.threads:
        # With a second busy process, torch's per-op thread barriers make many small tiles far slower than one
        # big call (deps.md §3 saw 30x); one thread measures the work, not the scheduling.
        torch.set_num_threads(args.threads)
    plan = make_plan(args)
    logging.basicConfig(level=logging.WARNING)
    with tempfile.TemporaryDirectory(prefix="sd-studio-bench-upscale-") as tmp:
        paths = data_paths(Path(tmp))
        params = save_random_realesrgan(paths.model_folder("RealESRGAN") / f"{MODEL_NAME}.safetensors", plan.blocks)
        models = ModelRegistry(core_kinds(paths))
        for kind in extra_model_kinds(paths):
            models.add_kind(kind)
        memory = MemoryManager(MemoryConfig(device=plan.device))
        upscalers = UpscalerRegistry(models, memory)
        loaded = upscalers.load(MODEL_NAME)
        print_header(plan, memory, params, str(loaded.dtype).removeprefix("torch."))
        image = random_image(plan.size)
        rows = measure(plan, upscalers, image)
        print_table(plan, rows)


# -- plan ----------------------------------------------------------------------------------------------------


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="auto", help="auto (CUDA if available), cpu, cuda or cuda:N")
    parser.add_argument("--blocks", type=int, default=None, help="RRDB blocks (default: 23 on CUDA, 2 on CPU)")
    parser.add_argument("--size", type=int, default=None, help="input edge in pixels (default: 1024 CUDA, 160 CPU)")
    parser.add_argument("--tiles", default=None, help="comma-separated tile sizes (default: 192,512 CUDA; 64,128 CPU)")
    parser.add_argument("--overlap", type=int, default=8, help="tile overlap in input pixels (A1111 default: 8)")
    parser.add_argument("--runs", type=int, default=None, help="timed runs per row (default: 5 CUDA, 3 CPU)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads (default: torch's; use 1 when another process shares the cores)")
    return parser.parse_args()


def make_plan(args: argparse.Namespace) -> Plan:
    cuda = args.device.startswith("cuda") or (args.device == "auto" and torch.cuda.is_available())
    tiles = args.tiles or ("192,512" if cuda else "64,128")
    plan = Plan(
        device=args.device,
        blocks=args.blocks or (23 if cuda else 2),
        size=args.size or (1024 if cuda else 160),
        tiles=tuple(int(t) for t in tiles.split(",")),
        overlap=args.overlap,
        runs=args.runs or (5 if cuda else 3),
        reduced=not cuda,
    )
    return plan


def data_paths(root: Path) -> DataPaths:
    paths = DataPaths(data=root, models=root / "models", embeddings=root / "embeddings", outputs=root / "outputs",
                      extensions=root / "extensions", cache=root / "cache", tmp=root / "tmp")
    paths.ensure()
    paths.model_folder("RealESRGAN").mkdir(parents=True, exist_ok=True)
    return paths


def save_random_realesrgan(path: Path, blocks: int, feat: int = 64, grow: int = 32) -> int:
    """Write a random-weight Real-ESRGAN x4plus-shaped state dict (basicsr key names); returns its parameter count.

    Weights are He-initialised and scaled down (x0.1 inside the blocks, like Real-ESRGAN's residual scaling), so
    activations stay finite through 23 blocks in fp16.
    """
    from safetensors.torch import save_file

    generator = torch.Generator().manual_seed(0)
    state: dict[str, torch.Tensor] = {}

    def conv(name: str, out_ch: int, in_ch: int, gain: float = 1.0) -> None:
        std = (2.0 / (in_ch * 9)) ** 0.5 * gain
        state[f"{name}.weight"] = torch.randn(out_ch, in_ch, 3, 3, generator=generator) * std
        state[f"{name}.bias"] = torch.zeros(out_ch)

    conv("conv_first", feat, 3)
    for block in range(blocks):
        for rdb in (1, 2, 3):
            for j in range(1, 5):
                conv(f"body.{block}.rdb{rdb}.conv{j}", grow, feat + (j - 1) * grow, 0.1)
            conv(f"body.{block}.rdb{rdb}.conv5", feat, feat + 4 * grow, 0.1)
    for name in ("conv_body", "conv_up1", "conv_up2", "conv_hr"):
        conv(name, feat, feat)
    conv("conv_last", 3, feat)
    save_file(state, str(path))
    return sum(t.numel() for t in state.values())


def random_image(size: int) -> Image.Image:
    rng = np.random.default_rng(0)
    return Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8))


# -- measuring -----------------------------------------------------------------------------------------------


def measure(plan: Plan, upscalers: UpscalerRegistry, image: Image.Image) -> list[Row]:
    """Time every configuration, taking the rows in turn within each run so that drift in the machine's load
    (other processes) spreads over all rows instead of skewing the ones measured last."""
    from modules.engine.postprocess.image_modes import to_tensor
    from modules.engine.postprocess.tiling import tile_count

    loaded = upscalers.load(MODEL_NAME)
    device = loaded.device
    x = to_tensor(image)

    def ours(tile: int) -> Callable[[], object]:
        return lambda: upscalers.upscale(image, MODEL_NAME, tile=tile, overlap=plan.overlap, multiple_of=1)

    def spandrel_untiled() -> object:
        return loaded.descriptor(x.to(device=device, dtype=loaded.dtype)).float().cpu()

    def lanczos() -> object:
        return image.resize((image.width * 4, image.height * 4), Image.Resampling.LANCZOS)

    configs: list[tuple[str, int | None, Callable[[], object]]] = [("spandrel untiled (baseline)", None,
                                                                    spandrel_untiled)]
    for tile in plan.tiles:
        count = tile_count(image.width, image.height, tile, plan.overlap, loaded.multiple_of)
        configs.append((f"ours, tile {tile}, overlap {plan.overlap}", count, ours(tile)))
    configs += [("ours, untiled (tile 0)", 1, ours(0)), ("PIL Lanczos 4x", None, lanczos)]

    upscalers.upscale(image.crop((0, 0, 32, 32)), MODEL_NAME)  # first-call costs (allocator, thread pool) once
    if device.type == "cuda":
        for _, _, fn in configs:
            fn()  # cuDNN autotunes each new input shape on its first call
    times: list[list[float]] = [[] for _ in configs]
    for _ in range(plan.runs):
        for index, (_, _, fn) in enumerate(configs):
            times[index].append(timed(device, fn))
            print(".", end="", flush=True)
    print()
    return [Row(label, tiles, statistics.median(t), spread(t)) for (label, tiles, _), t in zip(configs, times,
                                                                                               strict=True)]


def timed(device: torch.device, fn: Callable[[], object]) -> float:
    """Seconds for one call, synchronising CUDA on both sides."""
    sync(device)
    started = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - started


def spread(times: list[float]) -> float:
    """(max - min) / median: how much the machine's speed moved during the run."""
    return (max(times) - min(times)) / statistics.median(times)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# -- output --------------------------------------------------------------------------------------------------


def print_header(plan: Plan, memory: MemoryManager, params: int, dtype: str) -> None:
    print(f"bench/upscale.py: tiled 4x upscaling, {machine_description(memory.device)}")
    print(f"torch {torch.__version__}, device {memory.device}, dtype {dtype}, threads {torch.get_num_threads()}")
    print(f"model: random-weight Real-ESRGAN x4plus topology, {plan.blocks} RRDB blocks "
          f"({params / 1e6:.2f} M parameters; the real model has 23 blocks, 16.70 M)")
    if plan.reduced:
        print("REDUCED CPU run: fewer blocks and a small image so it finishes in about a minute; "
              "figures are not those of the full model")
    print(f"image: {plan.size}x{plan.size} random RGB -> {plan.size * 4}x{plan.size * 4}; "
          f"{plan.runs} timed round(s), rows in turn; median")


def print_table(plan: Plan, rows: list[Row]) -> None:
    pixels = plan.size * plan.size
    baseline = rows[0].mps(pixels)
    print()
    print(f"{'configuration':<34} {'tiles':>5} {'seconds':>9} {'input MP/s':>11} {'vs untiled':>10} {'spread':>7}")
    for row in rows:
        tiles = "-" if row.tiles is None else str(row.tiles)
        mps = row.mps(pixels)
        print(f"{row.label:<34} {tiles:>5} {row.seconds:>9.3f} {mps:>11.4f} {mps / baseline:>9.2f}x "
              f"{row.spread:>6.0%}")


if __name__ == "__main__":
    main()

"""Seeds and initial noise, A1111 style: one seed per image, variation seeds blended in by slerp.

Noise is drawn on the CPU from a seeded generator and then moved to the device, so the same seed gives the
same image on CPU, CUDA and MPS (A1111's "RNG: CPU" setting; its infotext says so).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import TYPE_CHECKING

from modules.engine.requests import MAX_SEED

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True)
class ImageSeeds:
    seed: int
    subseed: int
    subseed_strength: float


def resolve_seed(seed: int) -> int:
    """-1 means a fresh random seed, as in A1111."""
    return random.randint(0, MAX_SEED) if seed == -1 else seed


def seeds_for_job(seed: int, subseed: int, subseed_strength: float, count: int) -> list[ImageSeeds]:
    """Image i gets seed + i (and subseed + i), as A1111 numbers a batch."""
    first, first_sub = resolve_seed(seed), resolve_seed(subseed)
    return [ImageSeeds((first + i) % (MAX_SEED + 1), (first_sub + i) % (MAX_SEED + 1), subseed_strength)
            for i in range(count)]


def initial_noise(seeds: list[ImageSeeds], shape: tuple[int, int, int], device: torch.device,
                  dtype: torch.dtype) -> torch.Tensor:
    """Latent noise for a batch: one (C, H, W) draw per image from its own seed."""
    import torch

    batch = []
    for s in seeds:
        noise = _draw(s.seed, shape)
        if s.subseed_strength > 0:
            noise = slerp(s.subseed_strength, noise, _draw(s.subseed, shape))
        batch.append(noise)
    return torch.stack(batch).to(device=device, dtype=dtype)


def _draw(seed: int, shape: tuple[int, int, int]) -> torch.Tensor:
    import torch

    generator = torch.Generator("cpu").manual_seed(seed)
    return torch.randn(shape, generator=generator, dtype=torch.float32)


def slerp(t: float, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Spherical interpolation between two noise tensors (A1111's variation-seed blend)."""
    import torch

    a_n, b_n = a / a.norm(), b / b.norm()
    dot = (a_n * b_n).sum().clamp(-1.0, 1.0)
    if dot.abs() > 0.9995:  # nearly parallel: plain lerp is exact enough and avoids dividing by ~0
        return (1 - t) * a + t * b
    omega = torch.acos(dot)
    so = torch.sin(omega)
    return (torch.sin((1.0 - t) * omega) / so) * a + (torch.sin(t * omega) / so) * b

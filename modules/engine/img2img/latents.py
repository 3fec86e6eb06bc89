"""The latent side of img2img: init images to latents, masks at latent size, masked content, and our noise.

We encode init images ourselves (the VAE's mean, so the same seed gives the same image) and hand the
pipelines latents; that is also what lets resize mode 3 upscale in latent space and "latent noise" /
"latent nothing" edit the init latents, as A1111 does.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import numpy as np

from modules.engine import hires
from modules.engine.img2img.prepare import latent_mask
from modules.engine.vae import encode as vae_encode

if TYPE_CHECKING:
    import torch

    from modules.engine.engine import Engine
    from modules.engine.img2img.canvas import Canvas

LATENT_NOISE, LATENT_NOTHING = 2, 3


def init_latents(engine: Engine, pipe: Any, canvases: Sequence[Canvas], width: int, height: int) -> torch.Tensor:
    """The batch's init latents at width x height; latent upscale's smaller encodings are interpolated up as
    A1111's mode 3 does."""

    def one(canvas: Canvas) -> torch.Tensor:
        latents = encode(engine, pipe, [canvas.pixels])
        if canvas.pixels.size != (width, height):
            latents = hires.upscale_latents(latents, width, height, "Latent")
        return latents

    return _per_canvas(canvases, one)


def masked_image_latents(engine: Engine, pipe: Any, canvases: Sequence[Canvas], width: int,
                         height: int) -> torch.Tensor:
    """What a 9-channel inpainting UNet is shown besides the mask: the picture with the masked area blanked
    (A1111's conditioning at inpainting_mask_weight 1). Without a mask everything is blanked."""
    import torch

    def one(canvas: Canvas) -> torch.Tensor:
        if canvas.mask is None:
            return _encode_pixels(engine, pipe, torch.zeros(1, 3, height, width))
        keep = torch.from_numpy(np.asarray(canvas.mask) < 128)  # the pipeline's own threshold for its mask
        return _encode_pixels(engine, pipe, pipe.image_processor.preprocess(canvas.pixels) * keep)

    return _per_canvas(canvases, one)


def _per_canvas(canvases: Sequence[Canvas], make: Callable[[Canvas], torch.Tensor]) -> torch.Tensor:
    """`make` for each distinct canvas once (one init image is usually the whole batch), stacked per image."""
    import torch

    made: dict[int, torch.Tensor] = {}
    for canvas in canvases:
        if id(canvas) not in made:
            made[id(canvas)] = make(canvas)
    return torch.cat([made[id(canvas)] for canvas in canvases])


def latent_masks(canvases: Sequence[Canvas], shape: tuple[int, int], round_mask: bool, like: torch.Tensor
                 ) -> torch.Tensor:
    """(batch, 1, h, w) masks at latent size; a canvas without a mask is repainted everywhere."""
    import torch

    height, width = shape
    rows = [torch.ones(height, width) if c.mask is None else
            torch.from_numpy(latent_mask(c.mask, width, height, round_mask)) for c in canvases]
    return torch.stack(rows)[:, None].to(device=like.device, dtype=like.dtype)


def with_masked_content(latents: torch.Tensor, noise: torch.Tensor, masks: torch.Tensor,
                        fill: int) -> torch.Tensor:
    """A1111's "latent noise" (the seed's noise in the masked area) and "latent nothing" (zeros there)."""
    if fill == LATENT_NOISE:
        return latents * (1 - masks) + noise * masks
    if fill == LATENT_NOTHING:
        return latents * (1 - masks)
    return latents


@contextmanager
def noise_from(scheduler: Any, noise: torch.Tensor) -> Iterator[None]:
    """Make the pipeline noise the init latents with `noise` (our seeds, variation seeds included).

    diffusers' img2img and inpaint pipelines draw their own noise and only ever apply it through
    `scheduler.add_noise` (the start, and the 4-channel inpaint blend at every step), so ours goes in there.
    The override lives on this scheduler instance for the block only."""
    original = scheduler.add_noise

    def add_noise(samples: Any, _theirs: Any, timesteps: Any) -> Any:
        return original(samples, noise.to(device=samples.device, dtype=samples.dtype), timesteps)

    scheduler.add_noise = add_noise
    try:
        yield
    finally:
        del scheduler.add_noise


def encode(engine: Engine, pipe: Any, images: list[Any]) -> torch.Tensor:
    return _encode_pixels(engine, pipe, pipe.image_processor.preprocess(images))


def _encode_pixels(engine: Engine, pipe: Any, pixels: torch.Tensor) -> torch.Tensor:
    """[-1, 1] pixels to latents (see `vae.encode`), tiled by the memory manager when they are large."""
    engine.memory.vae_tiling_for(pipe, pixels.shape[-1], pixels.shape[-2])
    return vae_encode(pipe, pixels, engine.memory.device)

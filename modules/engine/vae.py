"""Latents to images through the VAE, with A1111's NaN check: a half-precision VAE that overflows (black or
NaN images, A1111 #6923) is retried in fp32 and stays in fp32 for the rest of the session. And back: pixels to
latents, the one encoder img2img, inpainting and hires fix share."""

from __future__ import annotations

import logging
from typing import Any

log = logging.getLogger(__name__)


def decode(pipe: Any, latents: Any) -> tuple[list[Any], str | None]:
    """PIL images for `latents`, and a note when the fp32 retry was needed."""
    import torch

    vae = pipe.vae
    scaled = latents / vae.config.scaling_factor
    shift = getattr(vae.config, "shift_factor", None)
    if shift:
        scaled = scaled + shift
    if getattr(vae.config, "force_upcast", False) and vae.dtype != torch.float32:
        vae.to(torch.float32)  # SDXL's own VAE is known to overflow in fp16
    image = vae.decode(scaled.to(vae.dtype)).sample
    note = None
    if not torch.isfinite(image).all() and vae.dtype != torch.float32:
        log.warning("VAE output had NaNs in %s; decoding again in fp32", vae.dtype)
        vae.to(torch.float32)
        image = vae.decode(scaled.to(torch.float32)).sample
        note = "The VAE produced NaNs in half precision and was switched to fp32 (like --no-half-vae)."
    return pipe.image_processor.postprocess(image.float(), output_type="pil"), note


def encode(pipe: Any, pixels: Any, device: Any) -> Any:
    """[-1, 1] pixels (N, 3, H, W) to latents in the UNet's dtype on `device`, deterministically (the VAE's mean,
    so the same image always gives the same latents); the inverse of `decode`'s scaling and shift."""
    import torch

    vae = pipe.vae
    if getattr(vae.config, "force_upcast", False) and vae.dtype != torch.float32:
        vae.to(torch.float32)  # as in decode: SDXL's own VAE overflows in fp16
    with torch.inference_mode():
        mean = vae.encode(pixels.to(device=device, dtype=vae.dtype)).latent_dist.mean
    shift = getattr(vae.config, "shift_factor", None) or 0.0
    return ((mean - shift) * vae.config.scaling_factor).to(pipe.unet.dtype)

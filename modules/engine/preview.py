"""The live preview: a cheap linear latent-to-RGB approximation, no VAE decode, so it costs nothing per step."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch
    from PIL import Image

# Least-squares fits of latent channels to RGB, as used by A1111's "Approx cheap" preview.
SD_LATENT_RGB = ((0.298, 0.207, 0.208), (0.187, 0.286, 0.173), (-0.158, 0.189, 0.264), (-0.184, -0.271, -0.473))
SDXL_LATENT_RGB = ((0.3448, 0.4168, 0.4395), (-0.1953, -0.0290, 0.0250), (0.1074, 0.0886, -0.0163),
                   (-0.3730, -0.2499, -0.2088))


def latent_preview(latents: torch.Tensor, sdxl: bool) -> Image.Image:
    """RGB preview of the first latent of a batch."""
    import torch
    from PIL import Image

    coefs = torch.tensor(SDXL_LATENT_RGB if sdxl else SD_LATENT_RGB, dtype=torch.float32)
    latent = latents[0].detach().float().cpu()
    rgb = torch.einsum("lhw,lr->hwr", latent[: coefs.shape[0]], coefs)
    pixels = ((rgb + 1.0) * 127.5).clamp(0, 255).to(torch.uint8).numpy()
    return Image.fromarray(pixels)

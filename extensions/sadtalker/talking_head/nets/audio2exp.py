"""ExpNet: mel windows + reference expression + blink ratio -> 64 expression coefficients per frame.

Reproduces upstream `src/audio2exp_models/networks.SimpleWrapperV2` (keys `audio_encoder.*`, `mapping1.*`, the
`audio2exp.` part of the safetensors file) and the 10-frame loop of `audio2exp.Audio2Exp.test`.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .audio_encoder import build_audio_encoder

# Upstream walks the clip in chunks of this many frames. In eval mode frames are independent, so the chunk size
# only bounds memory; we keep upstream's value so that batch shapes (and float32 kernels) are the same.
EXPNET_CHUNK = 10


class ExpNet(nn.Module):
    """Per-frame expression regressor (upstream `SimpleWrapperV2`)."""

    def __init__(self) -> None:
        super().__init__()
        self.audio_encoder = build_audio_encoder()
        self.mapping1 = nn.Linear(512 + 64 + 1, 64)

    def forward(self, mels: Tensor, ref: Tensor, ratio: Tensor) -> Tensor:
        """mels (B*T, 1, 80, 16), ref (B, T, 64), ratio (B, T, 1) -> (B, T, 64).

        The prediction is the expression itself: upstream has no residual on `ref` (it is commented out).
        """
        audio = self.audio_encoder(mels).view(mels.size(0), -1)
        features = torch.cat([audio, ref.reshape(mels.size(0), -1), ratio.reshape(mels.size(0), -1)], dim=1)
        return self.mapping1(features).reshape(ref.shape[0], ref.shape[1], -1)

    def predict_clip(self, indiv_mels: Tensor, ref: Tensor, ratio: Tensor) -> Tensor:
        """Whole clip like `Audio2Exp.test`: indiv_mels (B, T, 1, 80, 16), ref (B, T, >=64), ratio (B, T, 1).

        Returns (B, T, 64); only `ref[..., :64]` (the expression part of the coefficients) is used.
        """
        chunks = []
        for start in range(0, indiv_mels.shape[1], EXPNET_CHUNK):
            stop = start + EXPNET_CHUNK
            mels = indiv_mels[:, start:stop].reshape(-1, 1, 80, 16)
            chunks.append(self(mels, ref[:, start:stop, :64], ratio[:, start:stop]))
        return torch.cat(chunks, dim=1)

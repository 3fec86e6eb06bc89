"""PoseVAE: audio -> head-pose motion (3 angles + 3 translations) over 32-frame chunks, one of 46 styles.

Reproduces upstream `src/audio2pose_models/audio2pose.Audio2Pose` (keys `audio2pose.*` of the safetensors file)
with `cvae.CVAE`, `audio_encoder.AudioEncoder` and `discriminator.PoseSequenceDiscriminator`, built from
auido2pose.yaml. The CVAE encoder (`netG.encoder.*`) and the motion discriminator (`netD_motion.*`) are used only
in training, but they are in the checkpoint and upstream loads strictly, so they are built here too.
The Savitzky-Golay smoothing that `Audio2Coeff.generate` applies afterwards is `smooth_pose`.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .audio_encoder import build_audio_encoder
from .res_unet import ResUnet

SEQ_LEN = 32  # frames per CVAE chunk (MODEL.CVAE.SEQ_LEN)
LATENT_SIZE = 64  # MODEL.CVAE.LATENT_SIZE
NUM_CLASSES = 46  # pose styles (DATASET.NUM_CLASSES)
AUDIO_EMB_IN, AUDIO_EMB_OUT = 512, 6
SAVGOL_WINDOW, SAVGOL_POLYORDER = 13, 2


class PoseAudioEncoder(nn.Module):
    """(B, T, 1, 80, 16) mel windows -> (B, T, 512) (upstream `AudioEncoder`; keys `audio_encoder.audio_encoder.*`)."""

    def __init__(self) -> None:
        super().__init__()
        self.audio_encoder = build_audio_encoder()

    def forward(self, mels: Tensor) -> Tensor:
        batch = mels.size(0)
        # Upstream stacks the frames time-major and then reads the result back batch-major. That is only
        # correct for B = 1 (the only size inference uses); we reproduce it as is rather than silently differ.
        stacked = torch.cat([mels[:, i] for i in range(mels.size(1))], dim=0)
        emb = self.audio_encoder(stacked)
        return emb.reshape(batch, -1, emb.shape[1], 1, 1).squeeze(-1).squeeze(-1)


class CVAEEncoder(nn.Module):
    """Training-only posterior q(z | pose, audio, style) (upstream `ENCODER`); present for strict loading."""

    def __init__(self) -> None:
        super().__init__()
        self.resunet = ResUnet()
        # Upstream's config list [192, 128] is mutated in place: 192 + 64 + 32*6 + 6 = 454 inputs.
        in_size = 192 + LATENT_SIZE + SEQ_LEN * AUDIO_EMB_OUT + 6
        self.MLP = nn.Sequential()
        self.MLP.add_module("L0", nn.Linear(in_size, 128))
        self.MLP.add_module("A0", nn.ReLU())
        self.linear_means = nn.Linear(128, LATENT_SIZE)
        self.linear_logvar = nn.Linear(128, LATENT_SIZE)
        self.linear_audio = nn.Linear(AUDIO_EMB_IN, AUDIO_EMB_OUT)
        self.classbias = nn.Parameter(torch.zeros(NUM_CLASSES, LATENT_SIZE))

    def forward(
        self, pose_motion: Tensor, ref: Tensor, audio_emb: Tensor, class_id: Tensor
    ) -> tuple[Tensor, Tensor]:
        """(mu, logvar) for a training batch. As upstream, logvar comes from `linear_means` (its bug, kept)."""
        bs = pose_motion.shape[0]
        pose_emb = self.resunet(pose_motion.unsqueeze(1)).reshape(bs, -1)
        audio_out = self.linear_audio(audio_emb).reshape(bs, -1)
        x_out = self.MLP(torch.cat([ref, pose_emb, audio_out, self.classbias[class_id]], dim=-1))
        return self.linear_means(x_out), self.linear_means(x_out)


class CVAEDecoder(nn.Module):
    """p(pose motion | z, reference pose, audio, style) (upstream `DECODER`)."""

    def __init__(self) -> None:
        super().__init__()
        self.resunet = ResUnet()
        self.MLP = nn.Sequential()
        self.MLP.add_module("L0", nn.Linear(LATENT_SIZE + SEQ_LEN * AUDIO_EMB_OUT + 6, 128))
        self.MLP.add_module("A0", nn.ReLU())
        self.MLP.add_module("L1", nn.Linear(128, SEQ_LEN * AUDIO_EMB_OUT))
        self.MLP.add_module("sigmoid", nn.Sigmoid())
        self.pose_linear = nn.Linear(6, 6)
        self.linear_audio = nn.Linear(AUDIO_EMB_IN, AUDIO_EMB_OUT)
        self.classbias = nn.Parameter(torch.zeros(NUM_CLASSES, LATENT_SIZE))

    def forward(self, z: Tensor, class_id: Tensor, ref: Tensor, audio_emb: Tensor) -> Tensor:
        """z (B, 64), class_id (B,) or (1,), ref (B, 6), audio_emb (B, 32, 512) -> motion (B, 32, 6)."""
        bs = z.shape[0]
        audio_out = self.linear_audio(audio_emb).reshape(bs, -1)
        x_in = torch.cat([ref, z + self.classbias[class_id], audio_out], dim=-1)
        x_out = self.MLP(x_in).reshape(bs, SEQ_LEN, -1)
        return self.pose_linear(self.resunet(x_out.unsqueeze(1)).squeeze(1))


class CVAE(nn.Module):
    """Container with upstream's `netG.encoder` / `netG.decoder` key names."""

    def __init__(self) -> None:
        super().__init__()
        self.encoder = CVAEEncoder()
        self.decoder = CVAEDecoder()


class ConvNormRelu1d(nn.Module):
    """Conv1d (no bias) -> BatchNorm1d -> ReLU (upstream `ConvNormRelu('1d', norm='BN', leaky=False)`)."""

    def __init__(self, cin: int, cout: int, kernel_size: int, stride: int, padding: int) -> None:
        super().__init__()
        self.conv = nn.Conv1d(cin, cout, kernel_size, stride, padding, bias=False)
        self.norm = nn.BatchNorm1d(cout)

    def forward(self, x: Tensor) -> Tensor:
        return torch.relu(self.norm(self.conv(x)))


class PoseSequenceDiscriminator(nn.Module):
    """Training-only motion discriminator (`netD_motion.seq.*`); present for strict loading."""

    def __init__(self, input_channels: int = 6) -> None:
        super().__init__()
        self.seq = nn.Sequential(
            ConvNormRelu1d(input_channels, 256, 4, 2, 1),
            ConvNormRelu1d(256, 512, 4, 2, 1),
            ConvNormRelu1d(512, 1024, 3, 1, 1),
            nn.Conv1d(1024, 1, kernel_size=3, stride=1, padding=1, bias=True),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.seq(x.reshape(x.size(0), x.size(1), -1).transpose(1, 2)).squeeze(1)


def num_noise_draws(num_frames: int) -> int:
    """How many latent vectors `PoseVAE.predict` draws for a clip: one per full chunk plus one for a remainder."""
    div, rest = divmod(num_frames - 1, SEQ_LEN)
    return div + (1 if rest else 0)


class PoseVAE(nn.Module):
    """Upstream `Audio2Pose`: `audio_encoder`, `netG` (CVAE), `netD_motion` (training only)."""

    def __init__(self) -> None:
        super().__init__()
        self.audio_encoder = PoseAudioEncoder()
        self.netG = CVAE()
        self.netD_motion = PoseSequenceDiscriminator()

    def predict(
        self,
        indiv_mels: Tensor,
        ref: Tensor,
        pose_style: int,
        num_frames: int,
        z: Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> dict[str, Tensor]:
        """The test-time loop of `Audio2Pose.test`. Returns `pose_motion_pred` and `pose_pred`, each (B, T, 6).

        indiv_mels (B, T, 1, 80, 16); ref (B, T, 70), the pose reference is `ref[:, 0, 64:70]`. Frame 0 IS the
        reference (motion exactly 0); frames 1..T-1 go in chunks of 32, each with a fresh latent; a remainder
        re = (T-1) % 32 is predicted from the LAST 32 frames (audio embeddings front-padded with the first one if
        fewer exist) and only its last `re` outputs are kept. `z` (num_noise_draws(T), B*64) injects the latents
        in draw order (upstream calls torch.randn(B, 64) per chunk); otherwise they are drawn from `generator`.
        """
        bs = ref.shape[0]
        ref_pose = ref[:, 0, -6:]
        class_id = torch.tensor([pose_style], dtype=torch.long, device=ref.device)
        mels = indiv_mels[:, 1:]
        div, rest = divmod(int(num_frames) - 1, SEQ_LEN)
        needed = num_noise_draws(int(num_frames))
        if z is not None and z.shape[0] != needed:
            raise ValueError(f"need {needed} latent rows for {num_frames} frames, got {z.shape[0]}")
        draws = iter(range(needed))

        def latent() -> Tensor:
            row = next(draws)
            if z is not None:
                return z[row].reshape(bs, LATENT_SIZE).to(ref.dtype)
            return torch.randn(bs, LATENT_SIZE, generator=generator).to(ref.device, ref.dtype)

        motions = [torch.zeros(bs, 1, 6, dtype=ref.dtype, device=ref.device)]
        for i in range(div):
            audio_emb = self.audio_encoder(mels[:, i * SEQ_LEN : (i + 1) * SEQ_LEN])
            motions.append(self.netG.decoder(latent(), class_id, ref_pose, audio_emb))
        if rest:
            zr = latent()  # drawn before the encoder runs, as upstream does
            audio_emb = self.audio_encoder(mels[:, -SEQ_LEN:])
            if audio_emb.shape[1] != SEQ_LEN:
                pad = audio_emb[:, :1].repeat(1, SEQ_LEN - audio_emb.shape[1], 1)
                audio_emb = torch.cat([pad, audio_emb], dim=1)
            motions.append(self.netG.decoder(zr, class_id, ref_pose, audio_emb)[:, -rest:, :])
        motion = torch.cat(motions, dim=1)
        return {"pose_motion_pred": motion, "pose_pred": ref[:, :1, -6:] + motion}


def savgol_window(num_frames: int) -> int:
    """Window of upstream's smoothing: 13, or int((T-1)/2)*2+1 (odd, at most T) when T < 13."""
    return SAVGOL_WINDOW if num_frames >= SAVGOL_WINDOW else int((num_frames - 1) / 2) * 2 + 1


def smooth_pose(pose_pred: Tensor) -> Tensor:
    """Savitzky-Golay (polyorder 2, mode 'interp') over time, as `Audio2Coeff.generate` does on (B, T, 6).

    Runs scipy on the float32 numpy copy like upstream. For T <= 2 the window would be 1, which scipy (and so
    upstream) rejects; such a clip is returned unsmoothed instead of failing.
    """
    from scipy.signal import savgol_filter

    window = savgol_window(pose_pred.shape[1])
    if window <= SAVGOL_POLYORDER:
        return pose_pred.clone()
    smoothed = savgol_filter(pose_pred.detach().cpu().numpy(), window, SAVGOL_POLYORDER, axis=1)
    return torch.from_numpy(smoothed).to(dtype=torch.float32, device=pose_pred.device)

"""SPADE decoder of the SadTalker renderer, with its spectral-normalised residual blocks.

Reproduces upstream `src/facerender/modules/util.SPADE` / `SPADEResnetBlock` and `generator.SPADEDecoder`
(norm_G 'spadespectralinstance'). Spectral norm trap (study.md §7): the checkpoints store each normalised conv
as `weight_orig`, `weight_u` (out channels) and `weight_v` (flattened fan-in), and in eval mode torch's
`spectral_norm` does NO power iteration: the weight used is weight_orig / (u . (W_mat v)) with the STORED u, v.
`SpectralNormConv2d` evaluates exactly that and never updates u or v.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class SpectralNormConv2d(nn.Module):
    """Conv2d whose weight is `weight_orig / sigma`, sigma = u . (weight_orig.reshape(out, -1) @ v), u/v as stored."""

    def __init__(self, cin: int, cout: int, kernel_size: int, padding: int = 0, bias: bool = True) -> None:
        super().__init__()
        # Registration order bias, weight_orig, weight_u, weight_v = the key order of torch's spectral_norm.
        self.register_parameter("bias", nn.Parameter(torch.zeros(cout)) if bias else None)
        self.weight_orig = nn.Parameter(torch.empty(cout, cin, kernel_size, kernel_size))
        self.register_buffer("weight_u", torch.zeros(cout))
        self.register_buffer("weight_v", torch.zeros(cin * kernel_size * kernel_size))
        self.padding = padding

    def weight(self) -> Tensor:
        """The effective (normalised) convolution weight."""
        weight_mat = self.weight_orig.reshape(self.weight_orig.shape[0], -1)
        sigma = torch.dot(self.weight_u, torch.mv(weight_mat, self.weight_v))
        return self.weight_orig / sigma

    def forward(self, x: Tensor) -> Tensor:
        return F.conv2d(x, self.weight(), self.bias, padding=self.padding)


class SPADE(nn.Module):
    """InstanceNorm(x) * (1 + gamma(seg)) + beta(seg), seg resized (nearest) to x's size."""

    def __init__(self, norm_nc: int, label_nc: int, hidden: int = 128) -> None:
        super().__init__()
        self.mlp_shared = nn.Sequential(nn.Conv2d(label_nc, hidden, kernel_size=3, padding=1), nn.ReLU())
        self.mlp_gamma = nn.Conv2d(hidden, norm_nc, kernel_size=3, padding=1)
        self.mlp_beta = nn.Conv2d(hidden, norm_nc, kernel_size=3, padding=1)

    def forward(self, x: Tensor, segmap: Tensor) -> Tensor:
        normalized = F.instance_norm(x, eps=1e-5)  # nn.InstanceNorm2d(affine=False): no weights, no running stats
        actv = self.mlp_shared(F.interpolate(segmap, size=x.shape[2:], mode="nearest"))
        return normalized * (1 + self.mlp_gamma(actv)) + self.mlp_beta(actv)


class SPADEResnetBlock(nn.Module):
    """x_s + conv_1(lrelu(norm_1(conv_0(lrelu(norm_0(x)))))); x_s = conv_s(norm_s(x)) when channels change."""

    def __init__(self, fin: int, fout: int, label_nc: int = 256, hidden: int = 128) -> None:
        super().__init__()
        self.learned_shortcut = fin != fout
        fmiddle = min(fin, fout)
        self.conv_0 = SpectralNormConv2d(fin, fmiddle, kernel_size=3, padding=1)
        self.conv_1 = SpectralNormConv2d(fmiddle, fout, kernel_size=3, padding=1)
        if self.learned_shortcut:
            self.conv_s = SpectralNormConv2d(fin, fout, kernel_size=1, bias=False)
        self.norm_0 = SPADE(fin, label_nc, hidden)
        self.norm_1 = SPADE(fmiddle, label_nc, hidden)
        if self.learned_shortcut:
            self.norm_s = SPADE(fin, label_nc, hidden)

    def forward(self, x: Tensor, seg: Tensor) -> Tensor:
        # The shortcut has no activation between norm_s and conv_s (upstream `shortcut`).
        x_s = self.conv_s(self.norm_s(x, seg)) if self.learned_shortcut else x
        dx = self.conv_0(F.leaky_relu(self.norm_0(x, seg), 0.2))
        dx = self.conv_1(F.leaky_relu(self.norm_1(dx, seg), 0.2))
        return x_s + dx


class SPADEDecoder(nn.Module):
    """(B, ic, h, w) warped features -> (B, 3, 4h, 4w) image in (0, 1).

    Defaults are upstream's fixed decoder (ic 256, oc 64, SPADE hidden width 128, 6 middle blocks). The other
    values exist only to build small test networks (an architecture config carried by the checkpoint file).
    """

    def __init__(self, ic: int = 256, oc: int = 64, hidden: int = 128, num_middle_blocks: int = 6) -> None:
        super().__init__()
        self.num_middle_blocks = num_middle_blocks
        self.fc = nn.Conv2d(ic, 2 * ic, 3, padding=1)
        for i in range(num_middle_blocks):
            self.add_module(f"G_middle_{i}", SPADEResnetBlock(2 * ic, 2 * ic, label_nc=ic, hidden=hidden))
        self.up_0 = SPADEResnetBlock(2 * ic, ic, label_nc=ic, hidden=hidden)
        self.up_1 = SPADEResnetBlock(ic, oc, label_nc=ic, hidden=hidden)
        self.conv_img = nn.Conv2d(oc, 3, 3, padding=1)

    def forward(self, feature: Tensor) -> Tensor:
        x = self.fc(feature)
        for i in range(self.num_middle_blocks):
            x = self.get_submodule(f"G_middle_{i}")(x, feature)
        x = self.up_0(F.interpolate(x, scale_factor=2), feature)  # nn.Upsample(scale_factor=2): nearest
        x = self.up_1(F.interpolate(x, scale_factor=2), feature)
        return torch.sigmoid(self.conv_img(F.leaky_relu(x, 0.2)))

"""Deep3DFaceRecon 3DMM regressor: a 224x224 RGB face crop -> 257 3DMM coefficients.

Reproduces upstream `src/face3d/models/networks.ReconNetWrapper(net_recon="resnet50", use_last_fc=False)`:
the torchvision ResNet-50 layout (Bottleneck [3, 4, 6, 3], stride in the 3x3 conv, no `fc`) under `backbone.*`,
then seven 1x1 convolutions with bias under `final_layers.0..6` (2048 -> 80 id, 64 exp, 80 tex, 3 angle,
27 gamma, 2 tx/ty, 1 tz) whose outputs are concatenated in that order.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

COEFF_SPLITS: tuple[int, ...] = (80, 64, 80, 3, 27, 2, 1)  # id, exp, tex, angle, gamma, (tx, ty), tz


class Bottleneck(nn.Module):
    """1x1 -> 3x3 (stride here, torchvision v1.5) -> 1x1 x4, with an optional conv-BN downsample skip."""

    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, kernel_size=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, kernel_size=3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * self.expansion, kernel_size=1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.downsample = downsample

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        identity = x if self.downsample is None else self.downsample(x)
        return F.relu(out + identity)


class ResNet50Backbone(nn.Module):
    """ResNet-50 up to the global average pool: (B, 3, H, W) -> (B, 2048, 1, 1)."""

    def __init__(self, layers: tuple[int, int, int, int] = (3, 4, 6, 3)) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        inplanes = 64
        for index, (planes, blocks) in enumerate(zip((64, 128, 256, 512), layers), start=1):
            stride = 1 if index == 1 else 2
            downsample = nn.Sequential(
                nn.Conv2d(inplanes, planes * Bottleneck.expansion, kernel_size=1, stride=stride, bias=False),
                nn.BatchNorm2d(planes * Bottleneck.expansion),
            )
            stage = [Bottleneck(inplanes, planes, stride, downsample)]
            inplanes = planes * Bottleneck.expansion
            stage += [Bottleneck(inplanes, planes) for _ in range(1, blocks)]
            self.add_module(f"layer{index}", nn.Sequential(*stage))
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))

    def forward(self, x: Tensor) -> Tensor:
        x = self.maxpool(F.relu(self.bn1(self.conv1(x))))
        for index in range(1, 5):
            x = self.get_submodule(f"layer{index}")(x)
        return self.avgpool(x)


class FaceReconNet(nn.Module):
    """(B, 3, 224, 224) RGB in [0, 1] -> (B, 257): id 0:80 | exp 80:144 | tex 144:224 | angle 224:227 |
    gamma 227:254 | trans 254:257."""

    def __init__(self) -> None:
        super().__init__()
        self.backbone = ResNet50Backbone()
        self.final_layers = nn.ModuleList(nn.Conv2d(2048, n, kernel_size=1, bias=True) for n in COEFF_SPLITS)

    def forward(self, x: Tensor) -> Tensor:
        features = self.backbone(x)
        return torch.flatten(torch.cat([layer(features) for layer in self.final_layers], dim=1), 1)


def coeffs_70(coeffs_257: Tensor) -> Tensor:
    """The 70 columns SadTalker keeps per frame: exp 80:144 | angle 224:227 | trans 254:257."""
    return torch.cat([coeffs_257[:, 80:144], coeffs_257[:, 224:227], coeffs_257[:, 254:257]], dim=1)

"""Our re-implementations of the SadTalker inference networks, one module per network family.

`build_network(name)` builds the class for a `weights-manifest.json` network name with the configuration that
upstream inference uses, so that the released checkpoints load strictly (see `..weights.build_and_load`).
"""

from __future__ import annotations

import torch
from torch import nn

from .audio2exp import ExpNet
from .audio2pose import PoseVAE
from .face_recon import FaceReconNet
from .generator import OcclusionAwareSPADEGenerator
from .kp_detector import KPDetector
from .mapping import MappingNet, mapping_net_for

__all__ = [
    "ExpNet",
    "FaceReconNet",
    "KPDetector",
    "MappingNet",
    "OcclusionAwareSPADEGenerator",
    "PoseVAE",
    "build_network",
]


def build_network(name: str, device: str | torch.device = "cpu") -> nn.Module:
    """A fresh network in eval mode. `device="meta"` allocates nothing (load weights with `assign=True`)."""
    with torch.device(device):
        match name:
            case "face_3drecon":
                module: nn.Module = FaceReconNet()
            case "audio2exp":
                module = ExpNet()
            case "audio2pose":
                module = PoseVAE()
            case "kp_extractor":
                module = KPDetector()
            case "generator":
                module = OcclusionAwareSPADEGenerator()
            case "mapping_crop" | "mapping_full":
                module = mapping_net_for(name)
            case _:
                raise ValueError(f"unknown SadTalker network {name!r}")
    return module.eval()

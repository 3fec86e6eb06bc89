"""Our re-implementations of the SadTalker inference networks, one module per network family.

`build_network(name)` builds the class for a `weights-manifest.json` network name with the configuration that
upstream inference uses, so that the released checkpoints load strictly (see `..weights.build_and_load`).

`build_network(name, config={...})` overrides constructor keywords of that network: the architecture config a
checkpoint file may carry (small random-weight test networks do; the official files carry none). Only the
renderer networks and MappingNet have such keywords; the others take none.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import Any

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


# MappingNet's input width is what tells the two variants apart, so a config may not change it.
_MAPPING_COEFF_NC = {"mapping_crop": 70, "mapping_full": 73}


def _constructor_kwargs(name: str, cls: type, config: Mapping[str, Any] | None) -> dict[str, Any]:
    """`config` as constructor keywords of `cls`; ValueError for a name the constructor does not take."""
    if config is not None and not isinstance(config, Mapping):
        raise ValueError(f"config for {name}: expected a mapping of constructor options, got {type(config).__name__}")
    kwargs = dict(config or {})
    fixed = ("self", "coeff_nc") if name in _MAPPING_COEFF_NC else ("self",)
    accepted = [p for p in inspect.signature(cls.__init__).parameters if p not in fixed]
    unknown = sorted(set(kwargs) - set(accepted))
    if unknown:
        takes = ", ".join(accepted) if accepted else "no architecture options"
        raise ValueError(f"config for {name}: unknown option(s) {', '.join(unknown)} ({cls.__name__} takes {takes})")
    return kwargs


def build_network(
    name: str, device: str | torch.device = "cpu", config: Mapping[str, Any] | None = None
) -> nn.Module:
    """A fresh network in eval mode. `device="meta"` allocates nothing (load weights with `assign=True`).

    `config` holds constructor keyword overrides for this one network (None or empty: upstream's configuration).
    A MappingNet's `coeff_nc` is fixed by the variant (70 for mapping_crop, 73 for mapping_full). A config that
    does not build (unknown option, impossible value) raises ValueError naming the network.
    """
    classes: dict[str, type[nn.Module]] = {
        "face_3drecon": FaceReconNet,
        "audio2exp": ExpNet,
        "audio2pose": PoseVAE,
        "kp_extractor": KPDetector,
        "generator": OcclusionAwareSPADEGenerator,
        "mapping_crop": MappingNet,
        "mapping_full": MappingNet,
    }
    if name not in classes:
        raise ValueError(f"unknown SadTalker network {name!r}")
    cls = classes[name]
    kwargs = _constructor_kwargs(name, cls, config)
    with torch.device(device):
        if not kwargs:
            # Upstream's configuration, built exactly as before configs existed.
            module: nn.Module = mapping_net_for(name) if cls is MappingNet else cls()
        else:
            if cls is MappingNet:
                kwargs["coeff_nc"] = _MAPPING_COEFF_NC[name]
            try:
                module = cls(**kwargs)
            except (TypeError, ValueError) as error:
                raise ValueError(f"config for {name} does not build {cls.__name__}: {error}") from error
    return module.eval()

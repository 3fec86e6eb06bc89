"""Fixtures for the SadTalker re-implementation tests: where the golden vectors and the manifest live.

`SADTALKER_GOLDEN_DIR` points at a golden set (default: ../shared/sadtalker/golden next to the repo); the weights
manifest is `weights-manifest.json` in its parent (override with `SADTALKER_MANIFEST`). Tests read seeds, settings
and tolerances from the case sidecars, so another set of the same format passes the same tests.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch

from ._pkg import REPO_ROOT


def golden_dir() -> Path:
    return Path(os.environ.get("SADTALKER_GOLDEN_DIR", REPO_ROOT.parent / "shared" / "sadtalker" / "golden"))


def manifest_path() -> Path:
    return Path(os.environ.get("SADTALKER_MANIFEST", golden_dir().parent / "weights-manifest.json"))


@dataclass(frozen=True)
class GoldenCase:
    """One case: its sidecar JSON and its tensors (inputs and outputs together)."""

    name: str
    sidecar: Mapping[str, Any]
    tensors: Mapping[str, torch.Tensor]

    @property
    def weight_seed(self) -> int:
        return int(self.sidecar["weight_seed"])

    def outputs(self, prefix: str = "") -> list[str]:
        return [k for k, v in self.sidecar["tensors"].items() if v["role"] == "output" and k.startswith(prefix)]

    def check(self, got: Mapping[str, torch.Tensor], names: list[str] | None = None) -> dict[str, float]:
        """Compare our outputs with the stored ones using the sidecar's recommended tolerance (exact for ints).

        Returns the max abs error per tensor; every output named (default: all with a tolerance) must be given.
        """
        tolerances = self.sidecar["recommended_tolerance"]
        errors: dict[str, float] = {}
        failures = []
        for name in names if names is not None else list(tolerances):
            want = self.tensors[name]
            have = got[name].detach().to("cpu")
            assert have.shape == want.shape, f"{self.name}/{name}: shape {list(have.shape)} != {list(want.shape)}"
            if not want.is_floating_point():
                diff = (have.to(torch.int64) - want.to(torch.int64)).abs()
                errors[name] = float(diff.max()) if want.numel() else 0.0
                atol = 0.0
            else:
                errors[name] = float((have.to(torch.float64) - want.to(torch.float64)).abs().max())
                atol = float(tolerances[name]["atol"])
            if not errors[name] <= atol:
                failures.append(f"{name}: max abs error {errors[name]:.3g} > atol {atol:.3g}")
        assert not failures, f"{self.name}: " + "; ".join(failures)
        return errors


@pytest.fixture(scope="session")
def golden_root() -> Path:
    root = golden_dir()
    if not (root / "index.json").is_file():
        pytest.skip(f"no SadTalker golden set at {root} (set SADTALKER_GOLDEN_DIR)")
    return root


@pytest.fixture(scope="session")
def manifest() -> dict[str, Any]:
    path = manifest_path()
    if not path.is_file():
        pytest.skip(f"no SadTalker weights manifest at {path} (set SADTALKER_MANIFEST)")
    return json.loads(path.read_text())


@pytest.fixture(scope="session")
def constants(golden_root: Path) -> dict[str, Any]:
    """`constants.json` next to the golden set: the upstream numbers our module constants must equal."""
    path = golden_root.parent / "constants.json"
    if not path.is_file():
        pytest.skip(f"no SadTalker constants at {path}")
    return json.loads(path.read_text())


@pytest.fixture(scope="session")
def synthetic_net() -> Any:
    """build(network, seed) -> our network with the golden weight formula's weights, built once per session
    (the renderer's generator alone takes seconds to fill)."""
    from ._pkg import submodule

    weights = submodule("weights")
    cache: dict[tuple[str, int], torch.nn.Module] = {}

    def build(network: str, seed: int) -> torch.nn.Module:
        if (network, seed) not in cache:
            state = weights.synthetic_state_dict(network, seed)
            cache[(network, seed)] = weights.build_and_load(network, state, f"synthetic:{network}")
        return cache[(network, seed)]

    return build


@pytest.fixture(scope="session")
def load_case(golden_root: Path) -> Any:
    from safetensors.torch import load_file

    def load(name: str) -> GoldenCase:
        sidecar = json.loads((golden_root / f"{name}.json").read_text())
        return GoldenCase(name, sidecar, load_file(str(golden_root / sidecar["file"])))

    return load

"""Checkpoint handling for the SadTalker networks: strict loading, splitting the released files, synthetic weights.

Upstream (OpenTalker/SadTalker cd4c046) loads every network with strict `load_state_dict`. The released
`SadTalker_V0.0.2_{256,512}.safetensors` is one flat state dict of a wrapper whose children are `kp_extractor`,
`generator`, `audio2exp`, `audio2pose` and `face_3drecon`; the MappingNet lives in separate torch pickles
(`mapping_00229-model.pth.tar` for crop/extcrop/resize, `mapping_00109-model.pth.tar` for full/extfull) under the
dict key `"mapping"`. The legacy `.pth` files hold the same keys without the prefix under a dict key each.

`synthetic_state_dict` reproduces the deterministic weight formula of the golden test set
(shared/sadtalker/golden/README.md) bit for bit, so our networks can be checked against the stored vectors.

torch is imported inside the functions so that importing this module stays cheap.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, NamedTuple

if TYPE_CHECKING:
    from torch import Tensor, nn

# Children of upstream's wrapper module, i.e. the key prefixes of the combined safetensors file.
SAFETENSORS_NETWORKS: tuple[str, ...] = ("kp_extractor", "generator", "audio2exp", "audio2pose", "face_3drecon")
# MappingNet variants: 70 coefficients in (crop/extcrop/resize) and 73 in (full/extfull).
MAPPING_NETWORKS: tuple[str, ...] = ("mapping_crop", "mapping_full")
ALL_NETWORKS: tuple[str, ...] = SAFETENSORS_NETWORKS + MAPPING_NETWORKS
# Dict key of each network inside the legacy (pre-safetensors) release files.
LEGACY_DICT_KEYS: Mapping[str, str] = MappingProxyType(
    {
        "face_3drecon": "net_recon",
        "audio2exp": "model",
        "audio2pose": "model",
        "kp_extractor": "kp_detector",
        "generator": "generator",
        "mapping_crop": "mapping",
        "mapping_full": "mapping",
    }
)
# How many offending keys an error message lists per category before it says "and N more".
_SHOWN_KEYS = 5


class ParamSpec(NamedTuple):
    """One state-dict entry as the manifest lists it: key, shape and dtype name ("float32" or "int64")."""

    key: str
    shape: tuple[int, ...]
    dtype: str


class CheckpointMismatchError(ValueError):
    """A state dict does not fit a network exactly (missing, unexpected or reshaped keys)."""


def param_specs_from_manifest(manifest: Mapping[str, Any], network: str) -> list[ParamSpec]:
    """The `params` list of one network of `weights-manifest.json`, in state_dict order."""
    return [ParamSpec(key, tuple(int(n) for n in shape), dtype) for key, shape, dtype in manifest[network]["params"]]


def param_specs_from_module(module: nn.Module) -> list[ParamSpec]:
    """The state-dict layout of one of our modules (works on the meta device: nothing is allocated)."""
    return [
        ParamSpec(key, tuple(tensor.shape), str(tensor.dtype).removeprefix("torch."))
        for key, tensor in module.state_dict().items()
    ]


def mapping_network_for_preprocess(preprocess: str) -> str:
    """Upstream picks the MappingNet file by whether `full` occurs in the preprocess name (NOT by --still)."""
    return "mapping_full" if "full" in preprocess.lower() else "mapping_crop"


# --------------------------------------------------------------------------------------------------------------
# Synthetic weights (golden README "The weight formula")
# --------------------------------------------------------------------------------------------------------------


def _key_generator(key: str, seed: int) -> Any:
    import torch

    # One CPU generator per key, seeded from the unsigned crc32 of the key: values do not depend on key order.
    return torch.Generator().manual_seed((zlib.crc32(key.encode()) + seed) % 2**31)


def _dense_draw(key: str, shape: tuple[int, ...], seed: int) -> Tensor:
    """The >=2-dim rule: N(0,1) / sqrt(prod(shape[1:])), prod taken literally for every layout."""
    import torch

    return torch.randn(shape, generator=_key_generator(key, seed)) / math.sqrt(math.prod(shape[1:]))


def _spectral_v(key: str, shape: tuple[int, ...], seed: int) -> Tensor:
    import torch

    v = torch.randn(shape, generator=_key_generator(key, seed))
    return v / v.norm()


def _synthetic_tensor(spec: ParamSpec, shapes: Mapping[str, tuple[int, ...]], seed: int) -> Tensor:
    import torch

    key, shape = spec.key, spec.shape
    if spec.dtype == "int64":
        return torch.zeros(shape, dtype=torch.int64)
    if key.endswith("running_var"):
        return 1 + 0.1 * torch.rand(shape, generator=_key_generator(key, seed))
    if key.endswith("running_mean"):
        return 0.1 * torch.randn(shape, generator=_key_generator(key, seed))
    if key.endswith("weight_v"):
        return _spectral_v(key, shape, seed)
    if key.endswith("weight_u"):
        # u is derived from the stored weight_orig and weight_v (each drawn from its own key), so that
        # u . (W v) = ||W v||: the eval-mode spectral norm then needs no power iteration.
        prefix = key[: -len("weight_u")]
        w = _dense_draw(prefix + "weight_orig", shapes[prefix + "weight_orig"], seed)
        v = _spectral_v(prefix + "weight_v", shapes[prefix + "weight_v"], seed)
        u = w.reshape(w.shape[0], -1) @ v
        return u / u.norm()
    if len(shape) == 1:
        g = _key_generator(key, seed)
        if key.endswith("weight"):
            return 1 + 0.1 * torch.randn(shape, generator=g)  # norm-layer scales
        return 0.1 * torch.randn(shape, generator=g)  # biases
    return _dense_draw(key, shape, seed)


def synthetic_state_dict(
    network: str, seed: int, specs: Sequence[ParamSpec] | None = None, config: Mapping[str, Any] | None = None
) -> dict[str, Tensor]:
    """Deterministic synthetic weights for `network` (a manifest name), as the golden vectors were made.

    `specs` is the key list to fill (normally the manifest's `params`); by default it is read off our own
    network class, whose layout the tests check against the manifest key for key, built with the architecture
    `config` (constructor overrides, see `nets.build_network`; None = upstream's configuration).
    """
    if specs is None:
        from .nets import build_network

        specs = param_specs_from_module(build_network(network, device="meta", config=config))
    shapes = {spec.key: spec.shape for spec in specs}
    state = {spec.key: _synthetic_tensor(spec, shapes, seed) for spec in specs}
    if network == "kp_extractor" and "down.weight" in state:
        # The one exception: the fixed anti-alias Gaussian keeps its constructor value.
        from .nets.kp_detector import anti_alias_kernel

        state["down.weight"] = anti_alias_kernel(channels=shapes["down.weight"][0], scale=0.25)
    return state


# --------------------------------------------------------------------------------------------------------------
# Strict loading
# --------------------------------------------------------------------------------------------------------------


def _listing(keys: Sequence[str]) -> str:
    shown = ", ".join(repr(k) for k in keys[:_SHOWN_KEYS])
    more = f" and {len(keys) - _SHOWN_KEYS} more" if len(keys) > _SHOWN_KEYS else ""
    return shown + more


def describe_mismatch(module: nn.Module, state_dict: Mapping[str, Tensor]) -> list[str]:
    """Human-readable problems between `state_dict` and `module.state_dict()`; empty when they fit exactly."""
    expected = module.state_dict()
    missing = [k for k in expected if k not in state_dict]
    unexpected = [k for k in state_dict if k not in expected]
    reshaped = [
        f"{k!r} is {list(state_dict[k].shape)} in the file but {list(expected[k].shape)} in the network"
        for k in expected
        if k in state_dict and tuple(state_dict[k].shape) != tuple(expected[k].shape)
    ]
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing key(s): {_listing(missing)}")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected key(s): {_listing(unexpected)}")
    if reshaped:
        shown = "; ".join(reshaped[:_SHOWN_KEYS])
        more = f" and {len(reshaped) - _SHOWN_KEYS} more" if len(reshaped) > _SHOWN_KEYS else ""
        problems.append(f"{len(reshaped)} shape mismatch(es): {shown}{more}")
    return problems


def load_strict(
    module: nn.Module, state_dict: Mapping[str, Tensor], source_name: str, *, assign: bool = False
) -> None:
    """Load `state_dict` into `module` like upstream (strict=True), with an error that names the file and keys.

    With `assign=True` the module's tensors are replaced by the given ones (use it for modules built on the
    meta device, which then never allocate their random initial weights).
    """
    problems = describe_mismatch(module, state_dict)
    if problems:
        raise CheckpointMismatchError(
            f"{source_name}: weights do not fit {type(module).__name__} (strict loading): " + "; ".join(problems)
        )
    module.load_state_dict(dict(state_dict), strict=True, assign=assign)


def build_and_load(
    network: str,
    state_dict: Mapping[str, Tensor],
    source_name: str,
    device: str = "cpu",
    config: Mapping[str, Any] | None = None,
) -> nn.Module:
    """Build our class for `network` without initialising it, load `state_dict` strictly, return it in eval mode.

    `config` is the architecture config (constructor overrides) to build with; None = upstream's configuration.
    The state dict must fit the network built from it exactly, as always.
    """
    from .nets import build_network

    module = build_network(network, device="meta", config=config)
    load_strict(module, state_dict, source_name, assign=True)
    return module.to(device).eval()


# --------------------------------------------------------------------------------------------------------------
# Released files
# --------------------------------------------------------------------------------------------------------------


def split_combined_state_dict(combined: Mapping[str, Tensor], source_name: str) -> dict[str, dict[str, Tensor]]:
    """Split the flat `SadTalker_V0.0.2_*.safetensors` state dict into one state dict per network.

    Upstream keeps every key that *contains* the network name and deletes `"<name>."` from it. No released key
    contains a second network name, so taking the keys that START with `"<name>."` is the same selection; we
    check that assumption and refuse keys that belong to no network instead of silently dropping them.
    """
    parts: dict[str, dict[str, Tensor]] = {name: {} for name in SAFETENSORS_NETWORKS}
    stray: list[str] = []
    for key, tensor in combined.items():
        owner = next((name for name in SAFETENSORS_NETWORKS if key.startswith(name + ".")), None)
        if owner is None:
            stray.append(key)
            continue
        rest = key[len(owner) + 1 :]
        if any(name in rest for name in SAFETENSORS_NETWORKS):
            raise CheckpointMismatchError(f"{source_name}: key {key!r} names two networks; cannot split it safely")
        parts[owner][rest] = tensor
    if stray:
        raise CheckpointMismatchError(
            f"{source_name}: {len(stray)} key(s) belong to no SadTalker network "
            f"(expected prefixes {', '.join(n + '.' for n in SAFETENSORS_NETWORKS)}): {_listing(stray)}"
        )
    empty = [name for name, part in parts.items() if not part]
    if empty:
        raise CheckpointMismatchError(f"{source_name}: no keys for network(s) {', '.join(empty)}")
    return parts


def read_sadtalker_safetensors(path: str | Path) -> dict[str, dict[str, Tensor]]:
    """Read `SadTalker_V0.0.2_{256,512}.safetensors` and split it per network (see `split_combined_state_dict`)."""
    from safetensors.torch import load_file

    return split_combined_state_dict(load_file(str(path), device="cpu"), Path(path).name)


def read_legacy_checkpoint(path: str | Path, dict_key: str) -> dict[str, Tensor]:
    """The state dict stored under `dict_key` of a torch pickle (`mapping_*.pth.tar`, legacy `.pth` files).

    The files also carry `epoch` and sometimes optimizer/discriminator states; those are ignored. Loaded with
    `weights_only=True`: a checkpoint must never be able to run code.
    """
    import torch

    name = Path(path).name
    blob = torch.load(str(path), map_location="cpu", weights_only=True)
    if not isinstance(blob, Mapping) or dict_key not in blob:
        found = ", ".join(repr(k) for k in blob) if isinstance(blob, Mapping) else type(blob).__name__
        raise CheckpointMismatchError(f"{name}: no {dict_key!r} entry (found: {found})")
    state = blob[dict_key]
    if not isinstance(state, Mapping):
        raise CheckpointMismatchError(f"{name}: {dict_key!r} is a {type(state).__name__}, not a state dict")
    return dict(state)


def read_mapping_checkpoint(path: str | Path) -> dict[str, Tensor]:
    """MappingNet weights from `mapping_00229-model.pth.tar` / `mapping_00109-model.pth.tar` (dict key `mapping`)."""
    return read_legacy_checkpoint(path, "mapping")

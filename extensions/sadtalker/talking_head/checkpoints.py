"""The SadTalker networks as one bundle, loaded from the user's `models/SadTalker` folder.

File choice follows upstream `src/utils/init_path.py` (study.md §1.1, §2), with one deliberate difference:
- the renderer, ExpNet, PoseVAE and the 3DMM regressor come from `SadTalker_V0.0.2_{size}.safetensors`, or, for
  size 256 only, from the legacy set (`auido2pose_00140-model.pth`, `auido2exp_00300-model.pth`,
  `facevid2vid_00189-model.pth.tar`, `epoch_20.pth`; upstream's spelling "auido") when that set is complete.
  Upstream takes the safetensors route as soon as ANY `*.safetensors` is in the folder; we use the file of the
  requested size when it is there, else the complete legacy set, else we report the safetensors as missing;
- MappingNet comes from `mapping_00109-model.pth.tar` (73 inputs) when the preprocess mode contains `full`
  (full, extfull), else from `mapping_00229-model.pth.tar` (70 inputs).

Every network is built on the meta device and strictly loaded with `assign=True`, so a 700 MB file is held in
memory once. Floating-point tensors are converted to float32 as upstream's copying `load_state_dict` would.

Architecture config: a checkpoint file may carry constructor overrides per network (`nets.build_network`), in the
safetensors header metadata under `CONFIG_METADATA_KEY` (a JSON object {network name: {option: value}}) or, in a
torch pickle (`.pth`/`.pth.tar`), as the top-level dict entry `CONFIG_PICKLE_KEY` holding the same object. The
official files carry none and get upstream's configuration; the small random-weight test files
(tests/fixtures/tiny_sadtalker.py) use it. The weights must fit the network built from the config exactly.

Errors: `MissingCheckpointError` lists the missing official file names and the folder;
`UnreadableCheckpointError` names a truncated or corrupt file; `weights.CheckpointMismatchError` names a file whose
tensors (or config) do not fit the networks. All are ValueErrors.

torch is imported inside the functions so that importing this module stays cheap.
"""

from __future__ import annotations

import json
import pickle
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from .crop import check_preprocess
from .weights import (
    LEGACY_DICT_KEYS,
    SAFETENSORS_NETWORKS,
    CheckpointMismatchError,
    build_and_load,
    mapping_network_for_preprocess,
    split_combined_state_dict,
)

if TYPE_CHECKING:
    import torch
    from torch import Tensor, nn

    from .nets import ExpNet, FaceReconNet, KPDetector, MappingNet, OcclusionAwareSPADEGenerator, PoseVAE
    from .render_chain import RendererNets

SIZES: tuple[int, ...] = (256, 512)
LEGACY_SIZE = 256  # the legacy renderer file (facevid2vid_00189) is the 256 training only

# The official release file names, per role (OpenTalker/SadTalker v0.0.2-rc and the legacy v0.0.2 set).
SADTALKER_FILES: Mapping[str, str] = MappingProxyType(
    {
        "safetensors_256": "SadTalker_V0.0.2_256.safetensors",
        "safetensors_512": "SadTalker_V0.0.2_512.safetensors",
        "mapping_crop": "mapping_00229-model.pth.tar",
        "mapping_full": "mapping_00109-model.pth.tar",
        "legacy_audio2pose": "auido2pose_00140-model.pth",
        "legacy_audio2exp": "auido2exp_00300-model.pth",
        "legacy_facevid2vid": "facevid2vid_00189-model.pth.tar",
        "legacy_face_3drecon": "epoch_20.pth",
    }
)
# Which legacy file holds which network (the dict key inside it is `weights.LEGACY_DICT_KEYS[network]`).
LEGACY_FILES: Mapping[str, str] = MappingProxyType(
    {
        "face_3drecon": SADTALKER_FILES["legacy_face_3drecon"],
        "audio2exp": SADTALKER_FILES["legacy_audio2exp"],
        "audio2pose": SADTALKER_FILES["legacy_audio2pose"],
        "kp_extractor": SADTALKER_FILES["legacy_facevid2vid"],
        "generator": SADTALKER_FILES["legacy_facevid2vid"],
    }
)
CONFIG_METADATA_KEY = "sdstudio.sadtalker.config"
CONFIG_PICKLE_KEY = "sdstudio_config"


class MissingCheckpointError(ValueError):
    """Checkpoint files needed for a (size, preprocess) choice are not in the folder; `missing` lists their
    official names (download them into `folder`)."""

    def __init__(self, missing: list[str], folder: Path, size: int, preprocess: str) -> None:
        self.missing = list(missing)
        self.folder = Path(folder)
        where = str(self.folder) if self.folder.is_dir() else f"{self.folder} (the folder does not exist)"
        super().__init__(
            f"SadTalker checkpoint file(s) missing for size {size}, preprocess {preprocess!r}: "
            f"{', '.join(self.missing)}; put them in {where}"
        )


class UnreadableCheckpointError(ValueError):
    """A checkpoint file cannot be read at all (truncated download, corrupt or not a checkpoint)."""


# --------------------------------------------------------------------------------------------------------------
# Which files
# --------------------------------------------------------------------------------------------------------------


def _check_size(size: int) -> int:
    if isinstance(size, bool) or size not in SIZES:
        raise ValueError(f"SadTalker renders at size 256 or 512, not {size!r}")
    return int(size)


def safetensors_file(size: int) -> str:
    """`SadTalker_V0.0.2_{size}.safetensors`."""
    return SADTALKER_FILES[f"safetensors_{_check_size(size)}"]


def mapping_file(preprocess: str) -> str:
    """The MappingNet file of a preprocess mode: 73 inputs for full/extfull, 70 for crop/extcrop/resize."""
    return SADTALKER_FILES[mapping_network_for_preprocess(check_preprocess(preprocess))]


def legacy_files() -> list[str]:
    """The legacy (pre-safetensors) set, in upstream's order; usable for size 256 only."""
    return [SADTALKER_FILES[role] for role in SADTALKER_FILES if role.startswith("legacy_")]


def required_files(size: int, preprocess: str) -> list[str]:
    """The files to download for a (size, preprocess) choice: the safetensors of the size and the mapping file.

    (`missing_files` also accepts a complete legacy set in place of the 256 safetensors.)
    """
    return [safetensors_file(size), mapping_file(preprocess)]


def _has_legacy_set(folder: Path) -> bool:
    return all((folder / name).is_file() for name in legacy_files())


def missing_files(folder: str | Path, size: int, preprocess: str) -> list[str]:
    """Exactly the official file names still missing in `folder` for that choice (empty: `load_nets` can run)."""
    folder = Path(folder)
    main = safetensors_file(size)
    mapping = mapping_file(preprocess)
    missing = []
    if not (folder / main).is_file() and not (size == LEGACY_SIZE and _has_legacy_set(folder)):
        missing.append(main)
    if not (folder / mapping).is_file():
        missing.append(mapping)
    return missing


def checkpoint_paths(folder: str | Path, size: int, preprocess: str) -> list[Path]:
    """The files `load_nets` reads for that choice; MissingCheckpointError when some are missing."""
    folder = Path(folder)
    missing = missing_files(folder, size, preprocess)
    if missing:
        raise MissingCheckpointError(missing, folder, size, preprocess)
    main = folder / safetensors_file(size)
    renderer = [main] if main.is_file() else [folder / name for name in legacy_files()]
    return [*renderer, folder / mapping_file(preprocess)]


# --------------------------------------------------------------------------------------------------------------
# Reading files
# --------------------------------------------------------------------------------------------------------------


def _unreadable(path: Path, error: BaseException) -> UnreadableCheckpointError:
    return UnreadableCheckpointError(
        f"{path.name}: cannot read this checkpoint file; it is probably truncated or corrupt (download it again) "
        f"[{type(error).__name__}: {error}] ({path})"
    )


def read_safetensors_with_metadata(path: str | Path) -> tuple[dict[str, Tensor], dict[str, str]]:
    """All tensors of a safetensors file and its header metadata (UnreadableCheckpointError if it is broken)."""
    from safetensors import safe_open

    path = Path(path)
    try:
        with safe_open(str(path), framework="pt", device="cpu") as handle:
            metadata = dict(handle.metadata() or {})
            tensors = {key: handle.get_tensor(key) for key in handle.keys()}
    except Exception as error:  # safetensors raises its own SafetensorError for bad headers and short files
        raise _unreadable(path, error) from error
    return tensors, metadata


def read_torch_checkpoint(path: str | Path) -> Mapping[str, Any]:
    """The top-level dict of a torch pickle checkpoint, loaded with `weights_only=True` (no code runs).

    Zip-format files are memory-mapped, so entries we never use (optimizer or discriminator states in the legacy
    files) are not read from disk.
    """
    import torch

    path = Path(path)
    try:
        with path.open("rb") as handle:
            is_zip = handle.read(4) == b"PK\x03\x04"
        blob = torch.load(str(path), map_location="cpu", weights_only=True, mmap=is_zip)
    except pickle.UnpicklingError as error:
        if "weights only load failed" not in str(error).lower():
            raise _unreadable(path, error) from error
        detail = next((line.strip() for line in str(error).splitlines() if "Unsupported global" in line), "")
        detail = detail.split(" was not an allowed global")[0].removeprefix("WeightsUnpickler error: ")
        raise UnreadableCheckpointError(
            f"{path.name}: this checkpoint holds Python objects besides tensors and plain data, which the safe "
            f"(weights_only) loading used here refuses [{detail or 'weights only load failed'}] ({path})"
        ) from error
    except Exception as error:  # truncated zip, bad pickle, I/O error
        raise _unreadable(path, error) from error
    if not isinstance(blob, Mapping):
        raise CheckpointMismatchError(f"{path.name}: expected a dict checkpoint, found a {type(blob).__name__}")
    return blob


def _entry(blob: Mapping[str, Any], dict_key: str, name: str) -> dict[str, Tensor]:
    if dict_key not in blob:
        found = ", ".join(repr(k) for k in blob)
        raise CheckpointMismatchError(f"{name}: no {dict_key!r} entry (found: {found})")
    state = blob[dict_key]
    if not isinstance(state, Mapping):
        raise CheckpointMismatchError(f"{name}: {dict_key!r} is a {type(state).__name__}, not a state dict")
    return dict(state)


def _architecture_config(raw: Any, name: str, networks: tuple[str, ...]) -> dict[str, dict[str, Any]]:
    """{network: constructor options} from a file's config entry (None: the official configuration)."""
    if raw is None:
        return {}
    if isinstance(raw, str):
        try:
            raw = json.loads(raw)
        except json.JSONDecodeError as error:
            raise CheckpointMismatchError(f"{name}: its architecture config is not valid JSON ({error})") from error
    if not isinstance(raw, Mapping) or not all(isinstance(v, Mapping) for v in raw.values()):
        raise CheckpointMismatchError(
            f"{name}: its architecture config must map network names to option objects, got {raw!r}"
        )
    stray = sorted(set(raw) - set(networks))
    if stray:
        raise CheckpointMismatchError(
            f"{name}: its architecture config names {', '.join(stray)}, which this file does not hold "
            f"(it holds {', '.join(networks)})"
        )
    return {network: dict(options) for network, options in raw.items()}


def _as_float32(state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    import torch

    return {k: v.to(torch.float32) if v.is_floating_point() else v for k, v in state.items()}


def _build(network: str, state: Mapping[str, Tensor], source: str, config: Mapping[str, Any] | None, device: Any):
    """Strict meta-device build + assign; a config that does not build is a mismatch of that file."""
    try:
        return build_and_load(network, _as_float32(state), source, device=device, config=config or None)
    except CheckpointMismatchError:
        raise
    except ValueError as error:  # the architecture config does not build
        raise CheckpointMismatchError(f"{source}: {error}") from error


# --------------------------------------------------------------------------------------------------------------
# The bundle
# --------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TalkingHeadNets:
    """Every network one SadTalker run needs, in eval mode. `preprocess_kind` is 'crop' (70-input MappingNet, for
    crop/extcrop/resize) or 'full' (73 inputs, for full/extfull); `files` are the paths they were read from."""

    face_3drecon: FaceReconNet
    audio2exp: ExpNet
    audio2pose: PoseVAE
    kp_extractor: KPDetector
    generator: OcclusionAwareSPADEGenerator
    mapping: MappingNet
    size: int
    preprocess_kind: str
    files: tuple[Path, ...] = ()

    def modules(self) -> dict[str, nn.Module]:
        return {
            "face_3drecon": self.face_3drecon,
            "audio2exp": self.audio2exp,
            "audio2pose": self.audio2pose,
            "kp_extractor": self.kp_extractor,
            "generator": self.generator,
            "mapping": self.mapping,
        }

    def renderer(self) -> RendererNets:
        """The renderer's three networks, for `render_chain.prepare` / `iter_frames`."""
        from .render_chain import RendererNets

        return RendererNets(kp_extractor=self.kp_extractor, generator=self.generator, mapping=self.mapping)

    @property
    def device(self) -> torch.device:
        return next(self.generator.parameters()).device

    def to(self, device: str | torch.device) -> TalkingHeadNets:
        """Move every network (in place, like `nn.Module.to`); returns self."""
        for module in self.modules().values():
            module.to(device)
        return self

    def parameters_bytes(self) -> int:
        """Bytes held by all parameters and buffers (running statistics included) of all six networks."""
        total = 0
        for module in self.modules().values():
            for tensor in (*module.parameters(), *module.buffers()):
                total += tensor.numel() * tensor.element_size()
        return total


def _load_renderer_safetensors(path: Path, device: Any) -> dict[str, nn.Module]:
    tensors, metadata = read_safetensors_with_metadata(path)
    parts = split_combined_state_dict(tensors, path.name)
    del tensors
    configs = _architecture_config(metadata.get(CONFIG_METADATA_KEY), path.name, SAFETENSORS_NETWORKS)
    nets = {}
    for network in SAFETENSORS_NETWORKS:
        state = parts.pop(network)
        nets[network] = _build(network, state, f"{path.name} (keys {network}.*)", configs.get(network), device)
        del state
    return nets


def _load_renderer_legacy(folder: Path, device: Any) -> dict[str, nn.Module]:
    nets = {}
    for file_name in dict.fromkeys(LEGACY_FILES.values()):
        path = folder / file_name
        blob = read_torch_checkpoint(path)
        networks = tuple(n for n, f in LEGACY_FILES.items() if f == file_name)
        configs = _architecture_config(blob.get(CONFIG_PICKLE_KEY), file_name, networks)
        for network in networks:
            key = LEGACY_DICT_KEYS[network]
            state = _entry(blob, key, file_name)
            nets[network] = _build(network, state, f"{file_name} (entry {key!r})", configs.get(network), device)
        del blob
    return nets


def load_nets(
    folder: str | Path, size: int, preprocess: str, device: str | torch.device = "cpu"
) -> TalkingHeadNets:
    """Read, build and strictly load every SadTalker network for a (size, preprocess) choice from `folder`.

    Raises MissingCheckpointError (names the missing files and the folder), UnreadableCheckpointError (names a
    truncated/corrupt file) or CheckpointMismatchError (names the file and the offending keys).
    """
    folder = Path(folder)
    size = _check_size(size)
    mode = check_preprocess(preprocess)
    paths = checkpoint_paths(folder, size, mode)
    renderer_paths, mapping_path = paths[:-1], paths[-1]
    if len(renderer_paths) == 1:
        nets = _load_renderer_safetensors(renderer_paths[0], device)
    else:
        nets = _load_renderer_legacy(folder, device)

    mapping_network = mapping_network_for_preprocess(mode)
    blob = read_torch_checkpoint(mapping_path)
    configs = _architecture_config(blob.get(CONFIG_PICKLE_KEY), mapping_path.name, (mapping_network,))
    key = LEGACY_DICT_KEYS[mapping_network]
    mapping = _build(
        mapping_network,
        _entry(blob, key, mapping_path.name),
        f"{mapping_path.name} (entry {key!r})",
        configs.get(mapping_network),
        device,
    )
    return TalkingHeadNets(
        face_3drecon=nets["face_3drecon"],
        audio2exp=nets["audio2exp"],
        audio2pose=nets["audio2pose"],
        kp_extractor=nets["kp_extractor"],
        generator=nets["generator"],
        mapping=mapping,
        size=size,
        preprocess_kind="full" if mapping_network == "mapping_full" else "crop",
        files=tuple(paths),
    )

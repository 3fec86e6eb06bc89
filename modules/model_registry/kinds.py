"""Model kinds: which folders hold one sort of model, and which entries in them count as models.

A kind is plain data. The core kinds use A1111's folder names so an existing A1111 `models/` folder works
as it is; extensions add their own kinds to the registry with `owner` set to their id.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

# A folder holding one of these files is a diffusers-style model folder, listed as a single model.
MODEL_DIR_MARKERS = ("model_index.json", "config.json")
# Names that a download in progress carries; such a file or folder is never a model yet.
TEMPORARY_SUFFIXES = (".part", ".tmp", ".download", ".crdownload")


class ModelPaths(Protocol):
    """The part of `modules.paths.DataPaths` that the core kinds need."""

    @property
    def embeddings(self) -> Path: ...

    def model_folder(self, name: str) -> Path: ...


@dataclass(frozen=True)
class ModelKind:
    """One sort of model and where it lives.

    Attributes:
        name: Unique kind name, A1111's folder name for core kinds (e.g. "Stable-diffusion").
        folders: Folders scanned recursively, in order; the first folder wins when two hold the same name.
        extensions: File suffixes that count as models, lowercase, with the dot; multi-part suffixes such
            as ".pth.tar" are allowed and the longest matching suffix is the one removed from the name.
        exclude_patterns: fnmatch patterns on the entry name (case-insensitive) that are never models (nor
            entered, for folders), e.g. "*.vae.*" keeps VAE files out of the checkpoint list as A1111 does.
        allow_dirs: A folder holding `model_index.json` or `config.json` is one model (diffusers layout)
            and is not descended into.
        owner: "core", or the id of the extension that added the kind.
    """

    name: str
    folders: tuple[Path, ...]
    extensions: tuple[str, ...]
    exclude_patterns: tuple[str, ...] = ()
    allow_dirs: bool = False
    owner: str = "core"

    def __post_init__(self) -> None:
        if not self.name or "/" in self.name:
            raise ValueError(f"invalid model kind name {self.name!r}")
        extensions = tuple(ext.lower() for ext in self.extensions)
        bad = [ext for ext in extensions if not ext.startswith(".") or len(ext) < 2]
        if bad:
            raise ValueError(f"model kind '{self.name}': extensions must start with a dot, got {bad}")
        # Callers may hand in lists; the dataclass is frozen, so normalise through object.__setattr__.
        object.__setattr__(self, "folders", tuple(Path(f).absolute() for f in self.folders))
        object.__setattr__(self, "extensions", extensions)
        object.__setattr__(self, "exclude_patterns", tuple(p.lower() for p in self.exclude_patterns))

    def model_extension(self, filename: str) -> str | None:
        """The suffix that makes `filename` a model of this kind, or None.

        The longest suffix wins so that "x.pth.tar" gives ".pth.tar", not ".tar". A name that is only the
        suffix (".safetensors") is not a model.
        """
        lower = filename.lower()
        matches = [ext for ext in self.extensions if lower.endswith(ext) and len(lower) > len(ext)]
        return max(matches, key=len) if matches else None

    def is_excluded(self, filename: str) -> bool:
        """True when `filename` matches one of the exclude patterns (case-insensitive)."""
        lower = filename.lower()
        return any(fnmatch.fnmatchcase(lower, pattern) for pattern in self.exclude_patterns)


def is_ignored_name(name: str) -> bool:
    """Hidden entries and unfinished downloads are never listed, whatever the kind."""
    return name.startswith(".") or name.lower().endswith(TEMPORARY_SUFFIXES)


def core_kinds(paths: ModelPaths) -> list[ModelKind]:
    """The kinds every install has, with folders taken from `paths` (flag overrides included)."""

    def kind(
        name: str, extensions: tuple[str, ...], exclude: tuple[str, ...] = (), allow_dirs: bool = False
    ) -> ModelKind:
        return ModelKind(name, (paths.model_folder(name),), extensions, exclude, allow_dirs)

    return [
        kind(
            "Stable-diffusion",
            (".safetensors", ".ckpt"),
            # A1111 keeps `<ckpt>.vae.safetensors` next to checkpoints; those are VAEs, not checkpoints.
            exclude=("*.vae.*", "*.vae.safetensors"),
            allow_dirs=True,
        ),
        kind("VAE", (".safetensors", ".pt", ".ckpt", ".bin")),
        kind("Lora", (".safetensors", ".pt", ".ckpt")),
        kind("ESRGAN", (".pth", ".pt", ".safetensors")),
        kind("GFPGAN", (".pth", ".safetensors")),
        # annotators/ holds the preprocessors' weights (depth, openpose, ...), which are not ControlNets.
        kind("ControlNet", (".safetensors", ".pth", ".pt", ".bin", ".ckpt"), ("annotators",), allow_dirs=True),
        ModelKind(name="embeddings", folders=(paths.embeddings,), extensions=(".pt", ".bin", ".safetensors")),
    ]

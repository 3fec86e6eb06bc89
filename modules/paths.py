"""The data-dir layout: where models, outputs, settings and user extensions live.

Everything the app writes goes under `--data-dir` (default: the repo), laid out as A1111 lays it out, so a
user can point us at an existing A1111 folder.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
BUILTIN_EXTENSIONS_DIR = REPO_ROOT / "extensions"
# Extensions that ship with the app. They can be disabled, but not updated or removed from the UI.
BUILTIN_EXTENSION_NAMES: tuple[str, ...] = ("sadtalker",)

# The model folders every install has (A1111 names). Extensions add their own kinds through the registry.
CORE_MODEL_FOLDERS = ("Stable-diffusion", "VAE", "Lora", "ESRGAN", "GFPGAN", "ControlNet", "SadTalker")


@dataclass(frozen=True)
class DataPaths:
    """Absolute paths of everything under the data dir, with the flag overrides applied."""

    data: Path
    models: Path
    embeddings: Path
    outputs: Path
    extensions: Path
    cache: Path
    tmp: Path
    folder_overrides: tuple[tuple[str, Path], ...] = ()

    @property
    def config_file(self) -> Path:
        return self.data / "config.json"

    @property
    def ui_config_file(self) -> Path:
        return self.data / "ui-config.json"

    @property
    def styles_file(self) -> Path:
        return self.data / "styles.csv"

    def model_folder(self, name: str) -> Path:
        """`models/<name>`, or the folder a flag such as --ckpt-dir points at."""
        return dict(self.folder_overrides).get(name, self.models / name)

    def output_folder(self, kind: str) -> Path:
        """`outputs/<kind>-images` for images (txt2img, img2img, extras) or `outputs/<kind>` otherwise."""
        return self.outputs / kind

    def ensure(self) -> None:
        """Create the folders a fresh install needs; cheap, and safe to call at every start."""
        for folder in (self.models, self.embeddings, self.outputs, self.extensions, self.cache, self.tmp):
            folder.mkdir(parents=True, exist_ok=True)
        for name in CORE_MODEL_FOLDERS:
            self.model_folder(name).mkdir(parents=True, exist_ok=True)

    def is_inside_data(self, path: Path) -> bool:
        return _is_within(path, self.data)


def is_builtin_extension(folder: Path) -> bool:
    return folder.parent.resolve() == BUILTIN_EXTENSIONS_DIR.resolve() and folder.name in BUILTIN_EXTENSION_NAMES


def from_args(args: argparse.Namespace) -> DataPaths:
    data = _absolute(args.data_dir) if args.data_dir else REPO_ROOT
    models = _absolute(args.models_dir) if args.models_dir else data / "models"
    overrides = {
        "Stable-diffusion": args.ckpt_dir,
        "VAE": args.vae_dir,
        "Lora": args.lora_dir,
    }
    return DataPaths(
        data=data,
        models=models,
        embeddings=_absolute(args.embeddings_dir) if args.embeddings_dir else data / "embeddings",
        outputs=_absolute(args.outputs_dir) if args.outputs_dir else data / "outputs",
        extensions=data / "extensions",
        cache=data / "cache",
        tmp=data / "tmp",
        folder_overrides=tuple((k, _absolute(v)) for k, v in overrides.items() if v),
    )


def _absolute(value: str) -> Path:
    return Path(value).expanduser().resolve()


def _is_within(path: Path, root: Path) -> bool:
    try:
        path.resolve().relative_to(root.resolve())
    except ValueError:
        return False
    return True

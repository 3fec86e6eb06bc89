"""Complete, weightless diffusers config folders for `from_single_file(config=...)`, assembled in a cache.

`from_single_file` needs a folder in diffusers layout: `model_index.json`, each component's config, and the
tokenizer files. Without `config=` it asks the hub; offline that fails. The repo bundles the small JSON configs
(`configs/<family>/`, copied from the published SD 1.5, SD 2.1(-base), SD 2 inpainting, SD 1.5 inpainting, SDXL
base and SDXL inpainting repos), and the tokenizers are built from open_clip's BPE (`tokenizers.py`). This module
puts the two together under `<cache>/configs/<family>-<hash>/`. The hash covers the bundled files, so an upgrade
that changes a config gets a fresh folder instead of a stale one.

A folder without `tokenizer/` would "load" silently with an empty tokenizer and fail at generation time
(deps.md §4), so `complete_config_dir` also fills in missing tokenizers for user-supplied `<name>/` folders.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

from modules.engine.models.families import FAMILIES
from modules.engine.models.tokenizers import TokenizerVariant, build_clip_tokenizer
from modules.errors import UserError

BUNDLED_CONFIGS = Path(__file__).resolve().parent / "configs"


def bundled_config_dir(family: str) -> Path:
    """The repo's weightless config folder for `family` (no tokenizers)."""
    if family not in FAMILIES:
        raise UserError(f"Unknown model family {family!r}; known: {', '.join(FAMILIES)}", field="family")
    return BUNDLED_CONFIGS / family


def tokenizer_variants(family: str) -> dict[str, TokenizerVariant]:
    """Which tokenizer each tokenizer slot of a family's pipeline uses."""
    if family.startswith("sdxl"):
        return {"tokenizer": "clip-pad-eot", "tokenizer_2": "clip-pad-bang"}
    if family.startswith("sd2"):
        return {"tokenizer": "clip-pad-bang"}
    return {"tokenizer": "clip-pad-eot"}


def _folder_digest(folder: Path) -> str:
    """Content hash of the config files in a folder (JSON/text only: a full model folder may hold gigabytes)."""
    digest = hashlib.sha256()
    config_files = (p for p in folder.rglob("*") if p.is_file() and p.suffix in (".json", ".txt", ".yaml"))
    for file in sorted(config_files):
        digest.update(file.relative_to(folder).as_posix().encode())
        digest.update(file.read_bytes())
    return digest.hexdigest()[:12]


def _link_or_copy(source: Path, destination: Path) -> None:
    """Symlink `source` at `destination`; copy instead where symlinks are not allowed (some Windows setups)."""
    try:
        os.symlink(source, destination, target_is_directory=source.is_dir())
    except OSError:
        if source.is_dir():
            shutil.copytree(source, destination)
        else:
            shutil.copy2(source, destination)


def _publish(staging: Path, target: Path) -> Path:
    """Rename a fully written staging folder into place; if another process won the race, keep theirs."""
    try:
        os.rename(staging, target)
    except OSError:
        if not (target / "model_index.json").is_file():
            raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def _missing_tokenizer_slots(folder: Path, family: str) -> dict[str, TokenizerVariant]:
    """Tokenizer slots that `model_index.json` lists (or the family needs) but the folder lacks."""
    try:
        index = json.loads((folder / "model_index.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise UserError(f"{folder / 'model_index.json'} is not valid JSON: {exc}", field="checkpoint") from exc
    wanted = tokenizer_variants(family)
    slots = [name for name in ("tokenizer", "tokenizer_2") if isinstance(index.get(name), list) and index[name][0]]
    missing: dict[str, TokenizerVariant] = {}
    for slot in slots or list(wanted):
        has_files = (folder / slot / "tokenizer.json").is_file() or (folder / slot / "vocab.json").is_file()
        if not has_files:
            missing[slot] = wanted.get(slot, "clip-pad-eot")
    return missing


def ensure_family_config(family: str, cache_dir: Path) -> Path:
    """Return a complete `config=` folder for `family`, assembling it under `cache_dir` the first time.

    Args:
        family: One of `families.FAMILIES`.
        cache_dir: The app's cache root (`<data>/cache`); tokenizers go to `cache_dir/tokenizers`, config
            folders to `cache_dir/configs`.

    Returns:
        A folder with `model_index.json`, the component configs and `tokenizer/` (+ `tokenizer_2/` for SDXL).
    """
    source = bundled_config_dir(family)
    cache_dir = Path(cache_dir)

    def fill(staging: Path) -> None:
        for slot, variant in tokenizer_variants(family).items():
            _link_or_copy(build_clip_tokenizer(cache_dir / "tokenizers", variant), staging / slot)
        # Copy the JSONs (small) rather than link them: the cache must not change if the repo is edited.
        for item in source.iterdir():
            if item.is_dir():
                shutil.copytree(item, staging / item.name)
            else:
                shutil.copy2(item, staging / item.name)

    return _build_once(cache_dir / "configs" / f"{family}-{_folder_digest(source)}", fill)


def complete_config_dir(folder: Path, family: str, cache_dir: Path) -> Path:
    """Return `folder` if it is a complete `config=` folder, else a cached copy with the family's tokenizers added.

    Used for the `<name>/` folder beside a checkpoint: users (and the tiny test models) often ship only the
    component configs. The cached copy links to the original files, keyed by their content.
    """
    missing = _missing_tokenizer_slots(folder, family)
    if not missing:
        return folder
    cache_dir = Path(cache_dir)
    digest = hashlib.sha256(f"{folder.resolve()}|{_folder_digest(folder)}|{sorted(missing.items())}".encode())

    def fill(staging: Path) -> None:
        for item in folder.iterdir():
            if item.name not in missing:
                _link_or_copy(item.resolve(), staging / item.name)
        for slot, variant in missing.items():
            _link_or_copy(build_clip_tokenizer(cache_dir / "tokenizers", variant), staging / slot)

    return _build_once(cache_dir / "configs" / f"override-{folder.name[:40]}-{digest.hexdigest()[:12]}", fill)


def _build_once(target: Path, fill: Callable[[Path], None]) -> Path:
    """`target` if it is already complete; else fill a hidden staging folder beside it and publish it whole, so
    a reader (or a second process building the same folder) never sees half of it."""
    if (target / "model_index.json").is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    os.chmod(staging, 0o755)
    try:
        fill(staging)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return _publish(staging, target)

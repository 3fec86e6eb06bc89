"""Folders on the server that batch jobs read from and write to (img2img Batch, Extras "Batch from Directory").

Only reachable when the LAN rule allows server paths (modules.access); the jobs check it themselves too, since
the job API can submit them directly. Saving into an output folder goes through `ImageSaver.save_as`.
"""

from __future__ import annotations

from pathlib import Path

from modules.errors import UserError

# What A1111's `shared.listfiles` hands to PIL for batches.
IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff", ".gif"})


def list_images(folder: str, field: str = "input_dir") -> list[Path]:
    """The image files directly inside `folder`, sorted by name.

    Raises:
        UserError: The folder does not exist, or holds no image files.
    """
    path = _user_path(folder, field)
    try:
        is_folder = path.is_dir()
    except OSError:  # a name past the file system's limit (ENAMETOOLONG) is no folder either, not a 500
        is_folder = False
    if not is_folder:
        raise UserError(f"{field}: the folder {path} does not exist (or is not a folder)", field=field)
    files = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not files:
        raise UserError(f"{field}: {path} holds no images ({', '.join(sorted(IMAGE_SUFFIXES))})", field=field)
    return files


def output_folder(folder: str, field: str = "output_dir") -> Path | None:
    """`folder` as a path, created now so a folder that cannot be made fails before any model loads; None when
    empty (the job saves to its usual outputs folder)."""
    if not folder.strip():
        return None
    path = _user_path(folder, field)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise UserError(f"{field}: {path} is a file, not a folder", field=field) from None
    except OSError as e:
        raise UserError(f"{field}: cannot use {path}: {e.strerror or e}", field=field) from None
    return path


def _user_path(folder: str, field: str) -> Path:
    """`folder` with `~` expanded; `~nosuchuser` is the user's mistake (pathlib raises RuntimeError for it)."""
    try:
        return Path(folder.strip()).expanduser()
    except RuntimeError:
        raise UserError(f"{field}: {folder.strip()} names a home folder that does not exist", field=field) from None

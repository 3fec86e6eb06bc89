"""Filing files that were saved elsewhere (on a cluster worker) into this outputs tree.

A worker saves as the studio would, into a staging folder that starts empty, so its counters start at 0. Here
each file keeps its folder and the rest of its name but gets the next free counter of the server's folder, the
same O_EXCL reservation as `ImageSaver` keeps two saves off one number, and the write is atomic. Files that
share a counter (an image and its `.txt`, a video and its `.json`) keep sharing one.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from pathlib import Path, PurePosixPath

from modules import atomic
from modules.engine.outputs import paths
from modules.errors import UserError

# "00012-1234.png", "grid-0003.png", "00004-42.mp4": an optional "grid-", the counter, the rest of the name.
_NUMBERED = re.compile(r"^(?P<prefix>grid-)?(?P<counter>\d{4,})(?P<rest>(?:[-.].*)?)$")
_MAX_TRIES = 500


def adopt_files(outputs_dir: Path, files: Sequence[tuple[str, bytes]]) -> dict[str, Path]:
    """Write `(relative posix path, bytes)` pairs under `outputs_dir`; returns each relative path's new home."""
    placed: dict[str, Path] = {}
    checked = [(relative, data, *_checked(outputs_dir, relative)) for relative, data in files]
    # The worker's folders start empty, so its counters run 0, 1, 2, ...: a leading number as large as the
    # folder's file count is no counter but part of a name saved without one (save_images_add_number off:
    # "123456789.png" is a seed, "2026-11-22.png" a date), which must keep its name.
    in_folder = Counter(folder for _, _, folder, _ in checked)
    groups: dict[tuple[str, str, bool], list[tuple[str, bytes]]] = {}
    for relative, data, folder, name in checked:
        match = _NUMBERED.match(name)
        if match and int(match["counter"]) >= in_folder[folder]:
            match = None
        key = (folder.as_posix(), f"{match['prefix'] or ''}{match['counter']}", True) if match else \
            (folder.as_posix(), name, False)
        groups.setdefault(key, []).append((relative, data))
    for (folder_text, _, numbered), members in groups.items():
        placed.update(_place_group(outputs_dir / folder_text, members, numbered))
    return placed


def _checked(outputs_dir: Path, relative: str) -> tuple[PurePosixPath, str]:
    """The folder and name of a worker's relative path; anything that could leave the outputs tree is refused."""
    path = PurePosixPath(relative)
    if path.is_absolute() or not path.parts or any(p in ("", ".", "..") or p.startswith(".") for p in path.parts):
        raise UserError(f"a worker sent a file with an unsafe name: {relative!r}")
    if not paths.is_within(outputs_dir / path, outputs_dir):
        raise UserError(f"a worker sent a file outside the outputs folder: {relative!r}")
    return path.parent, path.name


def _place_group(folder: Path, members: list[tuple[str, bytes]], numbered: bool) -> dict[str, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    first = _NUMBERED.match(PurePosixPath(members[0][0]).name) if numbered else None
    if first is None:  # a name without a counter keeps its name, with -N added if it is taken
        return {relative: _place_plain(folder, PurePosixPath(relative).name, data) for relative, data in members}
    prefix, width = first["prefix"] or "", len(first["counter"])
    start = paths.next_sequence_number(folder, prefix.rstrip("-"))
    for number in range(start, start + _MAX_TRIES):
        head = f"{prefix}{number:0{width}}"
        names = {rel: head + _NUMBERED.match(PurePosixPath(rel).name)["rest"] for rel, _ in members}  # type: ignore[index]
        marker = folder / paths.reservation_marker(head)
        if not atomic.reserve_exclusive(marker):
            continue
        if paths.counter_in_use(folder, head):  # finished by another process since our scan
            marker.unlink(missing_ok=True)
            continue
        try:
            for relative, data in members:
                atomic.write_bytes(folder / names[relative], data)
        finally:
            marker.unlink(missing_ok=True)
        return {rel: folder / name for rel, name in names.items()}
    raise UserError(f"could not find a free file name in {folder}")


def _place_plain(folder: Path, name: str, data: bytes) -> Path:
    stem, dot, extension = name.rpartition(".")
    if not dot:
        stem, extension = name, ""
    for n in range(_MAX_TRIES):
        candidate = name if n == 0 else f"{stem}-{n}{dot}{extension}"
        marker = folder / paths.reservation_marker(candidate)
        if (folder / candidate).exists() or not atomic.reserve_exclusive(marker):
            continue
        try:
            atomic.write_bytes(folder / candidate, data)
        finally:
            marker.unlink(missing_ok=True)
        return folder / candidate
    raise UserError(f"could not find a free file name in {folder}")

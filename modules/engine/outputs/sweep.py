"""Removing what a crash left in outputs/: the hidden temporaries of saves that never finished.

Every writer under outputs/ follows one convention, so a save cut short (kill -9, power loss) never shows a
partial file: it writes under a hidden name ending in `.tmp` (`modules.atomic`, SadTalker's video encoder)
and renames it into place when complete; the image saver also holds its file counter with a hidden, empty
`.reserve` marker. A crash leaves these behind: invisible to galleries (`is_visible_output`), but taking disk
space (a half-encoded video can be large) and, for markers, a counter value. `sweep` removes exactly those
names and nothing else (no `.DS_Store`, no user folders, nothing visible), and leaves hidden folders and
symlinked folders alone.

Only call it when no other process can be writing into the same outputs/ (see `modules.crash_recovery`).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from modules.engine.outputs.paths import RESERVATION_SUFFIX

log = logging.getLogger(__name__)

TEMP_SUFFIX = ".tmp"


def is_leftover(name: str) -> bool:
    """Whether a file name is an app temporary or counter marker (hidden, `.tmp` or `.reserve`)."""
    return name.startswith(".") and name.endswith((TEMP_SUFFIX, RESERVATION_SUFFIX))


def leftovers(root: Path) -> list[Path]:
    """The temporaries and markers under `root`, in a stable order; [] when `root` does not exist."""
    found: list[Path] = []
    for folder, dirs, files in os.walk(root, onerror=lambda e: log.warning("cannot look into %s", e.filename)):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))  # hidden folders are not ours to clean
        found.extend(Path(folder) / name for name in sorted(files) if is_leftover(name))
    return found


def sweep(root: Path) -> list[Path]:
    """Remove the leftovers under `root`; returns what was removed. A file that cannot go is logged, not fatal."""
    removed = []
    for path in leftovers(root):
        try:
            if path.is_symlink() or not path.is_file():
                continue  # our temporaries are plain files; anything else under such a name was made by hand
            path.unlink()
        except OSError as e:
            log.warning("could not remove %s left by an unfinished save: %s", path, e.strerror or e)
            continue
        removed.append(path)
    if removed:
        log.warning("removed %d unfinished file(s) that an earlier run left in %s", len(removed), root)
    return removed

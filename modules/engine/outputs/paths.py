"""Turning expanded patterns into safe folder and file names, and A1111's file counter.

Everything here is pure apart from `next_sequence_number`, which lists one folder.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from modules.engine.outputs.naming import scrub

# Windows refuses these as a name (with any extension), whatever the folder; users sync outputs to Windows.
WINDOWS_RESERVED = frozenset(
    {"CON", "PRN", "AUX", "NUL"} | {f"COM{i}" for i in range(1, 10)} | {f"LPT{i}" for i in range(1, 10)}
)

# Linux allows 255 bytes per name. Leave room for the hidden temporary and reservation names built from it
# (`.<name>.XXXXXXXX.tmp` by modules.atomic, `.<name>.reserve` here).
MAX_NAME_BYTES = 255 - 20

RESERVATION_SUFFIX = ".reserve"
_SEPARATORS_RE = re.compile(r"[\\/]+")


def is_visible_output(path: Path) -> bool:
    """Whether a gallery should show `path`: hidden files are temporaries and reservations of a save in flight.

    `.tmp` names are A1111's own temporaries, for outputs folders shared with A1111.
    """
    return not path.name.startswith(".") and not path.name.endswith(".tmp")


def cut_utf8(text: str, max_bytes: int) -> str:
    """`text` cut to at most `max_bytes` of UTF-8, never inside a character."""
    data = text.encode("utf-8")
    if len(data) <= max_bytes:
        return text
    return data[: max(0, max_bytes)].decode("utf-8", errors="ignore")


def avoid_reserved(name: str) -> str:
    """`CON` or `con.txt` get a `_` after their first part, so Windows can open them."""
    head, dot, rest = name.partition(".")
    if head.rstrip(" ").upper() in WINDOWS_RESERVED:
        return f"{head}_{dot}{rest}"
    return name


def safe_component(text: str) -> str:
    """One folder or file name: no forbidden characters, no leading dots (hidden, or `..`), no trailing dots or
    spaces (Windows drops them), not a reserved device name, not too long. May return "" (nothing usable)."""
    text = scrub(text).strip(" .")
    return avoid_reserved(cut_utf8(text, MAX_NAME_BYTES).rstrip(" ."))


def folder_parts(expanded: str) -> tuple[str, ...]:
    """The folder levels of an expanded directory pattern such as `2024-05-01/model`.

    A1111 lets `/` in the pattern's own text create levels, and so do we; token values never contain one.
    Empty, `.` and `..` levels disappear, so the result always stays under the outputs folder.
    """
    parts = (safe_component(p) for p in _SEPARATORS_RE.split(expanded))
    return tuple(p for p in parts if p)


def is_within(path: Path, root: Path) -> bool:
    """Lexical containment: symlinks the user made inside outputs (to another disk) are allowed."""
    try:
        Path(os.path.normpath(path)).relative_to(os.path.normpath(root))
    except ValueError:
        return False
    return True


def numbered_name(head: str, decoration: str, extension: str) -> str:
    """`00012-1234.png` from head `00012`, decoration `1234`; the decoration is cut to fit the name limit."""
    if not decoration:
        return f"{head}.{extension}"
    budget = MAX_NAME_BYTES - len(f"{head}-.{extension}".encode())
    decoration = cut_utf8(decoration, budget)
    return f"{head}-{decoration}.{extension}"


def plain_stem(decoration: str, extension: str) -> str:
    """A counter-less stem: made safe like a folder name, since it alone is the name."""
    return cut_utf8(safe_component(decoration), MAX_NAME_BYTES - len(extension) - 1 - 8)


def reservation_marker(name: str) -> str:
    """The hidden file that holds `name` (or a counter value) while its image is encoded and written."""
    return f".{name}{RESERVATION_SUFFIX}"


def _counted_name(name: str) -> str | None:
    """The name the counter should look at: visible files, and the target of a reservation in flight."""
    if name.startswith("."):
        if name.endswith(RESERVATION_SUFFIX):
            return name[1 : -len(RESERVATION_SUFFIX)]
        return None  # temporaries and other hidden files never count
    return name


def next_sequence_number(folder: Path, basename: str = "") -> int:
    """A1111's `get_next_sequence_number`: highest counter in `folder` + 1, or 0.

    The counter is the part of a file name before its first `-` (after `<basename>-` for grids), extension
    removed. Names that do not start that way are ignored, so `00041-x.png` gives 42 and `notes.txt` nothing.
    """
    prefix = f"{basename}-" if basename else ""
    try:
        names = os.listdir(folder)
    except FileNotFoundError:
        return 0
    highest = -1
    for raw in names:
        name = _counted_name(raw)
        if name is None or not name.startswith(prefix):
            continue
        first = os.path.splitext(name[len(prefix) :])[0].split("-")[0]
        if first.isascii() and first.isdigit():
            highest = max(highest, int(first))
    return highest + 1


def counter_in_use(folder: Path, head: str) -> bool:
    """Whether a visible file already carries the counter `head` (e.g. `00012`, `grid-0003`).

    Checked after taking the reservation marker: another process may have finished a file with this number
    and removed its own marker between our scan and our reservation.
    """
    return any(
        name.startswith((f"{head}-", f"{head}.")) for name in os.listdir(folder) if not name.startswith(".")
    )

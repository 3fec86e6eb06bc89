"""Saved outputs: A1111 file naming, atomic saving with infotext, and grids.

- `naming`: `NamingContext` and the `[token]` patterns (`FilenameGenerator`).
- `paths`: safe folder/file names, the file counter, and which files galleries should show.
- `save`: `ImageSaver`, which names, encodes and writes images and grids.
- `grid`: `make_grid`, A1111's grid layout.
"""

from modules.engine.outputs.grid import grid_rows, make_grid
from modules.engine.outputs.naming import NamingContext, sanitize_part
from modules.engine.outputs.paths import is_visible_output, next_sequence_number
from modules.engine.outputs.save import ImageSaver

__all__ = [
    "ImageSaver",
    "NamingContext",
    "grid_rows",
    "is_visible_output",
    "make_grid",
    "next_sequence_number",
    "sanitize_part",
]

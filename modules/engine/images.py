"""Image outputs: where generated images are saved, under which names, and how grids are laid out.

The code lives in the `modules.engine.outputs` package; this module is the short import path for callers:

    saver = ImageSaver(paths.outputs, settings.get, hooks)
    saver.save(image, "txt2img", NamingContext(seed=42, prompt="a cat"), infotext)
    # -> outputs/txt2img-images/2024-05-01/00000-42.png, as A1111 names it
"""

from modules.engine.outputs import (
    ImageSaver,
    NamingContext,
    grid_rows,
    is_visible_output,
    make_grid,
    next_sequence_number,
    sanitize_part,
)

__all__ = [
    "ImageSaver",
    "NamingContext",
    "grid_rows",
    "is_visible_output",
    "make_grid",
    "next_sequence_number",
    "sanitize_part",
]

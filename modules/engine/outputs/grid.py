"""Image grids laid out as A1111's `image_grid` lays them out (modules/images.py)."""

from __future__ import annotations

import math
from collections.abc import Sequence

from PIL import Image


def grid_rows(count: int, *, batch_size: int = 1, n_rows: int = -1, prevent_empty_spots: bool = False) -> int:
    """How many rows a grid of `count` images gets, from A1111's `n_rows` setting.

    `n_rows` > 0 is used as is; 0 means one row per batch (so each batch is a row); -1 means automatic:
    round(sqrt(count)), or with `grid_prevent_empty_spots` the largest divisor of `count` not above
    floor(sqrt(count)). Never more rows than images (A1111 1.6+), never fewer than one.
    """
    if count < 1:
        raise ValueError("a grid needs at least one image")
    if n_rows > 0:
        rows = n_rows
    elif n_rows == 0:
        rows = batch_size
    elif prevent_empty_spots:
        rows = math.isqrt(count)
        while count % rows != 0:
            rows -= 1
    else:
        # sqrt(n) is never exactly x.5 for an integer n, so Python's round-half-even cannot differ from A1111.
        rows = round(math.sqrt(count))
    return max(1, min(rows, count))


def make_grid(
    images: Sequence[Image.Image],
    rows: int | None = None,
    *,
    batch_size: int = 1,
    n_rows: int = -1,
    prevent_empty_spots: bool = False,
) -> Image.Image:
    """Paste `images` row by row onto a black RGB canvas, each cell the size of the first image.

    Args:
        images: The images, in order; at least one.
        rows: Rows to use; None picks them from `n_rows` and friends (see `grid_rows`).
        batch_size: The job's batch size, used when `n_rows` is 0.
        n_rows: A1111's `n_rows` setting (-1 automatic).
        prevent_empty_spots: A1111's `grid_prevent_empty_spots` setting.
    """
    if not images:
        raise ValueError("a grid needs at least one image")
    if rows is None:
        rows = grid_rows(len(images), batch_size=batch_size, n_rows=n_rows, prevent_empty_spots=prevent_empty_spots)
    rows = max(1, min(rows, len(images)))
    cols = math.ceil(len(images) / rows)
    width, height = images[0].size
    grid = Image.new("RGB", (cols * width, rows * height), color="black")
    for i, image in enumerate(images):
        grid.paste(image, box=(i % cols * width, i // cols * height))
    return grid

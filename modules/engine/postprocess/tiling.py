"""Tiled inference for image-to-image models whose output is the input scaled by a whole factor.

Large images do not fit through an upscaling network in one go (activation memory grows with area), so the input
is cut into tiles of `tile`×`tile` pixels that share `overlap` pixels with their neighbours. Each tile is upscaled
on its own and pasted into the output with *feathered* weights: inside the overlap a tile's weight ramps linearly
down towards its edge, and the output is the weighted average of the tiles covering each pixel. A tile's edge
pixels are its least reliable (the network saw padding there instead of the neighbour's content), and the ramp
gives them the least weight, so the seam fades out. A1111 (`upscaler_utils.tiled_upscale_2`) averages overlaps with
equal weights instead, so those edge pixels count as much as the neighbour's well-informed ones.

Layout: along each axis, the fewest tiles of at most `tile` pixels that cover it while neighbours share at least
`overlap` pixels, all of one size and spread evenly, the first and last flush with the edges. Equal sizes give one
shape for cuDNN autotuning and no padding; spreading them evenly keeps the extra work small. (Tiles placed every
`tile - overlap` pixels with the last one pushed back flush, as A1111 does, would cover a 192x192 image with four
128-pixel tiles overlapping by 64, 78% more pixels through the network than the image has; four even 100-pixel
tiles overlapping by 8 are 9% more.) Along an axis no longer than `tile` the single tile is the whole axis.

Normalisation: a tile's weight map is an outer product of a row ramp and a column ramp, and the tiles form a grid
(every row of tiles uses the same column starts), so the sum of all weight maps is itself the outer product of the
row sums and the column sums. Dividing by that product needs no full-size weight tensor.

The output is accumulated in float32 on the model's device (a 4x result of a 4 MP image is 768 MB), since on a GPU
blending on the CPU costs more than the network. A single tile (a small image, or `tile` 0) is returned as it
comes, with no blending buffer.

Importing this module does not import torch; the functions do.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

# Called with the tile's input (1, C, h, w) on the model's device and dtype; returns (1, C, h*scale, w*scale).
TileFn = Callable[["torch.Tensor"], "torch.Tensor"]
# Called after each tile with (tiles done, tiles in total).
ProgressFn = Callable[[int, int], None]
# Called before each tile; raises to stop the run (cancel).
CheckFn = Callable[[], None]


def tile_layout(length: int, tile: int, overlap: int, multiple_of: int = 1) -> tuple[int, list[int]]:
    """The tile size and start offsets along one axis of `length` pixels (see the module docstring).

    A `tile` of 0, or one at least `length`, gives a single tile covering the whole axis. With `multiple_of` > 1
    (a model that needs sizes divisible by its window or pixel-unshuffle factor) sizes and starts are multiples
    of it, except that the last tile stays flush with an edge that is not: the model would otherwise pad every
    tile, and padding changes what it computes near the padded edge.

    Raises:
        ValueError: `overlap` is negative, or not smaller than a `tile` that needs more than one tile.
    """
    if overlap < 0:
        raise ValueError(f"overlap must be 0 or more, got {overlap}")
    if tile <= 0 or tile >= length:
        return length, [0]
    if overlap >= tile:
        raise ValueError(f"overlap ({overlap}) must be smaller than the tile size ({tile})")
    if multiple_of > 1:
        # Lay the axis out in blocks of `multiple_of` pixels, then scale back and keep the last tile inside.
        overlap_blocks = -(-overlap // multiple_of)
        tile_blocks = max(tile // multiple_of, overlap_blocks + 1)  # rounding must not eat the whole tile
        blocks, starts = tile_layout(-(-length // multiple_of), tile_blocks, overlap_blocks)
        size = min(length, blocks * multiple_of)
        return size, [min(start * multiple_of, length - size) for start in starts]
    count = math.ceil((length - overlap) / (tile - overlap))
    # The smallest equal size for `count` tiles sharing `overlap`; never above `tile`, by the choice of count.
    size = math.ceil((length + (count - 1) * overlap) / count)
    span = length - size
    # Even spacing; each gap is the floor or ceiling of the mean, which is at most `size - overlap`.
    return size, [round(i * span / (count - 1)) for i in range(count)]


def tile_starts(length: int, tile: int, overlap: int, multiple_of: int = 1) -> list[int]:
    """Start offsets of the tiles along one axis (`tile_layout` without the size)."""
    return tile_layout(length, tile, overlap, multiple_of)[1]


def tile_count(width: int, height: int, tile: int, overlap: int, multiple_of: int = 1) -> int:
    """How many tiles `run_tiled` makes for an image of `width`×`height`."""
    return len(tile_starts(width, tile, overlap, multiple_of)) * len(tile_starts(height, tile, overlap, multiple_of))


def axis_weights(start: int, size: int, length: int, overlap: int, scale: int) -> torch.Tensor:
    """The 1-D output weights of one tile along one axis (`size * scale` values).

    The weight ramps up over the first `overlap * scale` output pixels when a tile lies before this one, and down
    over the last ones when a tile lies after it; at an image border it stays 1, since no other tile can take
    over there. Ramp values are (i + 1) / (ramp + 1), never 0, so every pixel has a positive total weight; where
    two ramps meet exactly they sum to 1.
    """
    import torch

    weights = torch.ones(size * scale, dtype=torch.float32)
    ramp_len = min(overlap * scale, size * scale // 2)
    if ramp_len <= 0:
        return weights
    ramp = torch.arange(1, ramp_len + 1, dtype=torch.float32) / (ramp_len + 1)
    if start > 0:
        weights[:ramp_len] = ramp
    if start + size < length:
        # min() keeps the middle of a tile narrower than two ramps from being overwritten upwards.
        weights[-ramp_len:] = torch.minimum(weights[-ramp_len:], ramp.flip(0))
    return weights


def run_tiled(
    fn: TileFn,
    image: torch.Tensor,
    scale: int,
    tile: int,
    overlap: int,
    device: torch.device,
    dtype: torch.dtype,
    check: CheckFn | None = None,
    progress: ProgressFn | None = None,
    done_before: int = 0,
    total: int | None = None,
    multiple_of: int = 1,
) -> torch.Tensor:
    """Run `fn` over `image` in feathered, overlapping tiles and return the blended result.

    Args:
        fn: The model call (see `TileFn`); its output must be exactly `scale` times its input.
        image: (1, C, H, W) float in [0, 1], on any device (tiles are moved to `device`).
        scale: The model's whole-number scale.
        tile: Largest tile edge in input pixels; 0 runs the whole image at once.
        overlap: Input pixels that neighbouring tiles share.
        device, dtype: Where and in which precision `fn` runs.
        check: Called before each tile; whatever it raises stops the run (the job's cancel check).
        progress: Called as (done, total) after each tile, for the job's progress bar.
        done_before, total: Offsets for `progress` when one upscale runs several passes.
        multiple_of: Tile sizes and starts the model needs (spandrel's `size_requirements.multiple_of`).

    Returns:
        (1, C, H*scale, W*scale) float32 on `device`, in [0, 1].

    Raises:
        ValueError: A tile came back at the wrong size (the model's scale is not what it claims).
    """
    import torch

    # spandrel returns inference tensors, which only inference mode may update in place (the blending does).
    with torch.inference_mode():
        return _run(fn, image, scale, tile, overlap, device, dtype, check, progress, done_before, total, multiple_of)


def _run(
    fn: TileFn,
    image: torch.Tensor,
    scale: int,
    tile: int,
    overlap: int,
    device: torch.device,
    dtype: torch.dtype,
    check: CheckFn | None,
    progress: ProgressFn | None,
    done_before: int,
    total: int | None,
    multiple_of: int,
) -> torch.Tensor:
    """`run_tiled`'s work, inside inference mode."""
    import torch

    _, channels, height, width = image.shape
    tile_h, ys = tile_layout(height, tile, overlap, multiple_of)
    tile_w, xs = tile_layout(width, tile, overlap, multiple_of)
    total = total if total is not None else done_before + len(ys) * len(xs)

    def one_tile(y: int, x: int) -> torch.Tensor:
        if check is not None:
            check()
        patch = image[:, :, y:y + tile_h, x:x + tile_w].to(device=device, dtype=dtype)
        result = fn(patch).to(dtype=torch.float32)
        if tuple(result.shape[-2:]) != (tile_h * scale, tile_w * scale):
            raise ValueError(f"the model returned a {tuple(result.shape[-2:])} tile for a {(tile_h, tile_w)} "
                             f"input; expected {(tile_h * scale, tile_w * scale)} at scale {scale}")
        return result

    if len(ys) == 1 and len(xs) == 1:
        # Untiled: nothing to blend, and no second full-size buffer.
        out = one_tile(0, 0)
        if progress is not None:
            progress(done_before + 1, total)
        return out.clamp_(0.0, 1.0)

    row_weights = [axis_weights(y, tile_h, height, overlap, scale).to(device) for y in ys]
    col_weights = [axis_weights(x, tile_w, width, overlap, scale).to(device) for x in xs]
    row_sum = torch.zeros(height * scale, dtype=torch.float32, device=device)
    col_sum = torch.zeros(width * scale, dtype=torch.float32, device=device)
    for y, w in zip(ys, row_weights, strict=True):
        row_sum[y * scale:(y + tile_h) * scale] += w
    for x, w in zip(xs, col_weights, strict=True):
        col_sum[x * scale:(x + tile_w) * scale] += w

    # Accumulated where the model runs: on a GPU, a copy back per tile and CPU-side blending would cost more than
    # the network itself (16 MP of output per 1 MP of input at 4x).
    out = torch.zeros((1, channels, height * scale, width * scale), dtype=torch.float32, device=device)
    done = done_before
    for y, wy in zip(ys, row_weights, strict=True):
        for x, wx in zip(xs, col_weights, strict=True):
            result = one_tile(y, x).mul_(wy[:, None]).mul_(wx[None, :])
            out[:, :, y * scale:(y + tile_h) * scale, x * scale:(x + tile_w) * scale].add_(result)
            done += 1
            if progress is not None:
                progress(done, total)
    out.div_(row_sum[:, None]).div_(col_sum[None, :])
    return out.clamp_(0.0, 1.0)

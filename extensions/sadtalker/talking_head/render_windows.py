"""Renderer input windows: coefficient matrices -> the 27-frame MappingNet windows in upstream's batch layout.

Reproduces the numeric part of upstream `src/generate_facerender_batch.get_facerender_data` (without file I/O):
`transform_semantic_1` (source), `transform_semantic_target` (per-frame windows), expression scaling, the
`full` crop-parameter columns, still mode and the padding/reshape to (batch_size, steps, C, 27). Trap kept on
purpose (study.md §7): batch row b holds a CONTIGUOUS chunk of time (frames b*steps .. b*steps+steps-1), not
every batch_size-th frame.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from torch import Tensor

SEMANTIC_RADIUS = 13  # window = frames f-13 .. f+13 (27 frames), indices clamped to the clip


def coeff_width(preprocess: str) -> int:
    """70 coefficients, or 73 (with s, tx, ty) for the `full`/`extfull` modes."""
    return 73 if "full" in preprocess.lower() else 70


def source_semantics(first_coeff: Tensor, preprocess: str, batch_size: int) -> Tensor:
    """(1, >=73) first-frame coefficients -> (batch_size, C, 27): the same column repeated 27 times."""
    import torch

    width = coeff_width(preprocess)
    column = first_coeff[:1, :width].to(torch.float32)
    return column.t().expand(width, 2 * SEMANTIC_RADIUS + 1).unsqueeze(0).repeat(batch_size, 1, 1)


def target_coefficients(
    coeff_seq: Tensor, first_coeff: Tensor, preprocess: str, expression_scale: float, still: bool
) -> Tensor:
    """(T, >=70) generated coefficients -> (T, C) rows as the renderer sees them (scaled, full, still)."""
    import torch

    generated = coeff_seq[:, :70].to(torch.float32).clone()
    generated[:, :64] = generated[:, :64] * expression_scale
    width = coeff_width(preprocess)
    frames = generated.shape[0]
    if width == 73:
        # full modes append the source's crop parameters (s, tx, ty) to every frame
        generated = torch.cat([generated, first_coeff[:1, 70:73].to(torch.float32).expand(frames, 3)], dim=1)
    if still:
        # still mode freezes the pose (and crop parameters) at the source's values
        generated[:, 64:] = first_coeff[:1, 64:width].to(torch.float32).expand(frames, width - 64)
    return generated


def frame_windows(coefficients: Tensor) -> Tensor:
    """(T, C) renderer rows -> (T, C, 27): frame f's window holds frames f-13..f+13, clamped to the clip."""
    import torch

    frames = coefficients.shape[0]
    offsets = torch.arange(-SEMANTIC_RADIUS, SEMANTIC_RADIUS + 1, device=coefficients.device)
    index = (torch.arange(frames, device=coefficients.device).unsqueeze(1) + offsets).clamp(0, frames - 1)
    return coefficients[index].transpose(1, 2)


def target_semantics(
    coeff_seq: Tensor,
    first_coeff: Tensor,
    preprocess: str,
    batch_size: int,
    expression_scale: float = 1.0,
    still: bool = False,
) -> Tensor:
    """(T, >=70) coefficients -> (batch_size, ceil(T/bs), C, 27) windows; padding repeats the last window."""
    import torch

    windows = frame_windows(target_coefficients(coeff_seq, first_coeff, preprocess, expression_scale, still))
    frames = windows.shape[0]
    remainder = frames % batch_size
    if remainder:
        windows = torch.cat([windows, windows[-1:].expand(batch_size - remainder, *windows.shape[1:])], dim=0)
    return windows.reshape(batch_size, -1, *windows.shape[1:])

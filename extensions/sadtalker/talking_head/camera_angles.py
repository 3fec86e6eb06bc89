"""Explicit head angles (`--input_yaw/pitch/roll`): a few key angles -> one angle per video frame.

Reproduces upstream `gen_camera_pose` (src/generate_facerender_batch.py): one value holds for the whole clip;
several values are visited in order at a constant speed (degrees per frame = total absolute change / (T - 1)),
each segment sampled with `np.arange(start, stop, step)`, the list then cut or extended (last value held) to T.
The renderer uses these degrees instead of the angles MappingNet predicts for the driving keypoints.

Upstream divides by zero when two neighbouring values are equal, when all are equal, or when T = 1; here an
equal neighbour simply adds no frames, and a sequence without any change holds its first value.
Upstream also lays the sequence out in its renderer batch shape; ours stays per frame (`render_chain` groups
frames itself).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def angle_sequence(degrees: Sequence[float], num_frames: int) -> np.ndarray:
    """(num_frames,) float32 degrees visiting `degrees` in order at constant speed."""
    values = [float(d) for d in degrees]
    if not values:
        raise ValueError("give at least one angle")
    if num_frames < 1:
        raise ValueError(f"num_frames must be at least 1, got {num_frames}")
    total = sum(abs(b - a) for a, b in zip(values, values[1:]))
    if len(values) == 1 or total == 0 or num_frames == 1:
        return np.full(num_frames, values[0], dtype=np.float32)
    per_frame = total / (num_frames - 1)
    sequence: list[float] = []
    for start, stop in zip(values, values[1:]):
        if stop == start:
            continue
        step = per_frame if stop > start else -per_frame
        sequence += list(np.arange(start, stop, step))
    sequence = sequence[:num_frames]
    sequence += [sequence[-1]] * (num_frames - len(sequence))
    return np.asarray(sequence, dtype=np.float32)

"""Face renderer chain: source image + coefficient rows -> video frames (MappingNet -> keypoints -> generator).

Reproduces upstream `get_facerender_data` (source image tensor, windows) and `make_animation` /
`AnimateFromCoeff.generate` up to the float frames (study.md §1.9):
- canonical keypoints come from the source image once; source keypoints = canonical keypoints moved by
  MappingNet's reading of the source coefficients (the same 27 columns);
- per frame, MappingNet reads the frame's 27-frame coefficient window, the driving keypoints follow (explicit
  yaw/pitch/roll replace the predicted angles), and the generator warps the source image to them.

Batching: upstream pads the clip to a multiple of `batch_size` and gives each batch row a contiguous chunk of
time, rendering the padding frames too. In eval mode frames do not influence each other, so here each call
renders `batch_size` consecutive frames and padding is never rendered; the frames come out in time order,
chunk by chunk (`iter_frames`), so a long clip need not be held in memory.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from .render_windows import coeff_width, frame_windows, source_semantics, target_coefficients

if TYPE_CHECKING:
    import torch

    from .nets import KPDetector, MappingNet, OcclusionAwareSPADEGenerator


@dataclass(frozen=True)
class RendererNets:
    """The three networks of the renderer; `mapping` must be the variant of the preprocess mode."""

    kp_extractor: KPDetector
    generator: OcclusionAwareSPADEGenerator
    mapping: MappingNet

    @property
    def device(self) -> torch.device:
        return next(self.generator.parameters()).device


@dataclass(frozen=True)
class RenderSetup:
    """Everything that is fixed for a clip: `source_image` (1, 3, S, S), `kp_canonical`/`kp_source` (1, 15, 3),
    `windows` (T, C, 27) the MappingNet input of every frame, and optional per-frame angles (T,) in degrees."""

    source_image: torch.Tensor
    kp_canonical: torch.Tensor
    kp_source: torch.Tensor
    windows: torch.Tensor
    yaw: torch.Tensor | None = None
    pitch: torch.Tensor | None = None
    roll: torch.Tensor | None = None

    @property
    def num_frames(self) -> int:
        return int(self.windows.shape[0])


def source_image_tensor(image: np.ndarray, size: int) -> torch.Tensor:
    """RGB uint8 (H, W, 3) -> (1, 3, size, size) float32 in [0, 1].

    Upstream: `img_as_float32` then `skimage.transform.resize` to size x size. The source PNG is written at that
    size already, so this is x / 255; another size is resized bilinearly with antialiasing (close to, not
    bit-identical with, skimage's resize).
    """
    import torch
    import torch.nn.functional as F

    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"expected an RGB uint8 image (H, W, 3), got {image.dtype} {tuple(image.shape)}")
    pixels = np.require(image, requirements=["C", "W"])  # torch warns about (and may write to) read-only arrays
    tensor = torch.from_numpy(pixels).permute(2, 0, 1).unsqueeze(0).to(torch.float32) / 255
    if tensor.shape[2:] != (size, size):
        tensor = F.interpolate(tensor, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
        tensor = tensor.clamp(0, 1)
    return tensor


def _angles(values: np.ndarray | None, num_frames: int, name: str, device: torch.device) -> torch.Tensor | None:
    import torch

    if values is None:
        return None
    array = np.asarray(values, dtype=np.float32).reshape(-1)
    if array.shape[0] != num_frames:
        raise ValueError(f"{name} has {array.shape[0]} values for {num_frames} frames")
    return torch.from_numpy(array).to(device)


def prepare(
    nets: RendererNets,
    source_image: torch.Tensor,
    first_coeff: np.ndarray | torch.Tensor,
    coeff_seq: np.ndarray | torch.Tensor,
    *,
    preprocess: str = "crop",
    expression_scale: float = 1.0,
    still: bool = False,
    yaw: np.ndarray | None = None,
    pitch: np.ndarray | None = None,
    roll: np.ndarray | None = None,
) -> RenderSetup:
    """Source keypoints and per-frame windows for (T, >=70) generated rows and the (1, >=70|73) source row.

    `preprocess` picks 70 or 73 MappingNet inputs (`full` modes add s, tx, ty); `still` freezes pose (and crop
    parameters) at the source's; `expression_scale` multiplies the 64 expression columns. `yaw`/`pitch`/`roll`
    (T,) degrees override the driving angles (see `camera_angles.angle_sequence`).
    """
    import torch

    from .nets.keypoint_transform import keypoint_transformation  # imports torch: not at module import

    width = coeff_width(preprocess)
    expected = nets.mapping.first[0].in_channels
    if expected != width:
        raise ValueError(f"preprocess {preprocess!r} needs the {width}-input MappingNet, got one with {expected}")
    device = nets.device
    first = torch.as_tensor(np.asarray(first_coeff, dtype=np.float32)).reshape(1, -1)
    if first.shape[1] < width:
        raise ValueError(f"the source coefficients have {first.shape[1]} columns, {width} are needed")
    rows = torch.as_tensor(np.asarray(coeff_seq, dtype=np.float32))
    if rows.ndim != 2 or rows.shape[1] < 70 or rows.shape[0] < 1:
        raise ValueError(f"expected (T, 70) coefficient rows, got {tuple(rows.shape)}")
    windows = frame_windows(target_coefficients(rows, first, preprocess, expression_scale, still)).contiguous()
    num_frames = windows.shape[0]
    source = source_image.to(device=device, dtype=torch.float32)
    with torch.inference_mode():
        kp_canonical = nets.kp_extractor(source)
        he_source = nets.mapping(source_semantics(first, preprocess, 1).to(device))
        kp_source = keypoint_transformation(kp_canonical, he_source)
    return RenderSetup(
        source_image=source,
        kp_canonical=kp_canonical,
        kp_source=kp_source,
        windows=windows.to(device),
        yaw=_angles(yaw, num_frames, "yaw", device),
        pitch=_angles(pitch, num_frames, "pitch", device),
        roll=_angles(roll, num_frames, "roll", device),
    )


def driving_keypoints(nets: RendererNets, setup: RenderSetup, start: int, stop: int) -> torch.Tensor:
    """(stop - start, 15, 3) driving keypoints of frames start..stop-1."""
    import torch

    from .nets.keypoint_transform import keypoint_transformation  # imports torch: not at module import

    count = stop - start
    with torch.inference_mode():
        head = nets.mapping(setup.windows[start:stop])
        overrides = {
            f"{name}_in": angles[start:stop]
            for name, angles in (("yaw", setup.yaw), ("pitch", setup.pitch), ("roll", setup.roll))
            if angles is not None
        }
        return keypoint_transformation(setup.kp_canonical.expand(count, -1, -1), head, **overrides)


def iter_frames(
    nets: RendererNets, setup: RenderSetup, batch_size: int = 2, start: int = 0, stop: int | None = None
) -> Iterator[tuple[int, torch.Tensor]]:
    """Render frames start..stop-1 (default: the whole clip), `batch_size` per generator call.

    Yields (index of the chunk's first frame, (n, 3, S, S) float in [0, 1]) in time order. A part of the clip
    (a preview, a resumed job) renders exactly as it would inside the whole clip: frames are independent.
    """
    import torch

    if batch_size < 1:
        raise ValueError(f"batch size must be at least 1, got {batch_size}")
    stop = setup.num_frames if stop is None else stop
    if not 0 <= start <= stop <= setup.num_frames:
        raise ValueError(f"frames {start}..{stop} are outside the clip of {setup.num_frames} frames")
    for first in range(start, stop, batch_size):
        last = min(first + batch_size, stop)
        count = last - first
        kp_driving = driving_keypoints(nets, setup, first, last)
        with torch.inference_mode():
            out = nets.generator(
                setup.source_image.expand(count, -1, -1, -1),
                kp_driving=kp_driving,
                kp_source=setup.kp_source.expand(count, -1, -1),
            )
        yield first, out["prediction"]


def render_frames(nets: RendererNets, setup: RenderSetup, batch_size: int = 2) -> torch.Tensor:
    """All frames at once, (T, 3, S, S) float in [0, 1] (use `iter_frames` for long clips)."""
    import torch

    return torch.cat([frames.cpu() for _, frames in iter_frames(nets, setup, batch_size)], dim=0)


def frames_to_uint8(frames: torch.Tensor) -> np.ndarray:
    """(N, 3, S, S) float in [0, 1] -> (N, S, S, 3) uint8, rounded like skimage's `img_as_ubyte`."""
    array = frames.detach().float().cpu().permute(0, 2, 3, 1).numpy()
    return np.clip(np.rint(array * 255.0), 0, 255).astype(np.uint8)

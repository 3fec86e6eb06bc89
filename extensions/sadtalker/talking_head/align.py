"""Alignment of a face crop for the 3DMM regressor: 68 landmarks -> 5 points -> scale/shift fit -> 224x224 crop.

Reproduces the Deep3DFaceRecon preprocessing that upstream `CropAndExtract.generate` runs on every source frame
(`src/face3d/util/preprocess.py`: `extract_5p`, `POS`, `resize_n_crop_img`, `align_img`; study.md §1.4):

1. landmarks y-flipped (`y := H - 1 - y`, float32);
2. five points: the two eye centres (means of points 37/40 and 43/46, 1-based), the nose tip 31, mouth corners
   49 and 55;
3. least-squares fit of an orthographic projection of the five standard 3D landmarks onto them (`POS`): scale s
   and translation t; then s := 102 / s;
4. the image resized by s with Pillow's BICUBIC (other resizers do not give the same pixels) and a 224x224 box
   cut around t (outside the image: black).

`trans_params = [w0, h0, s, tx, ty]`; its last three values (float32) become columns 70:73 of the source
coefficients, which the `full` modes feed to MappingNet. Without landmarks (detector found no face: upstream's
landmarks are all -1) the standard landmarks projected into the image are used instead, NOT y-flipped.
Values follow upstream's dtypes (float32 landmarks, float64 fit) so they match the golden case to 1e-6.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from torch import Tensor

TARGET_SIZE = 224
RESCALE_FACTOR = 102.0
# 1-based indices of the 68-point scheme used for the five points: nose tip, eye corners, mouth corners.
LM68_TO_5_INDEX = (31, 37, 40, 43, 46, 49, 55)
# The five standard 3D landmarks (x, y, z), float32, as upstream derives them from `similarity_Lm3D_all.mat`
# (left eye, right eye, nose tip, left and right mouth corners). Written to float32 round-trip precision: the
# 7-decimal copy in constants.json moves tx/ty by ~1e-5 px, more than the 1e-6 the golden case allows.
LM3D_STD_5 = np.array(
    [
        [-0.31148657, 0.29036078, 0.13377953],
        [0.30979887, 0.28972036, 0.13179526],
        [0.0032534988, -0.046179324, 0.55244243],
        [-0.25216928, -0.38133916, 0.22405732],
        [0.2484662, -0.38128236, 0.22235769],
    ],
    dtype=np.float32,
)
LM3D_STD_5.flags.writeable = False


@dataclass(frozen=True)
class FaceAlignment:
    """Result of `align_for_3dmm`.

    `trans_params` (5,) float64 [w0, h0, s, tx, ty]; `crop` (224, 224, 3) uint8 RGB; `landmarks` the landmarks
    moved into the crop (float64; 68 points, or the 5 fallback points); `used_fallback` when no landmarks were
    available and the standard face was assumed.
    """

    trans_params: np.ndarray
    crop: np.ndarray
    landmarks: np.ndarray
    used_fallback: bool

    @property
    def crop_params(self) -> np.ndarray:
        """(3,) float32 [s, tx, ty]: the values saved as coefficient columns 70:73."""
        return self.trans_params.astype(np.float32)[2:]

    def net_input(self) -> Tensor:
        """(1, 3, 224, 224) float32 RGB in [0, 1], the 3DMM regressor's input (divided in float64 like upstream)."""
        import torch

        return torch.from_numpy((self.crop / 255.0).astype(np.float32).transpose(2, 0, 1).copy()).unsqueeze(0)


def flip_landmarks_y(lm68: np.ndarray, height: int) -> np.ndarray:
    """Image landmarks (y down) -> the fit's convention (y up): y := H - 1 - y, kept in float32."""
    flipped = np.array(lm68, dtype=np.float32, copy=True)
    flipped[:, -1] = height - 1 - flipped[:, -1]
    return flipped


def five_points(lm68: np.ndarray) -> np.ndarray:
    """(68, 2) -> (5, 2): left eye centre, right eye centre, nose tip, left and right mouth corner."""
    index = np.array(LM68_TO_5_INDEX) - 1
    lm = np.asarray(lm68)
    return np.stack(
        [
            np.mean(lm[index[[1, 2]], :], 0),
            np.mean(lm[index[[3, 4]], :], 0),
            lm[index[0], :],
            lm[index[5], :],
            lm[index[6], :],
        ],
        axis=0,
    )


def fit_scale_translation(points_2d: np.ndarray, points_3d: np.ndarray) -> tuple[np.ndarray, float]:
    """Least-squares orthographic fit (upstream `POS`): (t (2,) float64, s) with points_2d ~ s R X + t.

    Unknowns k (8): rows [X Y Z 1 0 0 0 0] -> x_i and [0 0 0 0 X Y Z 1] -> y_i; s is the mean norm of the two
    3-vectors of k, t = (k[3], k[7]).
    """
    count = points_2d.shape[0]
    system = np.zeros([2 * count, 8])
    system[0 : 2 * count - 1 : 2, 0:3] = points_3d
    system[0 : 2 * count - 1 : 2, 3] = 1
    system[1 : 2 * count : 2, 4:7] = points_3d
    system[1 : 2 * count : 2, 7] = 1
    rhs = np.reshape(points_2d, [2 * count, 1])
    k, *_ = np.linalg.lstsq(system, rhs, rcond=None)
    scale = (np.linalg.norm(k[0:3]) + np.linalg.norm(k[4:7])) / 2
    return np.array([k[3, 0], k[7, 0]], dtype=np.float64), float(scale)


def resize_and_crop(
    image: np.ndarray, landmarks: np.ndarray, t: np.ndarray, s: float, target_size: int = TARGET_SIZE
) -> tuple[np.ndarray, np.ndarray]:
    """Scale the image by s (Pillow BICUBIC), cut the target_size box around t; move the landmarks along.

    Returns (crop (target, target, 3) uint8, landmarks in crop pixels float64). Sizes and the box corner are
    truncated to int32 like upstream; parts of the box outside the resized image come out black.
    """
    from PIL import Image

    h0, w0 = image.shape[:2]
    w = int(np.int32(w0 * s))
    h = int(np.int32(h0 * s))
    left = int(np.int32(w / 2 - target_size / 2 + float((t[0] - w0 / 2) * s)))
    up = int(np.int32(h / 2 - target_size / 2 + float((h0 / 2 - t[1]) * s)))
    resized = Image.fromarray(np.ascontiguousarray(image)).resize((w, h), resample=Image.BICUBIC)
    crop = np.array(resized.crop((left, up, left + target_size, up + target_size)))
    moved = np.stack([landmarks[:, 0] - t[0] + w0 / 2, landmarks[:, 1] - t[1] + h0 / 2], axis=1) * s
    moved = moved - np.reshape(np.array([(w / 2 - target_size / 2), (h / 2 - target_size / 2)]), [1, 2])
    return crop, moved


def fallback_points(width: int, height: int, lm3d_std: np.ndarray = LM3D_STD_5) -> np.ndarray:
    """Five points when no face was found: the standard landmarks' x, y mapped from [-1, 1] onto the image.

    Computed in float32 like upstream (the standard landmarks are float32); they are used as is, not y-flipped.
    """
    unit = (lm3d_std[:, :2] + 1) / 2.0
    return np.concatenate([unit[:, :1] * width, unit[:, 1:2] * height], 1)


def has_landmarks(lm68: np.ndarray | None) -> bool:
    """False for None or upstream's "no face" marker (every coordinate -1)."""
    return lm68 is not None and not bool(np.mean(lm68) == -1)


def align_for_3dmm(
    image: np.ndarray, lm68: np.ndarray | None, lm3d_std: np.ndarray = LM3D_STD_5
) -> FaceAlignment:
    """Align an RGB uint8 (H, W, 3) face image for the 3DMM net, given its 68 landmarks (pixels, y down).

    `lm68` None (or all -1) selects the no-face fallback. The image is normally the size x size crop that
    becomes the renderer's source image, with landmarks detected again on it.
    """
    height, width = image.shape[:2]
    if has_landmarks(lm68):
        landmarks = flip_landmarks_y(np.asarray(lm68).reshape(-1, 2), height)
        points = five_points(landmarks)
    else:
        landmarks = points = fallback_points(width, height, lm3d_std)
    t, s = fit_scale_translation(points, lm3d_std)
    s = RESCALE_FACTOR / s
    crop, moved = resize_and_crop(image, landmarks, t, s)
    trans_params = np.array([width, height, s, t[0], t[1]], dtype=np.float64)
    return FaceAlignment(trans_params=trans_params, crop=crop, landmarks=moved, used_fallback=not has_landmarks(lm68))

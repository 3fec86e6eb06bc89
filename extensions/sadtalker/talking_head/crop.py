"""Face crop modes: where in the user's photo the talking head comes from, and where it goes back.

Reproduces the geometry of upstream `src/utils/croper.Preprocesser.crop`/`align_face` and the branches of
`CropAndExtract.generate` (study.md §1.3) without any network: the face detector and landmark model are a
replaceable `FaceLandmarker` (RGB image in, 68 landmarks out), so tests and other detectors plug in freely.

Modes (`--preprocess`):
- `crop`    the tight FFHQ-style face square (quad box) inside a bordered crop box;
- `extcrop` the whole bordered crop box (more context around the face);
- `full`    like `crop`, and the video is pasted back into the original photo (MappingNet with 73 inputs);
- `extfull` like `extcrop`, pasted back with the crop box;
- `resize`  no detection: the whole photo is squashed to the square (meant for ID-photo-like inputs).
The cropped region is then resized (OpenCV bilinear) to `size` x `size`: the renderer's source image.

Two corrections to upstream, both invisible unless the face touches the image border: the quad box is clipped
to the crop box it lives in (upstream clips to the image, and its bottom edge to the image WIDTH), and the
paste-back box is given in the original photo's pixels even when the photo was shrunk for cropping (upstream
pastes shrunk coordinates into the full photo, which only happens for faces over about 2000 px).
For the `ext*` modes `output_size` is the crop box actually used (upstream reports the quad box's size there).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np

PREPROCESS_MODES: tuple[str, ...] = ("crop", "extcrop", "resize", "full", "extfull")
ALIGN_OUTPUT_SIZE = 512  # `xsize`: the FFHQ output size the shrink rule is measured against
Box = tuple[int, int, int, int]  # left, top, right, bottom (right/bottom exclusive)


class FaceNotFoundError(ValueError):
    """No face in the source image, so it cannot be cropped."""


class FaceLandmarker(Protocol):
    """Face detector + 68-point landmark model.

    Called with an RGB uint8 (H, W, 3) image; returns (68, 2) float32 landmarks in pixels (x right, y down) of
    one face (ours: the largest; upstream: the first RetinaFace box), or None when there is no face.
    """

    def __call__(self, image: np.ndarray) -> np.ndarray | None: ...


def check_preprocess(mode: str) -> str:
    """The mode in lower case; ValueError naming the valid ones otherwise."""
    normalised = mode.strip().lower()
    if normalised not in PREPROCESS_MODES:
        raise ValueError(f"unknown preprocess mode {mode!r}; choose one of {', '.join(PREPROCESS_MODES)}")
    return normalised


def is_extended(mode: str) -> bool:
    return check_preprocess(mode).startswith("ext")


def pastes_back(mode: str) -> bool:
    """`full` and `extfull` put the animated face back into the original photo."""
    return "full" in check_preprocess(mode)


@dataclass(frozen=True)
class CropPlan:
    """Where the face region is, computed once from the first frame and reused for every frame.

    `resized_size` (w, h): the frame is first resized to this (equal to the image unless the face is huge).
    `crop_box` in resized pixels; `quad_box` relative to the crop box. Both None in `resize` mode.
    """

    mode: str
    image_size: tuple[int, int]
    resized_size: tuple[int, int]
    crop_box: Box | None
    quad_box: Box | None

    @property
    def face_box(self) -> Box:
        """The region (resized pixels) that becomes the source image."""
        width, height = self.resized_size
        if self.crop_box is None or self.quad_box is None:
            return (0, 0, width, height)
        cl, ct, cr, cb = self.crop_box
        if is_extended(self.mode):
            return (cl, ct, cr, cb)
        ql, qt, qr, qb = self.quad_box
        return (cl + ql, ct + qt, cl + qr, ct + qb)

    @property
    def output_size(self) -> tuple[int, int]:
        """(w, h) of the face region: the rendered square is resized back to this aspect ratio."""
        left, top, right, bottom = self.face_box
        return (right - left, bottom - top)

    @property
    def paste_box(self) -> Box | None:
        """For `full`/`extfull`: the face region in ORIGINAL image pixels (where frames are pasted back)."""
        if not pastes_back(self.mode):
            return None
        sx = self.image_size[0] / self.resized_size[0]
        sy = self.image_size[1] / self.resized_size[1]
        left, top, right, bottom = self.face_box
        return (round(left * sx), round(top * sy), round(right * sx), round(bottom * sy))

    def apply(self, frame: np.ndarray) -> np.ndarray:
        """Cut the face region out of one RGB frame of the original size (any frame of a video)."""
        import cv2

        if frame.shape[1] != self.image_size[0] or frame.shape[0] != self.image_size[1]:
            raise ValueError(f"frame is {frame.shape[1]}x{frame.shape[0]}, the plan was made for {self.image_size}")
        if tuple(self.resized_size) != tuple(self.image_size):
            frame = cv2.resize(frame, self.resized_size)
        left, top, right, bottom = self.face_box
        return frame[top:bottom, left:right]


def face_quad(lm68: np.ndarray) -> tuple[np.ndarray, float]:
    """FFHQ-style oriented face square from 68 landmarks: (quad (4, 2) corners, side length qsize).

    x axis: eye-to-eye minus the rotated eye-to-mouth vector, scaled to max(2 |eye_to_eye|, 1.8 |eye_to_mouth|);
    centre: eye midpoint + 0.1 eye_to_mouth. Corners in upstream order (c-x-y, c-x+y, c+x+y, c+x-y).
    """
    lm = np.asarray(lm68)
    eye_left = np.mean(lm[36:42], axis=0)
    eye_right = np.mean(lm[42:48], axis=0)
    eye_avg = (eye_left + eye_right) * 0.5
    eye_to_eye = eye_right - eye_left
    mouth_avg = (lm[48] + lm[54]) * 0.5
    eye_to_mouth = mouth_avg - eye_avg
    x = eye_to_eye - np.flipud(eye_to_mouth) * [-1, 1]
    x /= np.hypot(*x)
    x *= max(np.hypot(*eye_to_eye) * 2.0, np.hypot(*eye_to_mouth) * 1.8)
    y = np.flipud(x) * [-1, 1]
    c = eye_avg + eye_to_mouth * 0.1
    quad = np.stack([c - x - y, c - x + y, c + x + y, c + x - y])
    return quad, float(np.hypot(*x) * 2)


def plan_crop(lm68: np.ndarray | None, image_size: tuple[int, int], mode: str) -> CropPlan:
    """The crop of `mode` for an image of `image_size` (w, h) whose first face has landmarks `lm68`.

    `resize` needs no landmarks; the other modes raise FaceNotFoundError when `lm68` is None.
    """
    mode = check_preprocess(mode)
    width, height = image_size
    if mode == "resize":
        return CropPlan(mode, (width, height), (width, height), None, None)
    if lm68 is None:
        raise FaceNotFoundError("no face was found in the source image; use a photo with a clear, frontal face")
    quad, qsize = face_quad(lm68)

    # A very large face is handled on a shrunk copy (upstream resizes the frame by 1/shrink first).
    shrink = int(np.floor(qsize / ALIGN_OUTPUT_SIZE * 0.5))
    if shrink > 1:
        resized = (int(np.rint(float(width) / shrink)), int(np.rint(float(height) / shrink)))
        quad = quad / shrink
        qsize = qsize / shrink
    else:
        resized = (width, height)

    border = max(int(np.rint(qsize * 0.1)), 3)
    crop = (
        int(np.floor(min(quad[:, 0]))),
        int(np.floor(min(quad[:, 1]))),
        int(np.ceil(max(quad[:, 0]))),
        int(np.ceil(max(quad[:, 1]))),
    )
    crop = (
        max(crop[0] - border, 0),
        max(crop[1] - border, 0),
        min(crop[2] + border, resized[0]),
        min(crop[3] + border, resized[1]),
    )
    quad = quad - np.array(crop[0:2])
    corners = (quad + 0.5).flatten()
    crop_w, crop_h = crop[2] - crop[0], crop[3] - crop[1]
    quad_box = (
        int(max(min(corners[0], corners[2]), 0)),
        int(max(min(corners[1], corners[7]), 0)),
        int(min(max(corners[4], corners[6]), crop_w)),
        int(min(max(corners[3], corners[5]), crop_h)),
    )
    return CropPlan(mode, (width, height), resized, crop, quad_box)


@dataclass(frozen=True)
class PreparedSource:
    """The renderer's source image (size x size RGB uint8) and the crop that produced it."""

    image: np.ndarray
    plan: CropPlan


def prepare_source(
    image: np.ndarray, mode: str, size: int, landmarker: FaceLandmarker | None = None
) -> PreparedSource:
    """Crop an RGB uint8 photo with `mode` and resize the face region to `size` x `size` (OpenCV bilinear).

    `landmarker` is needed by every mode except `resize`.
    """
    import cv2

    mode = check_preprocess(mode)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"expected an RGB uint8 image (H, W, 3), got {image.dtype} {tuple(image.shape)}")
    lm68 = None
    if mode != "resize":
        if landmarker is None:
            raise ValueError(f"preprocess {mode!r} needs a face landmarker")
        lm68 = landmarker(image)
    plan = plan_crop(lm68, (image.shape[1], image.shape[0]), mode)
    face = plan.apply(image)
    return PreparedSource(image=cv2.resize(face, (size, size)), plan=plan)

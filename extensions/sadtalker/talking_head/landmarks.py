"""Face detector + 68-point landmarks: the `FaceLandmarker` behind the crop modes and the 3DMM alignment.

Reproduces upstream's landmark path (study.md §1.2): facexlib 0.3.0's RetinaFace (ResNet-50, faces scored above
0.97, non-maximum suppression at 0.4, run on the image at its own size) finds the face; facexlib's AWing FAN
(4 hourglasses, 98 WFLW points) runs on the face's box resized to 256 x 256; the 98 points become the 68 of the
dlib/iBUG layout with `facexlib.alignment.landmark_98_to_68`. The weights are the studio's GFPGAN helper files
(`models/GFPGAN`), read safely (`weights_only`) and strictly: facexlib's own loaders would download them.

Upstream quirks kept on purpose, because the released weights are only ever run this way and we want the same
landmarks for the same image:
- FAN gets the crop with its channels reversed. Upstream hands it RGB arrays, so the network sees BGR.
- The heatmap -> point rule (facexlib `calculate_points`, which no longer runs on NumPy >= 1.24): argmax,
  a quarter-pixel step towards the larger neighbour, + 0.5, scaled by crop size / 64. Its vertical neighbours
  are replaced by the heatmap's last (first) pixel for EVERY point as soon as ANY point peaks on the bottom
  (top) row; we do the same.
- The box is cut with `int()` and its truncated corner is the offset added back.
Deliberate differences: with several faces the LARGEST box is used (upstream: the best-scored one), and a box
reaching past the image is clipped to it (upstream's negative slice start gives an empty or wrapped crop).
RetinaFace normally gets the image as BGR, as upstream's 3DMM step does (it passes a PIL image);
`rgb_into_detector=True` reproduces the crop step, which passes the RGB array where BGR is expected.

Importing this module imports neither torch, cv2 nor facexlib; the methods do.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .weights import describe_mismatch

if TYPE_CHECKING:
    from torch import nn

DETECTOR_FILE = "detection_Resnet50_Final.pth"
ALIGNMENT_FILE = "alignment_WFLW_4HG.pth"
CONFIDENCE = 0.97
NMS_THRESHOLD = 0.4
FAN_INPUT = 256
# RetinaFace was trained on BGR images with these channel means subtracted.
_BGR_MEAN = (104.0, 117.0, 123.0)


class LandmarkModelError(ValueError):
    """A face detector / landmark weights file is missing, unreadable or does not fit its network."""


@dataclass(frozen=True)
class DetectedFace:
    """One RetinaFace box (x0, y0, x1, y1) in image pixels, as decoded (may reach past the image), and its score."""

    box: tuple[float, float, float, float]
    score: float

    @property
    def area(self) -> float:
        x0, y0, x1, y1 = self.box
        return max(x1 - x0, 0.0) * max(y1 - y0, 0.0)


def missing_landmark_files(folder: Path) -> list[str]:
    """The names of the two weight files that are not in `folder` (the studio's models/GFPGAN)."""
    return [name for name in (DETECTOR_FILE, ALIGNMENT_FILE) if not (Path(folder) / name).is_file()]


class FanLandmarker:
    """RetinaFace + AWing FAN on `device`, float32, eval mode. Satisfies `crop.FaceLandmarker`."""

    def __init__(self, detector_path: Path | str, alignment_path: Path | str, device: Any = "cpu",
                 *, rgb_into_detector: bool = False) -> None:
        detector = _load_retinaface(Path(detector_path))
        fan = _load_fan(Path(alignment_path))
        self._setup(detector, fan, device, rgb_into_detector)

    @classmethod
    def from_networks(cls, detector_net: nn.Module, fan_net: nn.Module, device: Any = "cpu",
                      *, rgb_into_detector: bool = False) -> FanLandmarker:
        """Wrap networks that are already built (tests, or weights loaded elsewhere)."""
        self = cls.__new__(cls)
        self._setup(detector_net, fan_net, device, rgb_into_detector)
        return self

    def _setup(self, detector: nn.Module, fan: nn.Module, device: Any, rgb_into_detector: bool) -> None:
        self.detector_net = detector.float().eval()
        self.fan_net = fan.float().eval()
        self.rgb_into_detector = rgb_into_detector
        self.to(device)

    def to(self, device: Any) -> FanLandmarker:
        """Move both networks (the memory manager parks them off the GPU between jobs)."""
        import torch

        self.device = torch.device(device)
        self.detector_net.to(self.device)
        self.fan_net.to(self.device)
        return self

    def faces(self, image_rgb: np.ndarray) -> list[DetectedFace]:
        """Every face scored above 0.97 after non-maximum suppression, largest box first (boxes that are not
        finite or lie outside the image are dropped)."""
        import torch
        from facexlib.detection.retinaface_utils import PriorBox, decode, py_cpu_nms

        _check_image(image_rgb)
        height, width = image_rgb.shape[:2]
        ordered = image_rgb if self.rgb_into_detector else image_rgb[:, :, ::-1]
        pixels = ordered.astype(np.float32) - np.array(_BGR_MEAN, dtype=np.float32)
        batch = torch.from_numpy(np.ascontiguousarray(pixels.transpose(2, 0, 1)))[None].to(self.device)
        cfg = self.detector_net.cfg
        with torch.inference_mode():
            loc, conf, _ = self.detector_net(batch)
            priors = PriorBox(cfg, image_size=(height, width)).forward().to(self.device)
            scale = torch.tensor([width, height, width, height], dtype=torch.float32, device=self.device)
            boxes = (decode(loc[0], priors, cfg["variance"]) * scale).float().cpu().numpy()
            scores = conf[0, :, 1].float().cpu().numpy()
        # A box that overflowed (exp of a wild regression) or has no area inside the image is no face to crop.
        inside = (np.minimum(boxes[:, 2], width) > np.maximum(boxes[:, 0], 0)) & (
            np.minimum(boxes[:, 3], height) > np.maximum(boxes[:, 1], 0))
        keep = np.where((scores > CONFIDENCE) & np.isfinite(boxes).all(axis=1) & inside)[0]
        order = keep[scores[keep].argsort()[::-1]]
        dets = np.hstack((boxes[order], scores[order, None])).astype(np.float32, copy=False)
        kept = py_cpu_nms(dets, NMS_THRESHOLD) if len(dets) else []
        found = [DetectedFace(tuple(float(v) for v in dets[i, :4]), float(dets[i, 4])) for i in kept]
        # sorted() is stable: equal areas stay in score order.
        return sorted(found, key=lambda face: -face.area)

    def landmarks_in_box(self, image_rgb: np.ndarray, box: tuple[float, float, float, float]) -> np.ndarray:
        """(68, 2) float32 landmarks, in image pixels, of the face in `box` (x0, y0, x1, y1)."""
        import cv2
        import torch
        from facexlib.alignment import landmark_98_to_68

        _check_image(image_rgb)
        height, width = image_rgb.shape[:2]
        x0, y0 = max(int(box[0]), 0), max(int(box[1]), 0)
        x1, y1 = min(int(box[2]), width), min(int(box[3]), height)
        if x1 <= x0 or y1 <= y0:
            raise ValueError(f"face box {tuple(box)} has no pixels inside the {width}x{height} image")
        crop = image_rgb[y0:y1, x0:x1]
        resized = cv2.resize(crop, (FAN_INPUT, FAN_INPUT))[:, :, ::-1]
        batch = torch.from_numpy(np.ascontiguousarray(resized.transpose(2, 0, 1))).float().div_(255.0)[None]
        with torch.inference_mode():
            outputs, _ = self.fan_net(batch.to(self.device))
            # The last channel of each hourglass output is the boundary map, not a landmark.
            heatmaps = outputs[-1][0, :-1].float().cpu().numpy()
        points = heatmap_points(heatmaps) * np.array([(x1 - x0) / heatmaps.shape[2], (y1 - y0) / heatmaps.shape[1]])
        landmarks = landmark_98_to_68(points)
        landmarks += np.array([x0, y0], dtype=np.float32)
        return landmarks.astype(np.float32, copy=False)

    def __call__(self, image_rgb: np.ndarray) -> np.ndarray | None:
        """Landmarks of the largest face, or None when there is no face."""
        found = self.faces(image_rgb)
        if not found:
            return None
        # faces() already sorts, but a replaced detector need not; max() keeps the first of equal areas.
        return self.landmarks_in_box(image_rgb, max(found, key=lambda face: face.area).box)


def heatmap_points(heatmaps: np.ndarray) -> np.ndarray:
    """(N, H, W) heatmaps -> (N, 2) float64 (x, y) in heatmap cells, by facexlib's rule (module docstring)."""
    count, rows, cols = heatmaps.shape
    flat = heatmaps.reshape(count, rows * cols).astype(np.float64)
    peak = flat.argmax(axis=1)
    points = np.stack((peak % cols, peak // cols), axis=1).astype(np.float64)
    at = np.arange(count)
    # Flat neighbours wrap across rows like facexlib's; at the very last cell it would index past the end.
    right, left = flat[at, (peak + 1) % flat.shape[1]], flat[at, peak - 1]
    below = flat[at, -1] if np.any(peak + cols >= rows * cols) else flat[at, peak + cols]
    above = flat[at, 0] if np.any(peak - cols <= 0) else flat[at, peak - cols]
    points += 0.25 * np.sign(np.stack((right - left, below - above), axis=1))
    return points + 0.5


def _check_image(image: Any) -> None:
    if not isinstance(image, np.ndarray) or image.ndim != 3 or image.shape[2] != 3:
        shape = getattr(image, "shape", None)
        raise ValueError(f"expected an RGB image of shape (H, W, 3), got {type(image).__name__} of shape {shape}")
    if image.dtype != np.uint8:
        raise ValueError(f"expected a uint8 RGB image, got dtype {image.dtype}")
    if image.shape[0] == 0 or image.shape[1] == 0:
        raise ValueError(f"the image is empty ({image.shape[1]}x{image.shape[0]})")


def _read_weights(path: Path, what: str) -> Any:
    import torch

    if not path.is_file():
        raise LandmarkModelError(f"{what} weights '{path.name}' not found in {path.parent}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch, pickle and zipfile each raise their own types
        detail = (str(e).strip().splitlines() or ["no details"])[0][:300]
        raise LandmarkModelError(f"{what} weights '{path.name}' in {path.parent} are corrupt, truncated or not a "
                                 f"safe model file ({type(e).__name__}: {detail}); download it again") from e


def _fit(net: nn.Module, state: Any, path: Path, what: str) -> nn.Module:
    import torch

    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise LandmarkModelError(f"{what} weights '{path.name}' do not hold a state dict of tensors")
    problems = describe_mismatch(net, state)
    if problems:
        raise LandmarkModelError(f"'{path.name}' is not the {what} weights: " + "; ".join(problems))
    net.load_state_dict(state, strict=True)
    return net.float().eval()


def _load_retinaface(path: Path) -> nn.Module:
    import torch
    from facexlib.detection.retinaface import RetinaFace

    state = _read_weights(path, "face detector (RetinaFace ResNet-50)")
    if isinstance(state, dict):
        # The released file was saved from a DataParallel wrapper; facexlib strips the prefix the same way.
        state = {k.removeprefix("module.") if isinstance(k, str) else k: v for k, v in state.items()}
    with warnings.catch_warnings():
        # torchvision warns that `pretrained=False`, which facexlib passes to resnet50, is deprecated.
        warnings.simplefilter("ignore", UserWarning)
        net = RetinaFace(network_name="resnet50", half=False, phase="test", device=torch.device("cpu"))
    return _fit(net, state, path, "face detector (RetinaFace ResNet-50)")


def _load_fan(path: Path) -> nn.Module:
    import torch
    from facexlib.alignment.awing_arch import FAN

    state = _read_weights(path, "face landmark (AWing FAN)")
    # Upstream reads the checkpoint's 'state_dict'; a bare state dict is accepted too.
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    net = FAN(num_modules=4, num_landmarks=98, device=torch.device("cpu"))
    return _fit(net, state, path, "face landmark (AWing FAN, 4 hourglasses, 98 points)")


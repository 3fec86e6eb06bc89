"""Finding faces (facexlib's RetinaFace, ResNet-50) and aligning each one to the FFHQ 512x512 template.

The facts follow GFPGAN's `FaceRestoreHelper` as A1111 drives it, so results match A1111's:

* detection runs on a copy of the image resized so its short side is 640 pixels, keeps faces scored above 0.97
  and drops those whose eyes are under 5 pixels apart (profiles and specks), after non-maximum suppression at 0.4;
* a face is aligned by the similarity transform (rotation, uniform scale, shift) that best maps its five landmarks
  (eyes, nose tip, mouth corners) onto the FFHQ template, estimated robustly (least median of squares), and
  warped to 512x512 with a neutral grey where the crop leaves the image.

facexlib's own loaders download weights into its package folder. We never call them: the network is built from
facexlib's `RetinaFace` class and the state dict is read from our models folder (see `files`).

Importing this module imports neither torch, numpy, cv2 nor facexlib; the functions do.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from modules.errors import UserError

if TYPE_CHECKING:
    import numpy as np
    import torch

log = logging.getLogger(__name__)

FACE_SIZE = 512
# FFHQ's five landmarks in a 512x512 face: left eye, right eye, nose tip, left and right mouth corner (as seen).
FFHQ_TEMPLATE = (
    (192.98138, 239.94708),
    (318.90277, 240.1936),
    (256.63416, 314.01935),
    (201.26117, 371.41043),
    (313.08905, 371.15118),
)
# The grey facexlib fills the outside of the image with (its BGR (135, 133, 132), here as RGB).
BORDER_RGB = (132, 133, 135)
DETECT_SHORT_SIDE = 640
CONFIDENCE = 0.97
NMS_THRESHOLD = 0.4
MIN_EYE_DISTANCE = 5.0
# RetinaFace was trained on BGR images with these channel means subtracted.
_BGR_MEAN = (104.0, 117.0, 123.0)


@dataclass(frozen=True, eq=False)
class FaceBox:
    """One detected face, in the pixel coordinates of the image given to `detect`.

    Attributes:
        landmarks5: (5, 2) float array of (x, y): left eye, right eye, nose tip, left and right mouth corner.
        box: (x0, y0, x1, y1) bounding box.
        score: Detector confidence in 0..1.
    """

    landmarks5: np.ndarray
    box: tuple[float, float, float, float]
    score: float


class FaceDetector(Protocol):
    """Finds faces in an (H, W, 3) uint8 RGB array. Tests inject one with fixed landmarks."""

    def detect(self, image_rgb: np.ndarray) -> list[FaceBox]: ...


class RetinaFaceDetector:
    """facexlib's RetinaFace (ResNet-50) with weights from a local file, on `device`.

    Args:
        path: `detection_Resnet50_Final.pth`.
        device: Where the network runs (always float32, as A1111 runs it).
        short_side: Detection resolution: the image is resized so its short side has this many pixels.
        confidence: Faces scored at or below this are dropped.
        min_eye_distance: Faces whose eyes are closer (in image pixels) are dropped.

    Raises:
        UserError: The file is unreadable or does not fit the network.
    """

    def __init__(self, path: Path, device: torch.device, short_side: int = DETECT_SHORT_SIDE,
                 confidence: float = CONFIDENCE, min_eye_distance: float = MIN_EYE_DISTANCE) -> None:
        self.path = path
        self.short_side = short_side
        self.confidence = confidence
        self.min_eye_distance = min_eye_distance
        self.net = _build_retinaface(path)
        self.device = device
        self.net.to(device)

    def to(self, device: torch.device) -> None:
        """Move the network (for `face_restoration_unload`)."""
        self.net.to(device)
        self.device = device

    def detect(self, image_rgb: np.ndarray) -> list[FaceBox]:
        import cv2
        import numpy as np
        import torch
        from facexlib.detection.retinaface_utils import PriorBox, decode, decode_landm, py_cpu_nms

        height, width = image_rgb.shape[:2]
        ratio = self.short_side / min(height, width)
        small_w, small_h = max(1, int(width * ratio)), max(1, int(height * ratio))
        small = image_rgb if (small_w, small_h) == (width, height) else cv2.resize(
            image_rgb, (small_w, small_h), interpolation=cv2.INTER_LANCZOS4)
        bgr = small[:, :, ::-1].astype(np.float32) - np.array(_BGR_MEAN, dtype=np.float32)
        batch = torch.from_numpy(np.ascontiguousarray(bgr.transpose(2, 0, 1))).unsqueeze(0).to(self.device)
        cfg = self.net.cfg
        with torch.inference_mode():
            loc, conf, landmarks = self.net(batch)
            priors = PriorBox(cfg, image_size=(small_h, small_w)).forward().to(self.device)
            boxes = decode(loc[0].float(), priors, cfg["variance"]).cpu().numpy()
            points = decode_landm(landmarks[0].float(), priors, cfg["variance"]).cpu().numpy()
            scores = conf[0, :, 1].float().cpu().numpy()
        # decode() gives fractions of the detection image, so scaling by the original size maps straight back.
        boxes *= np.array([width, height] * 2, dtype=np.float32)
        points *= np.array([width, height] * 5, dtype=np.float32)
        keep = scores > self.confidence
        boxes, points, scores = boxes[keep], points[keep], scores[keep]
        order = scores.argsort()[::-1]
        boxes, points, scores = boxes[order], points[order], scores[order]
        dets = np.hstack((boxes, scores[:, None])).astype(np.float32, copy=False)
        kept = py_cpu_nms(dets, NMS_THRESHOLD) if len(dets) else []
        faces: list[FaceBox] = []
        for i in kept:
            landmarks5 = points[i].reshape(5, 2).astype(np.float64)
            if np.linalg.norm(landmarks5[0] - landmarks5[1]) < self.min_eye_distance:
                continue
            x0, y0, x1, y1 = (float(v) for v in boxes[i])
            faces.append(FaceBox(landmarks5, (x0, y0, x1, y1), float(scores[i])))
        return faces


def _build_retinaface(path: Path) -> Any:
    """facexlib's RetinaFace network with `path`'s weights, on the CPU, in eval mode."""
    import torch
    from facexlib.detection.retinaface import RetinaFace

    state = load_state_dict(path, "face detector")
    # facexlib's released file was saved from a DataParallel wrapper in some versions.
    state = {k.removeprefix("module."): v for k, v in state.items()}
    with warnings.catch_warnings():
        # torchvision warns that `pretrained=False`, which facexlib passes to resnet50, is deprecated.
        warnings.simplefilter("ignore", UserWarning)
        net = RetinaFace(network_name="resnet50", half=False, phase="test", device=torch.device("cpu"))
    fit(net, state, path, "face detector (RetinaFace ResNet-50)")
    return net.eval()


def load_state_dict(path: Path, what: str) -> dict[str, Any]:
    """The tensors in a .pth file, read safely (`weights_only`, so a pickle cannot run code).

    Raises:
        UserError: Unreadable, corrupt, or not a dict of tensors.
    """
    import torch

    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - torch, pickle and zipfile each raise their own types
        raise UserError(f"{what} file '{path.name}' in {path.parent} is corrupt, truncated or not a model file "
                        f"({type(e).__name__}: {_first_line(e)}); download it again", field="face_restorer") from e
    if isinstance(state, dict) and "params_ema" in state and isinstance(state["params_ema"], dict):
        state = state["params_ema"]  # basicsr-style wrapper
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise UserError(f"{what} file '{path.name}' does not hold a state dict of tensors; download it again",
                        field="face_restorer")
    return state


def fit(net: Any, state: dict[str, Any], path: Path, what: str) -> None:
    """Load `state` into `net` strictly, turning a mismatch into a UserError that names the file."""
    try:
        net.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise UserError(f"'{path.name}' is not the {what} weights this app expects: {_first_line(e)}",
                        field="face_restorer") from e


def align_face(image_rgb: np.ndarray, landmarks5: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """The face at `landmarks5` warped onto the FFHQ template: a (512, 512, 3) uint8 crop and the (2, 3) affine
    matrix from image to crop; None when the landmarks are degenerate (all on one point, NaN)."""
    import cv2
    import numpy as np

    points = np.asarray(landmarks5, dtype=np.float32).reshape(5, 2)
    if not np.isfinite(points).all():
        return None
    template = np.array(FFHQ_TEMPLATE, dtype=np.float32)
    # LMEDS matches the skimage similarity transform GFPGAN was trained with (facexlib's choice).
    affine, _ = cv2.estimateAffinePartial2D(points, template, method=cv2.LMEDS)
    if affine is None or not np.isfinite(affine).all() or abs(np.linalg.det(affine[:, :2])) < 1e-8:
        return None
    crop = cv2.warpAffine(image_rgb, affine, (FACE_SIZE, FACE_SIZE), borderMode=cv2.BORDER_CONSTANT,
                          borderValue=BORDER_RGB)
    return crop, affine


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0][:300] if text else "no details"

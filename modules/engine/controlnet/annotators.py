"""Preprocessors that need trained annotator networks (soft edges, line art, depth, normals, pose, straight lines),
run through the `controlnet-aux` package with weights read only from `models/ControlNet/annotators`.

Nothing is ever downloaded: every detector is built with `from_pretrained(<that folder>)`, which controlnet-aux
reads as a local folder. The file names are those of the `lllyasviel/Annotators` repository on Hugging Face, so
a user fetches the named file from there and drops it in the folder. Before anything is imported the files are
checked, so a missing one is reported by name and place; a missing package is reported with the pip line.

controlnet-aux modules that cannot run offline or inside the app (LeReS parses the process's command line, Zoe
builds its backbone through torch.hub, DWPose needs onnxruntime) are not offered.
"""

from __future__ import annotations

import logging
import threading
import warnings
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from modules.errors import UserError

if TYPE_CHECKING:
    import numpy as np

log = logging.getLogger(__name__)

PACKAGE = "controlnet-aux"
INSTALL_HINT = "pip install controlnet-aux==0.0.10 scikit-image==0.26.0"
SOURCE = "https://huggingface.co/lllyasviel/Annotators"

# lllyasviel/Annotators file names, per detector; controlnet-aux's from_pretrained opens all of a detector's files.
HED = ("ControlNetHED.pth",)
PIDINET = ("table5_pidinet.pth",)
LINEART = ("sk_model.pth", "sk_model2.pth")
LINEART_ANIME = ("netG.pth",)
MIDAS = ("dpt_hybrid-midas-501f0c75.pt",)
MLSD = ("mlsd_large_512_fp32.pth",)
OPENPOSE = ("body_pose_model.pth", "hand_pose_model.pth", "facenet.pth")
NORMAL_BAE = ("scannet.pt",)


class Annotators:
    """The annotator weights folder and the detectors loaded from it (a few, least recently used dropped)."""

    def __init__(self, folder: Path | None, device: str = "cpu", size: int = 2) -> None:
        self.folder = Path(folder) if folder is not None else None
        self.device = device
        self._size = max(1, size)
        self._loaded: OrderedDict[str, Any] = OrderedDict()
        self._lock = threading.Lock()

    def require(self, label: str, files: tuple[str, ...]) -> Path:
        """The folder, after checking it holds `files`; otherwise a message naming the file and the folder."""
        if self.folder is None:
            raise UserError(f"preprocessor '{label}' needs annotator weights ({', '.join(files)}), but no annotator "
                            "folder was given", field="module")
        missing = [name for name in files if not (self.folder / name).is_file()]
        if missing:
            raise UserError(f"preprocessor '{label}' needs {', '.join(missing)} in {self.folder}: download "
                            f"{'it' if len(missing) == 1 else 'them'} from {SOURCE} and put "
                            f"{'it' if len(missing) == 1 else 'them'} there", field="module")
        return self.folder

    def detector(self, label: str, files: tuple[str, ...], build: Callable[[Any, str], Any]) -> Any:
        """The detector `build(controlnet_aux, folder)` makes, loaded once and kept while it is used. Each detector
        reads its own set of files, so the file names key the cache."""
        folder = self.require(label, files)
        key = "|".join(files)
        with self._lock:
            hit = self._loaded.get(key)
            if hit is not None:
                self._loaded.move_to_end(key)
                return hit
        aux = import_controlnet_aux(label)
        try:
            detector = build(aux, str(folder))
        except (OSError, RuntimeError, KeyError, ValueError) as e:
            raise UserError(f"preprocessor '{label}' could not load its weights from {folder} ({e}); re-download "
                            f"{', '.join(files)} from {SOURCE}", field="module") from None
        if hasattr(detector, "to"):
            detector = detector.to(self.device)
        with self._lock:
            self._loaded[key] = detector
            while len(self._loaded) > self._size:
                self._loaded.popitem(last=False)
        return detector

    def unload(self) -> None:
        with self._lock:
            self._loaded.clear()


def import_controlnet_aux(label: str) -> Any:
    """The controlnet_aux package, or a message saying how to install it."""
    try:
        with warnings.catch_warnings():
            # It warns about optional extras (mediapipe) and its own deprecated imports on every start.
            warnings.simplefilter("ignore")
            import controlnet_aux
    except ImportError as e:
        raise UserError(f"preprocessor '{label}' needs the {PACKAGE} package, which is not installed or does not "
                        f"import ({e}); install it with: {INSTALL_HINT}", field="module") from None
    return controlnet_aux


def _np(result: Any) -> np.ndarray:
    import numpy as np

    return np.asarray(result, dtype=np.uint8)


def _sizes(resolution: int) -> dict[str, Any]:
    return {"detect_resolution": resolution, "image_resolution": resolution, "output_type": "np"}


def hed(image: np.ndarray, resolution: int, annotators: Annotators, label: str, *, safe: bool = False,
        scribble: bool = False) -> np.ndarray:
    detector = annotators.detector(label, HED, lambda aux, folder: aux.HEDdetector.from_pretrained(folder))
    return _np(detector(image, safe=safe, scribble=scribble, **_sizes(resolution)))


def pidinet(image: np.ndarray, resolution: int, annotators: Annotators, label: str, *, safe: bool = False,
            scribble: bool = False) -> np.ndarray:
    detector = annotators.detector(label, PIDINET, lambda aux, folder: aux.PidiNetDetector.from_pretrained(folder))
    return _np(detector(image, safe=safe, scribble=scribble, **_sizes(resolution)))


def lineart(image: np.ndarray, resolution: int, annotators: Annotators, label: str, *,
            coarse: bool = False) -> np.ndarray:
    detector = annotators.detector(label, LINEART, lambda aux, folder: aux.LineartDetector.from_pretrained(folder))
    return _np(detector(image, coarse=coarse, **_sizes(resolution)))


def lineart_anime(image: np.ndarray, resolution: int, annotators: Annotators, label: str) -> np.ndarray:
    detector = annotators.detector(label, LINEART_ANIME,
                                   lambda aux, folder: aux.LineartAnimeDetector.from_pretrained(folder))
    return _np(detector(image, **_sizes(resolution)))


def midas(image: np.ndarray, resolution: int, annotators: Annotators, label: str, *,
          normal_background: float | None = None) -> np.ndarray:
    import math

    detector = annotators.detector(label, MIDAS, lambda aux, folder: aux.MidasDetector.from_pretrained(folder))
    if normal_background is None:
        return _np(detector(image, **_sizes(resolution)))
    _, normal = detector(image, a=math.pi * 2.0, bg_th=normal_background, depth_and_normal=True,
                         **_sizes(resolution))
    return _np(normal)


def mlsd(image: np.ndarray, resolution: int, annotators: Annotators, label: str, *, value_threshold: float,
         distance_threshold: float) -> np.ndarray:
    detector = annotators.detector(label, MLSD, lambda aux, folder: aux.MLSDdetector.from_pretrained(folder))
    return _np(detector(image, thr_v=value_threshold, thr_d=distance_threshold, **_sizes(resolution)))


def openpose(image: np.ndarray, resolution: int, annotators: Annotators, label: str, *, body: bool = True,
             hand: bool = False, face: bool = False) -> np.ndarray:
    detector = annotators.detector(label, OPENPOSE, lambda aux, folder: aux.OpenposeDetector.from_pretrained(folder))
    return _np(detector(image, include_body=body, include_hand=hand, include_face=face, **_sizes(resolution)))


def normal_bae(image: np.ndarray, resolution: int, annotators: Annotators, label: str) -> np.ndarray:
    detector = annotators.detector(label, NORMAL_BAE,
                                   lambda aux, folder: aux.NormalBaeDetector.from_pretrained(folder))
    return _np(detector(image, **_sizes(resolution)))

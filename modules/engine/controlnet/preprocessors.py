"""ControlNet preprocessors: sd-webui-controlnet's module names, each turning an RGB image into a control map.

Every module has sd-webui-controlnet's internal name (what its API takes, e.g. `depth`) and its label (what its UI
shows, e.g. `depth_midas`); either is accepted. Slider defaults and ranges are that extension's, and so is its
rule for values: a threshold or resolution that was not given, or lies outside the module's slider range (the
API's -1), means the module's default.

Model-free modules are written here with OpenCV and numpy: `canny`, `invert`, `threshold`, `scribble_xdog`,
`blur_gaussian`, `lineart_standard`, `tile_resample`, `recolor_*`, `color` and `shuffle`. Modules that need
trained networks run through controlnet-aux with weights from `models/ControlNet/annotators` (`annotators.py`);
choosing one whose file or package is missing says which file to put where, or which package to install.

Importing this module imports neither torch nor OpenCV.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from modules.engine.controlnet import annotators as aux
from modules.engine.controlnet.resize import hwc3, scale_map, scale_short_side
from modules.errors import UserError

if TYPE_CHECKING:
    import numpy as np

    from modules.engine.controlnet.annotators import Annotators


@dataclass(frozen=True)
class Slider:
    """One of a module's parameters, as sd-webui-controlnet's UI and `/controlnet/module_list` describe it."""

    label: str
    value: float
    minimum: float
    maximum: float
    step: float = 1.0

    def pick(self, given: float | None) -> float:
        """`given` when it is within range, else the default (sd-webui-controlnet's rule for -1 and strays)."""
        return float(given) if given is not None and self.minimum <= given <= self.maximum else float(self.value)

    def as_json(self, name: str) -> dict[str, Any]:
        return {"name": self.label, "value": self.value, "min": self.minimum, "max": self.maximum,
                "step": self.step, "field": name}


@dataclass(frozen=True)
class Context:
    """What a module may need besides the image and its numbers."""

    label: str
    annotators: Annotators | None
    seed: int = 0


Run = Callable[["np.ndarray", int, float, float, Context], "np.ndarray"]
RESOLUTION = Slider("Resolution", 512, 64, 2048, 8)


@dataclass(frozen=True)
class Preprocessor:
    """A module: names, sliders, and the function that makes the map (H x W x 3, uint8)."""

    name: str
    label: str
    run: Run
    resolution: Slider | None = RESOLUTION  # None: the module works on the image as it is
    slider_1: Slider | None = None
    slider_2: Slider | None = None
    files: tuple[str, ...] = ()  # annotator weights it reads from models/ControlNet/annotators

    @property
    def model_free(self) -> bool:
        return not self.files

    def settings(self, resolution: float | None, threshold_a: float | None,
                 threshold_b: float | None) -> tuple[int, float | None, float | None]:
        """(resolution, threshold A, threshold B) after the module's defaults; thresholds it has no slider for
        are passed through as given."""
        res = int(self.resolution.pick(resolution)) if self.resolution else int(RESOLUTION.pick(resolution))
        a = self.slider_1.pick(threshold_a) if self.slider_1 else threshold_a
        b = self.slider_2.pick(threshold_b) if self.slider_2 else threshold_b
        return res, a, b


# -- model-free modules -------------------------------------------------------------------------------------------


def _none(image: np.ndarray, res: int, a: float, b: float, ctx: Context) -> np.ndarray:
    return image


def _invert(image: np.ndarray, res: int, a: float, b: float, ctx: Context) -> np.ndarray:
    return 255 - image


def _canny(image: np.ndarray, res: int, a: float, b: float, ctx: Context) -> np.ndarray:
    import cv2

    return hwc3(cv2.Canny(scale_short_side(image, res), int(a), int(b)))


def _threshold(image: np.ndarray, res: int, a: float, b: float, ctx: Context) -> np.ndarray:
    import numpy as np

    scaled = scale_short_side(image, res)
    # A pixel is white only when every channel is above the threshold, as sd-webui-controlnet binarizes.
    return hwc3(np.where(scaled.min(axis=2) > a, 255, 0).astype(np.uint8))


def _scribble_xdog(image: np.ndarray, res: int, a: float, b: float, ctx: Context) -> np.ndarray:
    import cv2
    import numpy as np

    scaled = scale_short_side(image, res).astype(np.float32)
    # Difference of Gaussians: fine detail minus coarse detail; strong dark edges become white strokes.
    fine, coarse = cv2.GaussianBlur(scaled, (0, 0), 0.5), cv2.GaussianBlur(scaled, (0, 0), 5.0)
    darkness = (255 - (255 - np.min(coarse - fine, axis=2)).clip(0, 255)) * 2
    return hwc3(np.where(darkness > a, 255, 0).astype(np.uint8))


def _blur(image: np.ndarray, res: int, a: float, b: float, ctx: Context) -> np.ndarray:
    import cv2

    return cv2.GaussianBlur(scale_short_side(image, res), (0, 0), float(a))


def _lineart_standard(image: np.ndarray, res: int, a: float, b: float, ctx: Context) -> np.ndarray:
    import cv2
    import numpy as np

    pixels = scale_short_side(image, res).astype(np.float32)
    # Lines are where a pixel is darker than its blurred surroundings; normalised by the typical line strength.
    intensity = np.min(cv2.GaussianBlur(pixels, (0, 0), 6.0) - pixels, axis=2).clip(0, 255)
    strong = intensity[intensity > 8]
    intensity = intensity / max(16.0, float(np.median(strong)) if strong.size else 16.0) * 127
    return hwc3(intensity.clip(0, 255).astype(np.uint8))


def _tile_resample(image: np.ndarray, res: int, a: float, b: float, ctx: Context) -> np.ndarray:
    import cv2

    if a < 1.1:
        return image
    height, width = image.shape[:2]
    return cv2.resize(image, (max(1, int(width / a)), max(1, int(height / a))), interpolation=cv2.INTER_AREA)


def _recolor(channel: str) -> Run:
    def run(image: np.ndarray, res: int, a: float, b: float, ctx: Context) -> np.ndarray:
        import cv2
        import numpy as np

        if channel == "luminance":
            value = cv2.cvtColor(image, cv2.COLOR_RGB2LAB)[:, :, 0]
        else:
            value = cv2.cvtColor(image, cv2.COLOR_RGB2HSV)[:, :, 2]
        # Gamma on the brightness alone: the recolor models repaint colour over this grey image.
        grey = ((value.astype(np.float32) / 255.0) ** float(a) * 255.0).clip(0, 255).astype(np.uint8)
        return hwc3(grey)

    return run


def _color_grid(image: np.ndarray, res: int, a: float, b: float, ctx: Context) -> np.ndarray:
    import cv2

    scaled = scale_short_side(image, res)
    height, width = scaled.shape[:2]
    # One colour per 64x64 cell: the T2I colour adapter wants the palette layout, not the detail.
    cells = cv2.resize(scaled, (max(1, width // 64), max(1, height // 64)), interpolation=cv2.INTER_CUBIC)
    return cv2.resize(cells, (width, height), interpolation=cv2.INTER_NEAREST)


def _shuffle(image: np.ndarray, res: int, a: float, b: float, ctx: Context) -> np.ndarray:
    import cv2
    import numpy as np

    scaled = scale_short_side(image, res)
    height, width = scaled.shape[:2]
    rng = np.random.default_rng(ctx.seed)
    cell = 256

    def smooth_noise() -> np.ndarray:
        # Coarse random field, upscaled smoothly: a flow that moves content around in large, soft swirls.
        coarse = rng.uniform(0, 1, size=(height // cell + 2, width // cell + 2)).astype(np.float32)
        field = cv2.resize(coarse, (width + 2 * cell, height + 2 * cell), interpolation=cv2.INTER_CUBIC)
        field = field[cell:cell + height, cell:cell + width]
        field -= field.min()
        return field / max(float(field.max()), 1e-6)

    flow_x = smooth_noise() * float(width - 1)
    flow_y = smooth_noise() * float(height - 1)
    return cv2.remap(scaled, flow_x, flow_y, cv2.INTER_LINEAR)


# -- annotator modules --------------------------------------------------------------------------------------------


def _annotator(detect: Callable[..., np.ndarray], **options: Any) -> Run:
    def run(image: np.ndarray, res: int, a: float, b: float, ctx: Context) -> np.ndarray:
        if ctx.annotators is None:
            raise UserError(f"preprocessor '{ctx.label}' needs annotator weights, and no annotator folder was given",
                            field="module")
        detected = hwc3(detect(image, res, ctx.annotators, ctx.label, **options))
        # controlnet-aux rounds both sides to multiples of 64, which bends the aspect ratio; undo that so the map
        # lines up with the image when it is fitted to the generation size.
        height, width = image.shape[:2]
        scale = res / min(height, width)
        size = (max(1, round(width * scale)), max(1, round(height * scale)))
        return detected if detected.shape[1::-1] == size else scale_map(detected, *size)

    return run


def _midas_normal(image: np.ndarray, res: int, a: float, b: float, ctx: Context) -> np.ndarray:
    return _annotator(aux.midas, normal_background=a)(image, res, a, b, ctx)


def _mlsd(image: np.ndarray, res: int, a: float, b: float, ctx: Context) -> np.ndarray:
    return _annotator(aux.mlsd, value_threshold=a, distance_threshold=b)(image, res, a, b, ctx)


_GAMMA = Slider("Gamma Correction", 1.0, 0.1, 2.0, 0.001)

PREPROCESSORS: tuple[Preprocessor, ...] = (
    Preprocessor("none", "none", _none, resolution=None),
    Preprocessor("canny", "canny", _canny, slider_1=Slider("Low Threshold", 100, 1, 255),
                 slider_2=Slider("High Threshold", 200, 1, 255)),
    Preprocessor("invert", "invert (from white bg & black line)", _invert, resolution=None),
    Preprocessor("threshold", "threshold", _threshold, slider_1=Slider("Binarization Threshold", 127, 0, 255)),
    Preprocessor("scribble_xdog", "scribble_xdog", _scribble_xdog, slider_1=Slider("XDoG Threshold", 32, 1, 64)),
    Preprocessor("blur_gaussian", "blur_gaussian", _blur, slider_1=Slider("Sigma", 9.0, 0.01, 64.0, 0.01)),
    Preprocessor("lineart_standard", "lineart_standard (from white bg & black line)", _lineart_standard),
    Preprocessor("tile_resample", "tile_resample", _tile_resample, resolution=None,
                 slider_1=Slider("Down Sampling Rate", 1.0, 1.0, 8.0, 0.01)),
    Preprocessor("recolor_luminance", "recolor_luminance", _recolor("luminance"), resolution=None, slider_1=_GAMMA),
    Preprocessor("recolor_intensity", "recolor_intensity", _recolor("intensity"), resolution=None, slider_1=_GAMMA),
    Preprocessor("color", "t2ia_color_grid", _color_grid),
    Preprocessor("shuffle", "shuffle", _shuffle),
    Preprocessor("hed", "softedge_hed", _annotator(aux.hed), files=aux.HED),
    Preprocessor("hed_safe", "softedge_hedsafe", _annotator(aux.hed, safe=True), files=aux.HED),
    Preprocessor("scribble_hed", "scribble_hed", _annotator(aux.hed, scribble=True), files=aux.HED),
    Preprocessor("pidinet", "softedge_pidinet", _annotator(aux.pidinet), files=aux.PIDINET),
    Preprocessor("pidinet_safe", "softedge_pidisafe", _annotator(aux.pidinet, safe=True), files=aux.PIDINET),
    Preprocessor("pidinet_scribble", "scribble_pidinet", _annotator(aux.pidinet, scribble=True), files=aux.PIDINET),
    Preprocessor("lineart", "lineart_realistic", _annotator(aux.lineart), files=aux.LINEART),
    Preprocessor("lineart_coarse", "lineart_coarse", _annotator(aux.lineart, coarse=True), files=aux.LINEART),
    Preprocessor("lineart_anime", "lineart_anime", _annotator(aux.lineart_anime), files=aux.LINEART_ANIME),
    Preprocessor("depth", "depth_midas", _annotator(aux.midas), files=aux.MIDAS),
    Preprocessor("normal_map", "normal_midas", _midas_normal, files=aux.MIDAS,
                 slider_1=Slider("Normal Background Threshold", 0.4, 0.0, 1.0, 0.01)),
    Preprocessor("normal_bae", "normal_bae", _annotator(aux.normal_bae), files=aux.NORMAL_BAE),
    Preprocessor("mlsd", "mlsd", _mlsd, files=aux.MLSD,
                 slider_1=Slider("MLSD Value Threshold", 0.1, 0.01, 2.0, 0.01),
                 slider_2=Slider("MLSD Distance Threshold", 0.1, 0.01, 20.0, 0.01)),
    Preprocessor("openpose", "openpose", _annotator(aux.openpose), files=aux.OPENPOSE),
    Preprocessor("openpose_hand", "openpose_hand", _annotator(aux.openpose, hand=True), files=aux.OPENPOSE),
    Preprocessor("openpose_face", "openpose_face", _annotator(aux.openpose, face=True), files=aux.OPENPOSE),
    Preprocessor("openpose_faceonly", "openpose_faceonly", _annotator(aux.openpose, body=False, face=True),
                 files=aux.OPENPOSE),
    Preprocessor("openpose_full", "openpose_full", _annotator(aux.openpose, hand=True, face=True),
                 files=aux.OPENPOSE),
)

# name and label (case-folded) -> module; read-only, built once from the tuple above.
_BY_NAME: Mapping[str, Preprocessor] = MappingProxyType(
    {key.casefold(): p for p in PREPROCESSORS for key in (p.name, p.label)})


def preprocessor_names(alias_names: bool = True) -> list[str]:
    """The modules: "none" first, then by label. Labels (what the UI shows) by default; `alias_names=False`
    gives the internal names, as sd-webui-controlnet's `/controlnet/module_list` does by default."""
    ordered = [PREPROCESSORS[0], *sorted(PREPROCESSORS[1:], key=lambda p: p.label)]
    return [p.label if alias_names else p.name for p in ordered]


def preprocessor_details(alias_names: bool = True) -> dict[str, dict[str, Any]]:
    """sd-webui-controlnet's `module_detail`: per module, whether it is model-free and its sliders."""
    details = {}
    for name in preprocessor_names(alias_names):
        p = find_preprocessor(name)
        sliders = [s.as_json(field) for s, field in ((p.resolution, "processor_res"), (p.slider_1, "threshold_a"),
                                                     (p.slider_2, "threshold_b")) if s is not None]
        details[name] = {"model_free": p.model_free, "sliders": sliders}
    return details


def find_preprocessor(module: str, field: str = "module") -> Preprocessor:
    """The module `module` names (internal name or label, any case).

    Raises:
        UserError: unknown module; the message lists the known ones.
    """
    found = _BY_NAME.get((module or "none").strip().casefold())
    if found is None:
        raise UserError(f"unknown ControlNet preprocessor '{module}'; available: "
                        f"{', '.join(preprocessor_names())}", field=field)
    return found


def detect(preprocessor: Preprocessor, image: np.ndarray, resolution: int, threshold_a: float | None,
           threshold_b: float | None, annotators: Annotators | None = None, seed: int = 0) -> np.ndarray:
    """The module's map of an H x W x 3 uint8 image (already given its effective settings), as H x W x 3 uint8."""
    context = Context(preprocessor.label, annotators, seed)
    a = threshold_a if threshold_a is not None else 0.0
    b = threshold_b if threshold_b is not None else 0.0
    return hwc3(preprocessor.run(hwc3(image), resolution, a, b, context))


def run_preprocessor(module: str, image: Any, resolution: float | None = None, threshold_a: float | None = None,
                     threshold_b: float | None = None, annotators: Annotators | None = None,
                     seed: int = 0) -> Any:
    """Run a module on a PIL image, with its defaults for values not given or out of range (the UI's preview and
    the API's `/controlnet/detect`). Returns an RGB PIL image.

    Raises:
        UserError: unknown module, missing annotator weights or package.
    """
    import numpy as np
    from PIL import Image

    from modules.engine.image_input import to_rgb

    preprocessor = find_preprocessor(module)
    res, a, b = preprocessor.settings(resolution, threshold_a, threshold_b)
    pixels = np.asarray(to_rgb(image, "image"), dtype=np.uint8)
    return Image.fromarray(detect(preprocessor, pixels, res, a, b, annotators, seed))

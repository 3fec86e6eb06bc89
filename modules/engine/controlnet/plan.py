"""The ControlNet part of one generation: units checked, models loaded, control images made, and what the
diffusers ControlNet pipelines take.

A mode (txt2img, img2img, inpaint) calls `prepare_control` once the checkpoint is loaded, then runs each pass
through `controlled_pipeline`, which hands back the pipeline of the right class and the keyword arguments to add:

    plan = prepare_control(engine, model, request.controlnet, width, height, init_image=...)
    pipe, control_kwargs = controlled_pipeline(model.pipe, "img2img", plan, batch)

A unit runs as sd-webui-controlnet runs it: its image (or, in img2img, the init image with the img2img resize
mode) goes through its preprocessor at the processor resolution (or the pixel-perfect one), and the map is fitted
to the generation size by the unit's resize mode. With hires fix, `for_hires` gives the second pass's plan: the
same maps fitted to the hires size, and only the units whose `hr_option` includes that pass.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from modules.engine.controlnet import infotext
from modules.engine.controlnet.models import LoadedControlNet, check_family, find_controlnet
from modules.engine.controlnet.modes import Injection, build_multi, injection_for, is_moded
from modules.engine.controlnet.preprocessors import Preprocessor, detect, find_preprocessor
from modules.engine.controlnet.resize import fit_to_size, pixel_perfect_resolution
from modules.engine.controlnet.units import RESIZE_MODES, ControlNetUnit
from modules.errors import UserError

if TYPE_CHECKING:
    import numpy as np

    from modules.engine.engine import Engine
    from modules.engine.model_cache import LoadedCheckpoint

Stage = Literal["first", "hires"]
# A1111's img2img resize modes (by index) as the unit resize mode used for the init image, as the extension maps
# them; "Just resize (latent upscale)" resizes the image like "Just resize".
IMG2IMG_RESIZE = {0: RESIZE_MODES[0], 1: RESIZE_MODES[1], 2: RESIZE_MODES[2], 3: RESIZE_MODES[0]}


@dataclass(frozen=True)
class PreparedUnit:
    """One unit, ready: its model, its effective preprocessor settings, the map, and this pass's control image."""

    index: int  # the unit's place in the request, as "ControlNet <index>" in infotext
    unit: ControlNetUnit
    controlnet: LoadedControlNet
    preprocessor: Preprocessor
    resolution: int
    threshold_a: float | None
    threshold_b: float | None
    resize_mode: str
    detected: np.ndarray  # the preprocessor's map, before fitting to a size
    image: Any  # PIL RGB image: the map fitted to this pass's width x height

    def infotext_value(self) -> str:
        unit = self.unit
        return infotext.format_unit({
            "module": unit.module, "model": self.controlnet.title, "weight": float(unit.weight),
            "resize_mode": self.resize_mode, "processor_res": self.resolution,
            "threshold_a": infotext.number(self.threshold_a), "threshold_b": infotext.number(self.threshold_b),
            "guidance_start": float(unit.guidance_start), "guidance_end": float(unit.guidance_end),
            "pixel_perfect": unit.pixel_perfect, "control_mode": unit.control_mode,
        })


class ControlPlan:
    """The ControlNet inputs of one pass (first pass or hires), for every unit that runs in it.

    Attributes:
        units: every active unit of the request (those of the other pass included).
        active: the units that run in this pass.
        controlnet: what the pipeline takes as `controlnet`: a `ControlNetModel` for one unit in "Balanced" mode,
            else a `MultiControlNetModel` (see `modes`); None when no unit runs in this pass.
    """

    def __init__(self, units: Sequence[PreparedUnit], width: int, height: int, stage: Stage = "first",
                 hires: bool = False) -> None:
        self.units = list(units)
        self.width, self.height, self.stage, self.hires = width, height, stage, hires
        # A unit whose guidance range is empty never runs (diffusers refuses start == end; the extension allows it).
        self.active = [u for u in self.units if _runs_in(u.unit.hr_option, stage, hires)
                       and u.unit.guidance_start < u.unit.guidance_end]
        self.injections: list[Injection] = [
            injection_for(u.unit.control_mode, stage == "hires", u.preprocessor.name) for u in self.active]
        self.controlnet: Any = self._controlnet()

    def _controlnet(self) -> Any:
        if not self.active:
            return None
        if len(self.active) == 1 and self.injections[0].plain:
            return self.active[0].controlnet.model
        return build_multi([u.controlnet.model for u in self.active], self.injections)

    @property
    def detected_maps(self) -> list[Any]:
        """Each unit's control image at this plan's size (PIL), to show next to the results."""
        return [u.image for u in self.units]

    def pipeline_kwargs(self, kind: Literal["txt2img", "img2img", "inpaint"], batch: int) -> dict[str, Any]:
        """The diffusers ControlNet pipeline's arguments for this pass; `batch` is the number of images per call."""
        if self.controlnet is None:
            return {}
        single = len(self.active) == 1 and not is_moded(self.controlnet)
        if is_moded(self.controlnet):
            self.controlnet.images_per_batch = batch  # to tell the CFG halves apart ("ControlNet is more important")

        def per_unit(values: list[Any]) -> Any:
            return values[0] if single else values

        return {
            "image" if kind == "txt2img" else "control_image": per_unit([u.image for u in self.active]),
            "controlnet_conditioning_scale": per_unit([float(u.unit.weight) for u in self.active]),
            "control_guidance_start": per_unit([float(u.unit.guidance_start) for u in self.active]),
            "control_guidance_end": per_unit([float(u.unit.guidance_end) for u in self.active]),
            "guess_mode": False,  # control modes are applied per unit by the model itself (see `modes`)
        }

    def infotext(self) -> dict[str, str]:
        """`ControlNet <n>` infotext parameters, one per unit of the request (whichever pass it runs in)."""
        return {infotext.unit_key(u.index): u.infotext_value() for u in self.units}

    def for_hires(self, width: int, height: int) -> ControlPlan:
        """The plan of the hires pass: the same maps fitted to the hires size, for units that run in that pass."""
        from PIL import Image

        resized = [dataclasses.replace(u, image=Image.fromarray(fit_to_size(u.detected, width, height,
                                                                            u.resize_mode)))
                   for u in self.units]
        return ControlPlan(resized, width, height, "hires", hires=True)


def _runs_in(hr_option: str, stage: Stage, hires: bool) -> bool:
    """sd-webui-controlnet's `hr_option`: which passes of a hires-fix job a unit runs in (all, without hires)."""
    if not hires or hr_option == "Both":
        return True
    return (hr_option == "Low res only") == (stage == "first")


def controlled_pipeline(pipe: Any, kind: Literal["txt2img", "img2img", "inpaint"], plan: ControlPlan | None,
                        batch: int) -> tuple[Any, dict[str, Any]]:
    """(pipeline, extra keyword arguments) for a pass: the ControlNet pipeline of `kind` when units run in it,
    else the plain one and no extra arguments."""
    from modules.engine.pipelines import pipeline_for

    if plan is None or plan.controlnet is None:
        return pipeline_for(pipe, kind), {}
    return pipeline_for(pipe, kind, controlnet=plan.controlnet), plan.pipeline_kwargs(kind, batch)


def prepare_control(engine: Engine, model: LoadedCheckpoint, units: Sequence[ControlNetUnit], width: int,
                    height: int, init_image: Any = None, *, hires: bool = False,
                    init_resize_mode: int | str | None = None, seed: int = 0) -> ControlPlan | None:
    """Check the request's units, load their models and make their control images; None when no unit is active.

    Args:
        engine: gives the ControlNet cache (`engine.controlnets`) and the annotator weights.
        model: the loaded checkpoint; every unit's ControlNet must be made for its family.
        units: the request's units, in request order (disabled ones and those without a model are skipped).
        width, height: the first pass's size.
        init_image: img2img's init image (PIL): the image of units that have none.
        hires: txt2img with hires fix; units then run in the passes their `hr_option` names.
        init_resize_mode: img2img's resize mode (A1111 index or name) for units that use the init image.
        seed: seeds the preprocessors that are random (shuffle).

    Raises:
        UserError: an unknown module or model, a unit without an image in txt2img, a ControlNet made for another
            model family, missing annotator weights, or an image that cannot be read.
    """
    active = [(i, u) for i, u in enumerate(units) if u.active]
    if not active:
        return None
    registry = engine.controlnets.registry
    # 1. Every cheap check first, so a mistake in unit 2 is reported before unit 0's model loads.
    checked = []
    for index, unit in active:
        preprocessor = find_preprocessor(unit.module, field=f"controlnet.{index}.module")
        if unit.image is None and init_image is None:
            raise UserError(f"ControlNet unit {index} has no control image: give the unit an image (txt2img has no "
                            "init image to fall back on)", field=f"controlnet.{index}.image")
        find_controlnet(registry, unit.model, field=f"controlnet.{index}.model")
        checked.append((index, unit, preprocessor))
    # 2. Models, each checked against the checkpoint's family.
    loaded = []
    for index, unit, preprocessor in checked:
        controlnet = engine.controlnets.get(unit.model, field=f"controlnet.{index}.model")
        check_family(controlnet, model.name, model.family)
        loaded.append((index, unit, preprocessor, controlnet))
    # 3. Control images.
    prepared = [_prepare_unit(engine, index, unit, preprocessor, controlnet, width, height, init_image,
                              init_resize_mode, seed)
                for index, unit, preprocessor, controlnet in loaded]
    return ControlPlan(prepared, width, height, "first", hires=hires)


def _prepare_unit(engine: Engine, index: int, unit: ControlNetUnit, preprocessor: Preprocessor,
                  controlnet: LoadedControlNet, width: int, height: int, init_image: Any,
                  init_resize_mode: int | str | None, seed: int) -> PreparedUnit:
    import numpy as np
    from PIL import Image

    from modules.engine.image_input import to_rgb

    field = f"controlnet.{index}.image"
    resize_mode = unit.resize_mode
    if unit.image is not None:
        source = to_rgb(unit.image, field)
    else:
        source = to_rgb(init_image, "init_images")
        if init_resize_mode is not None:
            resize_mode = (IMG2IMG_RESIZE.get(init_resize_mode, resize_mode) if isinstance(init_resize_mode, int)
                           else _resize_mode_name(init_resize_mode, resize_mode))
    given = unit.model_fields_set  # a value the client left out means the module's default, as -1 does
    resolution, a, b = preprocessor.settings(
        unit.processor_res if "processor_res" in given else None,
        unit.threshold_a if "threshold_a" in given else None,
        unit.threshold_b if "threshold_b" in given else None)
    if unit.pixel_perfect:
        resolution = pixel_perfect_resolution(source.width, source.height, width, height, resize_mode)
    pixels = np.asarray(source, dtype=np.uint8)
    detected = detect(preprocessor, pixels, resolution, a, b, engine.controlnets.annotators, seed)
    image = Image.fromarray(fit_to_size(detected, width, height, resize_mode))
    return PreparedUnit(index, unit, controlnet, preprocessor, resolution, a, b, resize_mode, detected, image)


def _resize_mode_name(name: str, default: str) -> str:
    for mode in RESIZE_MODES:
        if mode.casefold() == name.casefold() or name.casefold().startswith(mode.casefold()):
            return mode
    return default

"""ControlNet: units (the API's shape), models from models/ControlNet, preprocessors, and the plan a run uses.

Modules:
    units: `ControlNetUnit`, sd-webui-controlnet's unit as its API takes it.
    topology: a ControlNet file's family and diffusers config, read off its tensor shapes.
    models: listing, finding, loading (offline) and caching ControlNet models.
    preprocessors: the module registry (`preprocessor_names`, `run_preprocessor`); annotators: the ones that
        need trained networks (controlnet-aux, weights from models/ControlNet/annotators).
    resize: pixel perfect and the three resize modes.
    modes: the control modes (soft injection, control on the conditional half only).
    plan: `prepare_control` and `ControlPlan`, what txt2img and img2img call.
    infotext: the `ControlNet <n>` infotext parameters.

Importing this package imports neither torch nor diffusers.
"""

from modules.engine.controlnet.models import ControlNetCache, annotators_folder, controlnet_titles
from modules.engine.controlnet.plan import ControlPlan, controlled_pipeline, prepare_control
from modules.engine.controlnet.preprocessors import preprocessor_details, preprocessor_names, run_preprocessor
from modules.engine.controlnet.units import CONTROL_MODES, MAX_UNITS, RESIZE_MODES, ControlNetUnit

__all__ = [
    "CONTROL_MODES",
    "MAX_UNITS",
    "RESIZE_MODES",
    "ControlNetCache",
    "ControlNetUnit",
    "ControlPlan",
    "annotators_folder",
    "controlled_pipeline",
    "controlnet_titles",
    "prepare_control",
    "preprocessor_details",
    "preprocessor_names",
    "run_preprocessor",
]

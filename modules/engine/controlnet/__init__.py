"""ControlNet: units (the API's shape), models from models/ControlNet, preprocessors, and the plan a run uses."""

from modules.engine.controlnet.units import CONTROL_MODES, MAX_UNITS, RESIZE_MODES, ControlNetUnit

__all__ = ["CONTROL_MODES", "MAX_UNITS", "RESIZE_MODES", "ControlNetUnit"]

"""The ControlNet accordion of the txt2img and img2img tabs, in sd-webui-controlnet's shape: one tab per unit,
each with its image, preprocessor, model, weight, guidance range, control and resize modes.

The accordion only gathers values: `units_from_values` turns them into the request's `controlnet` list (enabled
units only), and the job queue validates them like any API client's units. The 💥 preview runs the unit's
preprocessor on its image (see `preview_map`), which is CPU code; no model is touched here.
"""

from __future__ import annotations

import functools
import html
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import gradio as gr

from modules.engine.controlnet.units import CONTROL_MODES, MAX_UNITS, RESIZE_MODES, ControlNetUnit
from modules.errors import UserError
from modules.ui.form_numbers import whole_number

if TYPE_CHECKING:
    from modules.services import Services

KEY_PREFIX = "controlnet_"
# The per-unit fields the request takes, in the order the form holds them.
UNIT_FIELDS = ("enabled", "image", "module", "model", "weight", "guidance_start", "guidance_end", "control_mode",
               "resize_mode", "pixel_perfect", "processor_res", "threshold_a", "threshold_b")
NO_MODEL = "None"


def _default(field: str) -> Any:
    """The unit field's API default, so the form starts where an API client's unit does."""
    return ControlNetUnit.model_fields[field].default


def unit_key(index: int, name: str) -> str:
    return f"{KEY_PREFIX}{index}_{name}"


def is_unit_key(key: str) -> bool:
    return key.startswith(KEY_PREFIX)


def preprocessor_choices() -> list[str]:
    """The preprocessors the engine offers, by the labels sd-webui-controlnet's UI shows; "none" first."""
    # Imported here, not at the top: the tab module must not pull in the engine's modules at import time.
    from modules.engine.controlnet.preprocessors import preprocessor_names

    return preprocessor_names()


def model_choices(services: Services, refresh: bool = False) -> list[str]:
    if refresh:
        services.models.refresh("ControlNet")
    # The engine's titles (sd-webui-controlnet's `name [hash]`), which leave out the annotators' weights that
    # live in models/ControlNet/annotators.
    return [NO_MODEL, *services.engine.controlnets.titles()]


SLIDER_FIELDS = ("processor_res", "threshold_a", "threshold_b")


def slider_props(module: str) -> list[dict[str, Any]]:
    """Properties of the (processor resolution, threshold A, threshold B) sliders for a preprocessor: its label,
    range and default for each, or hidden when it has no such setting, as in sd-webui-controlnet."""
    from modules.engine.controlnet.preprocessors import preprocessor_details

    sliders = {s["field"]: s for s in preprocessor_details().get(module, {}).get("sliders", [])}
    return [{"visible": False} if (s := sliders.get(field)) is None else
            {"visible": True, "label": s["name"], "minimum": s["min"], "maximum": s["max"], "step": s["step"],
             "value": s["value"]} for field in SLIDER_FIELDS]


def slider_updates(module: str) -> list[Any]:
    return [gr.update(**props) for props in slider_props(module)]


@dataclass(frozen=True)
class ControlNetAccordion:
    """`inputs` maps `unit_key(i, field)` to the component holding it, for the tab's request builder."""

    inputs: dict[str, Any]
    accordion: gr.Accordion


def build(services: Services, prefix: str, target_size: tuple[gr.Slider, gr.Slider]) -> ControlNetAccordion:
    """The accordion, built where it is called (the tab's left column). `target_size` (the tab's width and
    height) gives "Pixel Perfect" previews the size the map is used at."""
    preprocessors = preprocessor_choices()
    models = model_choices(services)
    image_label = "Control image (empty: use the img2img image)" if prefix == "img2img" else "Control image"
    inputs: dict[str, Any] = {}
    with gr.Accordion("ControlNet", open=False, elem_id=f"{prefix}_controlnet") as accordion:
        with gr.Tabs(elem_id=f"{prefix}_controlnet_tabs"):
            for i in range(MAX_UNITS):
                with gr.Tab(f"ControlNet Unit {i}", elem_id=f"{prefix}_controlnet_unit{i}_tab"):
                    inputs.update(_unit(services, f"{prefix}_controlnet_unit{i}", i, image_label, preprocessors,
                                        models, target_size))
    return ControlNetAccordion(inputs, accordion)


def _unit(services: Services, eid: str, index: int, image_label: str, preprocessors: list[str],
          models: list[str], target_size: tuple[gr.Slider, gr.Slider]) -> dict[str, Any]:
    with gr.Row():
        image = gr.Image(type="pil", label=image_label, sources=["upload", "clipboard"], elem_id=f"{eid}_image")
        detected = gr.Image(type="pil", label="Preprocessor preview", interactive=False, elem_id=f"{eid}_preview")
    with gr.Row():
        enabled = gr.Checkbox(False, label="Enable", elem_id=f"{eid}_enable")
        pixel_perfect = gr.Checkbox(False, label="Pixel Perfect", elem_id=f"{eid}_pixel_perfect")
    with gr.Row():
        module = gr.Dropdown(choices=preprocessors, value="none", label="Preprocessor", elem_id=f"{eid}_module",
                             scale=3)
        run_preview = gr.Button("💥", elem_id=f"{eid}_run_preview", scale=0, min_width=48)
        model = gr.Dropdown(choices=models, value=NO_MODEL, label="Model", elem_id=f"{eid}_model", scale=3)
        refresh = gr.Button("🔄", elem_id=f"{eid}_model_refresh", scale=0, min_width=48)
    with gr.Row():
        weight = gr.Slider(0, 2, value=_default("weight"), step=0.05, label="Control Weight",
                           elem_id=f"{eid}_weight")
        guidance_start = gr.Slider(0, 1, value=_default("guidance_start"), step=0.01,
                                   label="Starting Control Step", elem_id=f"{eid}_guidance_start")
        guidance_end = gr.Slider(0, 1, value=_default("guidance_end"), step=0.01, label="Ending Control Step",
                                 elem_id=f"{eid}_guidance_end")
    with gr.Row():
        # Shown, labelled and ranged by the chosen preprocessor (`slider_props`); hidden for "none".
        res_props, a_props, b_props = slider_props("none")
        processor_res = gr.Slider(**{"minimum": 64, "maximum": 2048, "step": 8, "value": _default("processor_res"),
                                     "label": "Preprocessor Resolution", **res_props},
                                  elem_id=f"{eid}_processor_res")
        threshold_a = gr.Slider(**{"minimum": 0, "maximum": 256, "step": 1, "value": _default("threshold_a"),
                                   "label": "Threshold A", **a_props}, elem_id=f"{eid}_threshold_a")
        threshold_b = gr.Slider(**{"minimum": 0, "maximum": 256, "step": 1, "value": _default("threshold_b"),
                                   "label": "Threshold B", **b_props}, elem_id=f"{eid}_threshold_b")
    control_mode = gr.Radio(list(CONTROL_MODES), value=_default("control_mode"), label="Control Mode",
                            elem_id=f"{eid}_control_mode")
    resize_mode = gr.Radio(list(RESIZE_MODES), value=_default("resize_mode"), label="Resize Mode",
                           elem_id=f"{eid}_resize_mode")
    message = gr.Markdown(elem_id=f"{eid}_message")

    refresh.click(lambda current: _refreshed_models(services, current), model, model, api_visibility="private")
    module.change(slider_updates, module, [processor_res, threshold_a, threshold_b], api_visibility="private",
                  show_progress="hidden")
    run_preview.click(functools.partial(preview_map, services),
                      [image, module, processor_res, threshold_a, threshold_b, pixel_perfect, resize_mode,
                       *target_size], [detected, message], api_visibility="private", concurrency_limit=1)
    components = {"enabled": enabled, "image": image, "module": module, "model": model, "weight": weight,
                  "guidance_start": guidance_start, "guidance_end": guidance_end, "control_mode": control_mode,
                  "resize_mode": resize_mode, "pixel_perfect": pixel_perfect, "processor_res": processor_res,
                  "threshold_a": threshold_a, "threshold_b": threshold_b}
    return {unit_key(index, name): components[name] for name in UNIT_FIELDS}


def _refreshed_models(services: Services, current: str | None) -> Any:
    choices = model_choices(services, refresh=True)
    return gr.update(choices=choices, value=current if current in choices else NO_MODEL)


def preview_map(services: Services, image: Any, module: str, processor_res: float, threshold_a: float,
                threshold_b: float, pixel_perfect: bool, resize_mode: str, width: float,
                height: float) -> tuple[Any, str]:
    """The unit's preprocessor run on its image: (map, message).

    There is no job type for a preview, so it runs here, in Gradio's handler thread, not on the generation
    queue: preprocessors are CPU code (annotators load on the CPU) and a preview must not wait behind a long
    batch. One preview at a time per unit (`concurrency_limit=1`)."""
    if image is None:
        return None, "⚠️ Upload a control image first."
    if not module or module == "none":
        return image, "No preprocessor: the image is used as it is."
    from modules.engine.controlnet.preprocessors import run_preprocessor
    from modules.engine.controlnet.resize import pixel_perfect_resolution

    resolution = (pixel_perfect_resolution(image.width, image.height, int(width), int(height), resize_mode)
                  if pixel_perfect else processor_res)
    try:
        result = run_preprocessor(module, image, resolution=resolution, threshold_a=threshold_a,
                                  threshold_b=threshold_b, annotators=services.engine.controlnets.annotators)
    except UserError as e:
        return None, f"⚠️ {html.escape(e.message)}"
    return result, ""


def units_from_values(values: dict[str, Any], needs_image: bool) -> list[dict[str, Any]]:
    """The request's `controlnet` list from the accordion's values: the enabled units, as dicts.

    `needs_image`: txt2img has no init image to fall back on, so an enabled unit without an image is refused
    here with the unit's name rather than later by the engine.

    Raises:
        UserError: an enabled unit without a model, or without an image where one is needed.
    """
    units = []
    for i in range(MAX_UNITS):
        unit = {name: values.get(unit_key(i, name)) for name in UNIT_FIELDS}
        if not unit["enabled"]:
            continue
        name = f"ControlNet Unit {i}"
        if not unit["model"] or unit["model"] == NO_MODEL:
            raise UserError(f"{name} is enabled but has no model: choose one in its Model list, or untick Enable",
                            field=unit_key(i, "model"))
        if unit["image"] is None:
            if needs_image:
                raise UserError(f"{name} is enabled but has no control image: upload one, or untick Enable",
                                field=unit_key(i, "image"))
            del unit["image"]  # empty: the engine uses the img2img init image, as sd-webui-controlnet does
        if unit["processor_res"] is not None:
            unit["processor_res"] = whole_number(unit["processor_res"], unit_key(i, "processor_res"))
        units.append({k: v for k, v in unit.items() if v is not None})
    return units

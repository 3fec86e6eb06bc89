"""txt2img in A1111's layout: prompts and Generate on top, settings on the left, results on the right.

The tab builds a Txt2ImgRequest from named components and submits it to the job queue like any API client;
it polls the job for progress and the live preview. It never touches the engine's models. What it shares with
img2img (prompt area, sampler/seed fields, polling) lives in `generation_form`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import gradio as gr

from modules.engine.requests import Txt2ImgRequest
from modules.ui import controlnet_ui
from modules.ui import generation_form as form
from modules.ui.generation_form import checkpoint_titles, vae_choices  # noqa: F401 - imported from here by others

if TYPE_CHECKING:
    from modules.services import Services


def build(services: Services) -> Txt2ImgTab:
    ckpt = form.checkpoint_row(services, "txt2img")
    area = form.prompt_area(services, "txt2img")
    with gr.Row():
        with gr.Column(scale=1):
            sampler, scheduler, steps = form.sampler_fields("txt2img")
            width, height = form.size_fields("txt2img")
            batch_cfg = form.batch_and_cfg_fields("txt2img")
            with gr.Accordion("Hires. fix", open=False, elem_id="txt2img_hr"):
                enable_hr = gr.Checkbox(False, label="Enable", elem_id="txt2img_enable_hr")
                with gr.Row():
                    hr_upscaler = gr.Dropdown(choices=services.engine.hires_upscalers(), value="Latent", label="Upscaler",
                                              elem_id="txt2img_hr_upscaler")
                    hr_steps = gr.Slider(0, 150, value=0, step=1, label="Hires steps", elem_id="txt2img_hires_steps")
                    denoising = gr.Slider(0, 1, value=0.7, step=0.01, label="Denoising strength",
                                          elem_id="txt2img_denoising_strength")
                with gr.Row():
                    hr_scale = gr.Slider(1, 4, value=2, step=0.05, label="Upscale by", elem_id="txt2img_hr_scale")
                    hr_resize_x = gr.Slider(0, 2048, value=0, step=8, label="Resize width to",
                                            elem_id="txt2img_hr_resize_x")
                    hr_resize_y = gr.Slider(0, 2048, value=0, step=8, label="Resize height to",
                                            elem_id="txt2img_hr_resize_y")
                with gr.Row():
                    hr_prompt = gr.Textbox(label="Hires prompt (empty: same)", lines=1, elem_id="txt2img_hr_prompt")
                    hr_negative = gr.Textbox(label="Hires negative prompt (empty: same)", lines=1,
                                             elem_id="txt2img_hr_negative_prompt")
            seeds = form.seed_fields("txt2img")
            controlnet = controlnet_ui.build(services, "txt2img", (width, height))
        with gr.Column(scale=1):
            results = form.results_area("txt2img")
            with gr.Row():
                send_img2img = gr.Button("🖼️ Send to img2img", elem_id="txt2img_send_to_img2img", size="sm")
                send_inpaint = gr.Button("🎨️ Send to inpaint", elem_id="txt2img_send_to_inpaint", size="sm")
                send_extensions = form.extension_send_buttons(services, "txt2img")
    selected = form.gallery_selection(results)

    fields = {"prompt": area.prompt, "negative_prompt": area.negative, "styles": area.styles,
              "sampler_name": sampler, "scheduler": scheduler, "steps": steps, "width": width, "height": height,
              **batch_cfg, "seed": seeds.seed, "subseed": seeds.subseed, "subseed_strength": seeds.subseed_strength,
              "checkpoint": ckpt.checkpoint, "vae": ckpt.vae, "enable_hr": enable_hr, "hr_upscaler": hr_upscaler,
              "hr_second_pass_steps": hr_steps, "denoising_strength": denoising, "hr_scale": hr_scale,
              "hr_resize_x": hr_resize_x, "hr_resize_y": hr_resize_y, "hr_prompt": hr_prompt,
              "hr_negative_prompt": hr_negative}
    keys = list(fields)
    inputs = {**fields, **controlnet.inputs}
    form.wire_generation(services, area, steps, seeds, results, inputs, build_request, keys, "txt2img")
    return Txt2ImgTab(keys=keys, outputs=[fields[k] for k in keys], gallery=results.gallery, selected=selected,
                      info=results.info, send_to_img2img=send_img2img, send_to_inpaint=send_inpaint,
                      send_to_extensions=send_extensions)


@dataclass(frozen=True)
class Txt2ImgTab:
    """What other tabs need: the fields to paste parameters into (PNG Info's "Send to txt2img"), and the
    results and buttons for "Send to img2img / inpaint"."""

    keys: list[str]
    outputs: list[Any]
    gallery: gr.Gallery
    selected: gr.State
    info: gr.Textbox
    send_to_img2img: gr.Button
    send_to_inpaint: gr.Button
    send_to_extensions: dict[str, gr.Button]  # by extension tab id


def paste_updates(keys: list[str], text: str) -> list[Any]:
    """Component updates that fill the form from an infotext; fields the infotext lacks stay as they are."""
    return form.paste_updates(keys, text, "txt2img")


def request_from_fields(values: dict[str, Any]) -> dict[str, Any]:
    """The txt2img request for the form's values (ControlNet units included)."""
    data = form.coerce_request({k: v for k, v in values.items() if not controlnet_ui.is_unit_key(k)},
                               Txt2ImgRequest)
    data["controlnet"] = controlnet_ui.units_from_values(values, needs_image=True)
    return data


def build_request(values: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    return "txt2img", request_from_fields(values)

"""img2img in A1111's layout: the sub-tabs (img2img, Sketch, Inpaint, Inpaint sketch, Inpaint upload, Batch)
with their images, the shared settings below them, results on the right.

The tab gathers values and submits an "img2img" or "img2img-batch" job like any API client (the request is
built in `img2img_inputs`); it never touches the engine's models.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import gradio as gr

from modules.engine.requests import MASKED_CONTENT, RESIZE_MODES
from modules.ui import controlnet_ui
from modules.ui import generation_form as form
from modules.ui import img2img_inputs as inputs_mod
from modules.ui.img2img_inputs import (
    BATCH,
    IMG2IMG,
    INPAINT,
    INPAINT_AREAS,
    INPAINT_SKETCH,
    INPAINT_UPLOAD,
    MASK_MODES,
    SHOWS_INPAINT_SETTINGS,
    SIZE_BY_SCALE,
    SKETCH,
)

if TYPE_CHECKING:
    from modules.services import Services

EDITOR_HEIGHT = 480
SKETCH_COLOURS = ("#000000", "#ffffff", "rgb(204, 50, 50)", "rgb(50, 204, 112)", "rgb(50, 112, 204)",
                  "rgb(230, 200, 50)")


def subtab_id(name: str) -> str:
    """The id of a sub-tab, for `gr.Tabs(selected=...)` (A1111's element ids)."""
    return {IMG2IMG: "img2img_img2img_tab", SKETCH: "img2img_img2img_sketch_tab", INPAINT: "img2img_inpaint_tab",
            INPAINT_SKETCH: "img2img_inpaint_sketch_tab", INPAINT_UPLOAD: "img2img_inpaint_upload_tab",
            BATCH: "img2img_batch_tab"}[name]


def _editor(label: str, elem_id: str, brush: gr.Brush) -> gr.ImageEditor:
    # One layer, no crop/resize tools: the layer is the mask or the strokes, and a crop would desynchronise
    # the mask from the image.
    return gr.ImageEditor(type="pil", label=label, elem_id=elem_id, brush=brush, eraser=gr.Eraser(),
                          layers=False, transforms=(), sources=["upload", "clipboard"], height=EDITOR_HEIGHT)


def build(services: Services) -> Img2ImgTab:
    ckpt = form.checkpoint_row(services, "img2img")
    area = form.prompt_area(services, "img2img")
    mode = gr.State(IMG2IMG)
    size_tab = gr.State("to")
    with gr.Row():
        with gr.Column(scale=1):
            with gr.Tabs(elem_id="mode_img2img") as subtabs:
                tabs = {}
                with gr.Tab(IMG2IMG, id=subtab_id(IMG2IMG), elem_id=subtab_id(IMG2IMG)) as tabs[IMG2IMG]:
                    init_img = gr.Image(type="pil", image_mode="RGBA", label="Image for img2img",
                                        sources=["upload", "clipboard"], elem_id="img2img_image",
                                        height=EDITOR_HEIGHT)
                with gr.Tab(SKETCH, id=subtab_id(SKETCH), elem_id=subtab_id(SKETCH)) as tabs[SKETCH]:
                    sketch = _editor("Sketch", "img2img_sketch",
                                     gr.Brush(colors=list(SKETCH_COLOURS), color_mode="defaults"))
                with gr.Tab(INPAINT, id=subtab_id(INPAINT), elem_id=subtab_id(INPAINT)) as tabs[INPAINT]:
                    # The mask is painted white on the one layer above the image.
                    init_img_with_mask = _editor("Image for inpainting with mask", "img2maskimg",
                                                 gr.Brush(colors=["#ffffff"], color_mode="fixed"))
                with gr.Tab(INPAINT_SKETCH, id=subtab_id(INPAINT_SKETCH),
                            elem_id=subtab_id(INPAINT_SKETCH)) as tabs[INPAINT_SKETCH]:
                    inpaint_color_sketch = _editor("Color sketch inpainting", "inpaint_sketch",
                                                   gr.Brush(colors=list(SKETCH_COLOURS), color_mode="defaults"))
                with gr.Tab(INPAINT_UPLOAD, id=subtab_id(INPAINT_UPLOAD),
                            elem_id=subtab_id(INPAINT_UPLOAD)) as tabs[INPAINT_UPLOAD]:
                    init_img_inpaint = gr.Image(type="pil", image_mode="RGBA", label="Image for img2img",
                                                sources=["upload", "clipboard"], elem_id="img_inpaint_base")
                    init_mask_inpaint = gr.Image(type="pil", image_mode="RGBA", label="Mask (white = repaint)",
                                                 sources=["upload", "clipboard"], elem_id="img_inpaint_mask")
                with gr.Tab(BATCH, id=subtab_id(BATCH), elem_id=subtab_id(BATCH)) as tabs[BATCH]:
                    gr.Markdown("Process every image in a folder **on the server**. Masks in the mask folder are "
                                "matched by file name. Refused when the app is shared on the network.",
                                elem_id="img2img_batch_note")
                    batch_input_dir = gr.Textbox(label="Input directory", elem_id="img2img_batch_input_dir")
                    batch_output_dir = gr.Textbox(label="Output directory", elem_id="img2img_batch_output_dir",
                                                  placeholder="Leave blank to save images to outputs/img2img-images")
                    batch_mask_dir = gr.Textbox(label="Inpaint batch mask directory (for inpainting only)",
                                                elem_id="img2img_batch_inpaint_mask_dir")
            resize_mode = gr.Radio(list(RESIZE_MODES), value=RESIZE_MODES[0], label="Resize mode",
                                   elem_id="img2img_resize_mode")
            with gr.Column(visible=False, elem_id="img2img_inpaint_controls") as inpaint_group:
                mask_blur = gr.Slider(0, 64, value=4, step=1, label="Mask blur", elem_id="img2img_mask_blur")
                mask_mode = gr.Radio(list(MASK_MODES), value=MASK_MODES[0], label="Mask mode",
                                     elem_id="img2img_mask_mode")
                inpainting_fill = gr.Radio(list(MASKED_CONTENT), value=MASKED_CONTENT[1], label="Masked content",
                                           elem_id="img2img_inpainting_fill")
                with gr.Row():
                    inpaint_full_res = gr.Radio(list(INPAINT_AREAS), value=INPAINT_AREAS[0], label="Inpaint area",
                                                elem_id="img2img_inpaint_full_res")
                    padding = gr.Slider(0, 256, value=32, step=4, label="Only masked padding, pixels",
                                        elem_id="img2img_inpaint_full_res_padding")
            sampler, scheduler, steps = form.sampler_fields("img2img")
            with gr.Tabs(elem_id="img2img_dimensions_row"):
                with gr.Tab("Resize to", elem_id="img2img_tab_resize_to") as resize_to:
                    width, height = form.size_fields("img2img")
                with gr.Tab("Resize by", elem_id="img2img_tab_resize_by") as resize_by:
                    scale = gr.Slider(0.05, 4, value=1, step=0.05, label="Scale", elem_id="img2img_scale")
                    scale_label = gr.Markdown(elem_id="img2img_scale_label")
            batch_cfg = form.batch_and_cfg_fields("img2img")
            denoising = gr.Slider(0, 1, value=0.75, step=0.01, label="Denoising strength",
                                  elem_id="img2img_denoising_strength")
            seeds = form.seed_fields("img2img")
            controlnet = controlnet_ui.build(services, "img2img", (width, height))
        with gr.Column(scale=1):
            results = form.results_area("img2img")
            with gr.Row():
                send_extensions = form.extension_send_buttons(services, "img2img")
    selected = form.gallery_selection(results)

    fields = {"prompt": area.prompt, "negative_prompt": area.negative, "styles": area.styles,
              "sampler_name": sampler, "scheduler": scheduler, "steps": steps, "width": width, "height": height,
              **batch_cfg, "seed": seeds.seed, "subseed": seeds.subseed, "subseed_strength": seeds.subseed_strength,
              "checkpoint": ckpt.checkpoint, "vae": ckpt.vae, "denoising_strength": denoising,
              "resize_mode": resize_mode, "mask_blur": mask_blur, "inpainting_mask_invert": mask_mode,
              "inpainting_fill": inpainting_fill, "inpaint_full_res": inpaint_full_res,
              "inpaint_full_res_padding": padding}
    images = {"init_img": init_img, "sketch": sketch, "init_img_with_mask": init_img_with_mask,
              "inpaint_color_sketch": inpaint_color_sketch, "init_img_inpaint": init_img_inpaint,
              "init_mask_inpaint": init_mask_inpaint}
    ui_only = {"mode": mode, "size_tab": size_tab, "scale": scale, **images, "batch_input_dir": batch_input_dir,
               "batch_output_dir": batch_output_dir, "batch_mask_dir": batch_mask_dir}
    keys = list(fields)
    form.wire_generation(services, area, steps, seeds, results, {**fields, **ui_only, **controlnet.inputs},
                         functools.partial(build_request, services), keys, "img2img",
                         inputs_mod.labels_from_request)

    for name, tab in tabs.items():
        tab.select(functools.partial(_select_subtab, name), None, [mode, inpaint_group], api_visibility="private")
    size_inputs = [mode, scale, *images.values()]
    size_keys = ["mode", "scale", *images]

    def size_label(*values: Any) -> str:
        return scale_text(dict(zip(size_keys, values, strict=True)))

    resize_to.select(lambda: "to", None, size_tab, api_visibility="private")
    resize_by.select(lambda: SIZE_BY_SCALE, None, size_tab, api_visibility="private").then(
        size_label, size_inputs, scale_label, api_visibility="private")
    scale.change(size_label, size_inputs, scale_label, api_visibility="private", show_progress="hidden")
    for image in images.values():  # a new image changes what "Resize by" gives (not each brush stroke)
        image.upload(size_label, size_inputs, scale_label, api_visibility="private", show_progress="hidden")
    return Img2ImgTab(keys=keys, outputs=[fields[k] for k in keys], subtabs=subtabs, mode=mode,
                      inpaint_group=inpaint_group, init_img=init_img, init_img_with_mask=init_img_with_mask,
                      gallery=results.gallery, selected=selected, info=results.info,
                      send_to_extensions=send_extensions)


def _select_subtab(name: str) -> tuple[str, Any]:
    return name, gr.update(visible=name in SHOWS_INPAINT_SETTINGS)


def build_request(services: Services, values: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    if values.get("mode") == BATCH:
        # Folders on the server must not be reachable by anyone on the LAN (modules/access.py).
        services.access.check_server_paths("img2img batch from a folder", field="input_dir")
    return inputs_mod.build_request(values)


def scale_text(values: dict[str, Any]) -> str:
    image = inputs_mod.current_image(values)
    if image is None:
        return "Upload an image to see the size it is resized to."
    w, h = inputs_mod.scaled_size(image.width, image.height, values.get("scale") or 1.0)
    return f"Resize: from {image.width}x{image.height} to **{w}x{h}**"


@dataclass(frozen=True)
class Img2ImgTab:
    """What other tabs need to send an image and its parameters here ("Send to img2img / inpaint")."""

    keys: list[str]
    outputs: list[Any]
    subtabs: gr.Tabs
    mode: gr.State
    inpaint_group: gr.Column
    init_img: gr.Image
    init_img_with_mask: gr.ImageEditor
    # Its results, for "Send to <extension tab>".
    gallery: gr.Gallery
    selected: gr.State
    info: gr.Textbox
    send_to_extensions: dict[str, gr.Button]

    @property
    def send_outputs(self) -> list[Any]:
        return [*self.outputs, self.init_img, self.init_img_with_mask, self.subtabs, self.mode, self.inpaint_group]

    def send_updates(self, image: Any, size: tuple[int, int] | None, infotext: str, target: str) -> list[Any]:
        """Updates for `send_outputs`: the image in the img2img or Inpaint sub-tab (`target`), the infotext's
        parameters in the fields, and the size set to the image's (A1111's "send size"), since a hires-fixed
        image is larger than the size its infotext names."""
        updates = form.paste_updates(self.keys, infotext, "img2img", inputs_mod.labels_from_request)
        if size is not None:
            for key, side in zip(("width", "height"), inputs_mod.scaled_size(*size, 1.0), strict=True):
                updates[self.keys.index(key)] = gr.update(value=min(2048, max(64, side)))  # the sliders' range
        to_inpaint = target == INPAINT
        return [*updates, gr.update() if to_inpaint else image, image if to_inpaint else gr.update(),
                gr.Tabs(selected=subtab_id(target)), target, gr.update(visible=to_inpaint)]

"""Extras in A1111's layout: the source (Single Image, Batch Process, Batch from Directory) and Generate on the
left with the Upscale accordion and the face restoration sliders below; results and the infotext on the right.

The tab builds an "extras" job request from its fields and submits it to the job queue like any API client; it
polls the job for progress and never touches the engine's models. Every mistake is shown as a message above the
results; no field is ever cleared. A folder on the server is refused under the LAN rule (modules/access.py).
"""

from __future__ import annotations

import html
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import gradio as gr

from modules.engine.extras import CODEFORMER
from modules.engine.extras.run import FOLDER_ACTION
from modules.engine.image_input import open_image_bytes
from modules.engine.outputs.paths import is_within
from modules.engine.postprocess.faces import CODEFORMER_NOTE
from modules.errors import UserError
from modules.jobs import JobState
from modules.ui.form_numbers import whole_number
from modules.ui.generation_form import progress_text

if TYPE_CHECKING:
    from modules.services import Services

SINGLE = "Single Image"
BATCH = "Batch Process"
FOLDER = "Batch from Directory"
SCALE_BY, SCALE_TO = 0, 1  # A1111's resize_mode
POLL_S = 0.25
SOURCE_HEIGHT = 360
# The request fields the tab's components hold, by name (A1111's API names).
FIELDS = ("upscaling_resize", "upscaling_resize_w", "upscaling_resize_h", "upscaling_crop", "upscaler_1",
          "upscaler_2", "extras_upscaler_2_visibility", "gfpgan_visibility", "codeformer_visibility",
          "codeformer_weight", "upscale_first")


def build(services: Services) -> None:
    restorers = services.engine.face_restorers.names()
    mode, resize_mode = gr.State(SINGLE), gr.State(SCALE_BY)
    with gr.Row(equal_height=False):
        with gr.Column(scale=1):
            with gr.Tabs(elem_id="mode_extras"):
                with gr.Tab(SINGLE, elem_id="extras_single_tab") as single_tab:
                    image = gr.Image(type="filepath", image_mode=None, label="Source", sources=["upload", "clipboard"],
                                     height=SOURCE_HEIGHT, elem_id="extras_image")
                with gr.Tab(BATCH, elem_id="extras_batch_process_tab") as batch_tab:
                    batch_files = gr.File(label="Batch Process", file_count="multiple", file_types=["image"],
                                          elem_id="extras_image_batch")
                with gr.Tab(FOLDER, elem_id="extras_batch_directory_tab") as folder_tab:
                    gr.Markdown("Process every image in a folder **on the server**. Refused when the app is shared "
                                "on the network.", elem_id="extras_batch_directory_note")
                    input_dir = gr.Textbox(label="Input directory", elem_id="extras_batch_input_dir")
                    output_dir = gr.Textbox(label="Output directory", elem_id="extras_batch_output_dir",
                                            placeholder="Leave blank to save images to outputs/extras-images")
                    show_results = gr.Checkbox(True, label="Show result images", elem_id="extras_show_extras_results")
            with gr.Row():
                generate = gr.Button("Generate", variant="primary", elem_id="extras_generate", scale=3)
                interrupt = gr.Button("Interrupt", elem_id="extras_interrupt", scale=1, min_width=60)
            fields, upscale_tabs = _upscale_fields(services)
            fields.update(_face_fields(restorers))
        with gr.Column(scale=1):
            progress = gr.Markdown(elem_id="extras_progress")
            gallery = gr.Gallery(label="Result", format="png", columns=2, interactive=False, elem_id="extras_gallery")
            info = gr.Textbox(label="Postprocessing parameters", lines=3, interactive=False, elem_id="extras_info",
                              buttons=["copy"])

    for tab, name in ((single_tab, SINGLE), (batch_tab, BATCH), (folder_tab, FOLDER)):
        tab.select(lambda name=name: name, None, mode, api_visibility="private")
    for tab, value in zip(upscale_tabs, (SCALE_BY, SCALE_TO), strict=True):
        tab.select(lambda value=value: value, None, resize_mode, api_visibility="private")

    inputs = {"mode": mode, "resize_mode": resize_mode, "image": image, "batch_files": batch_files,
              "input_dir": input_dir, "output_dir": output_dir, "show_extras_results": show_results, **fields}
    keys = list(inputs)
    job_id = gr.State(None)

    def run(*values: Any) -> Iterator[tuple[Any, ...]]:
        yield from poll(services, dict(zip(keys, values, strict=True)))

    generate.click(run, [inputs[k] for k in keys], [progress, gallery, info, job_id], api_visibility="private",
                   concurrency_limit=None)
    interrupt.click(lambda jid: services.jobs.interrupt(jid) if jid else None, job_id, None, api_visibility="private")


def _upscale_fields(services: Services) -> tuple[dict[str, Any], tuple[gr.Tab, gr.Tab]]:
    names = services.engine.upscalers.names()
    # A1111 1.10's order: the upscalers first, then how much to scale.
    with gr.Accordion("Upscale", open=True, elem_id="extras_upscale"):
        with gr.Row():
            upscaler_1 = gr.Dropdown(names, value=names[0], label="Upscaler 1", elem_id="extras_upscaler_1", scale=4)
            refresh = gr.Button("🔄", elem_id="extras_upscaler_refresh", scale=0, min_width=48)
        with gr.Row():
            upscaler_2 = gr.Dropdown(names, value=names[0], label="Upscaler 2", elem_id="extras_upscaler_2")
            visibility = gr.Slider(0.0, 1.0, value=0.0, step=0.001, label="Upscaler 2 visibility",
                                   elem_id="extras_upscaler_2_visibility")
        with gr.Tabs(elem_id="extras_resize_mode"):
            with gr.Tab("Scale by", elem_id="extras_scale_by_tab") as scale_by:
                resize = gr.Slider(1.0, 8.0, value=4, step=0.05, label="Resize", elem_id="extras_upscaling_resize")
            with gr.Tab("Scale to", elem_id="extras_scale_to_tab") as scale_to:
                with gr.Row():
                    with gr.Column(scale=4):
                        width = gr.Slider(64, 8192, value=512, step=8, label="Width",
                                          elem_id="extras_upscaling_resize_w")
                        height = gr.Slider(64, 8192, value=512, step=8, label="Height",
                                           elem_id="extras_upscaling_resize_h")
                    with gr.Column(scale=1, min_width=120):
                        swap = gr.Button("⇅", elem_id="extras_upscaling_res_switch_btn", size="sm")
                        crop = gr.Checkbox(True, label="Crop to fit", elem_id="extras_upscaling_crop")
    swap.click(lambda w, h: (h, w), [width, height], [width, height], api_visibility="private",
               show_progress="hidden")

    def on_refresh() -> tuple[Any, Any]:
        services.engine.upscalers.refresh()
        fresh = services.engine.upscalers.names()
        return gr.update(choices=fresh), gr.update(choices=fresh)

    refresh.click(on_refresh, None, [upscaler_1, upscaler_2], api_visibility="private")
    fields = {"upscaling_resize": resize, "upscaling_resize_w": width, "upscaling_resize_h": height,
              "upscaling_crop": crop, "upscaler_1": upscaler_1, "upscaler_2": upscaler_2,
              "extras_upscaler_2_visibility": visibility}
    return fields, (scale_by, scale_to)


def _face_fields(restorers: list[str]) -> dict[str, Any]:
    """GFPGAN visibility (a GFPGAN run without its file says how to get it); CodeFormer's sliders only when it can
    run; the CodeFormer note either way, since it says why CodeFormer is usually missing."""
    gfpgan = gr.Slider(0.0, 1.0, value=0.0, step=0.001, label="GFPGAN visibility", elem_id="extras_gfpgan_visibility")
    with gr.Group(visible=CODEFORMER in restorers, elem_id="extras_codeformer"):
        codeformer = gr.Slider(0.0, 1.0, value=0.0, step=0.001, label="CodeFormer visibility",
                               elem_id="extras_codeformer_visibility")
        weight = gr.Slider(0.0, 1.0, value=0.0, step=0.001, elem_id="extras_codeformer_weight",
                           label="CodeFormer weight (0 = maximum effect, 1 = minimum effect)")
    gr.Markdown(f"*{CODEFORMER_NOTE}.*", elem_id="extras_codeformer_note")
    upscale_first = gr.Checkbox(False, label="Upscale before restoring faces",
                                elem_id="extras_upscale_before_face_fix")
    return {"gfpgan_visibility": gfpgan, "codeformer_visibility": codeformer, "codeformer_weight": weight,
            "upscale_first": upscale_first}




# -- the request ---------------------------------------------------------------------------------------------------


def build_request(services: Services, values: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """The "extras" request for the form's values, and notes about uploads that could not be used.

    Raises:
        UserError: nothing to process, or a server folder where the LAN rule forbids one.
    """
    data: dict[str, Any] = {key: values[key] for key in FIELDS if values.get(key) is not None}
    data["resize_mode"] = int(values.get("resize_mode") or SCALE_BY)
    for key in ("upscaling_resize_w", "upscaling_resize_h"):
        if key in data:
            data[key] = whole_number(data[key], key)
    notes: list[str] = []
    mode = values.get("mode") or SINGLE
    if mode == FOLDER:
        # Folders on the server must not be reachable by anyone on the LAN (modules/access.py).
        services.access.check_server_paths(FOLDER_ACTION, field="input_dir")
        data["input_dir"] = (values.get("input_dir") or "").strip()
        if not data["input_dir"]:
            raise UserError("Batch from Directory: enter the input directory (a folder on the server)",
                            field="input_dir")
        data["output_dir"] = (values.get("output_dir") or "").strip()
        data["show_extras_results"] = bool(values.get("show_extras_results"))
    elif mode == BATCH:
        files = [str(f) for f in values.get("batch_files") or []]
        if not files:
            raise UserError("Batch Process: add the images to process", field="images")
        images, names = [], []
        for path in files:
            try:
                images.append(_open_upload(path))
                names.append(Path(path).name)
            except UserError as e:
                notes.append(f"Skipped {Path(path).name}: {e.message}")
        if not images:
            raise UserError("Batch Process: none of the files is an image. " + " ".join(notes), field="images")
        data.update(images=images, names=names)
    else:
        if not values.get("image"):
            raise UserError("Single Image: upload an image first", field="image")
        data["images"] = [_open_upload(str(values["image"]))]
    return data, notes


def _open_upload(path: str) -> Any:
    """An uploaded file opened (not decoded: the job decodes it, and skips it in a batch if it is corrupt)."""
    name = Path(path).name
    try:
        data = Path(path).read_bytes()
    except OSError as e:
        raise UserError(f"{name} could not be read: {e.strerror or e}", field="image") from None
    return open_image_bytes(data, name)


# -- running -------------------------------------------------------------------------------------------------------


def poll(services: Services, values: dict[str, Any]) -> Iterator[tuple[Any, ...]]:
    """Submit the job and yield (progress, gallery, info, job id) until it ends. A mistake is shown as the
    message and nothing else changes, so nothing the user entered is lost."""
    try:
        request, notes = build_request(services, values)
        job = services.jobs.submit("extras", request)
    except UserError as e:
        yield f"⚠️ {html.escape(e.message)}", gr.update(), gr.update(), None
        return
    while not job.wait(POLL_S):
        yield html.escape(progress_text(services, job)), gr.update(), gr.update(), job.id
    if job.state is not JobState.DONE:
        yield f"⚠️ {html.escape(job.error or 'cancelled')}", gr.update(), gr.update(), job.id
        return
    result = job.result
    outputs = services.paths.outputs
    items = [(str(item.path) if item.path is not None and is_within(item.path, outputs) else item.image,
              item.name or None) for item in result.shown]
    saved = [item.path for item in result.images if item.path is not None]
    summary = [f"Saved {len(saved)} image(s) to {saved[0].parent}." if saved else ""]
    message = " ".join(filter(None, [*notes, *result.notes, *summary]))
    yield html.escape(message), items, result.info, job.id

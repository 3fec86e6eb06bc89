"""txt2img in A1111's layout: prompts and Generate on top, settings on the left, results on the right.

The tab builds a Txt2ImgRequest from named components and submits it to the job queue like any API client;
it polls the job for progress and the live preview. It never touches the engine's models.
"""

from __future__ import annotations

import html
from typing import TYPE_CHECKING, Any

import gradio as gr

from modules.engine.requests import Txt2ImgRequest
from modules.engine.samplers import DEFAULT_SAMPLER, SAMPLER_NAMES, SCHEDULE_LABELS
from modules.errors import UserError
from modules.jobs import JobState

if TYPE_CHECKING:
    from modules.services import Services

POLL_S = 0.25


def checkpoint_titles(services: Services, refresh: bool = False) -> list[str]:
    models = services.models
    files = models.refresh("Stable-diffusion") if refresh else models.list("Stable-diffusion")
    # Cached hashes only: hashing every checkpoint to draw a dropdown would read gigabytes at start-up.
    return [models.title(f, compute=False) for f in files]


def checkpoint_status(services: Services, titles: list[str]) -> str:
    folder = services.paths.model_folder("Stable-diffusion")
    if titles:
        return ""
    return (f"No checkpoint found. Put a Stable Diffusion `.safetensors` or `.ckpt` file (or a diffusers folder) "
            f"in `{html.escape(str(folder))}`, then press 🔄.")


def build(services: Services) -> None:
    titles = checkpoint_titles(services)
    with gr.Row():
        checkpoint = gr.Dropdown(choices=titles, value=titles[0] if titles else None, label="Stable Diffusion checkpoint",
                                 elem_id="txt2img_checkpoint", scale=4)
        refresh = gr.Button("🔄", elem_id="txt2img_checkpoint_refresh", scale=0, min_width=48)
    status = gr.Markdown(checkpoint_status(services, titles), elem_id="txt2img_checkpoint_status")
    with gr.Row():
        with gr.Column(scale=6):
            prompt = gr.Textbox(label="Prompt", lines=3, elem_id="txt2img_prompt", placeholder="Prompt")
            negative = gr.Textbox(label="Negative prompt", lines=2, elem_id="txt2img_neg_prompt",
                                  placeholder="Negative prompt")
        with gr.Column(scale=1, min_width=180):
            generate = gr.Button("Generate", variant="primary", elem_id="txt2img_generate")
            with gr.Row():
                interrupt = gr.Button("Interrupt", elem_id="txt2img_interrupt", min_width=60)
                skip = gr.Button("Skip", elem_id="txt2img_skip", min_width=60)
            styles = gr.Dropdown(choices=[s.name for s in services.engine.styles.all()], multiselect=True,
                                 label="Styles", elem_id="txt2img_styles")
    with gr.Row():
        with gr.Column(scale=1):
            with gr.Row():
                sampler = gr.Dropdown(choices=list(SAMPLER_NAMES), value=DEFAULT_SAMPLER, label="Sampling method",
                                      elem_id="txt2img_sampling")
                scheduler = gr.Dropdown(choices=list(SCHEDULE_LABELS), value="Automatic", label="Schedule type",
                                        elem_id="txt2img_scheduler")
            steps = gr.Slider(1, 150, value=20, step=1, label="Sampling steps", elem_id="txt2img_steps")
            with gr.Row():
                width = gr.Slider(64, 2048, value=512, step=8, label="Width", elem_id="txt2img_width")
                height = gr.Slider(64, 2048, value=512, step=8, label="Height", elem_id="txt2img_height")
            with gr.Row():
                n_iter = gr.Slider(1, 100, value=1, step=1, label="Batch count", elem_id="txt2img_batch_count")
                batch_size = gr.Slider(1, 8, value=1, step=1, label="Batch size", elem_id="txt2img_batch_size")
            cfg = gr.Slider(1, 30, value=7, step=0.5, label="CFG Scale", elem_id="txt2img_cfg_scale")
            with gr.Row():
                seed = gr.Number(value=-1, precision=0, label="Seed", elem_id="txt2img_seed", scale=4)
                random_seed = gr.Button("🎲", elem_id="txt2img_random_seed", scale=0, min_width=48)
                reuse_seed = gr.Button("♻️", elem_id="txt2img_reuse_seed", scale=0, min_width=48)
            with gr.Accordion("Variation seed", open=False, elem_id="txt2img_subseed_accordion"):
                with gr.Row():
                    subseed = gr.Number(value=-1, precision=0, label="Variation seed", elem_id="txt2img_subseed")
                    subseed_strength = gr.Slider(0, 1, value=0, step=0.01, label="Variation strength",
                                                 elem_id="txt2img_subseed_strength")
        with gr.Column(scale=1):
            progress = gr.Markdown(elem_id="txt2img_progress")
            preview = gr.Image(label="Preview", interactive=False, visible=False, elem_id="txt2img_preview")
            gallery = gr.Gallery(label="Output", format="png", columns=2, elem_id="txt2img_gallery",
                                 interactive=False)
            info = gr.Textbox(label="Generation parameters", lines=4, interactive=False, elem_id="txt2img_info",
                              buttons=["copy"])
    job_id = gr.State(None)
    last_seed = gr.State(-1)

    fields = {"prompt": prompt, "negative_prompt": negative, "styles": styles, "sampler_name": sampler,
              "scheduler": scheduler, "steps": steps, "width": width, "height": height, "n_iter": n_iter,
              "batch_size": batch_size, "cfg_scale": cfg, "seed": seed, "subseed": subseed,
              "subseed_strength": subseed_strength, "checkpoint": checkpoint}
    keys = list(fields)

    def run(*values: Any):  # type: ignore[no-untyped-def]
        yield from _generate(services, dict(zip(keys, values, strict=True)))

    generate.click(run, [fields[k] for k in keys], [progress, preview, gallery, info, job_id, last_seed],
                   api_visibility="private", concurrency_limit=None)
    interrupt.click(lambda jid: services.jobs.interrupt(jid) if jid else None, job_id, None, api_visibility="private")
    skip.click(lambda jid: services.jobs.skip(jid) if jid else None, job_id, None, api_visibility="private")
    random_seed.click(lambda: -1, None, seed, api_visibility="private")
    reuse_seed.click(lambda s: s, last_seed, seed, api_visibility="private")

    def on_refresh() -> tuple[Any, str]:
        new = checkpoint_titles(services, refresh=True)
        return gr.update(choices=new, value=new[0] if new else None), checkpoint_status(services, new)

    refresh.click(on_refresh, None, [checkpoint, status], api_visibility="private")


def request_from_fields(values: dict[str, Any]) -> Txt2ImgRequest:
    """The request for the form's values; sliders give floats, so whole-number fields are rounded."""
    data = dict(values)
    for key in ("steps", "width", "height", "n_iter", "batch_size", "seed", "subseed"):
        if data.get(key) is not None:
            data[key] = int(round(float(data[key])))
    data["styles"] = list(data.get("styles") or [])
    data["checkpoint"] = data.get("checkpoint") or None
    return Txt2ImgRequest.model_validate(data)


def _generate(services: Services, values: dict[str, Any]):  # type: ignore[no-untyped-def]
    hidden = gr.update(visible=False)
    try:
        job = services.jobs.submit("txt2img", request_from_fields(values))
    except (UserError, ValueError) as e:
        message = e.message if isinstance(e, UserError) else str(e)
        yield f"⚠️ {html.escape(message)}", hidden, gr.update(), "", None, gr.update()
        return
    while not job.wait(POLL_S):
        p = job.progress
        position = services.jobs.position(job)
        text = (f"Waiting: {position} job(s) ahead" if job.state is JobState.QUEUED
                else f"{p.text} · {p.fraction:.0%}" + (f" · ETA {p.eta_s:.0f} s" if p.eta_s else ""))
        shown = gr.update(value=p.preview, visible=True) if p.preview is not None else gr.update()
        yield html.escape(text), shown, gr.update(), gr.update(), job.id, gr.update()
    if job.state is not JobState.DONE:
        message = job.error or "cancelled"
        yield f"⚠️ {html.escape(message)}", hidden, gr.update(), "", job.id, gr.update()
        return
    result = job.result
    items = ([(result.grid.path or result.grid.image, "grid")] if result.grid else [])
    items += [(g.path or g.image, f"seed {g.seed}") for g in result.images]
    first = result.images[0] if result.images else None
    notes = " ".join(job.notes)
    yield (html.escape(notes) if notes else "", hidden, items, first.infotext if first else "", job.id,
           first.seed if first else -1)


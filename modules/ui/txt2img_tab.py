"""txt2img in A1111's layout: prompts and Generate on top, settings on the left, results on the right.

The tab builds a Txt2ImgRequest from named components and submits it to the job queue like any API client;
it polls the job for progress and the live preview. It never touches the engine's models.
"""

from __future__ import annotations

import html
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import gradio as gr

from modules.engine.infotext import infotext_to_request_fields, parse_infotext
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


def vae_choices(services: Services) -> list[str]:
    return ["Automatic", "None", *(f.name for f in services.models.list("VAE"))]


DEFAULT_MODEL = "sd15-emaonly"


def download_default_model(services: Services):  # type: ignore[no-untyped-def]
    """(message, finished) pairs while the default checkpoint downloads on the download queue."""
    job = services.download_jobs.submit("download", {"id": DEFAULT_MODEL})
    while not job.wait(POLL_S * 2):
        yield html.escape(job.progress.text or "Starting the download…"), False
    if job.state is JobState.DONE:
        yield "Downloaded. The checkpoint is ready.", True
    else:
        yield f"⚠️ {html.escape(job.error or 'cancelled')}", True


def checkpoint_status(services: Services, titles: list[str]) -> str:
    folder = services.paths.model_folder("Stable-diffusion")
    if titles:
        return ""
    return (f"No checkpoint found. Put a Stable Diffusion `.safetensors` or `.ckpt` file (or a diffusers folder) "
            f"in `{html.escape(str(folder))}`, then press 🔄.")


def build(services: Services) -> Txt2ImgTab:
    titles = checkpoint_titles(services)
    with gr.Row():
        checkpoint = gr.Dropdown(choices=titles, value=titles[0] if titles else None, label="Stable Diffusion checkpoint",
                                 elem_id="txt2img_checkpoint", scale=4)
        vae = gr.Dropdown(choices=vae_choices(services), value=services.settings.get("sd_vae"), label="SD VAE",
                          elem_id="txt2img_vae", scale=2)
        refresh = gr.Button("🔄", elem_id="txt2img_checkpoint_refresh", scale=0, min_width=48)
    status = gr.Markdown(checkpoint_status(services, titles), elem_id="txt2img_checkpoint_status")
    default_entry = services.downloads.catalogue.get(DEFAULT_MODEL)
    download = gr.Button(f"Download default model ({default_entry.filename}, {default_entry.size / 1e9:.1f} GB)",
                         visible=not titles, elem_id="txt2img_download_default")
    with gr.Row():
        with gr.Column(scale=6):
            prompt = gr.Textbox(label="Prompt", lines=3, elem_id="txt2img_prompt",
                                placeholder="Prompt (paste an infotext here and press ↙️ to fill every field)")
            token_count = gr.Markdown("0/75", elem_id="txt2img_token_counter")
            negative = gr.Textbox(label="Negative prompt", lines=2, elem_id="txt2img_neg_prompt",
                                  placeholder="Negative prompt")
            negative_count = gr.Markdown("0/75", elem_id="txt2img_negative_token_counter")
        with gr.Column(scale=1, min_width=180):
            generate = gr.Button("Generate", variant="primary", elem_id="txt2img_generate")
            with gr.Row():
                interrupt = gr.Button("Interrupt", elem_id="txt2img_interrupt", min_width=60)
                skip = gr.Button("Skip", elem_id="txt2img_skip", min_width=60)
            paste = gr.Button("↙️ Read parameters from prompt", elem_id="txt2img_paste", size="sm")
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
            with gr.Row():
                cfg = gr.Slider(1, 30, value=7, step=0.5, label="CFG Scale", elem_id="txt2img_cfg_scale")
                clip_skip = gr.Slider(1, 12, value=1, step=1, label="Clip skip", elem_id="txt2img_clip_skip")
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
              "subseed_strength": subseed_strength, "checkpoint": checkpoint, "vae": vae, "clip_skip": clip_skip,
              "enable_hr": enable_hr, "hr_upscaler": hr_upscaler, "hr_second_pass_steps": hr_steps,
              "denoising_strength": denoising, "hr_scale": hr_scale, "hr_resize_x": hr_resize_x,
              "hr_resize_y": hr_resize_y, "hr_prompt": hr_prompt, "hr_negative_prompt": hr_negative}
    keys = list(fields)

    def run(*values: Any):  # type: ignore[no-untyped-def]
        yield from _generate(services, dict(zip(keys, values, strict=True)))

    generate.click(run, [fields[k] for k in keys], [progress, preview, gallery, info, job_id, last_seed],
                   api_visibility="private", concurrency_limit=None)
    interrupt.click(lambda jid: services.jobs.interrupt(jid) if jid else None, job_id, None, api_visibility="private")
    skip.click(lambda jid: services.jobs.skip(jid) if jid else None, job_id, None, api_visibility="private")
    random_seed.click(lambda: -1, None, seed, api_visibility="private")
    reuse_seed.click(lambda s: s, last_seed, seed, api_visibility="private")

    def on_refresh() -> tuple[Any, Any, str]:
        new = checkpoint_titles(services, refresh=True)
        services.models.refresh("VAE")
        return (gr.update(choices=new, value=new[0] if new else None), gr.update(choices=vae_choices(services)),
                checkpoint_status(services, new))

    refresh.click(on_refresh, None, [checkpoint, vae, status], api_visibility="private")

    def on_download():  # type: ignore[no-untyped-def]
        for text, done in download_default_model(services):
            if not done:
                yield gr.update(), text, gr.update()
                continue
            new = checkpoint_titles(services, refresh=True)
            yield gr.update(choices=new, value=new[0] if new else None), text, gr.update(visible=not new)

    download.click(on_download, None, [checkpoint, status, download], api_visibility="private")

    def count(text: str, n_steps: float, is_negative: bool) -> str:
        return services.engine.tokens.label(text or "", int(n_steps or 20), is_negative)

    prompt.change(lambda t, n: count(t, n, False), [prompt, steps], token_count, api_visibility="private",
                  trigger_mode="always_last", show_progress="hidden")
    negative.change(lambda t, n: count(t, n, True), [negative, steps], negative_count, api_visibility="private",
                    trigger_mode="always_last", show_progress="hidden")
    outputs = [fields[k] for k in keys]
    paste.click(lambda text: paste_updates(keys, text), prompt, outputs, api_visibility="private")
    return Txt2ImgTab(keys=keys, outputs=outputs)


@dataclass(frozen=True)
class Txt2ImgTab:
    """What other tabs need to send parameters here (PNG Info's "Send to txt2img")."""

    keys: list[str]
    outputs: list[Any]


def paste_updates(keys: list[str], text: str) -> list[Any]:
    """Component updates that fill the form from an infotext; fields the infotext lacks stay as they are."""
    if not text or not text.strip():
        return [gr.update() for _ in keys]
    values = infotext_to_request_fields(parse_infotext(text), "txt2img")
    clip_skip = values.get("override_settings", {}).get("CLIP_stop_at_last_layers")
    if clip_skip is not None:
        values["clip_skip"] = clip_skip
    if "sampler_name" in values and values["sampler_name"] not in SAMPLER_NAMES:
        values.pop("sampler_name")
    return [gr.update(value=values[k]) if k in values and k not in ("checkpoint", "vae") else gr.update()
            for k in keys]


def request_from_fields(values: dict[str, Any]) -> dict[str, Any]:
    """The request for the form's values. Empty fields take the request's defaults; sliders give floats, so
    whole-number fields are rounded. The job queue validates it, with the same messages API clients get."""
    data = {k: v for k, v in values.items() if v is not None}
    whole = [name for name, f in Txt2ImgRequest.model_fields.items() if f.annotation in (int, "int")]
    for key in whole:
        if isinstance(data.get(key), float):
            data[key] = int(round(data[key]))
    data["styles"] = list(data.get("styles") or [])
    data["checkpoint"] = data.get("checkpoint") or None
    return data


def _generate(services: Services, values: dict[str, Any]):  # type: ignore[no-untyped-def]
    hidden = gr.update(visible=False)
    try:
        job = services.jobs.submit("txt2img", request_from_fields(values))
    except UserError as e:
        yield f"⚠️ {html.escape(e.message)}", hidden, gr.update(), "", None, gr.update()
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


"""What the txt2img and img2img tabs share: the checkpoint row, the prompt area, the sampler/batch/CFG/seed
fields, the results column, and the generator that submits a job and polls it for progress and the preview.

Each builder takes the tab's prefix ("txt2img", "img2img") so element ids stay A1111's (`txt2img_prompt`,
`img2img_prompt`, ...), which is also what ui-config.json keys on.
"""

from __future__ import annotations

import html
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import gradio as gr
from pydantic import BaseModel

from modules.engine.infotext import infotext_to_request_fields, parse_infotext
from modules.engine.samplers import DEFAULT_SAMPLER, SAMPLER_NAMES, SCHEDULE_LABELS
from modules.errors import UserError
from modules.jobs import Job, JobState
from modules.ui.form_numbers import whole_number

if TYPE_CHECKING:
    from modules.services import Services

POLL_S = 0.25
DEFAULT_MODEL = "sd15-emaonly"
# Request fields the checkpoint/VAE dropdowns hold: pasting an infotext leaves them alone, as A1111 does by
# default (its "disable_weights_auto_swap"), so a pasted "Model: x" never starts a multi-gigabyte load.
NOT_PASTED = frozenset({"checkpoint", "vae"})


def checkpoint_titles(services: Services, refresh: bool = False) -> list[str]:
    models = services.models
    files = models.refresh("Stable-diffusion") if refresh else models.list("Stable-diffusion")
    # Cached hashes only: hashing every checkpoint to draw a dropdown would read gigabytes at start-up.
    return [models.title(f, compute=False) for f in files]


def vae_choices(services: Services) -> list[str]:
    return ["Automatic", "None", *(f.name for f in services.models.list("VAE"))]


def download_default_model(services: Services) -> Iterator[tuple[str, bool]]:
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


@dataclass(frozen=True)
class CheckpointRow:
    checkpoint: gr.Dropdown
    vae: gr.Dropdown


def checkpoint_row(services: Services, prefix: str) -> CheckpointRow:
    """Checkpoint and VAE dropdowns with 🔄, the "no checkpoint" hint and the default-model download."""
    titles = checkpoint_titles(services)
    with gr.Row():
        checkpoint = gr.Dropdown(choices=titles, value=titles[0] if titles else None,
                                 label="Stable Diffusion checkpoint", elem_id=f"{prefix}_checkpoint", scale=4)
        vae = gr.Dropdown(choices=vae_choices(services), value=services.settings.get("sd_vae"), label="SD VAE",
                          elem_id=f"{prefix}_vae", scale=2)
        refresh = gr.Button("🔄", elem_id=f"{prefix}_checkpoint_refresh", scale=0, min_width=48)
    status = gr.Markdown(checkpoint_status(services, titles), elem_id=f"{prefix}_checkpoint_status")
    default_entry = services.downloads.catalogue.get(DEFAULT_MODEL)
    download = gr.Button(f"Download default model ({default_entry.filename}, {default_entry.size / 1e9:.1f} GB)",
                         visible=not titles, elem_id=f"{prefix}_download_default")

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
    return CheckpointRow(checkpoint, vae)


@dataclass(frozen=True)
class PromptArea:
    prompt: gr.Textbox
    negative: gr.Textbox
    token_count: gr.Markdown
    negative_count: gr.Markdown
    generate: gr.Button
    interrupt: gr.Button
    skip: gr.Button
    paste: gr.Button
    styles: gr.Dropdown


def prompt_area(services: Services, prefix: str) -> PromptArea:
    with gr.Row():
        with gr.Column(scale=6):
            prompt = gr.Textbox(label="Prompt", lines=3, elem_id=f"{prefix}_prompt",
                                placeholder="Prompt (paste an infotext here and press ↙️ to fill every field)")
            token_count = gr.Markdown("0/75", elem_id=f"{prefix}_token_counter")
            negative = gr.Textbox(label="Negative prompt", lines=2, elem_id=f"{prefix}_neg_prompt",
                                  placeholder="Negative prompt")
            negative_count = gr.Markdown("0/75", elem_id=f"{prefix}_negative_token_counter")
        with gr.Column(scale=1, min_width=180):
            generate = gr.Button("Generate", variant="primary", elem_id=f"{prefix}_generate")
            with gr.Row():
                interrupt = gr.Button("Interrupt", elem_id=f"{prefix}_interrupt", min_width=60)
                skip = gr.Button("Skip", elem_id=f"{prefix}_skip", min_width=60)
            paste = gr.Button("↙️ Read parameters from prompt", elem_id=f"{prefix}_paste", size="sm")
            styles = gr.Dropdown(choices=[s.name for s in services.engine.styles.all()], multiselect=True,
                                 label="Styles", elem_id=f"{prefix}_styles")
    return PromptArea(prompt, negative, token_count, negative_count, generate, interrupt, skip, paste, styles)


def sampler_fields(prefix: str) -> tuple[gr.Dropdown, gr.Dropdown, gr.Slider]:
    with gr.Row():
        sampler = gr.Dropdown(choices=list(SAMPLER_NAMES), value=DEFAULT_SAMPLER, label="Sampling method",
                              elem_id=f"{prefix}_sampling")
        scheduler = gr.Dropdown(choices=list(SCHEDULE_LABELS), value="Automatic", label="Schedule type",
                                elem_id=f"{prefix}_scheduler")
    steps = gr.Slider(1, 150, value=20, step=1, label="Sampling steps", elem_id=f"{prefix}_steps")
    return sampler, scheduler, steps


def size_fields(prefix: str) -> tuple[gr.Slider, gr.Slider]:
    with gr.Row():
        width = gr.Slider(64, 2048, value=512, step=8, label="Width", elem_id=f"{prefix}_width")
        height = gr.Slider(64, 2048, value=512, step=8, label="Height", elem_id=f"{prefix}_height")
    return width, height


def batch_and_cfg_fields(prefix: str) -> dict[str, gr.Slider]:
    with gr.Row():
        n_iter = gr.Slider(1, 100, value=1, step=1, label="Batch count", elem_id=f"{prefix}_batch_count")
        batch_size = gr.Slider(1, 8, value=1, step=1, label="Batch size", elem_id=f"{prefix}_batch_size")
    with gr.Row():
        cfg = gr.Slider(1, 30, value=7, step=0.5, label="CFG Scale", elem_id=f"{prefix}_cfg_scale")
        clip_skip = gr.Slider(1, 12, value=1, step=1, label="Clip skip", elem_id=f"{prefix}_clip_skip")
    return {"n_iter": n_iter, "batch_size": batch_size, "cfg_scale": cfg, "clip_skip": clip_skip}


@dataclass(frozen=True)
class SeedFields:
    seed: gr.Number
    random_seed: gr.Button
    reuse_seed: gr.Button
    subseed: gr.Number
    subseed_strength: gr.Slider


def seed_fields(prefix: str) -> SeedFields:
    with gr.Row():
        seed = gr.Number(value=-1, precision=0, label="Seed", elem_id=f"{prefix}_seed", scale=4)
        random_seed = gr.Button("🎲", elem_id=f"{prefix}_random_seed", scale=0, min_width=48)
        reuse_seed = gr.Button("♻️", elem_id=f"{prefix}_reuse_seed", scale=0, min_width=48)
    with gr.Accordion("Variation seed", open=False, elem_id=f"{prefix}_subseed_accordion"):
        with gr.Row():
            subseed = gr.Number(value=-1, precision=0, label="Variation seed", elem_id=f"{prefix}_subseed")
            subseed_strength = gr.Slider(0, 1, value=0, step=0.01, label="Variation strength",
                                         elem_id=f"{prefix}_subseed_strength")
    return SeedFields(seed, random_seed, reuse_seed, subseed, subseed_strength)


@dataclass(frozen=True)
class ResultsArea:
    progress: gr.Markdown
    preview: gr.Image
    gallery: gr.Gallery
    info: gr.Textbox


def results_area(prefix: str) -> ResultsArea:
    progress = gr.Markdown(elem_id=f"{prefix}_progress")
    preview = gr.Image(label="Preview", interactive=False, visible=False, elem_id=f"{prefix}_preview")
    gallery = gr.Gallery(label="Output", format="png", columns=2, elem_id=f"{prefix}_gallery", interactive=False)
    info = gr.Textbox(label="Generation parameters", lines=4, interactive=False, elem_id=f"{prefix}_info",
                      buttons=["copy"])
    return ResultsArea(progress, preview, gallery, info)


def gallery_selection(results: ResultsArea) -> gr.State:
    """The gallery image the user clicked; None means "the first image" (the grid is skipped, see shell)."""
    selected = gr.State(None)
    results.gallery.select(_selected_index, None, selected, api_visibility="private")
    results.gallery.change(lambda: None, None, selected, api_visibility="private")
    return selected


def _selected_index(evt: gr.SelectData) -> int:
    return int(evt.index)


def extension_send_buttons(services: Services, prefix: str) -> dict[str, gr.Button]:
    """A "Send to <tab>" button for every extension tab that takes images (SadTalker), by the tab's id; the
    shell connects them once those tabs exist."""
    return {tab.elem_id: gr.Button(f"Send to {tab.title}", elem_id=f"{prefix}_send_to_{tab.elem_id}", size="sm")
            for _, tab in services.extensions.tabs() if tab.takes_images}


# Builds (job type, request) from the form's values; a UserError it raises is shown in the tab.
RequestBuilder = Callable[[dict[str, Any]], tuple[str, dict[str, Any]]]


def wire_generation(services: Services, area: PromptArea, steps: gr.Slider, seeds: SeedFields,
                    results: ResultsArea, inputs: dict[str, Any], build_request: RequestBuilder,
                    paste_keys: list[str], mode: Literal["txt2img", "img2img"],
                    convert: Callable[[dict[str, Any]], dict[str, Any]] | None = None) -> None:
    """Connect Generate/Interrupt/Skip, the seed buttons, the token counters and ↙️ paste.

    `inputs` are every component the request is built from, by name; `paste_keys` are the request fields among
    them that an infotext can fill."""
    job_id = gr.State(None)
    last_seed = gr.State(-1)
    keys = list(inputs)

    def run(*values: Any) -> Iterator[tuple[Any, ...]]:
        yield from poll_job(services, lambda: build_request(dict(zip(keys, values, strict=True))))

    area.generate.click(run, [inputs[k] for k in keys],
                        [results.progress, results.preview, results.gallery, results.info, job_id, last_seed],
                        api_visibility="private", concurrency_limit=None)
    area.interrupt.click(lambda jid: services.jobs.interrupt(jid) if jid else None, job_id, None,
                         api_visibility="private")
    area.skip.click(lambda jid: services.jobs.skip(jid) if jid else None, job_id, None, api_visibility="private")
    seeds.random_seed.click(lambda: -1, None, seeds.seed, api_visibility="private")
    seeds.reuse_seed.click(lambda s: s, last_seed, seeds.seed, api_visibility="private")

    def count(text: str, n_steps: float, is_negative: bool) -> str:
        return services.engine.tokens.label(text or "", int(n_steps or 20), is_negative)

    area.prompt.change(lambda t, n: count(t, n, False), [area.prompt, steps], area.token_count,
                       api_visibility="private", trigger_mode="always_last", show_progress="hidden")
    area.negative.change(lambda t, n: count(t, n, True), [area.negative, steps], area.negative_count,
                         api_visibility="private", trigger_mode="always_last", show_progress="hidden")
    area.paste.click(lambda text: paste_updates(paste_keys, text, mode, convert), area.prompt,
                     [inputs[k] for k in paste_keys], api_visibility="private")


def paste_updates(keys: list[str], text: str, mode: Literal["txt2img", "img2img"] = "txt2img",
                  convert: Callable[[dict[str, Any]], dict[str, Any]] | None = None) -> list[Any]:
    """Component updates that fill the form from an infotext; fields the infotext lacks stay as they are.
    `convert` turns request values into what the components hold (radio labels for indexes)."""
    if not text or not text.strip():
        return [gr.update() for _ in keys]
    values = infotext_to_request_fields(parse_infotext(text), mode)
    clip_skip = values.get("override_settings", {}).get("CLIP_stop_at_last_layers")
    if clip_skip is not None:
        values["clip_skip"] = clip_skip
    if "sampler_name" in values and values["sampler_name"] not in SAMPLER_NAMES:
        values.pop("sampler_name")
    if convert is not None:
        values = convert(values)
    return [gr.update(value=values[k]) if k in values and k not in NOT_PASTED else gr.update() for k in keys]


def coerce_request(values: dict[str, Any], model: type[BaseModel]) -> dict[str, Any]:
    """`values` shaped for `model`: empty fields take the request's defaults; sliders give floats, so
    whole-number fields are rounded. The job queue validates the rest, with the messages API clients get."""
    data = {k: v for k, v in values.items() if v is not None}
    whole = [name for name, f in model.model_fields.items() if f.annotation in (int, "int", int | None)]
    for key in whole:
        if key in data:
            data[key] = whole_number(data[key], key)
    data["styles"] = list(data.get("styles") or [])
    data["checkpoint"] = data.get("checkpoint") or None
    return data


def poll_job(services: Services, build: Callable[[], tuple[str, dict[str, Any]]]) -> Iterator[tuple[Any, ...]]:
    """Submit the job `build` describes and yield (progress, preview, gallery, info, job id, last seed) updates
    until it ends. A UserError from building or submitting is shown as the message; nothing else changes, so
    nothing the user typed is lost."""
    hidden = gr.update(visible=False)
    try:
        job_type, request = build()
        job = services.jobs.submit(job_type, request)
    except UserError as e:
        yield f"⚠️ {html.escape(e.message)}", hidden, gr.update(), "", None, gr.update()
        return
    while not job.wait(POLL_S):
        p = job.progress
        shown = gr.update(value=p.preview, visible=True) if p.preview is not None else gr.update()
        yield html.escape(progress_text(services, job)), shown, gr.update(), gr.update(), job.id, gr.update()
    if job.state is not JobState.DONE:
        message = job.error or "cancelled"
        yield f"⚠️ {html.escape(message)}", hidden, gr.update(), "", job.id, gr.update()
        return
    result = job.result
    grid = getattr(result, "grid", None)
    images = list(getattr(result, "images", None) or [])
    items = ([(grid.path or grid.image, "grid")] if grid else [])
    items += [(g.path or g.image, f"seed {g.seed}") for g in images]
    first = images[0] if images else None
    # Job notes (ctx.note) and the result's own notes, each once, in order.
    notes = list(dict.fromkeys([*job.notes, *(getattr(result, "notes", None) or [])]))
    yield (html.escape(" ".join(notes)) if notes else "", hidden, items, first.infotext if first else "", job.id,
           first.seed if first else -1)


def progress_text(services: Services, job: Job) -> str:
    """The line under Generate while a job is queued or running: its place in the queue, or step, % and ETA."""
    p = job.progress
    if job.state is JobState.QUEUED:
        return f"Waiting: {services.jobs.position(job)} job(s) ahead"
    return f"{p.text} · {p.fraction:.0%}" + (f" · ETA {p.eta_s:.0f} s" if p.eta_s else "")

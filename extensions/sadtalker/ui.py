"""The SadTalker tab, laid out like the A1111 SadTalker extension: photo and audio on the left; pose style,
resolution, preprocess, Still Mode, enhancer, batch size and expression scale on the right; the reference
videos, head angles and seed in an Advanced accordion; one progress bar per stage, then the video player.

The tab only builds a TalkingHeadRequest and follows the job on the studio's queue; everything else lives in
the runner, which the REST route and the command line share.
"""

from __future__ import annotations

import html
import math
from collections.abc import Iterator
from typing import Any

from .media import file_to_base64
from .request import MAX_BATCH_SIZE, MAX_POSE_STYLE, PREPROCESS_CHOICES
from .runner import JOB_TYPE, TalkingHeadRunner, parse_stage_text
from .talking_head import pipeline

_POLL_S = 0.5
_STAGE_LABELS = {pipeline.PREPROCESS: "Preprocess (face crop, 3DMM)", pipeline.COEFFICIENTS: "Coefficients (audio)",
                 pipeline.RENDER: "Render", pipeline.ENHANCE: "Enhance", pipeline.ENCODE: "Encode (MP4)"}


def build_tab(api: Any, runner: TalkingHeadRunner) -> Any:
    """Build the tab's components; returns the source image input ("Send to SadTalker" fills it)."""
    import gradio as gr

    with gr.Row():
        with gr.Column(variant="panel"):
            image = gr.Image(label="Source image", type="filepath", sources=["upload", "clipboard"],
                             elem_id="sadtalker_source_image")
            audio = gr.Audio(label="Input audio", type="filepath", sources=["upload", "microphone"],
                             elem_id="sadtalker_driven_audio")
        with gr.Column(variant="panel"):
            missing_now = runner.missing(256, "crop")
            missing = gr.Markdown(_missing_text(missing_now), elem_id="sadtalker_missing")
            download = gr.Button("Download missing files", size="sm", elem_id="sadtalker_download",
                                 visible=bool(missing_now))
            pose_style = gr.Slider(0, MAX_POSE_STYLE, value=0, step=1, label="Pose style",
                                   elem_id="sadtalker_pose_style")
            size = gr.Radio([256, 512], value=256, label="Face model resolution", elem_id="sadtalker_size")
            preprocess = gr.Radio(list(PREPROCESS_CHOICES), value="crop", label="Preprocess",
                                  info="How the face is cut out; 'full' keeps the whole photo",
                                  elem_id="sadtalker_preprocess")
            still = gr.Checkbox(False, label="Still Mode (fewer head motion, works with preprocess 'full')",
                                elem_id="sadtalker_still_mode")
            enhancer = gr.Checkbox(False, label="GFPGAN as Face enhancer", elem_id="sadtalker_enhancer")
            batch_size = gr.Slider(1, MAX_BATCH_SIZE, value=2, step=1, label="Batch size in generation",
                                   elem_id="sadtalker_batch_size")
            expression = gr.Slider(0, 3, value=1.0, step=0.1, label="Expression scale",
                                   elem_id="sadtalker_expression_scale")
            with gr.Accordion("Advanced", open=False, elem_id="sadtalker_advanced"):
                use_blink = gr.Checkbox(True, label="Eye blinks", elem_id="sadtalker_use_blink")
                ref_eyeblink = gr.Video(label="Reference video for eye blinks", sources=["upload"],
                                        elem_id="sadtalker_ref_eyeblink")
                ref_pose = gr.Video(label="Reference video for head motion", sources=["upload"],
                                    elem_id="sadtalker_ref_pose")
                with gr.Row():
                    yaw = gr.Textbox(label="Yaw path (degrees)", placeholder="-20 30 10", elem_id="sadtalker_yaw")
                    pitch = gr.Textbox(label="Pitch path", placeholder="0", elem_id="sadtalker_pitch")
                    roll = gr.Textbox(label="Roll path", placeholder="0", elem_id="sadtalker_roll")
                with gr.Row():
                    face_model = gr.Dropdown(["GFPGAN", "RestoreFormer"], value="GFPGAN", label="Face enhancer model",
                                             elem_id="sadtalker_face_model")
                    background = gr.Dropdown(["None", *_upscalers(api)], value="None", label="Background enhancer (2x)",
                                             elem_id="sadtalker_background_enhancer")
                seed = gr.Number(-1, precision=0, label="Seed (-1: random)", elem_id="sadtalker_seed")
            with gr.Row():
                generate = gr.Button("Generate", variant="primary", elem_id="sadtalker_generate")
                cancel = gr.Button("Cancel", elem_id="sadtalker_cancel")
            progress = gr.HTML(elem_id="sadtalker_progress")
            video = gr.Video(label="Generated video", interactive=False, elem_id="sadtalker_video")
            info = gr.Textbox(label="Video parameters", lines=3, interactive=False, elem_id="sadtalker_info")

    job_id = gr.State(None)
    fields = [image, audio, pose_style, size, preprocess, still, enhancer, batch_size, expression, use_blink,
              ref_eyeblink, ref_pose, yaw, pitch, roll, face_model, background, seed]

    def run(*values: Any) -> Iterator[tuple[Any, ...]]:
        yield from _follow(api, dict(zip(_KEYS, values, strict=True)))

    generate.click(run, fields, [progress, video, info, job_id], api_visibility="private")
    cancel.click(lambda current: _cancel(api, current), job_id, None, api_visibility="private")
    for control in (size, preprocess):
        control.change(lambda s, p: _missing_updates(runner, s, p), [size, preprocess], [missing, download],
                       api_visibility="private")
    download.click(lambda s, p: _download(api, runner, s, p), [size, preprocess], [missing, download],
                   api_visibility="private")
    return image


_KEYS = ("image", "audio", "pose_style", "size", "preprocess", "still_mode", "gfpgan", "batch_size",
         "expression_scale", "use_blink", "ref_eyeblink", "ref_pose", "input_yaw", "input_pitch", "input_roll",
         "face_model", "background_enhancer", "seed")


def request_from_fields(values: dict[str, Any]) -> dict[str, Any]:
    """The TalkingHeadRequest for the tab's values; raises ValueError with a message for missing inputs."""
    if not values.get("image"):
        raise ValueError("upload a source image (or use Send to SadTalker from txt2img / img2img)")
    if not values.get("audio"):
        raise ValueError("upload or record the input audio")
    angles = {key: _angle_list(values.get(key), key) for key in ("input_yaw", "input_pitch", "input_roll")}
    return {
        "image": file_to_base64(values["image"]), "audio": file_to_base64(values["audio"]),
        "audio_name": str(values["audio"]).rsplit("/", 1)[-1],
        "pose_style": _number(values, "pose_style", int), "size": _number(values, "size", int),
        "preprocess": values["preprocess"], "still_mode": bool(values["still_mode"]),
        "batch_size": _number(values, "batch_size", int),
        "expression_scale": _number(values, "expression_scale", float), "use_blink": bool(values["use_blink"]),
        "enhancer": values["face_model"] if values["gfpgan"] else None,
        "background_enhancer": values["background_enhancer"],
        "ref_eyeblink": file_to_base64(values["ref_eyeblink"]) if values.get("ref_eyeblink") else None,
        "ref_pose": file_to_base64(values["ref_pose"]) if values.get("ref_pose") else None,
        **angles, "seed": _number(values, "seed", int) if values.get("seed") is not None else -1,
    }


def _number(values: dict[str, Any], key: str, kind: type) -> Any:
    """A slider or number box's value as `kind`; a value that is no finite number (only a crafted call of the
    event sends one) is refused by name, where int() would have said only "cannot convert float NaN"."""
    value = values[key]
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{key} must be a number, not {value!r}") from None
    if not math.isfinite(number):
        raise ValueError(f"{key} must be a finite number, not {value}")
    return int(round(number)) if kind is int else number


def _angle_list(text: str | None, key: str) -> list[float] | None:
    if not text or not str(text).strip():
        return None
    try:
        return [float(v) for v in str(text).replace(",", " ").split()]
    except ValueError:
        raise ValueError(f"{key.removeprefix('input_')} must be numbers in degrees, e.g. -20 30 10") from None


def _follow(api: Any, values: dict[str, Any]) -> Iterator[tuple[Any, ...]]:
    """Submit the job and yield (progress, video, info, job id) until it ends; errors show as the message and
    leave every input as it was."""
    import gradio as gr

    try:
        job = api.studio.submit(JOB_TYPE, request_from_fields(values))
    except (ValueError, api.UserError) as e:
        yield _error_html(getattr(e, "message", str(e))), gr.update(), gr.update(), None
        return
    except OSError as e:  # an upload Gradio has already cleaned away: say so rather than show a traceback
        yield _error_html(f"could not read {e.filename or 'an upload'} ({e.strerror or e}); upload it again"), \
            gr.update(), gr.update(), None
        return
    while not job.wait(_POLL_S):
        yield _progress_html(api, job), gr.update(), gr.update(), job.id
    if job.state.value != "done":
        yield _error_html(job.error or "cancelled"), None, "", job.id
        return
    result = job.result
    notes = list(dict.fromkeys(job.notes))
    summary = (f"{result['frames']} frames, {result['seconds']:g} s, {result['width']}x{result['height']}, "
               f"seed {result['seed']}\n{result['video']}")
    yield _progress_html(api, job) + "".join(f"<p>{html.escape(n)}</p>" for n in notes), result["video"], \
        summary, job.id


def _progress_html(api: Any, job: Any) -> str:
    if job.state.value == "queued":
        return f"<p>Waiting: {api.studio.position(job)} job(s) ahead</p>"
    rows = []
    for stage, done, total in parse_stage_text(job.progress.text):
        percent = 100 * done / total if total else 0
        rows.append(f"<div class='sadtalker-stage'><span>{html.escape(_STAGE_LABELS[stage])}: {done}/{total}</span>"
                    f"<progress value='{percent:.0f}' max='100' data-stage='{stage}'></progress></div>")
    return "".join(rows)


def _error_html(message: str) -> str:
    return f"<p class='sadtalker-error'>⚠️ {html.escape(message)}</p>"


def _cancel(api: Any, job_id: str | None) -> None:
    if job_id:
        api.studio.cancel(job_id)


def _upscalers(api: Any) -> list[str]:
    return [name for name in api.studio.upscaler_names() if name not in ("None", "Latent")]


def _missing_text(missing: dict[str, list[str]]) -> str:
    if not missing:
        return "✅ The SadTalker model files for this choice are installed."
    lines = [f"- `models/{folder}/{name}`" for folder, names in missing.items() for name in names]
    return "⚠️ These files are missing:\n" + "\n".join(lines)


def _missing_updates(runner: TalkingHeadRunner, size: int, preprocess: str) -> tuple[Any, Any]:
    import gradio as gr

    missing = runner.missing(int(size), preprocess)
    return _missing_text(missing), gr.update(visible=bool(missing))


def _download(api: Any, runner: TalkingHeadRunner, size: int, preprocess: str) -> tuple[Any, Any]:
    """Queue a download for every missing file the catalogue lists; the Settings tab's panel shows progress."""
    import gradio as gr

    missing = runner.missing(int(size), preprocess)
    ids = runner.download_ids(missing)
    queued = [name for names in missing.values() for name in names if name in ids]
    unknown = [name for names in missing.values() for name in names if name not in ids]
    for name in queued:
        api.studio.download(ids[name])
    text = _missing_text(missing)
    if queued:
        text += f"\n\nDownloading {', '.join(queued)} (progress: Settings > Model downloads)."
    if unknown:
        text += f"\n\nNot in the download catalogue, put them in place by hand: {', '.join(unknown)}."
    return text, gr.update(visible=True)

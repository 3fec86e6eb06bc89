"""txt2img: the checkpoint picker and prompt boxes. Generation is wired here by the engine issue (#3)."""

from __future__ import annotations

import html
from typing import TYPE_CHECKING

import gradio as gr

if TYPE_CHECKING:
    from modules.services import Services


def checkpoint_titles(services: Services, refresh: bool = False) -> list[str]:
    models = services.models
    files = models.refresh("Stable-diffusion") if refresh else models.list("Stable-diffusion")
    return [models.title(f) for f in files]


def checkpoint_status(services: Services, titles: list[str]) -> str:
    folder = services.paths.model_folder("Stable-diffusion")
    if titles:
        return f"{len(titles)} checkpoint(s) in `{html.escape(str(folder))}`."
    return (f"No checkpoint found. Put a Stable Diffusion `.safetensors` or `.ckpt` file (or a diffusers folder) "
            f"in `{html.escape(str(folder))}`, then press 🔄.")


def build(services: Services) -> None:
    titles = checkpoint_titles(services)
    with gr.Row():
        checkpoint = gr.Dropdown(choices=titles, value=titles[0] if titles else None, label="Stable Diffusion checkpoint",
                                 elem_id="txt2img_checkpoint", scale=4)
        refresh = gr.Button("🔄", elem_id="txt2img_checkpoint_refresh", scale=0, min_width=48)
    status = gr.Markdown(checkpoint_status(services, titles), elem_id="txt2img_checkpoint_status")
    gr.Textbox(label="Prompt", lines=3, elem_id="txt2img_prompt", placeholder="Prompt")
    gr.Textbox(label="Negative prompt", lines=2, elem_id="txt2img_neg_prompt", placeholder="Negative prompt")

    def on_refresh() -> tuple[dict, str]:
        new = checkpoint_titles(services, refresh=True)
        return gr.update(choices=new, value=new[0] if new else None), checkpoint_status(services, new)

    refresh.click(on_refresh, None, [checkpoint, status], api_visibility="private")

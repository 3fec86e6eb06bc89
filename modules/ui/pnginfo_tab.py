"""PNG Info: the generation parameters stored in an image (ours, A1111's, NovelAI's), shown as text."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import gradio as gr
from PIL import Image, UnidentifiedImageError

from modules.engine.image_metadata import read_image_info

if TYPE_CHECKING:
    from modules.services import Services


def read_parameters(path: str | None) -> tuple[str, str]:
    """(infotext, other metadata as text) for the image file at `path`; a clear message for a bad file."""
    if not path:
        return "", ""
    try:
        with Image.open(path) as image:
            image.load()
            infotext, items = read_image_info(image)
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as e:
        return f"This file could not be read as an image: {e}", ""
    other = "\n".join(f"{k}: {v}" for k, v in items.items())
    return infotext or "No generation parameters found in this image.", other


@dataclass(frozen=True)
class PngInfoTab:
    image: gr.Image
    parameters: gr.Textbox
    send_to_txt2img: gr.Button
    send_to_img2img: gr.Button
    send_to_inpaint: gr.Button


def build(services: Services) -> PngInfoTab:
    with gr.Row():
        image = gr.Image(type="filepath", label="Source", sources=["upload", "clipboard"], elem_id="pnginfo_image")
        with gr.Column():
            parameters = gr.Textbox(label="Parameters", lines=8, elem_id="pnginfo_parameters", interactive=False,
                                    buttons=["copy"])
            with gr.Row():
                send = gr.Button("Send to txt2img", elem_id="pnginfo_send_txt2img")
                send_img2img = gr.Button("Send to img2img", elem_id="pnginfo_send_img2img")
                send_inpaint = gr.Button("Send to inpaint", elem_id="pnginfo_send_inpaint")
            other = gr.Textbox(label="Other metadata", lines=4, elem_id="pnginfo_other", interactive=False)
    image.change(read_parameters, image, [parameters, other], api_visibility="private")
    return PngInfoTab(image, parameters, send, send_img2img, send_inpaint)

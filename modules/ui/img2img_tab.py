"""img2img and Extras. Their engines arrive with issues #5 (img2img, inpaint, ControlNet) and #6 (upscalers,
face restoration); until then the tabs say so instead of offering buttons that do nothing."""

from __future__ import annotations

from typing import TYPE_CHECKING

import gradio as gr

if TYPE_CHECKING:
    from modules.services import Services

IMG2IMG_SUBTABS = ("img2img", "Sketch", "Inpaint", "Inpaint sketch", "Inpaint upload", "Batch")


def build(services: Services) -> None:
    gr.Markdown("Image-to-image, sketch, inpaint, outpaint and batch are not available in this version yet.",
                elem_id="img2img_unavailable")


def build_extras(services: Services) -> None:
    gr.Markdown("Upscaling and face restoration are not available in this version yet.",
                elem_id="extras_unavailable")

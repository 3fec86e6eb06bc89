"""From the img2img tab's values to a request: which image and mask each sub-tab gives, the size "Resize by"
means, and the inpaint fields. Pure functions (PIL only), so they are tested without a browser.

Sub-tabs, as A1111 has them:
- img2img: the uploaded image.
- Sketch: the editor's composite (the image with the colour strokes) is the init image; no mask.
- Inpaint: the editor's background is the init image; its brush layer (painted = white) is the mask.
- Inpaint sketch: the composite is the init image and the painted strokes are also the mask.
- Inpaint upload: an image and a separate mask image.
- Batch: folders on the server (job type "img2img-batch").
"""

from __future__ import annotations

import math
from types import MappingProxyType
from typing import Any

from modules.engine.requests import MASKED_CONTENT, RESIZE_MODES, Img2ImgRequest
from modules.errors import UserError
from modules.ui import controlnet_ui
from modules.ui.form_numbers import whole_number
from modules.ui.generation_form import coerce_request

IMG2IMG, SKETCH, INPAINT, INPAINT_SKETCH, INPAINT_UPLOAD, BATCH = SUBTABS = (
    "img2img", "Sketch", "Inpaint", "Inpaint sketch", "Inpaint upload", "Batch")
INPAINT_SUBTABS = frozenset({INPAINT, INPAINT_SKETCH, INPAINT_UPLOAD})
# Where the inpaint settings are shown: the inpaint sub-tabs, and Batch, whose mask folder uses them.
SHOWS_INPAINT_SETTINGS = INPAINT_SUBTABS | {BATCH}
# The form values that hold each sub-tab's images (the tab's component names).
IMAGE_INPUTS = ("init_img", "sketch", "init_img_with_mask", "inpaint_color_sketch", "init_img_inpaint",
                "init_mask_inpaint")
BATCH_INPUTS = ("batch_input_dir", "batch_output_dir", "batch_mask_dir")
INPAINT_FIELDS = ("mask_blur", "inpainting_mask_invert", "inpainting_fill", "inpaint_full_res",
                  "inpaint_full_res_padding")
# The form value holding each sub-tab's source image.
SOURCE_INPUT = MappingProxyType({IMG2IMG: "init_img", SKETCH: "sketch", INPAINT: "init_img_with_mask",
                                 INPAINT_SKETCH: "inpaint_color_sketch", INPAINT_UPLOAD: "init_img_inpaint"})
SIZE_BY_SCALE = "by"  # the "Resize by" tab is selected ("to" is "Resize to")
MASK_MODES = ("Inpaint masked", "Inpaint not masked")  # inpainting_mask_invert 0/1
INPAINT_AREAS = ("Whole picture", "Only masked")  # inpaint_full_res False/True
# The form values that are not request fields.
UI_ONLY = frozenset({"mode", "size_tab", "scale", *IMAGE_INPUTS, *BATCH_INPUTS})


def layers_mask(layers: list[Any] | None) -> Any:
    """The mask painted on an ImageEditor: white wherever any layer has paint (alpha > 0), as "L".
    None when nothing is painted."""
    from PIL import ImageChops

    mask = None
    for layer in layers or []:
        if layer is None:
            continue
        alpha = layer.getchannel("A") if layer.mode in ("RGBA", "LA", "PA") else layer.convert("L")
        painted = alpha.point(lambda a: 255 if a > 0 else 0)
        mask = painted if mask is None else ImageChops.lighter(mask, painted)
    if mask is None or mask.getbbox() is None:
        return None
    return mask


def editor_images(value: dict[str, Any] | None, tab: str) -> tuple[Any, Any]:
    """(image, mask) of an ImageEditor value `{"background", "layers", "composite"}` for sub-tab `tab`.

    Raises:
        UserError: no image, or (inpaint tabs) nothing painted.
    """
    value = value or {}
    background, composite = value.get("background"), value.get("composite")
    mask = layers_mask(value.get("layers"))
    if tab == INPAINT:
        if background is None:
            raise UserError("Inpaint: upload an image to inpaint first", field="init_img_with_mask")
        if mask is None:
            raise UserError("Inpaint: paint over the area to repaint first (the mask is empty)",
                            field="init_img_with_mask")
        return background, mask
    # Sketch and Inpaint sketch: the strokes are part of the picture. A sketch on an empty canvas is allowed.
    if composite is None or (background is None and mask is None):
        raise UserError(f"{tab}: upload an image (or draw on the canvas) first", field=tab)
    if tab == INPAINT_SKETCH:
        if mask is None:
            raise UserError("Inpaint sketch: paint over the area to change first (nothing is painted)",
                            field="inpaint_color_sketch")
        return composite, mask
    return composite, None


def images_for(tab: str, values: dict[str, Any]) -> tuple[Any, Any]:
    """(init image, mask or None) for the selected sub-tab."""
    if tab == IMG2IMG:
        if values.get("init_img") is None:
            raise UserError("img2img: upload an image first", field="init_img")
        return values["init_img"], None
    if tab == SKETCH:
        return editor_images(values.get("sketch"), SKETCH)
    if tab == INPAINT:
        return editor_images(values.get("init_img_with_mask"), INPAINT)
    if tab == INPAINT_SKETCH:
        return editor_images(values.get("inpaint_color_sketch"), INPAINT_SKETCH)
    if tab == INPAINT_UPLOAD:
        if values.get("init_img_inpaint") is None:
            raise UserError("Inpaint upload: upload the image first", field="init_img_inpaint")
        if values.get("init_mask_inpaint") is None:
            raise UserError("Inpaint upload: upload the mask too (white = repaint)", field="init_mask_inpaint")
        return values["init_img_inpaint"], values["init_mask_inpaint"]
    raise UserError(f"unknown img2img sub-tab '{tab}'", field="mode")


def current_image(values: dict[str, Any]) -> Any:
    """The selected sub-tab's source image, or None (for the "Resize by" size shown before generating)."""
    value = values.get(SOURCE_INPUT.get(values.get("mode") or IMG2IMG, ""))
    if isinstance(value, dict):  # an ImageEditor's value
        return value.get("background") or value.get("composite")
    return value


def scaled_size(width: int, height: int, scale: float) -> tuple[int, int]:
    """"Resize by": the image's size times `scale`, each side rounded to the nearest multiple of 8 (at least 8),
    which the request requires."""
    if not math.isfinite(float(scale)):  # int(nan) below would be a ValueError, not a message
        raise UserError(f"scale must be a finite number, not {scale}", field="scale")

    def side(n: int) -> int:
        return max(8, int(n * float(scale) / 8 + 0.5) * 8)  # half up, not Python's half-to-even
    return side(width), side(height)


def build_request(values: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """(job type, request dict) for the form's values.

    Raises:
        UserError: a missing image, mask or folder, with a message for the sub-tab.
    """
    tab = values.get("mode") or IMG2IMG
    fields = {k: v for k, v in values.items()
              if k not in UI_ONLY and k not in INPAINT_FIELDS and not controlnet_ui.is_unit_key(k)}
    data = coerce_request(fields, Img2ImgRequest)
    data["controlnet"] = controlnet_ui.units_from_values(values, needs_image=False)
    data["resize_mode"] = _index(RESIZE_MODES, values.get("resize_mode"))
    by_scale = values.get("size_tab") == SIZE_BY_SCALE
    if tab == BATCH:
        if by_scale:
            # The batch request has one size for every image; a scale would need each image's own size.
            raise UserError("Batch: 'Resize by' needs each image's size; use 'Resize to' for a folder",
                            field="scale")
        data.update(input_dir=(values.get("batch_input_dir") or "").strip(),
                    output_dir=(values.get("batch_output_dir") or "").strip(),
                    mask_dir=(values.get("batch_mask_dir") or "").strip())
        if not data["input_dir"]:
            raise UserError("Batch: enter the input folder (on the server)", field="input_dir")
        if data["mask_dir"]:
            data.update(inpaint_fields(values))
        return "img2img-batch", data
    image, mask = images_for(tab, values)
    data["init_images"] = [image]
    if by_scale:
        data["width"], data["height"] = scaled_size(image.width, image.height, values.get("scale") or 1.0)
    if tab in INPAINT_SUBTABS:
        data["mask"] = mask
        data.update(inpaint_fields(values))
    return "img2img", data


def inpaint_fields(values: dict[str, Any]) -> dict[str, Any]:
    """The inpaint settings as request fields; the radios hold A1111's labels."""
    return {"mask_blur": whole_number(float(values.get("mask_blur") or 0), "mask_blur"),
            "inpainting_mask_invert": _index(MASK_MODES, values.get("inpainting_mask_invert")),
            "inpainting_fill": _index(MASKED_CONTENT, values.get("inpainting_fill"), default=1),
            "inpaint_full_res": values.get("inpaint_full_res") == INPAINT_AREAS[1],
            "inpaint_full_res_padding": whole_number(float(values.get("inpaint_full_res_padding") or 0),
                                                     "inpaint_full_res_padding")}


def labels_from_request(values: dict[str, Any]) -> dict[str, Any]:
    """Request fields (from a pasted infotext) as the form's radios hold them: the inverse of the above."""
    out = dict(values)
    if "inpainting_mask_invert" in out:
        out["inpainting_mask_invert"] = MASK_MODES[int(bool(out["inpainting_mask_invert"]))]
    if "inpainting_fill" in out:
        out["inpainting_fill"] = MASKED_CONTENT[out["inpainting_fill"]]
    if "inpaint_full_res" in out:
        out["inpaint_full_res"] = INPAINT_AREAS[int(bool(out["inpaint_full_res"]))]
    if "resize_mode" in out:
        out["resize_mode"] = RESIZE_MODES[out["resize_mode"]]
    return out


def _index(labels: tuple[str, ...], label: Any, default: int = 0) -> int:
    return labels.index(label) if label in labels else default

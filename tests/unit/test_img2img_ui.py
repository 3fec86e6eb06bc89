"""The img2img and ControlNet UI adapters without a browser: form values in, request dicts out. Every request
built here is also validated by the real request models, so a field the UI shapes wrongly fails here."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
from PIL import Image, ImageDraw

from modules.access import AccessPolicy
from modules.engine.controlnet.units import ControlNetUnit
from modules.engine.requests import Img2ImgBatchRequest, Img2ImgRequest, Txt2ImgRequest
from modules.errors import AccessDenied, UserError
from modules.ui import controlnet_ui, img2img_inputs, img2img_tab, txt2img_tab
from modules.ui.generation_form import coerce_request, paste_updates
from modules.ui.img2img_inputs import (
    BATCH,
    IMG2IMG,
    INPAINT,
    INPAINT_SKETCH,
    INPAINT_UPLOAD,
    SKETCH,
    build_request,
    editor_images,
    layers_mask,
    scaled_size,
)


def _image(size: tuple[int, int] = (64, 48), colour: str = "orange") -> Image.Image:
    return Image.new("RGBA", size, colour)


def _layer(size: tuple[int, int] = (64, 48), box: tuple[int, int, int, int] | None = (8, 8, 23, 15),
           colour: tuple[int, int, int, int] = (255, 255, 255, 255)) -> Image.Image:
    """A brush layer as the browser sends it: transparent, with paint (opaque) inside `box`."""
    layer = Image.new("RGBA", size, (0, 0, 0, 0))
    if box:
        ImageDraw.Draw(layer).rectangle(box, fill=colour)
    return layer


def _editor(background: Image.Image | None, layers: list[Image.Image]) -> dict[str, Any]:
    composite = background.copy() if background else Image.new("RGBA", layers[0].size, (0, 0, 0, 0))
    for layer in layers:
        composite.alpha_composite(layer)
    return {"background": background, "layers": layers, "composite": composite}


def _values(mode: str = IMG2IMG, **overrides: Any) -> dict[str, Any]:
    """The img2img form's values as Gradio hands them over (sliders as floats, radios as labels)."""
    values: dict[str, Any] = {
        "prompt": "a cat", "negative_prompt": "", "styles": [], "sampler_name": "Euler a",
        "scheduler": "Automatic", "steps": 2.0, "width": 64.0, "height": 64.0, "n_iter": 1.0, "batch_size": 1.0,
        "cfg_scale": 7.0, "clip_skip": 1.0, "seed": 5, "subseed": -1, "subseed_strength": 0.0, "checkpoint": "",
        "vae": "Automatic", "denoising_strength": 0.75, "resize_mode": "Just resize", "mask_blur": 4.0,
        "inpainting_mask_invert": "Inpaint masked", "inpainting_fill": "original",
        "inpaint_full_res": "Whole picture", "inpaint_full_res_padding": 32.0,
        "mode": mode, "size_tab": "to", "scale": 1.0, "init_img": None, "sketch": None, "init_img_with_mask": None,
        "inpaint_color_sketch": None, "init_img_inpaint": None, "init_mask_inpaint": None,
        "batch_input_dir": "", "batch_output_dir": "", "batch_mask_dir": "",
    }
    for i in range(controlnet_ui.MAX_UNITS):
        values.update(_unit_values(i, enabled=False))
    values.update(overrides)
    return values


def _unit_values(index: int, **overrides: Any) -> dict[str, Any]:
    unit = {"enabled": True, "image": None, "module": "canny", "model": "control_canny [abc123]", "weight": 0.8,
            "guidance_start": 0.1, "guidance_end": 0.9, "control_mode": "My prompt is more important",
            "resize_mode": "Just Resize", "pixel_perfect": False, "processor_res": 384.0, "threshold_a": 100.0,
            "threshold_b": 200.0, **overrides}
    return {controlnet_ui.unit_key(index, k): v for k, v in unit.items()}


INPAINT_KEYS = ("mask", "mask_blur", "inpainting_mask_invert", "inpainting_fill", "inpaint_full_res",
                "inpaint_full_res_padding")


# --- ImageEditor values -> image and mask ------------------------------------------------------------------


def test_layers_mask_is_white_where_painted() -> None:
    mask = layers_mask([_layer()])
    assert mask.mode == "L" and mask.size == (64, 48)
    assert mask.getpixel((10, 10)) == 255 and mask.getpixel((40, 40)) == 0
    assert mask.getbbox() == (8, 8, 24, 16)


def test_layers_mask_counts_faint_paint_and_joins_layers() -> None:
    faint = _layer(box=(40, 30, 50, 40), colour=(255, 255, 255, 10))  # antialiased brush edges are faint
    mask = layers_mask([_layer(), faint])
    assert mask.getpixel((10, 10)) == 255 and mask.getpixel((45, 35)) == 255


@pytest.mark.parametrize("layers", [None, [], [_layer(box=None)], [None]])
def test_layers_mask_is_none_when_nothing_is_painted(layers: Any) -> None:
    assert layers_mask(layers) is None


def test_inpaint_takes_the_background_and_the_painted_mask() -> None:
    background = _image()
    image, mask = editor_images(_editor(background, [_layer()]), INPAINT)
    assert image is background  # the white strokes are the mask, not part of the picture
    assert mask.getpixel((10, 10)) == 255 and mask.getpixel((0, 0)) == 0


def test_sketch_takes_the_composite_and_no_mask() -> None:
    value = _editor(_image(), [_layer(colour=(200, 0, 0, 255))])
    image, mask = editor_images(value, SKETCH)
    assert mask is None and image.getpixel((10, 10))[:3] == (200, 0, 0)


def test_inpaint_sketch_takes_the_composite_and_the_strokes_as_mask() -> None:
    value = _editor(_image(), [_layer(colour=(0, 0, 200, 255))])
    image, mask = editor_images(value, INPAINT_SKETCH)
    assert image.getpixel((10, 10))[:3] == (0, 0, 200) and image.getpixel((0, 0))[:3] == (255, 165, 0)
    assert mask.getbbox() == (8, 8, 24, 16)


def test_a_sketch_on_an_empty_canvas_is_allowed() -> None:
    image, mask = editor_images(_editor(None, [_layer()]), SKETCH)
    assert image.size == (64, 48) and mask is None


@pytest.mark.parametrize(("tab", "value", "message"), [
    (INPAINT, None, "upload an image"),
    (INPAINT, {"background": None, "layers": [], "composite": None}, "upload an image"),
    (INPAINT, "unpainted", "the mask is empty"),
    (INPAINT_SKETCH, "unpainted", "nothing is painted"),
    (SKETCH, None, "upload an image"),
])
def test_editor_problems_say_what_to_do(tab: str, value: Any, message: str) -> None:
    if value == "unpainted":
        value = _editor(_image(), [_layer(box=None)])
    with pytest.raises(UserError, match=message):
        editor_images(value, tab)


# --- sizes ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("size", "scale", "expected"), [
    ((64, 64), 1.0, (64, 64)),
    ((64, 48), 1.5, (96, 72)),
    ((100, 75), 1.0, (104, 72)),  # 12.5 rounds up, 9.375 down
    ((512, 512), 0.05, (24, 24)),
    ((10, 10), 0.1, (8, 8)),  # never below 8
])
def test_scaled_size_rounds_each_side_to_8(size: tuple[int, int], scale: float, expected: tuple[int, int]) -> None:
    assert scaled_size(*size, scale) == expected


def test_resize_by_computes_the_size_from_the_image() -> None:
    job, request = build_request(_values(init_img=_image((64, 48)), size_tab="by", scale=2.0))
    assert job == "img2img" and (request["width"], request["height"]) == (128, 96)
    job, request = build_request(_values(init_img=_image((64, 48)), size_tab="to", scale=2.0, width=256.0))
    assert (request["width"], request["height"]) == (256, 64)


def test_scale_label_shows_the_target_size() -> None:
    text = img2img_tab.scale_text(_values(init_img=_image((64, 48)), scale=1.5))
    assert "64x48" in text and "96x72" in text
    editor = _editor(_image((80, 40)), [_layer((80, 40), box=None)])
    assert "80x40" in img2img_tab.scale_text(_values(INPAINT, init_img_with_mask=editor, scale=1.0))
    assert "Upload an image" in img2img_tab.scale_text(_values(BATCH))


# --- requests per sub-tab ---------------------------------------------------------------------------------


def test_img2img_request_has_the_image_and_no_inpaint_fields() -> None:
    image = _image()
    job, request = build_request(_values(init_img=image, resize_mode="Resize and fill"))
    assert job == "img2img" and request["init_images"] == [image]
    assert request["resize_mode"] == 2 and request["denoising_strength"] == 0.75
    assert request["steps"] == 2 and isinstance(request["steps"], int) and request["checkpoint"] is None
    assert not set(INPAINT_KEYS) & set(request)
    assert not img2img_inputs.UI_ONLY & set(request)
    parsed = Img2ImgRequest.model_validate(request)
    assert parsed.mask is None and parsed.width == 64


def test_sketch_request_has_no_mask() -> None:
    job, request = build_request(_values(SKETCH, sketch=_editor(_image(), [_layer()])))
    assert job == "img2img" and not set(INPAINT_KEYS) & set(request)
    Img2ImgRequest.model_validate(request)


@pytest.mark.parametrize("tab", [INPAINT, INPAINT_SKETCH, INPAINT_UPLOAD])
def test_inpaint_tabs_set_the_inpaint_fields_with_a1111_ui_defaults(tab: str) -> None:
    editor = _editor(_image(), [_layer()])
    values = _values(tab, init_img_with_mask=editor, inpaint_color_sketch=editor, init_img_inpaint=_image(),
                     init_mask_inpaint=layers_mask([_layer()]).convert("RGB"))
    job, request = build_request(values)
    assert job == "img2img"
    assert {k: request[k] for k in INPAINT_KEYS[1:]} == {
        "mask_blur": 4, "inpainting_mask_invert": 0, "inpainting_fill": 1, "inpaint_full_res": False,
        "inpaint_full_res_padding": 32}
    parsed = Img2ImgRequest.model_validate(request)
    assert parsed.mask is not None and parsed.mask_blur_x == 4 and parsed.inpainting_fill == 1


def test_inpaint_radios_map_to_request_fields() -> None:
    values = _values(INPAINT, init_img_with_mask=_editor(_image(), [_layer()]), mask_blur=0.0,
                     inpainting_mask_invert="Inpaint not masked", inpainting_fill="latent nothing",
                     inpaint_full_res="Only masked", inpaint_full_res_padding=8.0)
    _, request = build_request(values)
    assert (request["mask_blur"], request["inpainting_mask_invert"], request["inpainting_fill"],
            request["inpaint_full_res"], request["inpaint_full_res_padding"]) == (0, 1, 3, True, 8)


@pytest.mark.parametrize(("values", "message"), [
    (_values(IMG2IMG), "img2img: upload an image"),
    (_values(INPAINT_UPLOAD), "Inpaint upload: upload the image"),
    (_values(INPAINT_UPLOAD, init_img_inpaint=_image()), "upload the mask"),
    (_values(BATCH), "Batch: enter the input folder"),
    (_values(BATCH, batch_input_dir="/in", size_tab="by"), "use 'Resize to'"),
    (_values("Nonsense", init_img=_image()), "unknown img2img sub-tab"),
])
def test_missing_inputs_are_refused_with_the_sub_tab_named(values: dict[str, Any], message: str) -> None:
    with pytest.raises(UserError, match=message):
        build_request(values)


def test_batch_request_has_the_folders() -> None:
    job, request = build_request(_values(BATCH, batch_input_dir=" /data/in ", batch_output_dir="/data/out"))
    assert job == "img2img-batch"
    assert (request["input_dir"], request["output_dir"], request["mask_dir"]) == ("/data/in", "/data/out", "")
    assert "init_images" not in request and not set(INPAINT_KEYS) & set(request)
    Img2ImgBatchRequest.model_validate(request)
    _, with_masks = build_request(_values(BATCH, batch_input_dir="/in", batch_mask_dir="/masks"))
    assert with_masks["mask_dir"] == "/masks" and with_masks["inpainting_fill"] == 1
    Img2ImgBatchRequest.model_validate(with_masks)


def test_batch_is_refused_when_shared_on_the_network() -> None:
    shared = SimpleNamespace(access=AccessPolicy(shared_on_network=True, insecure_extension_access=False))
    with pytest.raises(AccessDenied, match="enable-insecure-extension-access") as e:
        img2img_tab.build_request(shared, _values(BATCH, batch_input_dir="/in"))
    assert e.value.field == "input_dir"
    local = SimpleNamespace(access=AccessPolicy(shared_on_network=False, insecure_extension_access=False))
    assert img2img_tab.build_request(local, _values(BATCH, batch_input_dir="/in"))[0] == "img2img-batch"
    # Other sub-tabs do not name server folders, so they work when shared.
    assert img2img_tab.build_request(shared, _values(init_img=_image()))[0] == "img2img"


# --- ControlNet accordion ---------------------------------------------------------------------------------


def test_only_enabled_units_reach_the_request() -> None:
    control = _image()
    values = _values(init_img=_image(), **_unit_values(1, image=control))
    _, request = build_request(values)
    assert len(request["controlnet"]) == 1
    unit = request["controlnet"][0]
    assert unit["image"] is control and unit["processor_res"] == 384 and unit["model"] == "control_canny [abc123]"
    parsed = ControlNetUnit.model_validate(unit)
    assert (parsed.weight, parsed.guidance_start, parsed.guidance_end, parsed.control_mode) == (
        0.8, 0.1, 0.9, "My prompt is more important")
    assert Img2ImgRequest.model_validate(request).controlnet[0].resize_mode == "Just Resize"


def test_img2img_unit_without_image_uses_the_init_image() -> None:
    _, request = build_request(_values(init_img=_image(), **_unit_values(0), **_unit_values(2)))
    assert [("image" in u) for u in request["controlnet"]] == [False, False]
    assert Img2ImgRequest.model_validate(request).controlnet[0].image is None


def test_txt2img_unit_needs_an_image_and_every_unit_a_model() -> None:
    with pytest.raises(UserError, match="ControlNet Unit 2 is enabled but has no control image"):
        controlnet_ui.units_from_values(_unit_values(2), needs_image=True)
    with pytest.raises(UserError, match="ControlNet Unit 0 is enabled but has no model"):
        controlnet_ui.units_from_values(_unit_values(0, model="None", image=_image()), needs_image=False)
    assert controlnet_ui.units_from_values(_unit_values(0, enabled=False), needs_image=True) == []


def test_txt2img_request_carries_the_units() -> None:
    values = {"prompt": "x", "steps": 2.0, "width": 64.0, "height": 64.0, "styles": None, "checkpoint": "",
              **_unit_values(0, image=_image())}
    _, request = txt2img_tab.build_request(values)
    assert request["steps"] == 2 and len(request["controlnet"]) == 1
    assert not any(controlnet_ui.is_unit_key(k) for k in request)
    assert Txt2ImgRequest.model_validate(request).controlnet[0].module == "canny"


def test_preprocessor_choices_always_offer_none() -> None:
    assert controlnet_ui.preprocessor_choices()[0] == "none"


def _services_with_annotators(tmp_path: Any) -> Any:
    from modules.engine.controlnet.annotators import Annotators

    return SimpleNamespace(engine=SimpleNamespace(controlnets=SimpleNamespace(annotators=Annotators(tmp_path))))


def test_preview_without_image_or_preprocessor_says_so(tmp_path: Any) -> None:
    services = _services_with_annotators(tmp_path)
    assert "Upload a control image" in controlnet_ui.preview_map(services, None, "canny", 512, 100, 200, False,
                                                                 "Crop and Resize", 64, 64)[1]
    image = _image()
    assert controlnet_ui.preview_map(services, image, "none", 512, 100, 200, False, "Crop and Resize", 64,
                                     64)[0] is image


def test_preview_runs_the_preprocessor(tmp_path: Any) -> None:
    image = Image.new("RGB", (64, 48), "black")
    ImageDraw.Draw(image).rectangle((16, 12, 47, 35), fill="white")
    services = _services_with_annotators(tmp_path)
    edges, message = controlnet_ui.preview_map(services, image, "canny", 128, 100, 200, False, "Crop and Resize",
                                               64, 64)
    assert message == "" and edges.mode == "RGB" and edges.size[1] == 128  # short side = processor resolution
    assert edges.getextrema()[0] == (0, 255)  # edges are drawn
    pixel_perfect, _ = controlnet_ui.preview_map(services, image, "canny", 128, 100, 200, True, "Crop and Resize",
                                                 128, 128)
    assert pixel_perfect.size[1] == 128  # 48 px fitted (cover) into 128x128 -> short side 128


def test_preview_of_a_missing_annotator_says_which_file(tmp_path: Any) -> None:
    _, message = controlnet_ui.preview_map(_services_with_annotators(tmp_path), _image(), "depth_midas", 512, 0, 0,
                                           False, "Crop and Resize", 64, 64)
    assert message.startswith("⚠️") and "depth_midas" in message and str(tmp_path) in message


def test_preprocessor_sliders_follow_the_module() -> None:
    res, a, b = controlnet_ui.slider_props("canny")
    assert (res["label"], a["label"], b["label"]) == ("Resolution", "Low Threshold", "High Threshold")
    assert (a["value"], b["value"]) == (100, 200)
    assert [p["visible"] for p in controlnet_ui.slider_props("none")] == [False, False, False]


# --- pasting infotexts --------------------------------------------------------------------------------------


def test_pasted_img2img_infotext_sets_the_radios_by_label() -> None:
    keys = ["prompt", "denoising_strength", "mask_blur", "inpainting_mask_invert", "inpainting_fill",
            "inpaint_full_res", "inpaint_full_res_padding", "checkpoint"]
    text = ("a dog\nSteps: 2, Sampler: Euler a, Seed: 3, Size: 64x64, Model: other, Denoising strength: 0.4, "
            "Mask blur: 2, Masked content: latent noise, Inpaint area: Only masked, Masked area padding: 16, "
            "Mask mode: Inpaint not masked")
    updates = paste_updates(keys, text, "img2img", img2img_inputs.labels_from_request)
    values = {k: u.get("value") for k, u in zip(keys, updates, strict=True)}
    assert values == {"prompt": "a dog", "denoising_strength": 0.4, "mask_blur": 2,
                      "inpainting_mask_invert": "Inpaint not masked", "inpainting_fill": "latent noise",
                      "inpaint_full_res": "Only masked", "inpaint_full_res_padding": 16, "checkpoint": None}


def test_coerce_request_rounds_whole_number_fields_only() -> None:
    data = coerce_request({"steps": 3.0, "cfg_scale": 6.5, "mask_blur": 4.0, "seed": None}, Img2ImgRequest)
    assert data["steps"] == 3 and data["cfg_scale"] == 6.5 and data["mask_blur"] == 4 and "seed" not in data

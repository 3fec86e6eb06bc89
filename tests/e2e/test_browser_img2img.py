"""img2img in a real browser (headless Debian chromium), against the real server with tiny checkpoints: one
generation per sub-tab (an inpaint mask painted with the mouse on the ImageEditor canvas), a batch over server
folders, "Send to img2img / inpaint" from txt2img and PNG Info, the ControlNet accordion in both tabs, and
failures shown in the tab without losing what was typed.

One server and one browser page for the module; 64x64 images and 2 steps keep each generation short.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image, ImageDraw

from tests.e2e.browser import browser_page, open_app
from tests.e2e.server import RunningServer, start_server

pytestmark = [pytest.mark.e2e, pytest.mark.browser]

ORANGE = (255, 165, 0)
GENERATION_TIMEOUT_MS = 120_000


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RunningServer, Path]]:
    from tests.fixtures.tiny_controlnet import save_tiny_controlnet
    from tests.fixtures.tiny_models import save_tiny_checkpoint

    data = tmp_path_factory.mktemp("browser-i2i") / "data"
    save_tiny_checkpoint(data / "models" / "Stable-diffusion", "sd1", name="tiny")
    save_tiny_checkpoint(data / "models" / "Stable-diffusion", "sd1-inpaint", name="tiny-inpaint")
    save_tiny_controlnet(data / "models" / "ControlNet", "sd1", layout="ldm", name="tiny-cn")
    running = start_server(data)
    yield running, data
    running.stop()


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("i2i-images")
    orange = folder / "orange.png"
    Image.new("RGB", (64, 64), ORANGE).save(orange)
    shape = Image.new("RGB", (64, 64), "black")
    ImageDraw.Draw(shape).ellipse((12, 12, 51, 51), fill="white")
    shape.save(folder / "shape.png")
    mask = Image.new("L", (64, 64), 0)
    ImageDraw.Draw(mask).rectangle((16, 16, 47, 47), fill=255)
    mask.save(folder / "mask.png")
    batch_in = folder / "batch-in"
    batch_in.mkdir()
    Image.new("RGB", (64, 64), "teal").save(batch_in / "a.png")
    Image.new("RGB", (64, 64), "purple").save(batch_in / "b.jpg")
    return {"orange": orange, "mask": folder / "mask.png", "shape": folder / "shape.png", "batch_in": batch_in}


@pytest.fixture(scope="module")
def page(server: tuple[RunningServer, Path]) -> Iterator[Any]:
    running, _ = server
    with browser_page(1280, 1000) as page:
        open_app(page, running.url)
        open_main_tab(page, "img2img")
        for elem, value in (("#img2img_width", "64"), ("#img2img_height", "64"), ("#img2img_steps", "2")):
            set_number(page, elem, value)
        page.locator("#img2img_prompt textarea").fill("a small robot")
        yield page


# --- helpers ----------------------------------------------------------------------------------------------


def open_main_tab(page: Any, name: str) -> None:
    page.locator(f"#tab_{name}-button").click()


def open_subtab(page: Any, name: str) -> None:
    open_main_tab(page, "img2img")
    page.locator("#mode_img2img").get_by_role("tab", name=name, exact=True).click()


def set_number(page: Any, elem: str, value: str) -> None:
    box = page.locator(f"{elem} input[type=number]")
    box.fill(value)
    box.press("Enter")


def saved_images(data: Path) -> set[Path]:
    return set((data / "outputs" / "img2img-images").rglob("*.png"))


def upload_to_editor(page: Any, elem: str, path: Path) -> None:
    # The editor starts its canvas when its tab is first shown and draws its toolbar when ready; a file given
    # before that is dropped (and the editor then ignores later ones), which only a test is fast enough to hit.
    page.locator(f"{elem} button[aria-label='Zoom in']").wait_for()
    page.locator(f"{elem} input[type=file]").set_input_files(str(path))
    # Undo becomes possible once the image is on the canvas: only then is there something to paint on.
    page.locator(f"{elem} button[aria-label=Undo]:not([disabled])").wait_for()


def paint_stroke(page: Any, elem: str) -> None:
    """Drag the brush across the middle of the image, as a user does."""
    page.locator(f"{elem} button[aria-label=Brush]").click()
    canvas = page.locator(f"{elem} canvas").first
    # The whole canvas must be on screen: mouse events outside the viewport go nowhere.
    canvas.evaluate("el => el.scrollIntoView({block: 'center'})")
    box = canvas.bounding_box()
    x, y = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    page.mouse.move(x - 120, y)
    page.mouse.down()
    for i in range(1, 25):
        page.mouse.move(x - 120 + i * 10, y + (i % 3), steps=2)
    page.mouse.up()
    page.wait_for_timeout(300)


def message(page: Any, prefix: str = "img2img") -> str:
    """The tab's message (progress or warning), without Gradio's pending timer drawn over it."""
    return page.locator(f"#{prefix}_progress [data-testid=markdown]").inner_text().strip()


def generate(page: Any, seed: int, prefix: str = "img2img") -> str:
    """Press Generate with `seed` and wait for the result; returns the generation info. Fails with the tab's
    message when the job fails."""
    page.locator(f"#{prefix}_seed input").fill(str(seed))
    info = page.locator(f"#{prefix}_info textarea")
    shown = page.locator(f"#{prefix}_progress [data-testid=markdown]")
    # A warning shown before this click is an earlier run's: only a new one means this run failed.
    before = message(page, prefix)
    page.locator(f"#{prefix}_generate").click()
    page.wait_for_function(
        "([info, shown, seed, before]) => info.value.includes('Seed: ' + seed)"
        " || (shown.innerText.includes('⚠️') && shown.innerText.trim() !== before)",
        arg=[info.element_handle(), shown.element_handle(), str(seed), before], timeout=GENERATION_TIMEOUT_MS)
    assert "⚠️" not in message(page, prefix), message(page, prefix)
    page.locator(f"#{prefix}_gallery img").first.wait_for()
    return info.input_value()


def generate_and_check_saved(page: Any, data: Path, seed: int, count: int = 1) -> tuple[str, list[Path]]:
    before = saved_images(data)
    text = generate(page, seed)
    new = sorted(saved_images(data) - before)
    assert len(new) == count, f"expected {count} new image(s) in outputs/img2img-images, found {new}"
    return text, new


def choose(page: Any, elem: str, option: str | re.Pattern[str]) -> None:
    page.locator(f"{elem} input").click()
    page.get_by_role("option", name=option).click()


def open_controlnet_unit0(page: Any, tab: str) -> None:
    if not page.locator(f"#{tab}_controlnet_unit0_enable").is_visible():
        page.locator(f"#{tab}_controlnet").get_by_text("ControlNet", exact=True).first.click()
    page.locator(f"#{tab}_controlnet").get_by_role("tab", name="ControlNet Unit 0").click()
    page.locator(f"#{tab}_controlnet_unit0_enable").wait_for()


def expect_selected(page: Any, *tab_ids: str) -> None:
    for tab_id in tab_ids:  # the tab switch may be drawn a moment after the fields are filled
        page.locator(f"#{tab_id}-button[aria-selected=true]").wait_for()


def expect_message(page: Any, text: str) -> None:
    page.locator("#img2img_progress").get_by_text(text, exact=False).wait_for()


# --- tests ------------------------------------------------------------------------------------------------


def test_controlnet_accordion_in_both_tabs(page: Any) -> None:
    for tab in ("txt2img", "img2img"):
        open_main_tab(page, tab)
        open_controlnet_unit0(page, tab)
        units = page.locator(f"#{tab}_controlnet").get_by_role("tab").all_inner_texts()
        assert [u.strip() for u in units] == ["ControlNet Unit 0", "ControlNet Unit 1", "ControlNet Unit 2"]
        for part in ("enable", "image", "module", "model", "weight", "guidance_start", "guidance_end",
                     "control_mode", "resize_mode", "pixel_perfect", "run_preview", "model_refresh", "preview"):
            assert page.locator(f"#{tab}_controlnet_unit0_{part}").count() == 1, part
        assert page.locator(f"#{tab}_controlnet_unit0_module input").input_value() == "none"
        # The resolution and threshold sliders appear with a preprocessor that has them ("none" has none).
        for part in ("processor_res", "threshold_a", "threshold_b"):
            assert not page.locator(f"#{tab}_controlnet_unit0_{part}").is_visible(), part
        assert page.locator(f"#{tab}_controlnet_unit0_model input").input_value() == "None"
        page.locator(f"#{tab}_controlnet_unit0_model input").click()
        page.get_by_role("option", name=re.compile(r"^tiny-cn")).wait_for()  # the model in models/ControlNet
        page.keyboard.press("Escape")


def test_img2img_sub_tab_generates(page: Any, server: tuple[RunningServer, Path], images: dict[str, Path],
                                   tmp_path: Path) -> None:
    _, data = server
    open_subtab(page, "img2img")
    assert not page.locator("#img2img_inpaint_controls").is_visible()
    page.locator("#img2img_image input[type=file]").set_input_files(str(images["orange"]))
    page.locator("#img2img_image img").wait_for()
    text, saved = generate_and_check_saved(page, data, 101)
    assert "a small robot" in text and "Denoising strength: 0.75" in text and "Size: 64x64" in text
    assert Image.open(saved[0]).size == (64, 64)

    # "Resize by" takes the size from the image: 64 x 1.5 = 96.
    page.locator("#img2img_tab_resize_by-button").click()
    set_number(page, "#img2img_scale", "1.5")
    page.locator("#img2img_scale_label").get_by_text("from 64x64 to 96x96").wait_for()
    text, saved = generate_and_check_saved(page, data, 110)
    assert "Size: 96x96" in text and Image.open(saved[0]).size == (96, 96)
    page.locator("#img2img_tab_resize_to-button").click()
    page.screenshot(path=str(tmp_path / "img2img.png"), full_page=True)


def test_sketch_sub_tab_generates(page: Any, server: tuple[RunningServer, Path], images: dict[str, Path]) -> None:
    _, data = server
    open_subtab(page, "Sketch")
    upload_to_editor(page, "#img2img_sketch", images["orange"])
    paint_stroke(page, "#img2img_sketch")
    text, _ = generate_and_check_saved(page, data, 102)
    assert "Mask blur" not in text  # a sketch is plain img2img of the drawing: no mask


def test_inpaint_with_a_mask_painted_by_mouse(page: Any, server: tuple[RunningServer, Path],
                                              images: dict[str, Path]) -> None:
    _, data = server
    open_subtab(page, "Inpaint")
    controls = page.locator("#img2img_inpaint_controls")
    controls.wait_for()  # shown on the inpaint sub-tabs only
    assert page.locator("#img2img_mask_blur input[type=number]").input_value() == "4"
    assert page.locator("#img2img_inpainting_fill").get_by_label("original").is_checked()
    assert page.locator("#img2img_inpaint_full_res").get_by_label("Whole picture").is_checked()
    assert page.locator("#img2img_inpaint_full_res_padding input[type=number]").input_value() == "32"

    # Generating before anything is painted says what to do, and keeps the prompt.
    upload_to_editor(page, "#img2maskimg", images["orange"])
    page.locator("#img2img_generate").click()
    expect_message(page, "paint over the area to repaint first")
    assert page.locator("#img2img_prompt textarea").input_value() == "a small robot"

    page.locator("#img2img_checkpoint input").click()
    page.get_by_role("option", name="tiny-inpaint.safetensors").click()
    set_number(page, "#img2img_mask_blur", "0")
    page.locator("#img2img_inpaint_full_res").get_by_label("Only masked").check()
    paint_stroke(page, "#img2maskimg")
    text, saved = generate_and_check_saved(page, data, 103)
    assert "Inpaint area: Only masked" in text and "Mask blur" not in text  # A1111 leaves out a 0 blur
    # Only the painted stroke (across the middle) may change: the unpainted corners keep the uploaded pixels.
    out = Image.open(saved[0]).convert("RGB")
    assert out.size == (64, 64)
    for corner in ((0, 0), (63, 0), (0, 63), (63, 63)):
        assert out.getpixel(corner) == ORANGE, corner
    middle_row = [out.getpixel((x, 32)) for x in range(64)] + [out.getpixel((x, 33)) for x in range(64)]
    assert any(p != ORANGE for p in middle_row), "nothing changed where the mask was painted"

    # Back to the defaults and the plain checkpoint for the tests after this one.
    set_number(page, "#img2img_mask_blur", "4")
    page.locator("#img2img_inpaint_full_res").get_by_label("Whole picture").check()
    page.locator("#img2img_checkpoint input").click()
    page.get_by_role("option", name="tiny.safetensors").click()


def test_inpaint_sketch_sub_tab_generates(page: Any, server: tuple[RunningServer, Path],
                                          images: dict[str, Path]) -> None:
    _, data = server
    open_subtab(page, "Inpaint sketch")
    page.locator("#img2img_inpaint_controls").wait_for()
    upload_to_editor(page, "#inpaint_sketch", images["orange"])
    paint_stroke(page, "#inpaint_sketch")
    text, _ = generate_and_check_saved(page, data, 104)
    assert "Mask blur: 4" in text


def test_inpaint_upload_sub_tab_generates(page: Any, server: tuple[RunningServer, Path],
                                          images: dict[str, Path]) -> None:
    _, data = server
    open_subtab(page, "Inpaint upload")
    page.locator("#img2img_inpaint_controls").wait_for()
    page.locator("#img_inpaint_base input[type=file]").set_input_files(str(images["orange"]))
    page.locator("#img_inpaint_base img").wait_for()
    page.locator("#img2img_generate").click()
    expect_message(page, "upload the mask too")
    page.locator("#img_inpaint_mask input[type=file]").set_input_files(str(images["mask"]))
    page.locator("#img_inpaint_mask img").wait_for()
    text, _ = generate_and_check_saved(page, data, 105)
    assert "Mask blur: 4" in text


def test_batch_sub_tab_processes_a_server_folder(page: Any, server: tuple[RunningServer, Path],
                                                 images: dict[str, Path]) -> None:
    _, data = server
    open_subtab(page, "Batch")
    page.locator("#img2img_generate").click()
    expect_message(page, "enter the input folder")
    page.locator("#img2img_batch_input_dir textarea").fill(str(images["batch_in"]))
    generate_and_check_saved(page, data, 106, count=2)  # empty output folder: the usual img2img folder
    assert page.locator("#img2img_gallery img").count() >= 2


def test_send_to_img2img_and_inpaint_from_txt2img_and_png_info(page: Any, server: tuple[RunningServer, Path]) -> None:
    _, data = server
    open_main_tab(page, "txt2img")
    page.locator("#txt2img_prompt textarea").fill("a lighthouse at dusk")
    for elem, value in (("#txt2img_width", "64"), ("#txt2img_height", "64"), ("#txt2img_steps", "2")):
        set_number(page, elem, value)
    generate(page, 4242, "txt2img")

    page.locator("#txt2img_send_to_img2img").click()
    prompt = page.locator("#img2img_prompt textarea")
    page.wait_for_function("el => el.value === 'a lighthouse at dusk'", arg=prompt.element_handle())
    expect_selected(page, "tab_img2img", "img2img_img2img_tab")
    page.locator("#img2img_image img").wait_for()
    assert page.locator("#img2img_seed input").input_value() == "4242"
    assert page.locator("#img2img_width input[type=number]").input_value() == "64"
    # The sent image is the init image: generating from it works without an upload.
    text, _ = generate_and_check_saved(page, data, 107)
    assert "a lighthouse at dusk" in text

    open_main_tab(page, "txt2img")
    page.locator("#txt2img_send_to_inpaint").click()
    page.locator("#img2img_inpaint_controls").wait_for()
    expect_selected(page, "tab_img2img", "img2img_inpaint_tab")
    page.locator("#img2maskimg button[aria-label=Undo]:not([disabled])").wait_for(state="attached")
    paint_stroke(page, "#img2maskimg")
    generate_and_check_saved(page, data, 108)

    # PNG Info: the saved txt2img image goes to img2img with its parameters.
    saved = next((data / "outputs" / "txt2img-images").rglob("*-4242.png"))
    prompt.fill("something else")
    open_main_tab(page, "pnginfo")
    page.locator("#pnginfo_image input[type=file]").set_input_files(str(saved))
    box = page.locator("#pnginfo_parameters textarea")
    page.wait_for_function("el => el.value.includes('Seed: 4242')", arg=box.element_handle())
    page.locator("#pnginfo_send_img2img").click()
    page.wait_for_function("el => el.value === 'a lighthouse at dusk'", arg=prompt.element_handle())
    expect_selected(page, "tab_img2img", "img2img_img2img_tab")
    page.locator("#img2img_image img").wait_for()


def test_controlnet_in_txt2img_preview_and_generate(page: Any, images: dict[str, Path]) -> None:
    open_main_tab(page, "txt2img")
    open_controlnet_unit0(page, "txt2img")
    unit = "#txt2img_controlnet_unit0"
    page.locator(f"{unit}_image input[type=file]").set_input_files(str(images["shape"]))
    page.locator(f"{unit}_image img").wait_for()
    assert not page.locator(f"{unit}_threshold_a").is_visible()  # "none" has no thresholds
    choose(page, f"{unit}_module", "canny")
    page.locator(f"{unit}_threshold_a").get_by_text("Low Threshold").wait_for()  # the module's own sliders
    assert page.locator(f"{unit}_threshold_b input[type=number]").input_value() == "200"
    page.locator(f"{unit}_run_preview").click()
    page.locator(f"{unit}_preview img").wait_for()  # the edge map, made by the preprocessor
    choose(page, f"{unit}_model", re.compile(r"^tiny-cn"))
    page.locator(f"{unit}_enable input").check()
    for elem, value in (("#txt2img_width", "64"), ("#txt2img_height", "64"), ("#txt2img_steps", "2")):
        set_number(page, elem, value)
    text = generate(page, 4343, "txt2img")
    assert "ControlNet 0" in text and "Module: canny" in text and "tiny-cn" in text
    page.locator(f"{unit}_enable input").uncheck()


def test_controlnet_in_img2img_refuses_a_unit_without_model_then_uses_the_init_image(
        page: Any, server: tuple[RunningServer, Path], images: dict[str, Path]) -> None:
    _, data = server
    open_subtab(page, "img2img")
    page.locator("#img2img_image input[type=file]").set_input_files(str(images["orange"]))
    page.locator("#img2img_image img").wait_for()
    page.locator("#img2img_prompt textarea").fill("kept as typed")
    open_controlnet_unit0(page, "img2img")
    unit = "#img2img_controlnet_unit0"
    page.locator(f"{unit}_enable input").check()
    page.locator("#img2img_generate").click()
    expect_message(page, "ControlNet Unit 0 is enabled but has no model")
    assert page.locator("#img2img_prompt textarea").input_value() == "kept as typed"
    assert page.locator(f"{unit}_enable input").is_checked()

    choose(page, f"{unit}_model", re.compile(r"^tiny-cn"))  # no control image: the init image is used
    text, _ = generate_and_check_saved(page, data, 109)
    assert "ControlNet 0" in text and "kept as typed" in text
    page.locator(f"{unit}_enable input").uncheck()

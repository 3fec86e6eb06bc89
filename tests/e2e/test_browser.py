"""The page in a real browser: every tab is there (an extension's too), broken extensions are visible, the
Settings tab saves, and PNG Info reads the parameters out of an image."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image, PngImagePlugin

from tests.e2e.browser import browser_page, open_app
from tests.e2e.server import start_server
from tests.fixtures import extensions as fx

pytestmark = [pytest.mark.e2e, pytest.mark.browser]

TABS = ["txt2img", "img2img", "Extras", "PNG Info", "Hello", "Settings", "Extensions"]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory):
    data = tmp_path_factory.mktemp("browser") / "data"
    fx.write_extension(data / "extensions", "hello", fx.HELLO)
    fx.write_extension(data / "extensions", "broken", fx.RAISES_IN_REGISTER, name="Broken <b>Ext</b>")
    running = start_server(data)
    yield running, data
    running.stop()


def open_tab(page, name: str) -> None:
    page.get_by_role("tab", name=name, exact=True).click()


def test_every_tab_and_the_extension_tab(server, tmp_path: Path) -> None:
    running, _ = server
    with browser_page() as page:
        open_app(page, running.url)
        # No checkpoint yet: the page says where to put one and offers the download, which fails clearly offline.
        assert "No checkpoint found" in page.locator("#txt2img_checkpoint_status").inner_text()
        page.locator("#txt2img_download_default").click()
        page.locator("#txt2img_checkpoint_status").get_by_text("Download it by hand").wait_for()
        tabs = page.get_by_role("tab").all_inner_texts()
        for name in TABS:
            assert name in [t.strip() for t in tabs], f"tab {name} missing from {tabs}"
        open_tab(page, "Hello")
        assert page.locator("#hello_text").inner_text().strip() == "Hello from a test extension"
        open_tab(page, "Extensions")
        table = page.locator("#extensions_table")
        table.wait_for()
        text = table.inner_text()
        assert "Hello" in text and "loaded" in text
        # The failed extension is listed with its reason, and its name is shown as text, not as HTML.
        assert "Broken <b>Ext</b>" in text and "register failed on purpose" in text
        page.screenshot(path=str(tmp_path / "extensions.png"), full_page=True)


def test_settings_tab_saves_to_config_json(server) -> None:
    running, data = server
    with browser_page() as page:
        open_app(page, running.url)
        open_tab(page, "Settings")
        page.locator("#setting_save_txt input[type=checkbox]").check()
        page.locator("#settings_apply").click()
        page.locator("#settings_result").get_by_text("Saved 1 setting(s): save_txt").wait_for()
    assert json.loads((data / "config.json").read_text())["save_txt"] is True


def test_png_info_reads_parameters(server, tmp_path: Path) -> None:
    running, _ = server
    infotext = "a red fox, snow\nNegative prompt: blurry\nSteps: 20, Sampler: DPM++ 2M, Seed: 42, Size: 64x64"
    meta = PngImagePlugin.PngInfo()
    meta.add_text("parameters", infotext)
    image_path = tmp_path / "fox.png"
    Image.new("RGB", (64, 64), "orange").save(image_path, pnginfo=meta)
    with browser_page() as page:
        open_app(page, running.url)
        open_tab(page, "PNG Info")
        page.locator("#pnginfo_image input[type=file]").set_input_files(str(image_path))
        box = page.locator("#pnginfo_parameters textarea")
        page.wait_for_function("el => el.value.includes('Seed: 42')", arg=box.element_handle())
        assert box.input_value() == infotext


def test_txt2img_generates_in_the_browser(tmp_path_factory: pytest.TempPathFactory, tmp_path: Path) -> None:
    from tests.fixtures.tiny_models import save_tiny_checkpoint

    data = tmp_path_factory.mktemp("browser-t2i") / "data"
    save_tiny_checkpoint(data / "models" / "Stable-diffusion", "sd1", name="tiny")
    running = start_server(data, "--api")
    try:
        with browser_page() as page:
            open_app(page, running.url)
            page.locator("#txt2img_prompt textarea").fill("a photo of an astronaut riding a horse, 8k")
            page.locator("#txt2img_token_counter").get_by_text("11/75").wait_for()  # CLIP's real count
            page.locator("#txt2img_prompt textarea").fill("a lighthouse at dusk")
            for elem, value in (("#txt2img_width", "64"), ("#txt2img_height", "64"), ("#txt2img_steps", "3")):
                box = page.locator(f"{elem} input[type=number]")
                box.fill(value)
                box.press("Enter")
            page.locator("#txt2img_seed input").fill("4242")
            page.locator("#txt2img_generate").click()
            info = page.locator("#txt2img_info textarea")
            page.wait_for_function("el => el.value.includes('Seed: 4242')", arg=info.element_handle(), timeout=90_000)
            assert "a lighthouse at dusk" in info.input_value() and "Size: 64x64" in info.input_value()
            page.locator("#txt2img_gallery img").first.wait_for()
            page.screenshot(path=str(tmp_path / "txt2img.png"), full_page=True)
            page.screenshot(path="/tmp/txt2img_browser.png", full_page=True)
            saved = list((data / "outputs" / "txt2img-images").rglob("*-4242.png"))
            assert len(saved) == 1

            # PNG Info reads the saved image back, and "Send to txt2img" fills the form from it.
            page.locator("#txt2img_prompt textarea").fill("something else")
            page.locator("#txt2img_seed input").fill("1")
            open_tab(page, "PNG Info")
            page.locator("#pnginfo_image input[type=file]").set_input_files(str(saved[0]))
            box = page.locator("#pnginfo_parameters textarea")
            page.wait_for_function("el => el.value.includes('Seed: 4242')", arg=box.element_handle())
            page.locator("#pnginfo_send_txt2img").click()
            prompt = page.locator("#txt2img_prompt textarea")
            page.wait_for_function("el => el.value === 'a lighthouse at dusk'", arg=prompt.element_handle())
            assert page.locator("#txt2img_seed input").input_value() == "4242"

            # Pasting an infotext into the prompt box and pressing the paste button does the same.
            prompt.fill("a red kite\nNegative prompt: rain\nSteps: 7, Sampler: Euler a, CFG scale: 4.5, Seed: 77, "
                        "Size: 128x96")
            page.locator("#txt2img_paste").click()
            page.wait_for_function("el => el.value === 'a red kite'", arg=prompt.element_handle())
            assert page.locator("#txt2img_neg_prompt textarea").input_value() == "rain"
            assert page.locator("#txt2img_seed input").input_value() == "77"
            assert page.locator("#txt2img_width input[type=number]").input_value() == "128"
            assert page.locator("#txt2img_steps input[type=number]").input_value() == "7"
    finally:
        running.stop()

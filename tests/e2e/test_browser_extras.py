"""The Extras tab in a real browser: upload an image, upscale it 2x with Lanczos, see the result and its infotext,
find the file in outputs/extras-images; a mistake is a message and keeps what was entered.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image, PngImagePlugin

from tests.e2e.browser import browser_page, open_app
from tests.e2e.server import RunningServer, start_server

pytestmark = [pytest.mark.e2e, pytest.mark.browser]

SOURCE_INFOTEXT = "a lighthouse at dusk\nSteps: 20, Sampler: Euler, Seed: 7, Size: 48x40"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RunningServer, Path]]:
    root = tmp_path_factory.mktemp("browser-extras")
    running = start_server(root / "data")
    yield running, root / "data"
    running.stop()


def set_number(page, elem: str, value: str) -> None:  # type: ignore[no-untyped-def]
    box = page.locator(f"{elem} input[type=number]")
    box.fill(value)
    box.press("Enter")


def test_upscale_an_image_with_lanczos_2x(server: tuple[RunningServer, Path], tmp_path: Path) -> None:
    running, data = server
    meta = PngImagePlugin.PngInfo()
    meta.add_text("parameters", SOURCE_INFOTEXT)
    source = tmp_path / "lighthouse.png"
    Image.new("RGB", (48, 40), "teal").save(source, pnginfo=meta)
    with browser_page() as page:
        open_app(page, running.url)
        page.get_by_role("tab", name="Extras", exact=True).click()
        page.locator("#extras_generate").wait_for()

        # Nothing uploaded yet: a message, not an exception.
        page.locator("#extras_generate").click()
        page.locator("#extras_progress").get_by_text("Single Image: upload an image first").wait_for()

        page.locator("#extras_image input[type=file]").set_input_files(str(source))
        page.locator("#extras_image img").first.wait_for()
        set_number(page, "#extras_upscaling_resize", "2")
        # Upscaler 1 is still None and no face restoration is set: the message says so, the upload stays.
        page.locator("#extras_generate").click()
        page.locator("#extras_progress").get_by_text("nothing to do").wait_for()
        assert page.locator("#extras_image img").count() >= 1

        page.locator("#extras_upscaler_1 input").click()
        page.get_by_role("option", name="Lanczos", exact=True).click()
        page.locator("#extras_generate").click()
        info = page.locator("#extras_info textarea")
        page.wait_for_function("el => el.value.includes('Postprocess upscaler: Lanczos')", arg=info.element_handle(),
                               timeout=60_000)
        assert info.input_value() == "Postprocess upscale by: 2, Postprocess upscaler: Lanczos"
        page.locator("#extras_gallery img").first.wait_for()
        assert "Saved 1 image(s)" in page.locator("#extras_progress").inner_text()
        page.screenshot(path=str(tmp_path / "extras.png"), full_page=True)

        saved = sorted((data / "outputs" / "extras-images").glob("*.png"))
        assert [p.name for p in saved] == ["00000.png"]
        with Image.open(saved[0]) as image:
            assert image.size == (96, 80)
            expected = f"{SOURCE_INFOTEXT}, Postprocess upscale by: 2, Postprocess upscaler: Lanczos"
            assert image.info["parameters"] == expected

        # Batch Process: a file that is not an image is skipped with a note; the other is saved under its name.
        broken = tmp_path / "broken.png"
        broken.write_bytes(b"not a png at all")
        page.locator("#mode_extras").get_by_role("tab", name="Batch Process", exact=True).click()
        page.locator("#extras_image_batch input[type=file]").set_input_files([str(source), str(broken)])
        # Gradio shows each name as stem and extension in separate elements: wait for both stems.
        page.wait_for_function("el => el.innerText.includes('lighthouse') && el.innerText.includes('broken')",
                               arg=page.locator("#extras_image_batch").element_handle())
        page.locator("#extras_generate").click()
        page.locator("#extras_progress").get_by_text("Skipped broken.png").wait_for(timeout=60_000)
        assert "Saved 1 image(s)" in page.locator("#extras_progress").inner_text()
    assert sorted(p.name for p in (data / "outputs" / "extras-images").glob("*.png")) == [
        "00000.png", "00001-lighthouse.png"]

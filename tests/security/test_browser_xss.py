"""Issue 9, item 5, in a real Chromium: HTML and script in infotext, prompts, file names and extension names are
shown as text and never run. The page runs behind --gradio-auth, so logging in through the form and using the
UI afterwards is checked too (the login guard must not break the page).

Every payload calls `__xss.push(tag)` if it ever runs; the test records those calls and any dialog,
and also looks for elements the payloads would have created (an `onerror` attribute, a `javascript:` link).
"""

from __future__ import annotations

import base64
import textwrap
from pathlib import Path

import pytest
from PIL import Image, PngImagePlugin

from tests.e2e.browser import browser_page
from tests.e2e.server import start_server
from tests.fixtures import extensions as fx

pytestmark = [pytest.mark.e2e, pytest.mark.browser]

USER, PASSWORD = "alice", "xss-test-Pa55"


def short_payload(tag: str) -> str:
    """Markup that runs `__xss.push(tag)` if it is ever parsed as HTML; short enough for a manifest name and free
    of double quotes, so it fits in TOML and CSV fields."""
    return f"<img src=x onerror=__xss.push('{tag}')><svg onload=__xss.push('{tag}-svg')>"


def payload(tag: str) -> str:
    """`short_payload` plus a script element and a markdown `javascript:` link, for fields without a length cap."""
    return (short_payload(tag) + f"<script>__xss.push('{tag}-script')</script>"
            f"[link](javascript:__xss.push('{tag}-md'))")


def file_payload(tag: str) -> str:
    """Markup without '/', so it can be a file name."""
    return f"<img src=x onerror=__xss.push('{tag}')>"


EXT_NAME, TAB_TITLE, SECTION, LABEL = short_payload("ext"), short_payload("tab"), payload("section"), payload("label")
BROKEN_NAME, BROKEN_ERROR = short_payload("broken"), payload("broken-error")
CHECKPOINT, STYLE = file_payload("checkpoint"), payload("style").replace(",", " ")
PROMPT, NEGATIVE, ITEM = payload("prompt"), payload("negative"), payload("png-item")

EVIL = textwrap.dedent(f'''
    def register(api):
        def build_tab():
            import gradio as gr
            gr.Markdown("the evil tab", elem_id="evil_tab_body")

        api.add_tab({TAB_TITLE!r}, build_tab, elem_id="tab_evil")
        api.add_settings({SECTION!r}, [api.Option("evil_option", "x", {LABEL!r}, "str")])
''')
BROKEN = textwrap.dedent(f'''
    def register(api):
        raise RuntimeError({BROKEN_ERROR!r})
''')

WATCH = "window.__xss = []; window.addEventListener('error', () => {});"
INJECTED = ("() => document.querySelectorAll('[onerror], [onload], a[href^=\"javascript:\"], img[src=\"x\"]')"
            ".length")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory):
    data = tmp_path_factory.mktemp("xss") / "data"
    fx.write_extension(data / "extensions", "evil", EVIL, name=EXT_NAME)
    fx.write_extension(data / "extensions", "broken", BROKEN, name=BROKEN_NAME)
    # Only listed, never loaded (--no-hashing: not even read), so its bytes do not matter.
    checkpoints = data / "models" / "Stable-diffusion"
    checkpoints.mkdir(parents=True)
    (checkpoints / f"{CHECKPOINT}.safetensors").write_bytes(b"not a real checkpoint")
    (data / "styles.csv").write_text(f"name,prompt,negative_prompt\n{STYLE},{{prompt}} styled,\n")
    running = start_server(data, "--gradio-auth", f"{USER}:{PASSWORD}", "--no-hashing")
    yield running
    running.stop()


def log_in(page, url: str) -> None:  # type: ignore[no-untyped-def]
    page.goto(url, wait_until="load")
    page.get_by_label("username").fill(USER)
    page.get_by_label("password").fill(PASSWORD)
    page.get_by_role("button", name="Login").click()
    page.get_by_role("tab", name="Extensions", exact=True).wait_for()


def assert_nothing_ran(page, dialogs: list[str]) -> None:  # type: ignore[no-untyped-def]
    assert page.evaluate("window.__xss") == [], "a payload ran"
    assert dialogs == []
    assert page.evaluate(INJECTED) == 0, "a payload became an element"


def test_markup_in_names_prompts_and_infotext_is_text(server, tmp_path: Path) -> None:
    png = tmp_path / "evil.png"
    meta = PngImagePlugin.PngInfo()
    meta.add_text("parameters", f"{PROMPT}\nNegative prompt: {NEGATIVE}\n"
                                "Steps: 3, Sampler: Euler, Seed: 5, Size: 64x64")
    meta.add_text("Title", ITEM)
    Image.new("RGB", (64, 64), "purple").save(png, pnginfo=meta)

    # Wide enough that every tab title shows without Gradio's overflow menu.
    with browser_page(width=3200) as page:
        dialogs: list[str] = []
        page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
        page.add_init_script(WATCH)
        log_in(page, server.url)

        # Extension names, tab titles and load errors; the failed extension is also in the notices.
        tabs = [t.strip() for t in page.get_by_role("tab").all_inner_texts()]
        assert TAB_TITLE in tabs, tabs
        assert BROKEN_NAME in page.locator("#notices").inner_text()
        page.get_by_role("tab", name="Extensions", exact=True).click()
        table = page.locator("#extensions_table")
        table.wait_for()
        text = table.inner_text()
        assert EXT_NAME in text and BROKEN_NAME in text and BROKEN_ERROR in text
        page.get_by_role("tab", name="Settings", exact=True).click()
        page.get_by_text(LABEL, exact=True).first.wait_for()

        # A checkpoint whose file name is markup, and a style whose name is.
        page.get_by_role("tab", name="txt2img", exact=True).click()
        assert CHECKPOINT in page.locator("#txt2img_checkpoint input").input_value()
        page.locator("#txt2img_styles input").click()
        page.locator("[role=option]", has_text=STYLE).wait_for()
        page.keyboard.press("Escape")

        # PNG Info of an image whose prompt, parameters and other text items are markup, then "Send to txt2img".
        # The infotext box is the same kind of component that shows a finished generation's infotext (a
        # Textbox), so this also covers what txt2img shows after Generate, without a minute of CPU sampling.
        page.get_by_role("tab", name="PNG Info", exact=True).click()
        page.locator("#pnginfo_image input[type=file]").set_input_files(str(png))
        box = page.locator("#pnginfo_parameters textarea")
        page.wait_for_function("el => el.value.includes('Seed: 5')", arg=box.element_handle())
        assert box.input_value().startswith(PROMPT)
        assert ITEM in page.locator("#pnginfo_other textarea").input_value()
        page.locator("#pnginfo_send_txt2img").click()
        prompt = page.locator("#txt2img_prompt textarea")
        page.wait_for_function("el => el.value.includes('__xss')", arg=prompt.element_handle())
        assert prompt.input_value() == PROMPT
        assert page.locator("#txt2img_neg_prompt textarea").input_value() == NEGATIVE
        page.locator("#txt2img_token_counter").get_by_text("/75").wait_for()

        page.get_by_role("tab", name=TAB_TITLE, exact=True).click()
        page.locator("#evil_tab_body").wait_for()
        page.wait_for_timeout(500)  # a broken image's onerror fires after its failed load
        page.screenshot(path=str(tmp_path / "xss.png"), full_page=True)
        assert_nothing_ran(page, dialogs)
        # The detector itself works: the same markup, inserted as HTML, does run.
        page.evaluate("html => document.body.insertAdjacentHTML('beforeend', html)", short_payload("control"))
        page.wait_for_function("() => window.__xss.includes('control')")


def test_error_pages_do_not_render_markup(server) -> None:
    """URLs with markup in them: the answers (401, 404, the route's own error naming the job id) are JSON, which
    the browser shows as text."""
    with browser_page() as page:
        dialogs: list[str] = []
        page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
        page.add_init_script(WATCH)
        token = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
        page.set_extra_http_headers({"Authorization": f"Basic {token}"})
        for path in ("/studio/v1/jobs/" + file_payload("job"), "/sdapi/v1/" + file_payload("404"),
                     "/gradio_api/file=" + file_payload("file"), "/" + file_payload("ui-404")):
            response = page.goto(server.url + path, wait_until="load")
            assert response is not None and response.status in (401, 403, 404), path
            assert "html" not in (response.headers.get("content-type") or ""), path
            assert_nothing_ran(page, dialogs)

"""The tabbed page: core tabs, then extension tabs, then Settings and Extensions."""

from __future__ import annotations

import functools
import html
import traceback
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import gradio as gr
from PIL import Image, UnidentifiedImageError

from modules.engine.image_metadata import read_image_info
from modules.ui import cluster_tab, extensions_tab, extras_tab, img2img_tab, pnginfo_tab, settings_tab, txt2img_tab
from modules.ui.ui_config import apply_ui_config

if TYPE_CHECKING:
    from modules.services import Services

CSS = """
#notices { border-left: 4px solid #d97706; padding-left: 0.75em; }
.tab-error { color: #b91c1c; }
"""

CORE_TABS = (
    ("txt2img", "tab_txt2img", txt2img_tab.build),
    ("img2img", "tab_img2img", img2img_tab.build),
    ("Extras", "tab_extras", extras_tab.build),
    ("PNG Info", "tab_pnginfo", pnginfo_tab.build),
)

LAST_TABS = (
    ("Cluster", "tab_cluster", cluster_tab.build),
    ("Settings", "tab_settings", settings_tab.build),
    ("Extensions", "tab_extensions", extensions_tab.build),
)


def build_ui(services: Services) -> gr.Blocks:
    with gr.Blocks(title="SD Studio", analytics_enabled=False) as demo:
        notices = gr.Markdown(elem_id="notices", visible=False)
        with gr.Tabs(elem_id="tabs") as tabs:
            built = {}
            for title, elem_id, build in CORE_TABS:
                with gr.Tab(title, id=elem_id, elem_id=elem_id):
                    built[elem_id] = build(services)
            image_inputs = _extension_tabs(services, reserved={elem_id for _, elem_id, _ in CORE_TABS + LAST_TABS})
            for title, elem_id, build in LAST_TABS:
                with gr.Tab(title, id=elem_id, elem_id=elem_id):
                    build(services)
        _send_to(tabs, built["tab_pnginfo"], built["tab_txt2img"], built["tab_img2img"])
        _send_to_extensions(tabs, (built["tab_txt2img"], built["tab_img2img"]), image_inputs)
    services.notices.extend(apply_ui_config(demo, services.paths.ui_config_file))
    if services.notices:
        notices.value = "\n".join(f"- {html.escape(n)}" for n in services.notices)
        notices.visible = True
    return demo


def _send_to(tabs: gr.Tabs, png: pnginfo_tab.PngInfoTab, t2i: txt2img_tab.Txt2ImgTab,
             i2i: img2img_tab.Img2ImgTab) -> None:
    """The "Send to" buttons: PNG Info fills txt2img's form from the infotext; PNG Info and txt2img's results
    send the image and its parameters to img2img's img2img or Inpaint sub-tab. Each switches to the tab."""
    png.send_to_txt2img.click(lambda text: [*txt2img_tab.paste_updates(t2i.keys, text), gr.Tabs(selected="tab_txt2img")],
                              png.parameters, [*t2i.outputs, tabs], api_visibility="private")
    to_img2img = [*i2i.send_outputs, tabs]

    def send(path: str | None, fallback_infotext: str, target: str) -> list[Any]:
        if not path:
            return [gr.update() for _ in to_img2img]
        size, infotext = _size_and_infotext(path)
        return [*i2i.send_updates(path, size, infotext or fallback_infotext or "", target),
                gr.Tabs(selected="tab_img2img")]

    for button, target in ((png.send_to_img2img, img2img_tab.IMG2IMG), (png.send_to_inpaint, img2img_tab.INPAINT)):
        button.click(functools.partial(_send_png, send, target), png.image, to_img2img, api_visibility="private")
    for button, target in ((t2i.send_to_img2img, img2img_tab.IMG2IMG), (t2i.send_to_inpaint, img2img_tab.INPAINT)):
        button.click(functools.partial(_send_gallery, send, target), [t2i.gallery, t2i.selected, t2i.info],
                     to_img2img, api_visibility="private")


def _send_png(send: Callable[..., list[Any]], target: str, path: str | None) -> list[Any]:
    return send(path, "", target)


def _send_gallery(send: Callable[..., list[Any]], target: str, gallery: list[tuple[str, str | None]] | None,
                  selected: int | None, info: str) -> list[Any]:
    """The clicked gallery image, or the first one that is not the grid; the info box is the infotext of last
    resort (an image saved without metadata)."""
    path, is_first = _picked(gallery, selected)
    # The info box holds the first image's infotext (txt2img's generator shows that one).
    return send(path, info if is_first else "", target)


def _picked(gallery: list[tuple[str, str | None]] | None, selected: int | None) -> tuple[str | None, bool]:
    """(path of the clicked image or else the first that is not the grid, whether that is the first one)."""
    items = gallery or []
    if not items:
        return None, False
    first = next((i for i, (_, caption) in enumerate(items) if caption != "grid"), 0)
    index = selected if selected is not None and 0 <= selected < len(items) else first
    return items[index][0], index == first


def _send_to_extensions(tabs: gr.Tabs, sources: tuple[Any, ...], image_inputs: dict[str, gr.Image]) -> None:
    """"Send to <extension tab>" from txt2img and img2img: the picked result goes into the tab's image input
    and the tab opens. A button whose tab failed to build is hidden."""
    for source in sources:
        for elem_id, button in source.send_to_extensions.items():
            target = image_inputs.get(elem_id)
            if target is None:
                button.visible = False
                continue
            button.click(functools.partial(_send_picked, elem_id), [source.gallery, source.selected],
                         [target, tabs], api_visibility="private")


def _send_picked(elem_id: str, gallery: list[tuple[str, str | None]] | None, selected: int | None) -> list[Any]:
    path, _ = _picked(gallery, selected)
    if path is None:
        return [gr.update(), gr.update()]
    return [path, gr.Tabs(selected=elem_id)]


def _size_and_infotext(path: str) -> tuple[tuple[int, int] | None, str]:
    try:
        with Image.open(path) as image:
            return image.size, read_image_info(image)[0] or ""
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError):
        return None, ""  # img2img's own checks say what is wrong with the image when it is used


def _extension_tabs(services: Services, reserved: set[str]) -> dict[str, gr.Image]:
    """Build the extension tabs; returns the image inputs of those that take images, by tab id."""
    image_inputs: dict[str, gr.Image] = {}
    for record, tab in services.extensions.tabs():
        if tab.elem_id in reserved:
            services.extensions.fail(record, f"its tab id '{tab.elem_id}' is taken by a core tab")
            continue
        reserved.add(tab.elem_id)
        with gr.Tab(tab.title, id=tab.elem_id, elem_id=tab.elem_id):
            try:
                built = tab.build()
                if tab.takes_images:
                    if not isinstance(built, gr.Image):
                        raise TypeError(f"a tab that takes images must return its gr.Image, not {type(built).__name__}")
                    image_inputs[tab.elem_id] = built
            except Exception as e:  # noqa: BLE001 - a broken tab must not take the page down
                services.extensions.fail(record, f"its tab could not be built: {e}", traceback.format_exc())
                gr.Markdown(f"This tab failed to build: {html.escape(str(e))}. See the Extensions tab.",
                            elem_classes=["tab-error"])
    return image_inputs

"""The tabbed page: core tabs, then extension tabs, then Settings and Extensions."""

from __future__ import annotations

import html
import traceback
from typing import TYPE_CHECKING

import gradio as gr

from modules.ui import extensions_tab, img2img_tab, pnginfo_tab, settings_tab, txt2img_tab
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
    ("Extras", "tab_extras", img2img_tab.build_extras),
    ("PNG Info", "tab_pnginfo", pnginfo_tab.build),
)

LAST_TABS = (
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
            _extension_tabs(services, reserved={elem_id for _, elem_id, _ in CORE_TABS + LAST_TABS})
            for title, elem_id, build in LAST_TABS:
                with gr.Tab(title, id=elem_id, elem_id=elem_id):
                    build(services)
        _send_to(tabs, built["tab_pnginfo"], built["tab_txt2img"])
    services.notices.extend(apply_ui_config(demo, services.paths.ui_config_file))
    if services.notices:
        notices.value = "\n".join(f"- {html.escape(n)}" for n in services.notices)
        notices.visible = True
    return demo


def _send_to(tabs: gr.Tabs, png: pnginfo_tab.PngInfoTab, t2i: txt2img_tab.Txt2ImgTab) -> None:
    """PNG Info's "Send to txt2img": fill the txt2img form from the infotext and switch to that tab."""
    png.send_to_txt2img.click(lambda text: [*txt2img_tab.paste_updates(t2i.keys, text), gr.Tabs(selected="tab_txt2img")],
                              png.parameters, [*t2i.outputs, tabs], api_visibility="private")


def _extension_tabs(services: Services, reserved: set[str]) -> None:
    for record, tab in services.extensions.tabs():
        if tab.elem_id in reserved:
            services.extensions.fail(record, f"its tab id '{tab.elem_id}' is taken by a core tab")
            continue
        reserved.add(tab.elem_id)
        with gr.Tab(tab.title, elem_id=tab.elem_id):
            try:
                tab.build()
            except Exception as e:  # noqa: BLE001 - a broken tab must not take the page down
                services.extensions.fail(record, f"its tab could not be built: {e}", traceback.format_exc())
                gr.Markdown(f"This tab failed to build: {html.escape(str(e))}. See the Extensions tab.",
                            elem_classes=["tab-error"])

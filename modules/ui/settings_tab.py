"""Settings: generated from the option definitions, one accordion per section (core and extensions)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import gradio as gr

from modules.errors import UserError
from modules.settings import Option
from modules.ui import downloads_panel

if TYPE_CHECKING:
    from modules.services import Services


def component_for(option: Option, value: Any) -> gr.components.Component:
    """The widget for one option, with the key as its element id so tests and users can find it."""
    common: dict[str, Any] = {"label": option.label, "elem_id": f"setting_{option.key}", "info": option.help or None}
    if option.kind == "bool":
        return gr.Checkbox(value=value, **common)
    if option.kind in ("int", "float") and option.minimum is not None and option.maximum is not None:
        step = option.step or (1 if option.kind == "int" else 0.01)
        return gr.Slider(minimum=option.minimum, maximum=option.maximum, step=step, value=value, **common)
    if option.kind in ("int", "float"):
        return gr.Number(value=value, precision=0 if option.kind == "int" else None, **common)
    if option.kind == "choice":
        return gr.Dropdown(choices=list(option.choices), value=value, **common)
    if option.kind == "list":
        return gr.Dropdown(choices=list(option.choices), value=value, multiselect=True,
                           allow_custom_value=not option.choices, **common)
    return gr.Textbox(value=value, **common)


def apply(services: Services, keys: list[str], values: tuple[Any, ...]) -> str:
    try:
        changed = services.settings.update(dict(zip(keys, values, strict=True)))
    except UserError as e:
        return f"Nothing was saved: {e.message}"
    if not changed:
        return "No setting changed."
    restart = [k for k in changed if services.settings.option(k).restart]
    note = f" Restart the app to apply: {', '.join(restart)}." if restart else ""
    return f"Saved {len(changed)} setting(s): {', '.join(changed)}.{note}"


def build(services: Services) -> None:
    settings = services.settings
    widgets: dict[str, gr.components.Component] = {}
    for section in settings.sections():
        shown = [o for o in section.options if not o.hidden and not o.secret]
        if not shown:
            continue
        owner = "" if section.owner == "core" else f" (extension {section.owner})"
        with gr.Accordion(section.label + owner, open=True, elem_id=f"settings_section_{section.id}"):
            for option in shown:
                widgets[option.key] = component_for(option, settings.get(option.key))
    keys = list(widgets)
    button = gr.Button("Apply settings", variant="primary", elem_id="settings_apply")
    result = gr.Markdown(elem_id="settings_result")
    button.click(lambda *values: apply(services, keys, values), [widgets[k] for k in keys], result,
                 api_visibility="private")
    downloads_panel.build(services)

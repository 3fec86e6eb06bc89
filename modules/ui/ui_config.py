"""ui-config.json: A1111's per-field UI defaults (`"txt2img/Sampling steps/value": 20`, `.../maximum`, ...).

At start the file is read and applied to the built page, then written back with every field that was missing,
so users can find and edit any default. A broken file is backed up and ignored with a visible notice, and a
value that does not fit its field (a string for a slider, a choice that does not exist) is ignored with a
notice instead of breaking the page.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import gradio as gr

from modules import atomic

log = logging.getLogger(__name__)

TABS = ("txt2img", "img2img", "extras", "pnginfo")
FIELDS = {
    gr.Slider: ("value", "minimum", "maximum", "step", "visible"),
    gr.Number: ("value", "visible"),
    gr.Textbox: ("value", "visible"),
    gr.Checkbox: ("value", "visible"),
    gr.Dropdown: ("value", "visible"),
}


def apply_ui_config(blocks: gr.Blocks, path: Path) -> list[str]:
    """Apply `path` to the components of `blocks`, write back the defaults it lacked; returns notices."""
    stored, notices = _read(path)
    known: dict[str, Any] = {}
    for component in blocks.blocks.values():
        base = _key_base(component)
        if base is None:
            continue
        for field in FIELDS[type(component)]:
            key = f"{base}/{field}"
            if key in stored:
                problem = _set(component, field, stored[key])
                if problem:
                    notices.append(f"ui-config.json: {key}: {problem}; the built-in default is used")
            value = getattr(component, field)
            known[key] = "" if value is None and isinstance(component, gr.Textbox) else value
    missing = {k: v for k, v in known.items() if k not in stored and _jsonable(v)}
    if missing:
        try:
            atomic.write_json(path, {**stored, **missing})
        except OSError as e:
            log.warning("could not write %s: %s", path, e)
    for notice in notices:
        log.warning(notice)
    return notices


def _key_base(component: Any) -> str | None:
    if type(component) not in FIELDS:
        return None
    elem_id, label = getattr(component, "elem_id", None) or "", getattr(component, "label", None)
    tab = elem_id.split("_", 1)[0]
    return f"{tab}/{label}" if tab in TABS and label else None


def _set(component: Any, field: str, value: Any) -> str | None:
    if field == "visible":
        if not isinstance(value, bool):
            return "must be true or false"
    elif field in ("minimum", "maximum", "step") or isinstance(component, (gr.Slider, gr.Number)):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return "must be a number"
        if field == "value" and isinstance(component, gr.Slider) and not component.minimum <= value <= component.maximum:
            return f"must be between {component.minimum} and {component.maximum}"
    elif isinstance(component, gr.Checkbox) and not isinstance(value, bool):
        return "must be true or false"
    elif isinstance(component, gr.Dropdown) and field == "value" and not _valid_choice(component, value):
        return f"{value!r} is not one of the choices"
    elif isinstance(component, gr.Textbox) and not isinstance(value, str):
        return "must be text"
    setattr(component, field, value)
    return None


def _valid_choice(dropdown: Any, value: Any) -> bool:
    choices = [c[1] if isinstance(c, tuple) else c for c in (dropdown.choices or [])]
    values = value if isinstance(value, list) and dropdown.multiselect else [value]
    return all(v in choices for v in values if v is not None)


def _read(path: Path) -> tuple[dict[str, Any], list[str]]:
    if not path.exists():
        return {}, []
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(data, dict):
            raise ValueError("the top level is not a JSON object")
        return data, []
    except (OSError, UnicodeDecodeError, ValueError) as e:
        backup = path.with_name(f"{path.name}.corrupt-{time.strftime('%Y%m%d-%H%M%S')}")
        path.replace(backup)
        return {}, [f"ui-config.json could not be read ({e}); it was saved as {backup.name} and the built-in "
                    "UI defaults are used"]


def _jsonable(value: Any) -> bool:
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        return False
    return True

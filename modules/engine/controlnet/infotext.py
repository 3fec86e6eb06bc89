"""sd-webui-controlnet's infotext: one `ControlNet <n>` parameter per enabled unit, whose value is itself a
`Field Name: value` list (A1111 then JSON-quotes it, since it holds commas and colons)::

    ControlNet 0: "Module: canny, Model: control_v11p_sd15_canny [d14c016b], Weight: 1.0, Resize Mode: Crop and
    Resize, Processor Res: 512, Threshold A: 100, Threshold B: 200, Guidance Start: 0.0, Guidance End: 1.0,
    Pixel Perfect: False, Control Mode: Balanced"

Field names are the unit's field names with words capitalised (`processor_res` -> `Processor Res`), in the
extension's order; values are written as Python prints them, so they read back with `parse_unit`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

PREFIX = "ControlNet"
FIELDS = ("module", "model", "weight", "resize_mode", "processor_res", "threshold_a", "threshold_b",
          "guidance_start", "guidance_end", "pixel_perfect", "control_mode")
_KEY_RE = re.compile(rf"^{PREFIX} (\d+)$")


def unit_key(index: int) -> str:
    return f"{PREFIX} {index}"


def display_name(field: str) -> str:
    """`processor_res` -> `Processor Res`, as the extension names fields in infotext."""
    return " ".join(word.capitalize() for word in field.split("_"))


def field_name(display: str) -> str:
    return "_".join(word.lower() for word in display.split(" "))


def format_unit(values: Mapping[str, Any]) -> str:
    """A unit's infotext value from its field values (missing fields are left out)."""
    parts = []
    for field in FIELDS:
        if field not in values or values[field] is None:
            continue
        # The list is split on "," and ": " when read back, so a value may hold neither (model names rarely do).
        text = str(values[field]).replace(",", " ").replace(": ", " ")
        parts.append(f"{display_name(field)}: {text}")
    return ", ".join(parts)


def parse_unit(text: str) -> dict[str, Any]:
    """A unit's fields from its infotext value: booleans, numbers and text, as the extension reads them."""
    fields: dict[str, Any] = {}
    for item in text.split(","):
        key, sep, value = item.strip().partition(": ")
        if sep:
            fields[field_name(key.strip())] = _value(value.strip())
    return fields


def units_from_params(params: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The `ControlNet <n>` entries of parsed infotext as unit field dicts (enabled), in unit order."""
    found = []
    for key, value in params.items():
        match = _KEY_RE.match(str(key))
        if match and isinstance(value, str):
            found.append((int(match.group(1)), {"enabled": True, **parse_unit(value)}))
    return [fields for _, fields in sorted(found, key=lambda item: item[0])]


def number(value: float | int | None) -> str | None:
    """A threshold as the extension's sliders give it: whole numbers without a decimal point."""
    if value is None:
        return None
    value = float(value)
    return str(int(value)) if value.is_integer() else str(value)


def _value(text: str) -> Any:
    if text in ("True", "False"):
        return text == "True"
    for convert in (int, float):
        try:
            return convert(text)
        except ValueError:
            pass
    return text

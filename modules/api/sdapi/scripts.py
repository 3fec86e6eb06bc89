"""`alwayson_scripts` in /sdapi/v1 requests, routed to the extension that registered that title.

A1111 clients send `{"alwayson_scripts": {"<title>": {"args": [...]}}}`; an extension answers through
`api.add_alwayson_script(title, apply)`. ControlNet is built in: its title `controlnet` takes sd-webui-controlnet's
unit list and becomes the request's `controlnet` field. An unknown title is A1111's 422; bad args are the client's
400; a script that crashes fails its extension (shown in the Extensions tab) and the request gets a 500 saying so.
"""

from __future__ import annotations

import traceback
from typing import Any

from modules.api.sdapi.errors import UnknownScript
from modules.engine.controlnet import ControlNetUnit
from modules.engine.requests import GenerationRequest, Txt2ImgRequest
from modules.errors import UserError, from_validation
from modules.services import Services

CONTROLNET = "controlnet"


class ScriptFailed(UserError):
    """The extension's script crashed: not the client's mistake, so a 500 with a clear message."""

    status_code = 500


def builtin_titles() -> list[str]:
    return [CONTROLNET]


def apply_scripts(services: Services, scripts: dict[str, Any], fields: dict[str, Any],
                  model: type[GenerationRequest] = Txt2ImgRequest) -> None:
    """Let each named script change the request `fields` in place, in the order the client gave them."""
    available = services.extensions.alwayson_scripts()
    for title, body in scripts.items():
        if str(title).lower() == CONTROLNET:
            fields["controlnet"] = controlnet_units(body)
            continue
        entry = available.get(str(title).lower())
        if entry is None:
            known = ", ".join(["ControlNet", *(script.title for _, script in available.values())])
            raise UnknownScript(f"always on script {title} not found; available: {known}", field="alwayson_scripts")
        record, script = entry
        args = body.get("args", []) if isinstance(body, dict) else body
        if not isinstance(args, list):
            raise UserError(f"alwayson_scripts.{title}.args must be a list", field="alwayson_scripts")
        try:
            changes = script.apply(list(args), dict(fields)) or {}
        except (ValueError, TypeError) as e:
            raise UserError(f"{script.title}: {e}", field="alwayson_scripts") from None
        except Exception as e:  # noqa: BLE001 - an extension's bug; it must not look like the client's
            services.extensions.fail(record, f"its always-on script '{script.title}' raised {type(e).__name__}: {e}",
                                     traceback.format_exc())
            raise ScriptFailed(f"the script '{script.title}' failed inside extension {record.id}; "
                               "see the Extensions tab") from None
        unknown = sorted(set(changes) - set(model.model_fields))
        if unknown:
            raise ScriptFailed(f"the script '{script.title}' (extension {record.id}) set unknown fields: "
                               f"{', '.join(unknown)}")
        fields.update(changes)


def controlnet_units(body: Any) -> list[ControlNetUnit]:
    """sd-webui-controlnet's `{"args": [unit, ...]}`; disabled units and empty placeholders are dropped."""
    from pydantic import ValidationError

    args = body.get("args", []) if isinstance(body, dict) else body
    if not isinstance(args, list):
        raise UserError("alwayson_scripts.controlnet.args must be a list of units", field="alwayson_scripts")
    units = []
    for index, arg in enumerate(args):
        if not isinstance(arg, dict):
            raise UserError(f"alwayson_scripts.controlnet.args[{index}] must be an object (a ControlNet unit)",
                            field="alwayson_scripts")
        try:
            unit = ControlNetUnit.model_validate(arg)
        except ValidationError as e:
            raise from_validation(e, prefix=f"ControlNet unit {index}: ") from None
        except UserError as e:
            raise UserError(f"ControlNet unit {index}: {e.message}", field="alwayson_scripts") from None
        if unit.enabled:
            units.append(unit)
    return units

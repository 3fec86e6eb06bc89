"""Option definitions: what a setting is, its default, its bounds, and how a value is checked."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

OptionKind = Literal["bool", "int", "float", "str", "choice", "list"]


class InvalidValue(ValueError):
    """A value that does not fit its option; the message says what would."""


@dataclass(frozen=True)
class Option:
    """One setting. `kind` drives validation and the Settings-tab widget."""

    key: str
    default: Any
    label: str
    kind: OptionKind
    choices: tuple[str, ...] = ()
    minimum: float | None = None
    maximum: float | None = None
    step: float | None = None
    help: str = ""
    restart: bool = False  # applied on the next start only
    hidden: bool = False  # kept in config.json, but edited elsewhere (e.g. the Extensions tab)
    secret: bool = False  # never shown through the API or in logs

    def __post_init__(self) -> None:
        # A broken default is a programming error in core or an extension; fail at registration.
        self.validate(self.default)

    def validate(self, value: Any) -> Any:
        """Return `value` normalised to this option's type, or raise InvalidValue."""
        checker = _CHECKERS[self.kind]
        return checker(self, value)


def _check_bool(opt: Option, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    raise InvalidValue(f"{opt.key} must be true or false, not {value!r}")


def _check_number(opt: Option, value: Any) -> int | float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InvalidValue(f"{opt.key} must be a number, not {value!r}")
    if opt.kind == "int":
        if isinstance(value, float) and not value.is_integer():
            raise InvalidValue(f"{opt.key} must be a whole number, not {value!r}")
        value = int(value)
    elif not math.isfinite(value):
        raise InvalidValue(f"{opt.key} must be a finite number, not {value!r}")
    else:
        value = float(value)
    if opt.minimum is not None and value < opt.minimum:
        raise InvalidValue(f"{opt.key} must be at least {opt.minimum}, not {value}")
    if opt.maximum is not None and value > opt.maximum:
        raise InvalidValue(f"{opt.key} must be at most {opt.maximum}, not {value}")
    return value


def _check_str(opt: Option, value: Any) -> str:
    if not isinstance(value, str):
        raise InvalidValue(f"{opt.key} must be text, not {value!r}")
    if "\x00" in value:
        raise InvalidValue(f"{opt.key} must not contain NUL characters")
    return value


def _check_choice(opt: Option, value: Any) -> str:
    if value in opt.choices:
        return value
    raise InvalidValue(f"{opt.key} must be one of {', '.join(opt.choices)}, not {value!r}")


def _check_list(opt: Option, value: Any) -> list[str]:
    if isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
        if opt.choices:
            bad = [v for v in value if v not in opt.choices]
            if bad:
                raise InvalidValue(f"{opt.key}: unknown entries {bad}; valid: {', '.join(opt.choices)}")
        return list(value)
    raise InvalidValue(f"{opt.key} must be a list of text values, not {value!r}")


_CHECKERS = {
    "bool": _check_bool,
    "int": _check_number,
    "float": _check_number,
    "str": _check_str,
    "choice": _check_choice,
    "list": _check_list,
}


@dataclass(frozen=True)
class Section:
    """A group of options shown together in the Settings tab. `owner` is "core" or an extension id."""

    id: str
    label: str
    options: Sequence[Option] = field(default_factory=tuple)
    owner: str = "core"

"""Errors that the user caused and can fix.

The API maps them to 4xx responses and the UI shows their message next to the field. Anything else that
escapes is a bug: it is logged with its traceback and the user gets a short message.
"""

from __future__ import annotations

from typing import Any


class UserError(Exception):
    """A mistake in what the user asked for, with a message written for them."""

    status_code = 400

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field

    def to_json(self) -> dict[str, str | None]:
        return {"error": type(self).__name__, "detail": self.message, "field": self.field}


class AccessDenied(UserError):
    """The action is not allowed with the way the app was started (e.g. shared on the LAN)."""

    status_code = 403


class NotFound(UserError):
    status_code = 404


def from_validation(error: Any, prefix: str = "") -> UserError:
    """A pydantic ValidationError as a UserError: its first problem, "field: message", without pydantic's
    "Value error, " prefix on messages our own validators wrote."""
    first = error.errors()[0]
    field = ".".join(map(str, first.get("loc", ()))) or None
    message = str(first.get("msg", "")).removeprefix("Value error, ")
    return UserError(f"{prefix}{field}: {message}" if field else f"{prefix}{message}", field=field)

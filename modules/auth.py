"""Logins: --gradio-auth for the UI, --api-auth (HTTP Basic) for every REST route.

Unlike A1111, giving only --gradio-auth does not leave the REST API open: the REST routes then accept the UI
logins too. A password never appears in a log line or an error message.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import secrets
from collections.abc import Awaitable, Callable, Mapping, MutableMapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from modules.cli import CliError

# Paths served by our REST adapters (the Gradio UI guards its own routes with its login page).
REST_PREFIXES = ("/sdapi/", "/controlnet/", "/studio/", "/ext/", "/docs", "/redoc", "/openapi.json")

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


@dataclass(frozen=True)
class Credentials:
    """user -> password. Empty means no login is asked for."""

    logins: Mapping[str, str] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.logins)

    def check(self, user: str, password: str) -> bool:
        expected = self.logins.get(user)
        # compare_digest on both branches so that timing does not reveal which user names exist
        if expected is None:
            secrets.compare_digest(password.encode(), password.encode())
            return False
        return secrets.compare_digest(password.encode(), expected.encode())

    def pairs(self) -> list[tuple[str, str]]:
        return list(self.logins.items())


def parse_logins(text: str, source: str) -> dict[str, str]:
    """`user:pass[,user2:pass2]` (commas or newlines). The password may contain ':'; never echoed back."""
    logins: dict[str, str] = {}
    for n, item in enumerate((part.strip() for part in text.replace("\n", ",").split(",")), start=1):
        if not item:
            continue
        user, sep, password = item.partition(":")
        if not sep or not user or not password:
            raise CliError(f"{source}: entry {n} is not in user:password form")
        logins[user] = password
    return logins


def from_args(args: argparse.Namespace) -> tuple[Credentials, Credentials]:
    """(UI logins, REST logins). REST falls back to the UI logins when --api-auth is not given."""
    ui: dict[str, str] = {}
    if args.gradio_auth:
        ui.update(parse_logins(args.gradio_auth, "--gradio-auth"))
    if args.gradio_auth_path:
        path = Path(args.gradio_auth_path).expanduser()
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as e:
            raise CliError(f"--gradio-auth-path: cannot read {path}: {e.strerror}") from None
        ui.update(parse_logins(text, f"--gradio-auth-path {path}"))
    api = parse_logins(args.api_auth, "--api-auth") if args.api_auth else dict(ui)
    return Credentials(ui), Credentials(api)


class BasicAuthMiddleware:
    """ASGI middleware: HTTP Basic on REST paths; anything else passes through to the UI's own login."""

    def __init__(self, app: ASGIApp, credentials: Credentials, prefixes: tuple[str, ...] = REST_PREFIXES) -> None:
        self.app = app
        self.credentials = credentials
        self.prefixes = prefixes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket") or not self._guarded(scope["path"]):
            await self.app(scope, receive, send)
            return
        if self._authorized(scope):
            await self.app(scope, receive, send)
            return
        await _send_401(scope, send)

    def _guarded(self, path: str) -> bool:
        return bool(self.credentials) and path.startswith(self.prefixes)

    def _authorized(self, scope: Scope) -> bool:
        header = dict(scope.get("headers") or []).get(b"authorization", b"")
        scheme, _, encoded = header.partition(b" ")
        if scheme.lower() != b"basic":
            return False
        try:
            user, sep, password = base64.b64decode(encoded, validate=True).decode("utf-8").partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return False
        return bool(sep) and self.credentials.check(user, password)


async def _send_401(scope: Scope, send: Send) -> None:
    if scope["type"] == "websocket":
        await send({"type": "websocket.close", "code": 1008})
        return
    body = b'{"error":"Unauthorized","detail":"this route needs a login (HTTP Basic, see --api-auth)"}'
    await send({
        "type": "http.response.start",
        "status": 401,
        "headers": [
            (b"content-type", b"application/json"),
            (b"www-authenticate", b'Basic realm="SD Studio"'),
            (b"content-length", str(len(body)).encode()),
        ],
    })
    await send({"type": "http.response.body", "body": body})

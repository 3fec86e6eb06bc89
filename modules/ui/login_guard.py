"""With --gradio-auth, every UI route needs a logged-in session, except the login page and what it loads.

Gradio guards most of its routes with its login, but not all: in Gradio 6 `/gradio_api/cancel`, `/reset`,
`/heartbeat/…`, `/stream/…` and `/startup-events` answer anyone. On a shared network that lets a stranger cancel
other people's jobs and hold connections open. Rather than list Gradio's gaps (they change between versions),
this guard refuses by default: a request outside the public login assets goes on only when Gradio's own
`login_check` route accepts its session cookie.
"""

from __future__ import annotations

import json
from typing import Any

from modules.auth import REST_PREFIXES, ASGIApp, Receive, Scope, Send

LOGIN_CHECK = "/gradio_api/login_check"
UI_AUTH_MESSAGE = "SD Studio: log in with a --gradio-auth login."
# What the browser needs before it has logged in: the page shell, the login form's route, and static files.
PUBLIC_PATHS = frozenset({"/", "/login", "/login/", "/logout", LOGIN_CHECK, LOGIN_CHECK + "/", "/favicon.ico",
                          "/theme.css", "/gradio_api/theme.css", "/robots.txt", "/manifest.json", "/pwa_icon"})
PUBLIC_PREFIXES = ("/assets/", "/static/", "/svelte/", "/pwa_icon/")


def is_public(path: str) -> bool:
    return path in PUBLIC_PATHS or path.startswith(PUBLIC_PREFIXES)


class UiLoginMiddleware:
    """ASGI middleware for the app that mounts the UI; REST paths are left to `BasicAuthMiddleware`."""

    def __init__(self, app: ASGIApp, auth_message: str, rest_prefixes: tuple[str, ...] = REST_PREFIXES) -> None:
        self.app = app
        self.auth_message = auth_message
        self.rest_prefixes = rest_prefixes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if (scope["type"] not in ("http", "websocket") or path.startswith(self.rest_prefixes) or is_public(path)
                or await self._logged_in(scope)):
            await self.app(scope, receive, send)
            return
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008})
            return
        # The shape of Gradio's own 401, so the page shows its login form with the message.
        body = json.dumps({"detail": {"error": "Not authenticated", "auth_message": self.auth_message}}).encode()
        await send({"type": "http.response.start", "status": 401,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})

    async def _logged_in(self, scope: Scope) -> bool:
        """Ask Gradio's login_check, in process, with this request's cookies: 200 means a valid session."""
        check: dict[str, Any] = {
            "type": "http", "asgi": scope.get("asgi", {"version": "3.0"}), "http_version": "1.1", "method": "GET",
            "scheme": scope.get("scheme", "http"), "path": LOGIN_CHECK, "raw_path": LOGIN_CHECK.encode(),
            "root_path": scope.get("root_path", ""), "query_string": b"",
            "headers": [(k, v) for k, v in scope.get("headers") or [] if k in (b"cookie", b"host")],
            "client": scope.get("client"), "server": scope.get("server"), "state": dict(scope.get("state") or {}),
        }
        if "app" in scope:
            check["app"] = scope["app"]
        status: list[int] = []

        async def no_body() -> dict[str, Any]:
            return {"type": "http.request", "body": b"", "more_body": False}

        async def capture(message: Any) -> None:
            if message["type"] == "http.response.start":
                status.append(message["status"])

        await self.app(check, no_body, capture)
        return status == [200]

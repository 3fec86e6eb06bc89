"""Request body limit for the REST routes: an oversized body is refused with 413 before it is read or decoded,
whether it declares its length or streams it in chunks."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from modules.auth import REST_PREFIXES, ASGIApp, Receive, Scope, Send


class BodyLimitMiddleware:
    def __init__(self, app: ASGIApp, limit_bytes: Callable[[], int], prefixes: tuple[str, ...] = REST_PREFIXES) -> None:
        self.app = app
        self.limit_bytes = limit_bytes
        self.prefixes = prefixes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith(self.prefixes):
            await self.app(scope, receive, send)
            return
        limit = self.limit_bytes()
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            await _send_413(send, limit)
            return
        seen = 0
        refused = False

        async def counting_receive() -> Any:
            # Past the limit: answer 413 now, then tell the app the client went away so it stops reading.
            nonlocal seen, refused
            message = await receive()
            if message["type"] == "http.request" and not refused:
                seen += len(message.get("body", b""))
                if seen > limit:
                    refused = True
                    await _send_413(send, limit)
                    return {"type": "http.disconnect"}
            return message

        async def guarded_send(message: Any) -> None:
            if not refused:  # after a 413 the app's own answer (if any) is dropped
                await send(message)

        try:
            await self.app(scope, counting_receive, guarded_send)
        except Exception:
            if not refused:
                raise


async def _send_413(send: Send, limit: int) -> None:
    body = (b'{"error":"PayloadTooLarge","detail":"the request body is larger than the limit of '
            + str(limit // (1024 * 1024)).encode() + b' MB (setting api_max_request_mb)"}')
    await send({"type": "http.response.start", "status": 413,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})

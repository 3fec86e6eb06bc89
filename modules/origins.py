"""Which web origins may send requests to the app: its own, and those named by --cors-allow-origins(-regex).

A browser lets any web page send requests to any address, with the user's cookies: a page on the internet can
POST to http://127.0.0.1:7860 or to a studio on the LAN (install an extension, change settings, queue jobs).
CORS headers only stop that page from *reading* the answer; by then the request has run. So a request that the
browser marks as coming from another origin (its Origin header) is refused here, before auth, CORS or any route,
unless that origin was allowed on the command line. Requests without an Origin header (curl, scripts, A1111
clients, the page's own navigations) are not affected.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import re
from dataclasses import dataclass
from urllib.parse import urlsplit

from modules.access import AccessPolicy
from modules.auth import ASGIApp, Receive, Scope, Send

_DEFAULT_PORTS = {"http": 80, "https": 443, "ws": 80, "wss": 443}


@dataclass(frozen=True)
class OriginPolicy:
    allowed: frozenset[str]
    allowed_regex: re.Pattern[str] | None
    # Not shared on the network: only loopback names reach the app honestly. A page whose own name resolves to
    # 127.0.0.1 (DNS rebinding) looks same-origin, so same-origin requests must also name a loopback host.
    loopback_only: bool

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> OriginPolicy:
        allowed = frozenset(o.strip().rstrip("/") for o in (args.cors_allow_origins or "").split(",") if o.strip())
        regex = re.compile(args.cors_allow_origins_regex) if args.cors_allow_origins_regex else None
        return cls(allowed=allowed, allowed_regex=regex,
                   loopback_only=not AccessPolicy.from_args(args).shared_on_network)

    @property
    def opens_cors(self) -> bool:
        """Whether some other origin is allowed, so CORS headers must be sent to it."""
        return bool(self.allowed) or self.allowed_regex is not None

    def refusal(self, origin: str, host: str) -> str | None:
        """None when a page at `origin` may send a request addressed to `host` (the Host header); else why not."""
        if "*" in self.allowed or origin in self.allowed:
            return None
        if self.allowed_regex is not None and self.allowed_regex.fullmatch(origin):
            return None
        if origin != "null" and _same_origin(origin, host):
            if not self.loopback_only or _is_loopback(_split_host(host)[0]):
                return None
            return (f"request for {host} refused: this app listens on this machine only, so a web page under "
                    f"another name must not reach it. Use http://127.0.0.1 or http://localhost, or start with "
                    f"--cors-allow-origins {origin}.")
        return (f"cross-origin request from {origin} refused: a web page from another site may not use this app. "
                f"Start with --cors-allow-origins {origin} if that site should.")


def _split_host(host: str) -> tuple[str, int | None]:
    """("name", port) from a Host header, IPv6 brackets removed; port None when absent or malformed."""
    host = host.strip().lower()
    if host.startswith("["):
        name, _, rest = host[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else ""
    else:
        name, _, port = host.partition(":")
    return name, int(port) if port.isdigit() else None


def _same_origin(origin: str, host: str) -> bool:
    try:
        parts = urlsplit(origin)
        origin_port = parts.port or _DEFAULT_PORTS.get(parts.scheme)
    except ValueError:
        return False
    name, port = _split_host(host)
    host_port = port or _DEFAULT_PORTS.get(parts.scheme)
    return bool(parts.hostname) and parts.hostname == name and origin_port == host_port


def _is_loopback(name: str) -> bool:
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


class OriginGuardMiddleware:
    """ASGI middleware: 403 for a request (or websocket) whose Origin the policy refuses."""

    def __init__(self, app: ASGIApp, policy: OriginPolicy) -> None:
        self.app = app
        self.policy = policy

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        origin = headers.get(b"origin")
        reason = None if origin is None else self.policy.refusal(origin.decode("latin-1"),
                                                                  headers.get(b"host", b"").decode("latin-1"))
        if reason is None:
            await self.app(scope, receive, send)
            return
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008})
            return
        body = json.dumps({"error": "Forbidden", "detail": reason}).encode()
        await send({"type": "http.response.start", "status": 403,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})

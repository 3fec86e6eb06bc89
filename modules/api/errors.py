"""One JSON error shape for every REST route: `{error, detail, field}` with the right status.

A user's mistake is a 4xx that says what to change; a bug is a 500 with a short message (the traceback goes to
the log, not to the client).
"""

from __future__ import annotations

import logging
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match, Mount

from modules.api.error_schema import document_errors
from modules.errors import UserError

log = logging.getLogger(__name__)

_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")


def install(app: FastAPI) -> None:
    document_errors(app)  # /openapi.json must describe the bodies below, not FastAPI's own 422 shape

    @app.exception_handler(UserError)
    async def user_error(_: Request, exc: UserError) -> JSONResponse:
        return JSONResponse(exc.to_json(), status_code=exc.status_code)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(_: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [
            {"loc": list(e.get("loc", ())), "msg": e.get("msg", ""), "type": e.get("type", "")}
            for e in exc.errors()
        ]
        detail = "; ".join(_describe(e, raw) for e, raw in zip(errors, exc.errors(), strict=True))
        return JSONResponse({"error": "ValidationError", "detail": detail, "errors": errors}, status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        # Starlette's own 404/405: the same shape as every other error, so clients parse one thing.
        reason = _unparseable_body(exc)
        if reason is not None:
            return JSONResponse({"error": "InvalidBody", "detail": reason, "field": "body"}, status_code=400)
        headers = dict(exc.headers or {})
        if exc.status_code == 405:
            # Starlette's Allow names only the first route with this path (GET and POST on one path are two
            # routes); RFC 9110 says a 405 lists every method the resource supports.
            headers["Allow"] = ", ".join(sorted(allowed_methods(request)))
        return JSONResponse({"error": _status_name(exc.status_code), "detail": str(exc.detail)},
                            status_code=exc.status_code, headers=headers)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error on %s %s", request.method, request.url.path)
        return JSONResponse({"error": type(exc).__name__, "detail": "internal error; see the server log"},
                            status_code=500)


def allowed_methods(request: Request) -> set[str]:
    """Every method some route of the app fully matches at this request's path.

    Asked route by route through `matches()` (public on every route, included routers too), one method at a
    time; mounted apps (the UI at "/") match any method and are left out.
    """
    routes = [r for r in request.app.router.routes if not isinstance(r, Mount)]
    return {method for method in _METHODS
            if any(route.matches({**request.scope, "method": method})[0] is Match.FULL for route in routes)}


def _status_name(status: int) -> str:
    """`MethodNotAllowed` for 405: the `error` field in the style of our own error names."""
    try:
        return HTTPStatus(status).phrase.replace(" ", "").replace("-", "")
    except ValueError:
        return "Error"


def _describe(error: dict[str, Any], raw: dict[str, Any]) -> str:
    """One validation problem as "field: message"; a body that is not JSON says where it breaks and why."""
    if error["type"] == "json_invalid":
        position = error["loc"][1] if len(error["loc"]) > 1 else "?"
        reason = (raw.get("ctx") or {}).get("error", "")
        return f"the body is not valid JSON (at character {position}: {reason})"
    return f"{'.'.join(map(str, error['loc'][1:])) or 'body'}: {error['msg']}"


def _unparseable_body(exc: StarletteHTTPException) -> str | None:
    """Why FastAPI could not read a body: it answers "There was an error parsing the body" and keeps the reason
    only as the exception's cause, so a client would not know what to fix."""
    if exc.status_code != 400 or exc.detail != "There was an error parsing the body":
        return None
    cause = exc.__cause__
    if isinstance(cause, UnicodeDecodeError):
        return (f"the body is not valid UTF-8 (byte 0x{cause.object[cause.start]:02x} at position {cause.start}); "
                "send JSON encoded as UTF-8")
    if isinstance(cause, RecursionError):
        return "the JSON body is nested too deeply to read"
    return f"the body could not be read as JSON ({type(cause).__name__})" if cause is not None else None

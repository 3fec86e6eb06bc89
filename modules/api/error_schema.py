"""The OpenAPI schema tells clients the truth about errors.

Every REST error leaves through `modules.api.errors` as `{error, detail, field}` (a validation error adds
`errors`), but FastAPI documents only its own 422 shape, where `detail` is a list, and no other error status.
Clients generated from `/openapi.json`, and the API fuzz suite, then reject our real answers. So the schema is
rewritten once, when first asked for: the 422s point at our shape, and every operation gets a `default` response
with it ("any other status: this body"). Starlette's own 404/405 bodies (`{"detail": "..."}`) fit it too.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from fastapi import FastAPI

ERROR_SCHEMA_NAME = "ErrorResponse"
_ERROR_REF = {"$ref": f"#/components/schemas/{ERROR_SCHEMA_NAME}"}
_ERROR_SCHEMA: dict[str, Any] = {
    "title": ERROR_SCHEMA_NAME,
    "type": "object",
    "required": ["detail"],
    "properties": {
        "error": {"type": "string", "description": "the kind of error (ValidationError, NotFound, ...)"},
        "detail": {"type": "string", "description": "what went wrong, written for the user"},
        "field": {"anyOf": [{"type": "string"}, {"type": "null"}], "description": "the request field at fault"},
        "errors": {"type": "array", "items": {"type": "object"}, "description": "each validation problem"},
    },
}
_FASTAPI_ERROR_SCHEMAS = ("HTTPValidationError", "ValidationError")


def document_errors(app: FastAPI) -> None:
    """Make `app.openapi()` describe the app's error bodies (FastAPI's documented way to change the schema)."""
    build: Callable[[], dict[str, Any]] = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = with_error_responses(build())
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def with_error_responses(schema: dict[str, Any]) -> dict[str, Any]:
    """`schema` with our error shape on every operation's 422 and `default` response (changed in place)."""
    error_body = {"description": "Error", "content": {"application/json": {"schema": _ERROR_REF}}}
    for path_item in schema.get("paths", {}).values():
        for operation in path_item.values():
            if not isinstance(operation, dict) or "responses" not in operation:
                continue
            responses = operation["responses"]
            if "422" in responses:
                responses["422"] = {**error_body, "description": "Validation Error"}
            responses.setdefault("default", error_body)
    schemas = schema.setdefault("components", {}).setdefault("schemas", {})
    schemas[ERROR_SCHEMA_NAME] = _ERROR_SCHEMA
    text = json.dumps(schema)
    for name in _FASTAPI_ERROR_SCHEMAS:
        if f'"#/components/schemas/{name}"' not in text:  # FastAPI's, unused now (unless a route still uses it)
            schemas.pop(name, None)
    return schema

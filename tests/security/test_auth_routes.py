"""Issue 9, item 1: with --gradio-auth and --api-auth, every route of the running app refuses a client without
credentials: the UI (Gradio's routes included), the REST API, progress, file routes, the job API and extension
routes. The routes are not hand-listed: the app process writes its own route table (tests/security/netns.py),
and each route and method is probed from another machine on the LAN, then from the server's own loopback.

Only the login page and what it loads before anyone has logged in are public (PUBLIC below); the test checks
that those answers carry nothing of the app.
"""

from __future__ import annotations

import re
from typing import Any

import pytest

from tests.fixtures import extensions as fx
from tests.security.netns import private_lan, start_lan_server, unavailable

pytestmark = pytest.mark.e2e

UI_USER, UI_PASSWORD = "alice", "ui-Secr3t-7f3"
API_USER, API_PASSWORD = "bob", "api-Secr3t-9c1"

# What a browser must load to show the login form: the page shell, the form's routes, static files.
PUBLIC_PATHS = {"/", "/login", "/login/", "/logout", "/gradio_api/login_check", "/gradio_api/login_check/",
                "/favicon.ico", "/theme.css", "/gradio_api/theme.css", "/robots.txt", "/manifest.json", "/pwa_icon"}
PUBLIC_PREFIXES = ("/assets/", "/static/", "/svelte/", "/pwa_icon/")
# Path parameters get values that would reach something real if a route were open.
PARAM_VALUES = {"path_or_url": "/etc/passwd", "job_id": "0", "extension_id": "hello", "entry_id": "x",
                "size": "192", "component_id": "1", "run": "1"}
# Routes the probe must have found, or the enumeration itself is broken.
MUST_INCLUDE = {"/sdapi/v1/progress", "/sdapi/v1/txt2img", "/sdapi/v1/options", "/studio/v1/jobs",
                "/studio/v1/jobs/{job_id}", "/gradio_api/file={path_or_url:path}", "/gradio_api/upload",
                "/gradio_api/queue/join", "/gradio_api/queue/data", "/gradio_api/cancel", "/config", "/ext/hello/ping",
                "/openapi.json", "/docs"}


def is_public(path: str) -> bool:
    return path in PUBLIC_PATHS or path.startswith(PUBLIC_PREFIXES)


def concrete(path: str) -> str:
    return re.sub(r"\{(\w+)(?::\w+)?\}", lambda m: PARAM_VALUES.get(m.group(1), "x"), path) or "/"


@pytest.fixture(scope="module")
def guarded(tmp_path_factory: pytest.TempPathFactory):
    reason = unavailable()
    if reason:
        pytest.skip(reason)
    data = tmp_path_factory.mktemp("auth") / "data"
    fx.write_extension(data / "extensions", "hello", fx.HELLO)
    with private_lan() as lan:
        server = start_lan_server(lan, data, "--listen", "--api", "--gradio-auth", f"{UI_USER}:{UI_PASSWORD}",
                                  "--api-auth", f"{API_USER}:{API_PASSWORD}", list_routes=True)
        try:
            routes = sorted({(r["path"] or "/", m) for r in server.routes() for m in r["methods"]})
            yield lan, server, routes
        finally:
            server.stop()


def probes(base: str, routes: list[tuple[str, str]], **extra: Any) -> list[dict[str, Any]]:
    return [{"method": method, "url": base + concrete(path), "timeout": 5, "max_bytes": 4096,
             **({"json": {}} if method in ("POST", "PUT", "PATCH") else {}), **extra} for path, method in routes]


def test_every_route_refuses_a_lan_client_without_credentials(guarded) -> None:
    lan, server, routes = guarded
    assert MUST_INCLUDE <= {path for path, _ in routes}, MUST_INCLUDE - {path for path, _ in routes}
    private = [(path, method) for path, method in routes if not is_public(path)]
    answers = lan.requests(probes(server.url, private), budget_s=120)
    open_routes = [(method, path, a.get("status"), a.get("error")) for (path, method), a in
                   zip(private, answers, strict=True) if a.get("status") not in (401, 403)]
    assert not open_routes, open_routes
    print(f"\n{len(routes)} (route, method) pairs, {len(private)} refused without credentials, "
          f"{len(routes) - len(private)} public login assets")


def test_wrong_credentials_are_refused_too(guarded) -> None:
    """A wrong API password, the UI password on the API, and a forged UI session cookie."""
    lan, server, routes = guarded
    private = [(path, method) for path, method in routes if not is_public(path)]
    rest = [(p, m) for p, m in private if p.startswith(("/sdapi/", "/studio/", "/controlnet/", "/ext/"))]
    ui = [(p, m) for p, m in private if (p, m) not in rest]
    specs = (probes(server.url, rest, auth=[API_USER, API_PASSWORD + "x"])
             + probes(server.url, rest, auth=[UI_USER, UI_PASSWORD])
             + probes(server.url, ui, headers={"Cookie": "access-token-unsecure-x=forged; access-token-x=forged"}))
    answers = lan.requests(specs, budget_s=120)
    let_in = [(s["method"], s["url"], a.get("status")) for s, a in zip(specs, answers, strict=True)
              if a.get("status") not in (401, 403)]
    assert not let_in, let_in


def test_loopback_needs_credentials_as_well(guarded) -> None:
    lan, _, routes = guarded
    sample = [(p, m) for p, m in routes if p in MUST_INCLUDE]
    answers = lan.requests(probes("http://127.0.0.1:7860", sample), from_server=True)
    assert [a.get("status") for a in answers] == [401] * len(sample), list(zip(sample, answers, strict=True))


def test_the_right_credentials_open_the_api_and_the_ui(guarded) -> None:
    lan, server, _ = guarded
    base, api = server.url, [API_USER, API_PASSWORD]
    answers = lan.requests([
        {"url": base + "/sdapi/v1/progress", "auth": api},
        {"url": base + "/studio/v1/jobs", "auth": api},
        {"url": base + "/ext/hello/ping", "auth": api},
        {"method": "POST", "url": base + "/login", "data": {"username": UI_USER, "password": UI_PASSWORD}},
        {"url": base + "/config"},  # the same client: it now has the session cookie
        {"method": "POST", "url": base + "/gradio_api/cancel",
         "json": {"session_hash": "s", "fn_index": 0, "event_id": "e"}},
    ])
    assert [a["status"] for a in answers] == [200] * 6, answers
    assert '"components"' in answers[4]["body"]


def test_public_login_assets_carry_nothing_of_the_app(guarded) -> None:
    lan, server, routes = guarded
    public = [(path, method) for path, method in routes if is_public(path) and method == "GET"]
    answers = lan.requests(probes(server.url, public))
    for (path, _), answer in zip(public, answers, strict=True):
        body = answer.get("body") or ""
        # The page shell embeds an empty config ("components":[]) until someone logs in.
        for secret in ("txt2img_prompt", "hello", "Hello", UI_PASSWORD, API_PASSWORD, '"components":[{'):
            assert secret not in body, (path, secret)

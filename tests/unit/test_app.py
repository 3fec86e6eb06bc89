"""The assembled app (FastAPI + Gradio UI) in-process: auth on UI and API, CORS, extension routes and the
extension status route, and the --listen refusal through a real route."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from modules.app import create_app
from modules.services import build_services
from tests.fixtures import extensions as fx


def client(data: Path, *flags: str) -> TestClient:
    return TestClient(create_app(build_services(["--data-dir", str(data), *flags], {})))


@pytest.fixture()
def data(tmp_path: Path) -> Path:
    fx.write_extension(tmp_path / "extensions", "hello", fx.HELLO)
    fx.write_extension(tmp_path / "extensions", "broken", fx.RAISES_IN_REGISTER)
    return tmp_path


def test_page_and_extension_route_without_auth(data: Path) -> None:
    c = client(data)
    assert c.get("/").status_code == 200
    assert c.get("/config").status_code == 200
    assert c.get("/ext/hello/ping").json() == {"pong": "hi"}
    body = c.get("/studio/v1/extensions").json()
    rows = {r["id"]: r for r in body["extensions"]}
    assert rows["hello"]["state"] == "loaded"
    assert rows["broken"]["state"] == "failed" and "register failed on purpose" in rows["broken"]["error"]
    assert body["management_allowed"] is True


def test_ui_auth(data: Path) -> None:
    c = client(data, "--gradio-auth", "alice:pa:ss,bob:x")
    assert c.get("/config").status_code == 401
    assert c.get("/gradio_api/info").status_code == 401
    assert c.post("/login", data={"username": "alice", "password": "wrong"}).status_code in (400, 401)
    assert c.post("/login", data={"username": "alice", "password": "pa:ss"}).status_code == 200
    assert c.get("/config").status_code == 200


def test_gradio_auth_also_guards_the_rest_api(data: Path) -> None:
    # A1111 leaves the API open when only --gradio-auth is given; we do not.
    c = client(data, "--gradio-auth", "alice:secret", "--api")
    assert c.get("/studio/v1/extensions").status_code == 401
    assert c.get("/studio/v1/extensions", auth=("alice", "secret")).status_code == 200


def test_api_auth_guards_every_rest_route(data: Path) -> None:
    c = client(data, "--api-auth", "bot:token", "--api")
    for path in ("/studio/v1/extensions", "/studio/v1/health", "/ext/hello/ping", "/docs", "/openapi.json"):
        r = c.get(path)
        assert r.status_code == 401, path
        assert r.headers["www-authenticate"].startswith("Basic")
        assert c.get(path, auth=("bot", "wrong")).status_code == 401, path
        assert c.get(path, auth=("eve", "token")).status_code == 401, path
        assert c.get(path, auth=("bot", "token")).status_code == 200, path
    assert c.get("/studio/v1/extensions", headers={"Authorization": "Basic !!notbase64"}).status_code == 401
    # --api-auth does not lock the UI (that is --gradio-auth's job), as in A1111.
    assert c.get("/config").status_code == 200


def test_docs_only_with_api_flag(data: Path) -> None:
    without = client(data).get("/openapi.json")
    assert "studio" not in without.text  # whatever Gradio answers there, it is not our schema
    assert client(data, "--api").get("/openapi.json").status_code == 200


def test_nowebui_serves_api_only(data: Path) -> None:
    c = client(data, "--nowebui")
    assert c.get("/").json()["ui"] == "off (--nowebui)"
    assert c.get("/config").status_code == 404
    assert c.get("/studio/v1/extensions").status_code == 200


def test_cors_is_open_only_to_allowed_origins(data: Path) -> None:
    c = client(data, "--cors-allow-origins", "http://good.example")
    preflight = {"Access-Control-Request-Method": "GET"}
    ok = c.options("/studio/v1/extensions", headers={"Origin": "http://good.example", **preflight})
    assert ok.headers.get("access-control-allow-origin") == "http://good.example"
    bad = c.get("/studio/v1/extensions", headers={"Origin": "http://evil.example"})
    assert "access-control-allow-origin" not in bad.headers
    none = client(data).get("/studio/v1/extensions", headers={"Origin": "http://evil.example"})
    assert "access-control-allow-origin" not in none.headers


def test_listen_refusal_through_routes(data: Path) -> None:
    c = client(data, "--listen")
    body = c.get("/studio/v1/extensions").json()
    assert body["management_allowed"] is False
    assert "--enable-insecure-extension-access" in body["management_message"]
    for method, path in (("post", "/studio/v1/extensions/hello/disable"), ("post", "/studio/v1/extensions/hello/enable"),
                         ("post", "/studio/v1/extensions/hello/update"), ("get", "/studio/v1/extensions/hello/updates"),
                         ("delete", "/studio/v1/extensions/hello")):
        r = getattr(c, method)(path)
        assert r.status_code == 403, path
        assert "--enable-insecure-extension-access" in r.json()["detail"]
    r = c.post("/studio/v1/extensions/install", json={"url": "https://example.invalid/x.git"})
    assert r.status_code == 403
    allowed = client(data, "--listen", "--enable-insecure-extension-access")
    assert allowed.post("/studio/v1/extensions/hello/disable").status_code == 200


def test_route_errors_are_json_with_4xx(data: Path) -> None:
    c = client(data)
    r = c.post("/studio/v1/extensions/nope/disable")
    assert r.status_code == 404 and r.json()["error"] == "NotFound"
    r = c.post("/studio/v1/extensions/install", json={"url": ""})
    assert r.status_code == 422 and r.json()["error"] == "ValidationError"
    r = c.post("/studio/v1/extensions/install", json={"url": "--upload-pack=touch /tmp/pwned"})
    assert r.status_code == 400


def test_gradio_auth_path_file(data: Path) -> None:
    logins = data / "logins.txt"
    logins.write_text("carol:one:two\ndave:pw2, erin:pw3\n")
    c = client(data, "--gradio-auth-path", str(logins), "--api")
    assert c.get("/config").status_code == 401
    assert c.post("/login", data={"username": "erin", "password": "pw3"}).status_code == 200
    assert c.get("/studio/v1/health", auth=("carol", "one:two")).status_code == 200
    assert c.get("/studio/v1/health", auth=("carol", "one")).status_code == 401


def test_bad_auth_values_are_refused_without_echoing_secrets(data: Path) -> None:
    from modules.cli import CliError

    with pytest.raises(CliError) as e:
        build_services(["--data-dir", str(data), "--api-auth", "justaname-secretvalue"], {})
    assert "user:password" in str(e.value) and "secretvalue" not in str(e.value)
    with pytest.raises(CliError, match="cannot read"):
        build_services(["--data-dir", str(data), "--gradio-auth-path", str(data / "missing.txt")], {})


def test_default_model_download_offline_fails_clearly(data: Path) -> None:
    import time

    c = client(data)
    files = {f["id"]: f for f in c.get("/studio/v1/downloads").json()["files"]}
    assert files["sd15-emaonly"]["state"] == "missing"
    job = c.post("/studio/v1/downloads/sd15-emaonly").json()
    deadline = time.monotonic() + 30
    while (body := c.get(f"/studio/v1/downloads/jobs/{job['id']}").json())["state"] in ("queued", "running"):
        assert time.monotonic() < deadline
        time.sleep(0.1)
    assert body["state"] == "failed"
    assert "Download it by hand from https://huggingface.co/" in body["error"]
    assert str(data / "models" / "Stable-diffusion") in body["error"]
    assert not list((data / "models" / "Stable-diffusion").iterdir())
    assert c.post("/studio/v1/downloads/nope").status_code == 404


def test_oversized_request_bodies_are_refused_unread(data: Path) -> None:
    services = build_services(["--data-dir", str(data), "--api"], {})
    services.settings.update({"api_max_request_mb": 1}, save=False)
    c = TestClient(create_app(services))
    big = b'{"image": "' + b"A" * (2 * 1024 * 1024) + b'"}'
    r = c.post("/sdapi/v1/png-info", content=big, headers={"content-type": "application/json"})
    assert r.status_code == 413 and "api_max_request_mb" in r.json()["detail"]

    def chunks():
        yield b'{"image": "'
        for _ in range(40):
            yield b"A" * 65536
        yield b'"}'

    r = c.post("/sdapi/v1/png-info", content=chunks(), headers={"content-type": "application/json"})
    assert r.status_code == 413
    assert c.post("/sdapi/v1/png-info", json={"image": "bm90IGFuIGltYWdl"}).status_code == 400  # small: decoded


def test_ui_uploads_over_the_limit_are_refused(data: Path) -> None:
    (data / "config.json").write_text('{"api_max_request_mb": 1}')
    c = client(data)
    small = c.post("/gradio_api/upload", files={"files": ("a.png", b"x" * 1000, "image/png")})
    assert small.status_code == 200
    big = c.post("/gradio_api/upload", files={"files": ("b.png", b"x" * (2 * 1024 * 1024), "image/png")})
    assert big.status_code == 413

"""Issue 9, items 5 and 6 over real HTTP: cross-origin requests are refused unless --cors-allow-origins allows
them (also when a real browser sends them from a hostile page), and the passwords of --gradio-auth-path and
--api-auth never show in logs, infotext, /cmd-flags, /options or error answers.

Two servers on loopback: `open_server` has no login and allows one origin (a page this test serves itself);
`secret_server` has every kind of login and generates one tiny image, so its infotext can be read.
"""

from __future__ import annotations

import base64
import functools
import http.server
import io
import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from PIL import Image

from modules.engine.image_metadata import read_image_info
from tests.e2e.browser import browser_page
from tests.e2e.server import REPO, free_port, start_server
from tests.fixtures import extensions as fx

pytestmark = pytest.mark.e2e

UI_LOGINS = {"alice": "ui-Pa55-first-7f3", "carol": "ui-Pa55:second-1d2"}
API_USER, API_PASSWORD = "bob", "api-Pa55-9c1"
SECRETS = [*UI_LOGINS.values(), API_PASSWORD]
GOOD = "http://good.example"
PREFLIGHT = {"Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "content-type"}


@contextmanager
def static_site(folder: Path) -> Iterator[str]:
    """Serve `folder` on a loopback port of its own: another origin than the app's."""
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(folder))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()


@pytest.fixture(scope="module")
def sites(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, str, Path, str]]:
    evil, good = tmp_path_factory.mktemp("evil-site"), tmp_path_factory.mktemp("good-site")
    with static_site(evil) as evil_url, static_site(good) as good_url:
        yield evil, evil_url, good, good_url


@pytest.fixture(scope="module")
def open_server(sites, tmp_path_factory: pytest.TempPathFactory):
    _, _, _, good_url = sites
    data = tmp_path_factory.mktemp("cors") / "data"
    fx.write_extension(data / "extensions", "hello", fx.HELLO)
    server = start_server(data, "--api", "--cors-allow-origins", f"{good_url},{GOOD}")
    yield server
    server.stop()


@pytest.fixture(scope="module")
def secret_server(tmp_path_factory: pytest.TempPathFactory):
    """--gradio-auth-path (two logins), --api-auth through COMMANDLINE_ARGS, an allowed origin and a tiny
    checkpoint. A txt2img request goes out as soon as it is up; the infotext test collects it."""
    root = tmp_path_factory.mktemp("secrets")
    data = root / "data"
    auth_file = root / "logins.txt"
    auth_file.write_text("\n".join(f"{user}:{password}" for user, password in UI_LOGINS.items()) + "\n")
    with ThreadPoolExecutor(2) as pool:
        def build() -> None:
            from tests.fixtures.tiny_models import save_tiny_checkpoint

            save_tiny_checkpoint(data / "models" / "Stable-diffusion", "sd1", name="tiny")

        checkpoint = pool.submit(build)
        server = start_server(data, "--api", "--gradio-auth-path", str(auth_file), "--cors-allow-origins", GOOD,
                              env={"COMMANDLINE_ARGS": f"--api-auth {API_USER}:{API_PASSWORD}"})
        try:
            checkpoint.result()
            auth = (API_USER, API_PASSWORD)
            httpx.post(server.url + "/sdapi/v1/refresh-checkpoints", auth=auth).raise_for_status()
            generation: Future[httpx.Response] = pool.submit(
                httpx.post, server.url + "/sdapi/v1/txt2img", auth=auth, timeout=180,
                json={"prompt": "a lighthouse", "steps": 1, "width": 64, "height": 64, "seed": 11})
            yield server, generation
        finally:
            server.stop()


# --- secrets (first: the generation `secret_server` starts then overlaps the rest) ---------------------------


def assert_no_secret(text: str, where: str) -> None:
    for secret in SECRETS:
        assert secret not in text, f"a password is in {where}"


def test_passwords_are_not_in_flags_options_or_error_answers(secret_server) -> None:
    server, _ = secret_server
    auth = (API_USER, API_PASSWORD)
    seen: list[tuple[str, httpx.Response]] = []
    with httpx.Client(base_url=server.url, timeout=30) as http:
        flags = http.get("/sdapi/v1/cmd-flags", auth=auth)
        assert flags.status_code == 200 and flags.json()["api_auth"] == "***"
        for path in ("/sdapi/v1/cmd-flags", "/sdapi/v1/options", "/studio/v1/health", "/openapi.json",
                     "/sdapi/v1/extensions", "/studio/v1/extensions"):
            seen.append((path, http.get(path, auth=auth)))
        # Wrong passwords that contain the right ones, on the API and on the UI's login form.
        seen.append(("wrong API password", http.get("/sdapi/v1/options", auth=(API_USER, API_PASSWORD + "!"))))
        seen.append(("UI password on the API", http.get("/sdapi/v1/options", auth=("alice", UI_LOGINS["alice"]))))
        seen.append(("wrong UI password", http.post("/login", data={"username": "alice",
                                                                     "password": UI_LOGINS["alice"] + "!"})))
        # Error answers: a bad request, an unknown option, a missing job, a refused origin.
        seen.append(("422", http.post("/sdapi/v1/txt2img", auth=auth, json={"steps": "many"})))
        seen.append(("400", http.post("/sdapi/v1/options", auth=auth, json={"no_such_option": 1})))
        seen.append(("404", http.get("/studio/v1/jobs/nope", auth=auth)))
        seen.append(("403", http.get("/sdapi/v1/options", auth=auth, headers={"Origin": "http://evil.example"})))
        # Logged in to the UI: the page's config and API description.
        assert http.post("/login", data={"username": "carol", "password": UI_LOGINS["carol"]}).status_code == 200
        seen.append(("UI config", http.get("/config")))
        seen.append(("UI API info", http.get("/gradio_api/info")))
    for where, response in seen:
        assert_no_secret(response.text, where)
        assert_no_secret(json.dumps(dict(response.headers)), f"{where} headers")


def test_bad_login_files_are_reported_without_their_content(tmp_path: Path) -> None:
    """A malformed --gradio-auth-path file or --api-auth value stops the start with a message naming the
    entry, never its text."""
    bad_file = tmp_path / "logins.txt"
    bad_file.write_text(f"alice:{UI_LOGINS['alice']}\n:{UI_LOGINS['carol']}\n")
    for flags in (["--gradio-auth-path", str(bad_file)], ["--api-auth", API_PASSWORD]):
        result = subprocess.run([sys.executable, str(REPO / "launch.py"), "--skip-install", "--data-dir",
                                 str(tmp_path / "data"), "--port", str(free_port()), *flags],
                                capture_output=True, text=True, timeout=120, cwd=REPO)
        assert result.returncode == 2, result.stdout + result.stderr
        assert "user:password" in result.stderr
        assert_no_secret(result.stdout + result.stderr, f"the start-up error for {flags[0]}")


def test_a_mistyped_login_flag_does_not_print_the_password(tmp_path: Path) -> None:
    result = subprocess.run([sys.executable, str(REPO / "launch.py"), "--skip-install", "--data-dir",
                             str(tmp_path / "data"), "--apiauth", f"{API_USER}:{API_PASSWORD}"],
                            capture_output=True, text=True, timeout=120, cwd=REPO)
    assert result.returncode == 2 and "--api-auth" in result.stderr
    assert_no_secret(result.stdout + result.stderr, "the unknown-flag error")


# --- cross-origin --------------------------------------------------------------------------------------------


def test_cross_origin_requests_are_refused_unless_allowed(open_server) -> None:
    base = open_server.url
    port = base.rsplit(":", 1)[1]
    cases: list[tuple[str, str, dict[str, str], int]] = [
        ("GET", "/sdapi/v1/cmd-flags", {}, 200),  # no Origin: scripts and A1111 clients
        ("GET", "/sdapi/v1/cmd-flags", {"Origin": base}, 200),  # the app's own page
        # Its own page opened as http://localhost:PORT (the browser sends that name as Host too).
        ("POST", "/sdapi/v1/options", {"Origin": f"http://localhost:{port}", "Host": f"localhost:{port}"}, 200),
        ("GET", "/sdapi/v1/cmd-flags", {"Origin": "http://evil.example"}, 403),
        ("POST", "/studio/v1/extensions/hello/disable", {"Origin": "http://evil.example"}, 403),
        ("POST", "/studio/v1/extensions/hello/disable", {"Origin": "null"}, 403),  # sandboxed iframes, file://
        ("POST", "/studio/v1/extensions/hello/disable", {"Origin": "http://127.0.0.1:1"}, 403),  # another port
        ("POST", "/gradio_api/queue/join", {"Origin": "http://evil.example"}, 403),  # the UI's routes too
        ("OPTIONS", "/sdapi/v1/options", {"Origin": "http://evil.example", **PREFLIGHT}, 403),
        # DNS rebinding: evil.example resolves to 127.0.0.1, so the page looks same-origin to the browser.
        ("POST", "/studio/v1/extensions/hello/disable",
         {"Origin": f"http://evil.example:{port}", "Host": f"evil.example:{port}"}, 403),
        ("OPTIONS", "/sdapi/v1/options", {"Origin": GOOD, **PREFLIGHT}, 200),
        ("GET", "/sdapi/v1/cmd-flags", {"Origin": GOOD}, 200),
    ]
    with httpx.Client(base_url=base, timeout=10) as http:
        for method, path, headers, expected in cases:
            body = {"json": {}} if path == "/sdapi/v1/options" and method == "POST" else {}
            r = http.request(method, path, headers=headers, **body)
            assert r.status_code == expected, (method, path, headers, r.status_code, r.text[:300])
            # Only the allowed origin may read answers; the app's own page needs no CORS header.
            allowed = r.headers.get("access-control-allow-origin")
            assert allowed == (GOOD if headers.get("Origin") == GOOD else None), (method, path, headers, allowed)
            if expected == 403:
                assert "--cors-allow-origins" in r.json()["detail"]
        extensions = http.get("/studio/v1/extensions").json()["extensions"]
        assert [e["enabled_next_start"] for e in extensions if e["id"] == "hello"] == [True]


EVIL_PAGE = """<!doctype html><meta charset=utf-8><title>free prompts</title>
<form id=f method=post action="{app}/studio/v1/extensions/hello/disable" target=sink></form>
<iframe name=sink></iframe>
<script>
window.done = (async () => {{
  const app = "{app}";
  const seen = {{}};
  // Simple requests need no preflight, so a browser sends them to any address; a Blob without a type even
  // carries no Content-Type, which FastAPI reads as JSON.
  try {{ await fetch(app + "/studio/v1/extensions/hello/disable", {{method: "POST", mode: "no-cors"}}); }}
  catch (e) {{ seen.disable = String(e); }}
  try {{ await fetch(app + "/sdapi/v1/options", {{method: "POST", mode: "no-cors",
         body: new Blob([JSON.stringify({{samples_format: "jpg"}})])}}); }}
  catch (e) {{ seen.options = String(e); }}
  try {{ seen.read = (await (await fetch(app + "/sdapi/v1/cmd-flags")).text()).slice(0, 50); }}
  catch (e) {{ seen.read = "blocked"; }}
  document.getElementById("f").submit();
  await new Promise(r => setTimeout(r, 1000));
  return seen;
}})();
</script>"""

GOOD_PAGE = """<!doctype html><meta charset=utf-8><script>
window.done = (async () => {{
  const flags = await (await fetch("{app}/sdapi/v1/cmd-flags")).json();
  const saved = await fetch("{app}/sdapi/v1/options", {{method: "POST",
    headers: {{"Content-Type": "application/json"}}, body: JSON.stringify({{jpeg_quality: 81}})}});
  return {{listen: flags.listen, saved: saved.status}};
}})();
</script>"""


def test_a_hostile_page_in_a_real_browser_cannot_act_on_the_app(open_server, sites) -> None:
    """The attack CORS alone does not stop: the browser sends the request, only the answer is hidden."""
    evil, evil_url, good, good_url = sites
    (evil / "index.html").write_text(EVIL_PAGE.format(app=open_server.url))
    (good / "index.html").write_text(GOOD_PAGE.format(app=open_server.url))
    with browser_page() as page:
        page.goto(evil_url + "/index.html")
        seen = page.evaluate("window.done")
        assert seen.get("read") == "blocked", seen
        page.goto(good_url + "/index.html")
        assert page.evaluate("window.done") == {"listen": False, "saved": 200}
    state = httpx.get(open_server.url + "/studio/v1/extensions").json()["extensions"]
    assert [e["enabled_next_start"] for e in state if e["id"] == "hello"] == [True]
    options = httpx.get(open_server.url + "/sdapi/v1/options").json()
    assert options["samples_format"] == "png" and options["jpeg_quality"] == 81


def test_cors_preflight_works_with_api_auth(secret_server) -> None:
    """Browsers send preflights without credentials: an allowed origin must get its answer, not a 401."""
    server, _ = secret_server
    preflight = httpx.options(server.url + "/sdapi/v1/options", headers={"Origin": GOOD, **PREFLIGHT})
    assert preflight.status_code == 200 and preflight.headers["access-control-allow-origin"] == GOOD
    actual = httpx.get(server.url + "/sdapi/v1/options", headers={"Origin": GOOD}, auth=(API_USER, API_PASSWORD))
    assert actual.status_code == 200 and actual.headers["access-control-allow-origin"] == GOOD
    no_login = httpx.get(server.url + "/sdapi/v1/options", headers={"Origin": GOOD})
    assert no_login.status_code == 401
    evil = httpx.options(server.url + "/sdapi/v1/options", headers={"Origin": "http://evil.example", **PREFLIGHT})
    assert evil.status_code == 403


@pytest.mark.parametrize(("flags", "origin", "host", "allowed"), [
    ([], "http://127.0.0.1:7860", "127.0.0.1:7860", True),
    ([], "http://[::1]:7860", "[::1]:7860", True),
    ([], "http://localhost", "localhost:80", True),  # the default port, written or not
    ([], "http://127.0.0.1:7860", "127.0.0.1:7861", False),
    ([], "https://127.0.0.1:7860", "127.0.0.1:7860", True),  # TLS: same name and port
    ([], "http://studio.lan:7860", "studio.lan:7860", False),  # loopback only: a rebinding name
    (["--listen"], "http://studio.lan:7860", "studio.lan:7860", True),  # shared: any name the LAN uses
    (["--listen"], "http://studio.lan:7860", "10.0.0.5:7860", False),
    (["--listen"], "null", "10.0.0.5:7860", False),
    (["--cors-allow-origins", "http://a.example, http://b.example/"], "http://b.example", "127.0.0.1:7860", True),
    (["--cors-allow-origins", "http://a.example"], "http://a.example.evil", "127.0.0.1:7860", False),
    (["--cors-allow-origins-regex", r"https://.*\.example"], "https://x.example", "127.0.0.1:7860", True),
    (["--cors-allow-origins-regex", r"https://.*\.example"], "https://x.example.evil", "127.0.0.1:7860", False),
    (["--cors-allow-origins", "*"], "http://anything.example", "127.0.0.1:7860", True),
])
def test_origin_policy(flags: list[str], origin: str, host: str, allowed: bool) -> None:
    from modules.cli import build_parser
    from modules.origins import OriginPolicy

    policy = OriginPolicy.from_args(build_parser().parse_args(flags))
    assert (policy.refusal(origin, host) is None) is allowed


# --- secrets, last: collects that generation -----------------------------------------------------------------


def test_passwords_are_not_in_infotext_or_the_log(secret_server) -> None:
    """Last: collects the generation `secret_server` started, then reads the whole server log."""
    server, generation = secret_server
    response = generation.result(timeout=200)
    assert response.status_code == 200, response.text[:500]
    body = response.json()
    image = Image.open(io.BytesIO(base64.b64decode(body["images"][0])))
    infotext, items = read_image_info(image)
    assert "Seed: 11" in infotext
    for where, text in (("infotext", infotext), ("image text items", json.dumps(items)),
                        ("the API answer", json.dumps({k: v for k, v in body.items() if k != "images"}))):
        assert_no_secret(text, where)
    server.stop()  # the log is complete once the server has shut down
    assert_no_secret(server.log(), "the server log")
    assert "ui-Pa55" not in server.log() and "api-Pa55" not in server.log()

"""The real server, started the way a user starts it: the printed URL, extension hooks across processes,
start-up errors that must be clear, and the A1111 --listen rule over real HTTP."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.e2e.server import REPO, free_port, start_server
from tests.fixtures import extensions as fx

pytestmark = pytest.mark.e2e


def test_starts_prints_url_and_fires_app_started(tmp_path: Path) -> None:
    data = tmp_path / "data"
    folder = fx.write_extension(data / "extensions", "hello", fx.HELLO)
    server = start_server(data, "--hello-loud")
    try:
        assert httpx.get(server.url + "/ext/hello/ping").json() == {"pong": "hi"}
        deadline = time.monotonic() + 10
        while not (folder / "calls.jsonl").exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        calls = [json.loads(line) for line in (folder / "calls.jsonl").read_text().splitlines()]
        assert calls[0] == {"event": "app_started", "url": server.url, "loud": True}
        assert f"Running on local URL:  {server.url}" in server.log()
        assert httpx.get(server.url + "/studio/v1/health").json()["torch_loaded"] is False
        # The data layout a fresh start creates.
        for sub in ("models/Stable-diffusion", "models/VAE", "models/Lora", "models/ESRGAN", "models/GFPGAN",
                    "models/ControlNet", "models/SadTalker", "embeddings", "outputs"):
            assert (data / sub).is_dir(), sub
    finally:
        server.stop()


def test_unknown_flag_exits_with_a_clear_message(tmp_path: Path) -> None:
    result = subprocess.run([sys.executable, str(REPO / "launch.py"), "--skip-install", "--data-dir",
                             str(tmp_path), "--lisen"], capture_output=True, text=True, timeout=60, cwd=REPO)
    assert result.returncode == 2
    assert "unknown flag --lisen (did you mean --listen?)" in result.stderr
    assert "Valid flags:" in result.stderr


def test_commandline_args_env_is_honoured(tmp_path: Path) -> None:
    server = start_server(tmp_path / "data", env={"COMMANDLINE_ARGS": "--api --api-auth u:p"})
    try:
        assert httpx.get(server.url + "/studio/v1/health").status_code == 401
        assert httpx.get(server.url + "/studio/v1/health", auth=("u", "p")).status_code == 200
    finally:
        server.stop()


def test_port_in_use_is_explained(tmp_path: Path) -> None:
    server = start_server(tmp_path / "a")
    try:
        port = server.url.rsplit(":", 1)[1]
        result = subprocess.run([sys.executable, str(REPO / "launch.py"), "--skip-install", "--data-dir",
                                 str(tmp_path / "b"), "--port", port], capture_output=True, text=True, timeout=60,
                                cwd=REPO)
        assert result.returncode == 1
        assert "--port" in result.stdout and "another" in result.stdout
    finally:
        server.stop()


def test_corrupt_config_does_not_stop_the_app(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "config.json").write_text("{ this is not json")
    server = start_server(data, "--api")
    try:
        notices = httpx.get(server.url + "/studio/v1/health").json()["notices"]
        assert any("config.json could not be read" in n for n in notices)
        assert list(data.glob("config.json.corrupt-*"))
    finally:
        server.stop()


def test_listen_refuses_extension_changes_over_http(tmp_path: Path) -> None:
    data = tmp_path / "data"
    fx.write_extension(data / "extensions", "hello", fx.HELLO)
    server = start_server(data, "--listen")
    try:
        r = httpx.post(server.url + "/studio/v1/extensions/hello/disable")
        assert r.status_code == 403 and "--enable-insecure-extension-access" in r.json()["detail"]
    finally:
        server.stop()


def test_free_port_helper_gives_distinct_ports() -> None:
    assert free_port() != 0


@pytest.mark.skipif(not __import__("shutil").which("openssl"), reason="needs the openssl command to make a test cert")
def test_tls_serves_https(tmp_path: Path) -> None:
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out",
                    str(cert), "-days", "1", "-subj", "/CN=127.0.0.1", "-addext",
                    "subjectAltName=IP:127.0.0.1"], check=True, capture_output=True)
    data = tmp_path / "data"
    port = free_port()
    process = subprocess.Popen([sys.executable, str(REPO / "launch.py"), "--skip-install", "--data-dir", str(data),
                                "--port", str(port), "--tls-keyfile", str(key), "--tls-certfile", str(cert)],
                               cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            try:
                r = httpx.get(f"https://127.0.0.1:{port}/studio/v1/health", verify=str(cert), timeout=2)
                break
            except httpx.HTTPError:
                time.sleep(0.3)
        else:
            raise AssertionError("no HTTPS answer")
        assert r.status_code == 200
        with pytest.raises(httpx.HTTPError):
            httpx.get(f"http://127.0.0.1:{port}/studio/v1/health", timeout=2)
    finally:
        process.terminate()
        out, _ = process.communicate(timeout=10)
    assert f"Running on local URL:  https://127.0.0.1:{port}" in out

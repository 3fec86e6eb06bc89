"""Image URLs in API requests: fetched from public addresses only, never from the server's own network, capped
in size, with redirects checked hop by hop. A real HTTP server on loopback plays both the attacker's target and,
with the address check relaxed, a public host."""

from __future__ import annotations

import io
import ipaddress
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from PIL import Image

from modules.api.fetch_image import fetch_image, is_public
from modules.errors import UserError

MB = 1024 * 1024


def _png() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (16, 8), (200, 10, 10)).save(buffer, format="PNG")
    return buffer.getvalue()


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        routes = {"/cat.png": (200, _png()), "/text": (200, b"not an image"), "/big": (200, b"x" * 4096),
                  "/missing": (404, b"")}
        if self.path.startswith("/redirect"):
            self.send_response(302)
            self.send_header("Location", "/cat.png" if self.path == "/redirect" else self.path)
            self.end_headers()
            return
        status, body = routes.get(self.path, (404, b""))
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


def _anywhere(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    return True


def test_a_reachable_image_is_fetched(server: str) -> None:
    image = fetch_image(f"{server}/cat.png", "init_images[0]", MB, allowed=_anywhere)
    assert image.size == (16, 8)
    redirected = fetch_image(f"{server}/redirect", "init_images[0]", MB, allowed=_anywhere)
    assert redirected.size == (16, 8)


@pytest.mark.parametrize("url", ["/cat.png", "/redirect"])
def test_the_servers_own_network_is_refused(server: str, url: str) -> None:
    with pytest.raises(UserError, match="local or private address"):
        fetch_image(server + url, "init_images[0]", MB)


@pytest.mark.parametrize("url", ["http://localhost/x.png", "http://10.1.2.3/x.png", "http://[::1]/x.png",
                                 "http://169.254.169.254/latest/meta-data", "http://0.0.0.0/x.png"])
def test_private_and_metadata_addresses_are_refused_before_connecting(url: str) -> None:
    with pytest.raises(UserError, match="local or private address"):
        fetch_image(url, "mask", MB)


@pytest.mark.parametrize("url, message", [
    ("/text", "is not an image"),
    ("/big", "over the 1024-byte limit"),
    ("/missing", "answered HTTP 404"),
    ("/redirect-loop", "redirects more than"),
])
def test_bad_answers_are_clear(server: str, url: str, message: str) -> None:
    with pytest.raises(UserError, match=message) as caught:
        fetch_image(server + url, "init_images[0]", 1024, allowed=_anywhere)
    assert caught.value.field == "init_images[0]"


@pytest.mark.parametrize("url", ["file:///etc/passwd", "ftp://example.com/a.png", "gopher://x/"])
def test_only_http_urls(url: str) -> None:
    with pytest.raises(UserError, match="only http"):
        fetch_image(url, "init_images[0]", MB)


def test_public_means_global() -> None:
    assert is_public(ipaddress.ip_address("93.184.216.34"))
    for text in ("127.0.0.1", "192.168.1.5", "172.16.0.1", "fd00::1", "::ffff:127.0.0.1", "100.64.0.1", "224.0.0.1"):
        assert not is_public(ipaddress.ip_address(text)), text

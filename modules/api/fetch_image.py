"""http(s) image URLs in API requests (A1111's `api_enable_requests`), fetched without becoming an SSRF hole.

A URL is fetched only when the `api_enable_requests` setting is on. Whatever the setting, the server never
connects to itself or its network: every address the host name resolves to must be a public one, and so must the
address the connection actually reached (checked on the open socket, so a DNS answer that changes between the
check and the connect gains nothing). Redirects are followed by hand, each hop checked the same way; proxies from
the environment are not used (a proxy would hide the real peer). The body is capped at the request size limit.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable
from typing import Any
from urllib.parse import urljoin, urlsplit

from modules.engine.image_input import open_image_bytes
from modules.errors import UserError

MAX_REDIRECTS = 3
TIMEOUT_S = 15.0
IpCheck = Callable[[ipaddress.IPv4Address | ipaddress.IPv6Address], bool]


def is_public(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    mapped = getattr(ip, "ipv4_mapped", None)
    ip = mapped or ip
    return ip.is_global and not ip.is_multicast


def fetch_image(url: str, field: str, max_bytes: int, allowed: IpCheck = is_public) -> Any:
    """The image at `url`, opened (not decoded) like a base64 one.

    Raises:
        UserError: 400 naming `field` for a refused address, an HTTP error, a body over `max_bytes`, a timeout, or
            data that is not an image.
    """
    import httpx

    with httpx.Client(follow_redirects=False, timeout=TIMEOUT_S, trust_env=False) as client:
        for _ in range(MAX_REDIRECTS + 1):
            _check_host(url, field, allowed)
            try:
                with client.stream("GET", url, headers={"User-Agent": "SD-Studio"}) as response:
                    _check_peer(response, url, field, allowed)
                    if response.is_redirect:
                        url = urljoin(url, response.headers.get("location", ""))
                        continue
                    if response.status_code != 200:
                        raise UserError(f"{field}: {url} answered HTTP {response.status_code}", field=field)
                    return open_image_bytes(_read_capped(response, url, field, max_bytes), field)
            except httpx.HTTPError as e:
                raise UserError(f"{field}: could not fetch {url}: {type(e).__name__}: {e}", field=field) from None
    raise UserError(f"{field}: {url} redirects more than {MAX_REDIRECTS} times", field=field)


def _check_host(url: str, field: str, allowed: IpCheck) -> None:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UserError(f"{field}: only http:// and https:// image URLs are accepted", field=field)
    try:
        infos = socket.getaddrinfo(parts.hostname, parts.port or (443 if parts.scheme == "https" else 80),
                                   type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError):
        raise UserError(f"{field}: cannot resolve the host of {url}", field=field) from None
    for info in infos:
        ip = ipaddress.ip_address(info[4][0].split("%")[0])
        if not allowed(ip):
            raise UserError(f"{field}: {url} points to a local or private address ({ip}); the server does not "
                            "fetch from its own network", field=field)


def _check_peer(response: Any, url: str, field: str, allowed: IpCheck) -> None:
    stream = response.extensions.get("network_stream")
    peer = stream.get_extra_info("server_addr") if stream is not None else None
    if not peer:
        raise UserError(f"{field}: could not confirm the address {url} connected to", field=field)
    ip = ipaddress.ip_address(str(peer[0]).split("%")[0])
    if not allowed(ip):
        raise UserError(f"{field}: {url} connected to a local or private address ({ip}); refused", field=field)


def _read_capped(response: Any, url: str, field: str, max_bytes: int) -> bytes:
    declared = response.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > max_bytes:
        raise UserError(f"{field}: {url} is {int(declared)} bytes, over the {max_bytes}-byte limit", field=field)
    data = bytearray()
    for chunk in response.iter_bytes():
        data += chunk
        if len(data) > max_bytes:
            raise UserError(f"{field}: {url} is over the {max_bytes}-byte limit", field=field)
    return bytes(data)

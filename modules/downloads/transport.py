"""The HTTP side of downloads: the client, Hugging Face endpoint and offline settings, and header parsing.

Kept apart from the manager so the manager reads as "what happens to the file" and this module as "what
goes over the wire".
"""

from __future__ import annotations

import os
import re
from urllib.parse import urlsplit

import httpx

HF_HOSTS = ("huggingface.co", "hf.co")
DEFAULT_HF_ENDPOINT = "https://huggingface.co"
USER_AGENT = "sd-studio-downloader"
_TRUE_VALUES = ("1", "true", "yes", "on")
_CONTENT_RANGE = re.compile(r"^\s*bytes\s+(\d+)-(\d+)/(\d+|\*)\s*$", re.IGNORECASE)


def default_client() -> httpx.Client:
    """A client for large file downloads.

    Redirects are followed (Hugging Face and GitHub both redirect to a CDN). The read timeout is per
    socket read, not for the whole file, so a slow but steady 4 GB download never times out while a
    stalled one does. Proxies from the environment are honoured, as users behind one expect.
    """
    return httpx.Client(
        follow_redirects=True,
        timeout=httpx.Timeout(connect=20.0, read=60.0, write=60.0, pool=20.0),
        # Byte ranges must count bytes of the file itself, so ask for no content-encoding.
        headers={"User-Agent": USER_AGENT, "Accept-Encoding": "identity"},
    )


def is_huggingface_url(url: str) -> bool:
    """True for files served by the Hugging Face Hub (or the mirror HF_ENDPOINT points at)."""
    host = (urlsplit(url).hostname or "").lower()
    endpoint_host = (urlsplit(hf_endpoint()).hostname or "").lower()
    return host == endpoint_host or any(host == h or host.endswith("." + h) for h in HF_HOSTS)


def hf_offline() -> bool:
    """HF_HUB_OFFLINE, read when asked (not at import) so a setting made after start-up still counts."""
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in _TRUE_VALUES


def hf_endpoint() -> str:
    """The Hub endpoint: HF_ENDPOINT (a mirror, as huggingface_hub and A1111 allow) or the public Hub."""
    return (os.environ.get("HF_ENDPOINT") or DEFAULT_HF_ENDPOINT).rstrip("/")


def resolve_url(url: str) -> str:
    """The URL to fetch: a huggingface.co URL moves to HF_ENDPOINT when a mirror is set."""
    endpoint = hf_endpoint()
    if endpoint != DEFAULT_HF_ENDPOINT and url.startswith(DEFAULT_HF_ENDPOINT + "/"):
        return endpoint + url[len(DEFAULT_HF_ENDPOINT):]
    return url


def content_range_start(response: httpx.Response) -> int | None:
    """Where the bytes of a 206 answer start, from `Content-Range: bytes START-END/TOTAL`; None if unparsable."""
    match = _CONTENT_RANGE.match(response.headers.get("Content-Range", ""))
    return int(match.group(1)) if match else None


def full_size(response: httpx.Response, offset: int) -> int | None:
    """The size of the whole file as the server tells it, or None when it does not say.

    A 206 answer carries it in Content-Range; a 200 answer in Content-Length. `offset` is where this
    answer's bytes start in the file.
    """
    if response.status_code == 206:
        match = _CONTENT_RANGE.match(response.headers.get("Content-Range", ""))
        if match and match.group(3) != "*":
            return int(match.group(3))
    length = response.headers.get("Content-Length")
    if length is not None and length.isdigit():
        return offset + int(length)
    return None


def resume_validator(response: httpx.Response) -> str | None:
    """What to send as If-Range when resuming this file later: a strong ETag, else Last-Modified.

    With If-Range the server answers 206 only if the file is still the same, and 200 (the whole new file)
    if it changed, so a resume never glues two versions of a file together. Weak ETags are not allowed in
    If-Range.
    """
    etag = response.headers.get("ETag")
    if etag and not etag.startswith("W/"):
        return etag
    return response.headers.get("Last-Modified")

"""Headless Debian chromium driven by playwright (never `playwright install`: no browser downloads here)."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def chromium_path() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path:
        return path
    if os.environ.get("CI"):
        pytest.fail("chromium is not installed; CI must run the browser tests (python launch.py test installs it)")
    pytest.skip("chromium is not installed (Debian package 'chromium'); browser tests skipped")
    raise AssertionError  # not reached


@contextmanager
def browser_page(width: int = 1280, height: int = 900) -> Iterator[object]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium_path(), headless=True, args=CHROMIUM_FLAGS)
        try:
            page = browser.new_page(viewport={"width": width, "height": height})
            page.set_default_timeout(30_000)
            yield page
        finally:
            browser.close()


def open_app(page, url: str) -> None:  # type: ignore[no-untyped-def]
    """Load the UI and wait until its tabs are drawn. (Not 'networkidle': Gradio keeps a heartbeat stream open
    while the page has per-session state, so the network is never idle.)"""
    page.goto(url, wait_until="load")
    page.get_by_role("tab", name="Extensions", exact=True).wait_for()

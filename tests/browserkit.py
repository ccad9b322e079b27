"""Headless Chromium for the browser tests (the dashboard, cross-origin pages)."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Sequence
from typing import Any

import pytest

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = (
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)


@contextlib.contextmanager
def headless_chromium(extra_args: Sequence[str] = ()) -> Iterator[Any]:
    """Debian's Chromium driven by Playwright (never Playwright's own download: the machine is
    offline); skips only when either is missing (`scripts/install-browser` installs both)."""
    if not os.access(CHROMIUM, os.X_OK):
        pytest.skip(f"{CHROMIUM} is not installed: run scripts/install-browser (as root)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("playwright is not installed in the virtualenv: run scripts/install-browser")
    with sync_playwright() as pw:
        args = [*CHROMIUM_ARGS, *extra_args]
        chromium = pw.chromium.launch(executable_path=CHROMIUM, args=args, headless=True)
        try:
            yield chromium
        finally:
            chromium.close()  # stops the browser process it started

"""End-to-end tests drive Debian's Chromium (never a browser downloaded by Playwright)."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def chromium() -> str:
    """Path of Debian's Chromium, with Playwright importable; skips the test where either is missing."""
    pytest.importorskip("playwright.sync_api")
    from dermaseg.webui.bench_browser import CHROMIUM

    if not Path(CHROMIUM).exists():
        pytest.skip("Debian's chromium is not installed (apt-get install -y chromium)")
    return CHROMIUM


@pytest.fixture(scope="module")
def browser(chromium):
    """Headless Debian Chromium for one test module (launched as `bench_browser` does; one Playwright at a
    time in a process, so per module)."""
    from playwright.sync_api import sync_playwright

    from dermaseg.webui.bench_browser import launch_chromium

    with sync_playwright() as pw:
        b = launch_chromium(pw)
        yield b
        b.close()

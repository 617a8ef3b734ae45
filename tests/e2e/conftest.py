"""End-to-end tests drive Debian's Chromium (never a browser downloaded by Playwright)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def chromium() -> str:
    """Path of Debian's Chromium, with Playwright importable; skips the test where either is missing."""
    pytest.importorskip("playwright.sync_api")
    from devtools.bench_browser import CHROMIUM

    if not Path(CHROMIUM).exists():
        pytest.skip("Debian's chromium is not installed (apt-get install -y chromium)")
    return CHROMIUM


@pytest.fixture(scope="module")
def browser(chromium):
    """Headless Debian Chromium for one test module (launched as `bench_browser` does; one Playwright at a
    time in a process, so per module)."""
    from devtools.bench_browser import launch_chromium
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        b = launch_chromium(pw)
        yield b
        b.close()


@pytest.fixture(scope="session")
def serve_project():
    """`_serve_project`, for a test module's own `served` fixture."""
    return _serve_project


@contextmanager
def _serve_project(engine, folder: Path, cache: Path, db: str | None = None) -> Iterator[tuple[object, str]]:
    """The page on the project in `folder` (dev images copied there; with `db`, the project on that
    PostgreSQL database), launched in this process on 127.0.0.1 with a private cache folder: yields
    (project, URL); app and project closed after."""
    from dermaseg.core.annotation.project import Project
    from dermaseg.core.settings import Settings
    from dermaseg.webui.page.app import build_app, launch

    project = Project.init(folder, db=db, image_cache=cache / "images")
    app = build_app(engine, project, Settings.from_env(cache_dir=cache))
    try:
        yield project, launch(app, block=False, quiet=True)
    finally:
        app.close()
        project.close()

"""Fixtures for the page's tests: a small project of real dev images in a temporary folder."""

from __future__ import annotations

from pathlib import Path

import pytest

PROJECT_CASES = 3


@pytest.fixture(scope="module")
def project_dir(dev_folder, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder with the first PROJECT_CASES dev images (copied to a temp folder, never the repo)."""
    folder = tmp_path_factory.mktemp("project")
    dev_folder(folder, PROJECT_CASES)
    return folder


@pytest.fixture(scope="module")
def project(project_dir: Path):
    from dermaseg.core.annotation.project import Project

    p = Project.init(project_dir)
    yield p
    p.close()


@pytest.fixture(scope="module")
def web_settings(tmp_path_factory: pytest.TempPathFactory):
    """Settings whose cache folder (display images, exports, Gradio temp) is private to the module."""
    from dermaseg.core.settings import Settings

    return Settings.from_env(cache_dir=tmp_path_factory.mktemp("webcache"))


@pytest.fixture(scope="module")
def served(engine, project, web_settings):
    """The app launched in-process on 127.0.0.1 (one launch per test module); yields (app, url)."""
    from dermaseg.webui.page.app import build_app, launch

    app = build_app(engine, project, web_settings)
    url = launch(app, block=False, quiet=True)
    yield app, url
    app.close()

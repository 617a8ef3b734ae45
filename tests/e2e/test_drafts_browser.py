"""Work in progress survives, in Debian's Chromium: a reload in the middle of work, and a kill -9 of
`dermaseg serve` followed by a restart, bring back the same image with the same prompts and outline
(kept as a draft in the project store, never in the browser). The annotator name comes back too."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from devtools import load_test

pytestmark = pytest.mark.browser


def project_folder(dev_data, tmp_path):
    folder = tmp_path / "project"
    folder.mkdir()
    for case in dev_data[:3]:
        shutil.copy(case.image, folder / case.image.name)
    return folder


def wait_image(page, name: str, timeout_ms: float = 90000) -> None:
    """Wait until the canvas shows the image `name` (its status line names it)."""
    page.wait_for_selector(".ds-svg image.ds-img[href]", timeout=timeout_ms)
    page.wait_for_function(
        f"(document.querySelector('.ds-status')?.textContent || '').includes({name!r})", timeout=timeout_ms
    )


def work_on_second_image(page, dev_data, project_dir) -> tuple[str, dict]:
    """Go to the second image, click the lesion, drag a vertex of the outline; returns its name and what
    the canvas shows (prompts, outline path)."""
    from devtools.bench_browser import click_image, drag_handle, wait_measured

    names = sorted(p.name for p in project_dir.iterdir() if p.suffix.lower() in (".jpg", ".png"))
    page.locator("#ds-next").click()
    wait_image(page, names[1])
    expert = next(c for c in dev_data if c.image.name == names[1]).load_mask()
    ys, xs = np.nonzero(expert)
    page.get_by_role("button", name="+ Lesion").click()
    wait_measured(page, click_image(page, float(xs.mean()), float(ys.mean())))
    assert page.locator(".ds-prompts .ds-pos").count() == 1
    page.get_by_role("button", name="✎ Edit outline").click()
    drag_handle(page, -30, -20)
    page.wait_for_function("(document.querySelector('.ds-status')?.textContent || '').includes('outline edited')")
    return names[1], shown(page)


def shown(page) -> dict:
    return page.evaluate(
        """() => ({
            mask: document.querySelector('.ds-mask').getAttribute('d'),
            pos: [...document.querySelectorAll('.ds-prompts .ds-pos')]
                .map(c => [c.getAttribute('cx'), c.getAttribute('cy')]),
            neg: document.querySelectorAll('.ds-prompts .ds-neg').length,
        })"""
    )


def test_a_reload_in_the_middle_of_work_brings_it_back(engine, dev_data, tmp_path, browser):
    from devtools.bench_browser import VIEWPORT

    from dermaseg.core.annotation.project import Project
    from dermaseg.core.settings import Settings
    from dermaseg.webui.page.app import build_app, launch

    folder = project_folder(dev_data, tmp_path)
    project = Project.init(folder)
    app = build_app(engine, project, Settings.from_env(cache_dir=tmp_path / "cache"))
    url = launch(app, block=False, quiet=True)
    try:
        page = browser.new_page(viewport=VIEWPORT)
        page.goto(url, wait_until="load")
        page.wait_for_selector(".ds-svg image.ds-img[href]", timeout=90000)
        annotator = page.locator("#ds-annotator textarea, #ds-annotator input").first
        annotator.fill("Dr Reload")
        annotator.blur()
        name, before = work_on_second_image(page, dev_data, folder)
        assert len(before["mask"]) > 50
        page.wait_for_function(
            "(document.querySelector('#ds-summary')?.textContent || '').includes('1 in progress')", timeout=20000
        )

        page.reload(wait_until="load")
        wait_image(page, name)  # the image the user was on, not the first of the list
        page.wait_for_function(
            "(document.querySelector('.ds-status')?.textContent || '').includes('restored the work in progress')",
            timeout=30000,
        )
        assert shown(page) == before
        assert "1 in progress" in page.locator("#ds-summary").text_content()
        page.wait_for_function(
            "(document.querySelector('#ds-annotator textarea, #ds-annotator input')?.value || '') === 'Dr Reload'",
            timeout=20000,
        )
        storage = page.evaluate("JSON.stringify([Object.keys(localStorage), Object.keys(sessionStorage)])")
        assert "draft" not in storage.lower()  # kept in the project store, not the browser
        page.close()
    finally:
        app.close()
        project.close()


def test_kill_9_of_the_server_mid_work_then_restart_brings_it_back(dev_data, models_dir, tmp_path, browser):
    from devtools.bench_browser import VIEWPORT

    from dermaseg.core.annotation.project import Project

    folder = project_folder(dev_data, tmp_path)
    Project.init(folder).close()
    cache = load_test.server_cache(models_dir, tmp_path / "cache")
    server = load_test.start_server(folder, cache)
    try:
        page = browser.new_page(viewport=VIEWPORT)
        page.goto(server.url, wait_until="load")
        page.wait_for_selector(".ds-svg image.ds-img[href]", timeout=90000)
        name, before = work_on_second_image(page, dev_data, folder)
    finally:
        server.kill()  # SIGKILL, mid-work: nothing accepted
    server = load_test.start_server(folder, cache)
    try:
        page.goto(server.url, wait_until="load")
        wait_image(page, name)
        page.wait_for_function(
            "(document.querySelector('.ds-status')?.textContent || '').includes('restored the work in progress')",
            timeout=30000,
        )
        assert shown(page) == before
        page.close()
    finally:
        server.stop()

"""A project with users, in Debian's Chromium: the page asks for a login (even on 127.0.0.1), refuses a wrong
password, and, once a user is in, shows who they are (name and role, not editable) and stores their name
in the provenance of each lesion they save; Log out goes back to the login form."""

from __future__ import annotations

import shutil

import pytest

pytestmark = pytest.mark.browser

ANN = ("ann", "ann-secret-passphrase")
BOB = ("bob", "bob-secret-passphrase")


@pytest.fixture
def team(engine, dev_data, tmp_path):
    """The page on a project with users ann (reviewer) and bob, launched without --auth: yields (project, url)."""
    from dermaseg.core.annotation.project import Project
    from dermaseg.core.settings import Settings
    from dermaseg.webui.page.app import build_app, launch

    folder = tmp_path / "project"
    folder.mkdir()
    shutil.copy(dev_data[0].image, folder / dev_data[0].image.name)
    project = Project.init(folder)
    project.add_user(*ANN, role="reviewer")
    project.add_user(*BOB)
    app = build_app(engine, project, Settings.from_env(cache_dir=tmp_path / "cache"))
    try:
        yield project, launch(app, block=False, quiet=True)
    finally:
        app.close()
        project.close()


def log_in(page, name: str, password: str) -> None:
    page.locator("input[type=password]").wait_for(timeout=30000)
    page.locator("input:not([type=password])").first.fill(name)
    page.locator("input[type=password]").fill(password)
    page.get_by_role("button", name="Login").click()


def test_a_user_logs_in_and_their_saves_name_them(team, dev_data, browser):
    from devtools.bench_browser import VIEWPORT, drag_box, image_size, wait_measured

    project, url = team
    page = browser.new_page(viewport=VIEWPORT)
    page.goto(url, wait_until="load")
    log_in(page, ANN[0], BOB[1])  # bob's password is not ann's
    page.get_by_text("Incorrect credentials").wait_for(timeout=30000)
    assert page.locator(".ds-svg").count() == 0  # still on the login form

    log_in(page, *ANN)
    page.wait_for_selector(".ds-svg image.ds-img[href]", timeout=90000)
    who = page.locator("#ds-annotator textarea, #ds-annotator input").first
    page.wait_for_function(
        "(document.querySelector('#ds-annotator textarea, #ds-annotator input')?.value || '') === 'ann (reviewer)'",
        timeout=20000,
    )
    assert not who.is_editable()  # the login names who saves: nothing to type

    w, h = image_size(page)
    assert wait_measured(page, drag_box(page, (0.2 * w, 0.15 * h, 0.8 * w, 0.85 * h)), timeout_ms=30000)
    page.locator("#ds-accept").click()
    page.wait_for_function(
        "(document.querySelector('#ds-summary')?.textContent || '').includes('1 of 1 done')", timeout=40000
    )
    rec = project.images()[0]
    (saved,) = project.annotations(rec.id)
    assert saved.provenance.annotator == "ann"

    page.locator("#ds-logout").click()  # back to the login form; bob logs in on the same browser
    log_in(page, *BOB)
    page.wait_for_function(
        "(document.querySelector('#ds-annotator textarea, #ds-annotator input')?.value || '') === 'bob (annotator)'",
        timeout=60000,
    )
    page.close()

"""In Chromium, a team project with logins: an annotator's Next image, an outline saved under her name and
Submit for review; a reviewer's list of submitted work, Send back with a comment, which she then sees."""

from __future__ import annotations

import shutil

import pytest

pytestmark = pytest.mark.browser

PASSWORD = "team-password"


@pytest.fixture(scope="module")
def team_url(engine, dev_data, tmp_path_factory):
    from dermaseg.core.annotation.project import Project
    from dermaseg.core.settings import Settings
    from dermaseg.webui.page.app import build_app, launch

    folder = tmp_path_factory.mktemp("team-project")
    for case in dev_data[:2]:
        shutil.copy(case.image, folder / case.image.name)
    project = Project.init(folder)
    project.add_user("ann", PASSWORD, "annotator")
    project.add_user("rev", PASSWORD, "reviewer")
    app = build_app(engine, project, Settings.from_env(cache_dir=tmp_path_factory.mktemp("team-cache")))
    url = launch(app, block=False, quiet=True)  # the project's users log in
    yield project, url
    app.close()
    project.close()


def _login(browser, url: str, name: str):
    from devtools.bench_browser import VIEWPORT

    page = browser.new_context(viewport=VIEWPORT).new_page()  # its own cookies: its own login
    page.goto(url, wait_until="load")
    page.locator("input[type=password]").wait_for(timeout=30000)
    page.locator("input:not([type=password])").first.fill(name)
    page.locator("input[type=password]").fill(PASSWORD)
    page.get_by_role("button", name="Login").click()
    page.wait_for_selector(".ds-svg image.ds-img[href]", timeout=90000)
    _wait_text(page, "#ds-team-status", f"{name} (")
    return page


def _wait_open(page, name: str) -> None:
    """Until the image list shows `name` as the open image."""
    page.wait_for_function(
        "(name) => (document.querySelector('#ds-images input')?.value || '').includes(name)", arg=name, timeout=30000
    )


def _wait_text(page, selector: str, text: str, timeout_ms: float = 30000) -> None:
    page.wait_for_function(
        "([sel, text]) => (document.querySelector(sel)?.textContent || '').includes(text)",
        arg=[selector, text],
        timeout=timeout_ms,
    )


def test_next_submit_send_back_in_the_browser(team_url, browser) -> None:
    from devtools.bench_browser import drag_box, image_size, wait_measured

    project, url = team_url
    first = sorted(project.images(), key=lambda r: r.id)[0]
    ann = _login(browser, url, "ann")
    assert not ann.locator("#ds-team-review").is_visible()  # review is for reviewers
    ann.locator("#ds-team-next").click()
    _wait_text(ann, "#ds-team-status", "yours to annotate")
    _wait_open(ann, first.path)  # the claimed image is open
    annotator = ann.locator("#ds-annotator textarea, #ds-annotator input").first
    if annotator.is_editable():  # before logins named the saver, the field did
        annotator.fill("ann")
        annotator.blur()
    w, h = image_size(ann)
    assert wait_measured(ann, drag_box(ann, (0.2 * w, 0.2 * h, 0.8 * w, 0.8 * h)), timeout_ms=30000)
    ann.locator("#ds-accept").click()
    _wait_text(ann, "#ds-summary", "1 of 2 done", timeout_ms=40000)
    ann.locator("#ds-team-submit").click()
    _wait_text(ann, "#ds-team-status", "submitted, awaiting review")
    assert [(a.user, a.state) for a in project.team.assignments(first.id)] == [("ann", "submitted")]

    rev = _login(browser, url, "rev")
    pick = rev.locator("#ds-team-review-pick input:visible")
    pick.wait_for(timeout=30000)
    assert rev.locator("#ds-team-review:visible").count() == 1  # shown once
    pick.click()
    rev.get_by_role("option", name=f"{first.path} · ann").click()
    _wait_open(rev, first.path)
    rev.locator("#ds-team-comment textarea:visible").fill("the lower border is too generous")
    rev.locator("#ds-team-return:visible").click()
    _wait_text(rev, "#ds-team-status", "rater(s) per image")
    for _ in range(100):  # the verdict is saved when the click's event has run
        if project.team.assignments(first.id)[0].state == "returned":
            break
        rev.wait_for_timeout(100)
    slot = project.team.assignments(first.id)[0]
    assert (slot.state, slot.reviewer, slot.comment) == ("returned", "rev", "the lower border is too generous")

    ann.locator("#ds-team-next").click()
    _wait_text(ann, "#ds-team-status", "sent back to you")
    _wait_text(ann, "#ds-team-status", "the lower border is too generous")
    ann.context.close()
    rev.context.close()

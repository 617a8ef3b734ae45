"""With a login (`serve --auth`), the real page logs in through Gradio's form and its gestures still take the
fast path: the browser's session cookie satisfies the gesture route, which refuses requests without it."""

from __future__ import annotations

import shutil

import pytest

from dermaseg.webui.gesture_route import PATH

pytestmark = pytest.mark.browser

LOGIN = ("ann", "correct-horse")


@pytest.fixture(scope="module")
def guarded(engine, dev_data, tmp_path_factory):
    from dermaseg.core.annotation.project import Project
    from dermaseg.core.settings import Settings
    from dermaseg.webui.page.app import build_app, launch

    folder = tmp_path_factory.mktemp("login-project")
    shutil.copy(dev_data[0].image, folder / dev_data[0].image.name)
    project = Project.init(folder)
    app = build_app(engine, project, Settings.from_env(cache_dir=tmp_path_factory.mktemp("login-cache")))
    url = launch(app, block=False, quiet=True, auth=LOGIN)
    yield url
    app.close()
    project.close()


def test_a_logged_in_page_uses_the_fast_path(guarded, chromium):
    from devtools.bench_browser import VIEWPORT, drag_box, image_size, launch_chromium, wait_measured
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = launch_chromium(pw)
        page = browser.new_page(viewport=VIEWPORT)
        answers: list[int] = []
        page.on("response", lambda r: answers.append(r.status) if r.url.endswith(PATH) else None)
        page.goto(guarded, wait_until="load")
        page.locator("input[type=password]").wait_for(timeout=30000)
        assert "try waits longer" in page.content()  # the limits, stated on the login page
        page.locator("input:not([type=password])").first.fill(LOGIN[0])
        page.locator("input[type=password]").fill(LOGIN[1])
        page.get_by_role("button", name="Login").click()
        page.wait_for_selector(".ds-svg image.ds-img[href]", timeout=60000)
        w, h = image_size(page)
        ack = drag_box(page, (0.25 * w, 0.2 * h, 0.75 * w, 0.8 * h))
        assert wait_measured(page, ack, timeout_ms=30000)
        assert answers and set(answers) == {200}  # no 401 and fallback to the Gradio event
        assert len(page.locator(".ds-mask").get_attribute("d")) > 50
        browser.close()

"""Several lesions per image, in Debian's Chromium against the real server (issue 16 item 1, issue 17 item 4).

The exact steps that lost a saved lesion: click the lesion, edit its outline, accept; reload the page, reopen
the image, Esc, drag a box on normal skin, accept -> two annotations in `dermaseg project export-coco`, the
first unchanged. And two tabs on one saved lesion: the second save is refused with a choice, nothing lost.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time

import numpy as np
import pytest

from dermaseg.core.evaluation.dataset import box_from_mask

pytestmark = pytest.mark.browser

CASE = 3  # a dev image whose corners are normal skin (see `skin_box`)


@pytest.fixture(scope="module")
def served(engine, dev_data, tmp_path_factory, serve_project):
    """Two images (a- and b-, so their order is known), the app on 127.0.0.1; yields (project, url, folder)."""
    folder = tmp_path_factory.mktemp("e2e-lesions")
    for prefix, case in (("a-", dev_data[CASE]), ("b-", dev_data[CASE + 1])):
        shutil.copy(case.image, folder / f"{prefix}{case.image.name}")
    with serve_project(engine, folder, tmp_path_factory.mktemp("e2e-lesions-cache")) as (project, url):
        yield project, url, folder


def wait_text(page, selector: str, text: str, what: str, timeout_ms: float = 30000) -> None:
    """Wait until some element matching `selector` contains `text`; on timeout, fail with what the page says."""
    try:
        page.wait_for_function(
            f"[...document.querySelectorAll({selector!r})].some(e => (e.textContent || '').includes({text!r}))",
            timeout=timeout_ms,
        )
    except Exception:
        shown = page.evaluate(
            "[...document.querySelectorAll('.ds-status, .toast-body, #ds-confirm-text, #ds-conflict-text')]"
            ".map(e => e.textContent)"
        )
        pytest.fail(f"{what}: {text!r} not in {selector}; the page shows {shown!r}")


def wait_for(check, what: str, timeout_s: float = 30.0):
    """Poll `check()` until it returns something true (the store is read by the test's own connection)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        got = check()
        if got:
            return got
        time.sleep(0.1)
    pytest.fail(f"timed out waiting for {what}")


def open_page(browser, url: str, path: str):
    """A new tab on the page, showing the project image `path` (Next until it is the one shown)."""
    from devtools.bench_browser import VIEWPORT

    page = browser.new_page(viewport=VIEWPORT)
    page.goto(url, wait_until="load")
    show(page, path)
    return page


def show(page, path: str) -> None:
    page.wait_for_selector(".ds-svg image.ds-img[href]", timeout=60000)
    wait_text(page, ".ds-status", "px, embedding", "no image opened", timeout_ms=60000)
    if path not in page.locator(".ds-status").text_content():
        page.locator("#ds-next").click()
        wait_text(page, ".ds-status", path, f"{path} not opened", timeout_ms=60000)


def export_coco(folder, out) -> dict:
    """`dermaseg project export-coco` in its own process, as a user would run it."""
    subprocess.run(
        [sys.executable, "-m", "dermaseg.webui.cli", "project", "export-coco", str(folder), "--out", str(out)],
        check=True,
        capture_output=True,
        timeout=120,
    )
    return json.loads(out.read_text())


def test_esc_and_a_box_on_skin_after_a_reload_add_a_second_lesion(served, browser, dev_data, tmp_path, skin_box):
    import pycocotools.coco
    from devtools.bench_browser import click_image, drag_box, drag_handle, wait_measured
    from scipy import ndimage

    project, url, folder = served
    rec = project.images()[0]
    expert = dev_data[CASE].load_mask()
    page = open_page(browser, url, rec.path)

    # click the lesion, drag a vertex of its outline, accept
    depth = ndimage.distance_transform_edt(expert)
    y, x = np.unravel_index(int(np.argmax(depth)), depth.shape)
    page.evaluate("""() => { const m = document.querySelector('.ds-mask'); window.__outlines = [];
        new MutationObserver(() => window.__outlines.push(m.getAttribute('d')))
            .observe(m, {attributeFilter: ['d']}); }""")
    wait_measured(page, click_image(page, float(x), float(y)))
    drawn = page.evaluate("window.__outlines")
    assert len(page.locator(".ds-mask").get_attribute("d")) > 50
    # a click alone: its preview (the answer on the image alone) drawn first, then the final outline
    assert len({d for d in drawn if d}) >= 2 and drawn[-1] == page.locator(".ds-mask").get_attribute("d")
    first, final = page.evaluate("[window.__dsFirstDrawn.at(-1), window.__dsLatencies.at(-1)]")
    assert first <= final  # (the same frame, should both come before the page could draw)
    page.get_by_role("button", name="✎ Edit outline").click()
    wait_measured(page, drag_handle(page, -25, -25))
    page.locator("#ds-accept").click()
    wait_text(page, ".toast-body", "lesion 1 of 1", "first save not confirmed")
    first = wait_for(lambda: project.annotations(rec.id), "the first save")
    assert len(first) == 1 and first[0].provenance.source == "manual"

    # reload the page, reopen the image, Esc, a box on normal skin, accept
    page.reload(wait_until="load")
    show(page, rec.path)
    wait_text(page, ".ds-status", "1 saved lesion shown", "the saved lesion not announced")
    page.locator("#ds-title").click()  # focus on the page, not in a field
    page.keyboard.press("Escape")
    wait_text(page, ".ds-status", "Draw a box", "Esc not applied")
    wait_measured(page, drag_box(page, skin_box(expert)))
    assert len(page.locator(".ds-mask").get_attribute("d")) > 20
    page.locator("#ds-accept").click()
    wait_text(page, ".toast-body", "lesion 2 of 2", "second save not confirmed")
    both = wait_for(lambda: len(project.annotations(rec.id)) == 2 and project.annotations(rec.id), "two lesions")
    assert both[0] == first[0]  # the first, untouched: same mask, outline, version, provenance

    data = export_coco(folder, tmp_path / "all.json")
    anns = [a for a in data["annotations"] if a["image_id"] == rec.id]
    assert [a["id"] for a in anns] == [a.id for a in both]
    gt = pycocotools.coco.COCO(str(tmp_path / "all.json"))
    assert np.array_equal(gt.annToMask(gt.loadAnns([first[0].id])[0]).astype(bool), first[0].mask())
    assert anns[0]["dermaseg"]["polygons"] == first[0].polygons
    assert not (first[0].mask() & both[1].mask()).any()  # the box on skin is another region

    # the lesions panel lists both; exporting an image with nothing saved keeps the earlier links
    assert page.locator("#ds-lesions label").count() == 3  # two lesions and "new lesion"
    page.get_by_role("tab", name="Open & export").click()
    page.locator("#ds-export-project").click()
    link = page.locator("#ds-downloads a[href*='coco']").first
    link.wait_for(timeout=20000)
    href = link.get_attribute("href")
    page.locator("#ds-next").click()
    wait_text(page, ".ds-status", project.images()[1].path, "next image not shown", timeout_ms=60000)
    page.locator("#ds-export-image").click()
    wait_text(page, ".toast-body", "nothing to export", "no refusal shown")
    page.wait_for_timeout(500)
    assert page.locator(f"#ds-downloads a[href='{href}']").count() == 1
    page.close()


def test_two_tabs_on_one_saved_lesion(served, browser, dev_data):
    """Both tabs select the same saved lesion and accept: the second gets the conflict and keeps both."""
    from devtools.bench_browser import drag_box, wait_measured

    project, url, _ = served
    rec = project.images()[1]
    expert = dev_data[CASE + 1].load_mask()
    saved = project.add_annotation(rec.id, expert, "lesion")
    tabs = [open_page(browser, url, rec.path) for _ in range(2)]
    for page in tabs:
        page.locator("#ds-lesions label").filter(has_text=f"annotation {saved.id} ").click()
        wait_text(page, ".ds-status", "editing lesion 1 of 1", "the saved lesion not selected")
    x0, y0, x1, y1 = box_from_mask(expert, margin=8)
    boxes = [(x0 - 30, y0 - 30, x1 + 30, y1 + 30), (x0 + 0.25 * (x1 - x0), y0 + 0.25 * (y1 - y0), x1, y1)]
    for page, box in zip(tabs, boxes, strict=True):
        wait_measured(page, drag_box(page, box))
    # tab A: replacing asks first, then saves version 2
    a, b = tabs
    a.locator("#ds-accept").click()
    wait_text(a, "#ds-confirm-text", "replace saved lesion 1 of 1", "replace not asked")
    a.locator("#ds-confirm").click()
    wait_text(a, ".toast-body", "lesion 1 of 1", "A's save not confirmed")
    after_a = wait_for(lambda: (x := project.annotation(saved.id)).version == 2 and x, "A's save")
    assert not np.array_equal(after_a.mask(), saved.mask())
    # tab B, from version 1: refused, with the two choices; A's save stays
    b.locator("#ds-accept").click()
    wait_text(b, "#ds-confirm-text", "replace saved lesion", "replace not asked in B")
    b.locator("#ds-confirm").click()
    wait_text(b, "#ds-conflict-text", "changed since you opened it", "no conflict shown")
    assert b.locator("#ds-conflict-reload").is_visible() and b.locator("#ds-conflict-keep").is_visible()
    time.sleep(0.5)
    assert project.annotation(saved.id) == after_a and len(project.annotations(rec.id)) == 1
    b.locator("#ds-conflict-keep").click()
    wait_text(b, ".toast-body", "lesion 2 of 2", "keep both not saved")
    anns = wait_for(lambda: len(project.annotations(rec.id)) == 2 and project.annotations(rec.id), "B's copy")
    assert anns[0] == after_a and anns[1].area_px < after_a.area_px  # A's kept, B's beside it
    for page in tabs:
        page.close()

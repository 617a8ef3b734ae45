"""The page's agreement view in Debian's Chromium: a project of three dev images, the experts' masks
imported under rater "a", copies grown 3 px (one image) and moved 8 px (another) under rater "b", the third
image rated by "a" only. Compute -> the figures, the bar plot and the table show core's numbers (checked
against `agreement()` run on the arrays); selecting a row opens that image; no request leaves 127.0.0.1."""

from __future__ import annotations

import json
import shutil
from urllib.parse import urlparse

import numpy as np
import pytest
from scipy import ndimage

from dermaseg.core.annotation import coco
from dermaseg.core.annotation.agreement import AGREEMENT_NOTICE, agreement
from dermaseg.core.annotation.project import Project
from dermaseg.core.calibration import Calibration

pytestmark = pytest.mark.browser

MM_PER_PX = 0.02


def _coco(masks: dict[str, np.ndarray]) -> bytes:
    """A plain COCO file (as from another tool): one annotation per image."""
    images = [coco.image_dict(i, name, m.shape[1], m.shape[0]) for i, (name, m) in enumerate(masks.items(), 1)]
    anns = [coco.annotation_dict(i, i, 1, m) for i, m in enumerate(masks.values(), 1)]
    return json.dumps(coco.dataset_dict(images, anns, [(1, "lesion")])).encode()


@pytest.fixture(scope="module")
def rated(dev_data, tmp_path_factory):
    """(folder, {image: {rater: mask}} of the images with two raters, the image with one rater)."""
    folder = tmp_path_factory.mktemp("e2e-agreement")
    expert = {}
    for case in dev_data[:3]:
        shutil.copy(case.image, folder / case.image.name)
        expert[case.image.name] = case.load_mask()
    names = list(expert)
    b = {names[0]: ndimage.binary_dilation(expert[names[0]], iterations=3),
         names[1]: np.roll(expert[names[1]], 8, axis=1)}  # fmt: skip
    with Project.init(folder) as p:
        p.import_coco(_coco(expert), annotator="a")
        p.import_coco(_coco(b), annotator="b")
        p.set_calibration(p.image_by_path(names[0]).id, Calibration(MM_PER_PX))
    return folder, {n: {"a": expert[n], "b": b[n]} for n in b}, names[2]


@pytest.fixture(scope="module")
def served(engine, rated, tmp_path_factory, serve_project):
    with serve_project(engine, rated[0], tmp_path_factory.mktemp("e2e-agreement-cache")) as served:
        yield served


ROWS_JS = """() => [...document.querySelectorAll('#ds-agree-table [role=row][data-index]')]
    .map(row => [...row.querySelectorAll('[role=gridcell]')].map(cell => cell.textContent.trim()))"""
BARS_JS = """() => [...document.querySelectorAll('#ds-agree-plot path[aria-roledescription=bar]')]
    .map(e => e.getAttribute('aria-label'))"""


def test_agreement_view(served, rated, browser):
    from devtools.bench_browser import VIEWPORT

    project, url = served
    _, masks, lone = rated
    names = list(masks)
    want = agreement(masks, {names[0]: Calibration(MM_PER_PX)})  # on the arrays, not through the store
    page = browser.new_page(viewport=VIEWPORT)
    requests: list[str] = []
    page.on("request", lambda r: requests.append(r.url))
    page.goto(url, wait_until="load")
    page.wait_for_selector(".ds-svg image.ds-img[href]", timeout=60000)

    # nothing computed on page load
    page.get_by_text("Agreement between raters").first.click()
    summary = page.locator("#ds-agree-summary")
    summary.get_by_text("press Compute").wait_for(timeout=10000)
    assert page.evaluate(ROWS_JS) == [] and page.evaluate(BARS_JS) == []

    page.locator("#ds-agree-compute").click()
    page.wait_for_function(f"({BARS_JS})().length === {len(names)}", timeout=60000)
    page.locator("#ds-agree-table").scroll_into_view_if_needed()
    page.wait_for_function(f"({ROWS_JS})().length === {len(names)}", timeout=10000)  # one pair an image
    text = summary.text_content()
    assert "2 image(s) with ≥ 2 raters" in text and "raters: a, b" in text and "1 image(s) with one rater" in text
    assert f"mean Dice: {want.mean_dice:.3f}" in text and f"sd {want.dice.sd:.3f}" in text
    assert f"mean HD95: {want.hd95_px.mean:.1f} px" in text and f"{want.hd95_mm.mean:.2f} mm" in text
    assert AGREEMENT_NOTICE in text

    # the plot: one bar per image with two raters, its mean Dice
    # (Vega's label of a bar: "image: NAME; mean Dice: 0.97677...; mean HD95 px: 3")
    fields = [dict(f.split(": ", 1) for f in label.split("; ")) for label in page.evaluate(BARS_JS)]
    bars = {f["image"]: f for f in fields}
    assert set(bars) == set(names) and lone not in bars
    for im in want.images:
        assert float(bars[im.file_name]["mean Dice"]) == pytest.approx(im.mean_dice, abs=1e-6)
        assert float(bars[im.file_name]["mean HD95 px"]) == pytest.approx(im.mean_hd95_px, abs=1e-6)

    # the table: one row per pair, most disagreement first (the image moved 8 px), core's figures
    rows = page.evaluate(ROWS_JS)
    assert [r[0] for r in rows] == [im.file_name for im in want.ranked] == [names[1], names[0]]
    for row, (name, p) in zip(rows, want.ranked_pairs(), strict=True):
        mm = ["–", "–", "–"] if p.mm_per_px is None else [
            f"{p.hd95_mm:.2f}", f"{p.area_diff_mm2:+.2f}", f"{p.diameter_diff_mm:+.2f}"]  # fmt: skip
        assert row == [name, "a vs b", f"{p.dice:.3f}", f"{p.iou:.3f}", f"{p.hd95_px:.1f}",
                       f"{p.area_diff_px2:+d}", f"{p.diameter_diff_px:+.1f}", *mm]  # fmt: skip
    assert float(rows[1][5]) > 0 and rows[0][5] == "+0"  # grown: b larger; moved: the same area

    # selecting a row opens its image in the editor (the page opened the other image on load)
    status = page.locator(".ds-status")
    assert rows[0][0] not in status.text_content()
    hrefs = set()
    for name in (rows[0][0], rows[1][0]):
        row = page.locator("#ds-agree-table [role=row][data-index]").filter(has_text=name)
        row.locator("[role=gridcell]").nth(2).click()  # any cell of the row: its Dice
        page.wait_for_function(
            f"(document.querySelector('.ds-status')?.textContent || '').startsWith({name!r})", timeout=60000
        )
        assert "2 saved lesions shown" in status.text_content()  # a's and b's
        assert name in page.locator("#ds-images input").input_value()
        assert project.ui_state("last_image_id") == str(project.image_by_path(name).id)
        hrefs.add(page.locator(".ds-svg image.ds-img").get_attribute("href"))
    assert len(hrefs) == 2  # the canvas drew each image

    outside = [u for u in requests if urlparse(u).scheme in ("http", "https", "ws", "wss")
               and urlparse(u).hostname not in ("127.0.0.1",)]  # fmt: skip
    assert requests and not outside, outside
    page.close()

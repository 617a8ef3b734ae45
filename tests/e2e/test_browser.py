"""End to end in Debian's Chromium: open a real dev image, box, negative click, drag a vertex,
calibrate, accept, export COCO (checked with pycocotools), with zero requests beyond 127.0.0.1.
Saves 1280x800 screenshots; the README's come from
`DERMASEG_SCREENSHOTS=docs/screenshots .venv/bin/python -m pytest tests/e2e/test_browser.py`."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from urllib.parse import urlparse

import numpy as np
import pytest

from dermaseg.core.evaluation.dataset import box_from_mask
from dermaseg.webui.gesture_route import PATH

pytestmark = pytest.mark.browser

# A test run leaves the committed screenshots alone unless asked to refresh them.
SHOTS = Path(os.environ.get("DERMASEG_SCREENSHOTS") or tempfile.mkdtemp(prefix="dermaseg-shots-"))


def wait_text(page, selector: str, text: str, what: str, timeout_ms: float = 30000) -> None:
    """Wait until `selector`'s text contains `text`; on timeout, fail with what the page says instead."""
    try:
        page.wait_for_function(
            f"(document.querySelector({selector!r})?.textContent || '').includes({text!r})", timeout=timeout_ms
        )
    except Exception:
        shown = page.evaluate(
            "[...document.querySelectorAll('.ds-status, .toast-body, #ds-cal-text')].map(e => e.textContent)"
        )
        pytest.fail(f"{what}: {text!r} not in {selector}; the page shows {shown!r}")


def save_shot(page, name: str) -> None:
    """A 1280x800 screenshot, reduced to 256 colours so the committed PNG stays small."""
    from PIL import Image

    SHOTS.mkdir(parents=True, exist_ok=True)
    path = SHOTS / f"{name}.png"
    page.screenshot(path=str(path))
    Image.open(path).convert("RGB").quantize(256, method=Image.Quantize.MEDIANCUT).save(path, optimize=True)


@pytest.fixture(scope="module")
def project_dir(dev_data, tmp_path_factory):
    folder = tmp_path_factory.mktemp("e2e-project")
    for case in dev_data[:3]:
        shutil.copy(case.image, folder / case.image.name)
    return folder


@pytest.fixture(scope="module")
def served(engine, project_dir, tmp_path_factory, serve_project):
    with serve_project(engine, project_dir, tmp_path_factory.mktemp("e2e-cache")) as served:
        yield served


def test_annotation_session(served, browser, dev_data, tmp_path):
    import pycocotools.coco
    from devtools.bench_browser import (
        VIEWPORT,
        drag_box,
        drag_handle,
        image_to_client,
        rendered,
        wait_measured,
        wait_rendered,
    )
    from playwright.sync_api import expect

    project, url = served
    rec = project.images()[0]
    expert = next(c for c in dev_data if c.image.name == rec.path).load_mask()
    page = browser.new_page(viewport=VIEWPORT)
    requests: list[str] = []
    page.on("request", lambda r: requests.append(r.url))
    page.goto(url, wait_until="load")
    page.wait_for_selector(".ds-svg image.ds-img[href]", timeout=60000)

    # box around the lesion -> outline
    ack = drag_box(page, box_from_mask(expert, margin=10))
    wait_measured(page, ack)
    assert len(page.locator(".ds-mask").get_attribute("d")) > 50
    # negative click: "Not lesion" tool, on skin inside the box
    page.get_by_role("button", name="− Not lesion").click()
    x0, y0, x1, y1 = box_from_mask(expert, margin=10)
    ys, xs = np.nonzero(~expert[int(y0) : int(y1), int(x0) : int(x1)])
    before = rendered(page)
    page.mouse.click(*image_to_client(page, x0 + xs[0] + 2, y0 + ys[0] + 2))
    wait_measured(page, wait_rendered(page, before))
    assert page.locator(".ds-prompts .ds-neg").count() == 1
    save_shot(page, "annotate")

    # drag a polygon vertex outwards
    page.get_by_role("button", name="✎ Edit outline").click()
    d_before = page.locator(".ds-mask").get_attribute("d")
    wait_measured(page, drag_handle(page, -25, -25))
    assert page.locator(".ds-mask").get_attribute("d") != d_before
    assert "outline edited" in page.locator(".ds-status").text_content()
    save_shot(page, "edit-outline")

    # calibration: 0.02 mm per pixel
    page.get_by_role("tab", name="Calibration").click()
    field = page.locator("#ds-mmpx input")
    for _ in range(10):  # a fill right after the tab switch can land in an input Gradio is replacing
        field.fill("0.02")
        if field.input_value() == "0.02":
            break
        page.wait_for_timeout(100)
    expect(field).to_have_value("0.02")
    page.locator("#ds-set-mmpx").click()
    wait_text(page, "#ds-cal-text", "0.02000 mm/px", "calibration not shown")
    page.get_by_role("tab", name="Measurements").click()
    wait_text(page, "#ds-metrics", "mm²", "measurements not in mm")
    text = page.locator("#ds-metrics").text_content()
    assert "decision aids" in text and "diagnosis" not in text.lower()
    save_shot(page, "measurements")

    # accept: saved at once
    page.locator("#ds-accept").click()
    wait_text(page, "#ds-summary", "1 of 3 done", "accept not confirmed", timeout_ms=40000)
    assert project.image(rec.id).status == "done" and len(project.annotations(rec.id)) == 1

    # export COCO for this image and read it back with pycocotools
    page.get_by_role("tab", name="Open & export").click()
    page.locator("#ds-export-image").click()
    link = page.locator("#ds-downloads a[href*='coco']").first
    link.wait_for(timeout=20000)
    body = page.request.get(link.get_attribute("href")).body()
    (tmp_path / "coco.json").write_bytes(body)
    gt = pycocotools.coco.COCO(str(tmp_path / "coco.json"))
    saved = project.annotations(rec.id)[0].mask()
    ann = gt.loadAnns(gt.getAnnIds(imgIds=[rec.id]))[0]
    assert np.array_equal(gt.annToMask(ann).astype(bool), saved)
    save_shot(page, "export")

    # keyboard: next image (focus on the page, not in a field)
    page.locator("#ds-title").click()
    page.keyboard.press("ArrowRight")
    nxt = project.images()[1].path
    wait_text(page, ".ds-status", nxt, "next image not shown", timeout_ms=60000)

    assert any(urlparse(u).path == PATH for u in requests)  # prompts took the fast path
    outside = [u for u in requests if urlparse(u).scheme in ("http", "https", "ws", "wss")
               and urlparse(u).hostname not in ("127.0.0.1",)]  # fmt: skip
    assert requests and not outside, outside
    page.close()


def test_gestures_go_through_gradio_when_the_fast_path_refuses(served, browser):
    """A server that no longer knows the page's channel (restarted) answers 404: the page resends the
    gesture as a Gradio event, and the outline still comes back, measured."""
    from devtools.bench_browser import VIEWPORT, drag_box, image_size, wait_measured

    _, url = served
    page = browser.new_page(viewport=VIEWPORT)
    refused: list[str] = []

    def refuse(route):
        refused.append(route.request.url)
        route.fulfill(status=404, content_type="application/json", body='{"error": "unknown channel"}')

    page.route("**" + PATH, refuse)
    page.goto(url, wait_until="load")
    page.wait_for_selector(".ds-svg image.ds-img[href]", timeout=60000)
    w, h = image_size(page)
    ack = drag_box(page, (0.25 * w, 0.2 * h, 0.75 * w, 0.8 * h))
    assert wait_measured(page, ack, timeout_ms=30000)
    assert refused and len(page.locator(".ds-mask").get_attribute("d")) > 50
    page.close()

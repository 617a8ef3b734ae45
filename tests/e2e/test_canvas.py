"""The canvas as a clinician uses it, in Debian's Chromium: a steady image, zoom and pan that keep every
prompt on the intended pixel, brush and eraser that become the saved mask, the fill's opacity, saved
lesions drawn and selectable, a progress bar on a cold open."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dermaseg.core.evaluation.dataset import box_from_mask
from dermaseg.webui.gesture_route import PATH

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def served(engine, dev_data, tmp_path_factory, serve_project):
    folder = tmp_path_factory.mktemp("canvas-project")
    for case in dev_data[:2]:
        shutil.copy(case.image, folder / case.image.name)
    with serve_project(engine, folder, tmp_path_factory.mktemp("canvas-cache")) as served:
        yield served


class Views:
    """The view JSON the server sent the page through its fast path, newest last. The answers pass through
    Playwright (a click alone's two lines then reach the page together: these tests look at what the server
    received, not at when the page drew it)."""

    def __init__(self, page) -> None:
        self.items: list[dict] = []
        self.sent: list[dict] = []
        page.route("**" + PATH, self._route)
        page.on("request", self._request)

    def _route(self, route) -> None:
        response = route.fetch()
        body = response.text()
        if response.ok:
            self.items.append(json.loads(body.splitlines()[-1]))  # a click alone: its preview's line first
        route.fulfill(response=response, body=body)

    def _request(self, request) -> None:
        if request.url.endswith(PATH) and request.method == "POST":
            self.sent.append(json.loads(request.post_data)["gesture"])

    @property
    def last(self) -> dict:
        return self.items[-1]


def open_page(browser, url: str):
    from devtools.bench_browser import VIEWPORT

    page = browser.new_page(viewport=VIEWPORT)
    views = Views(page)
    page.goto(url, wait_until="load")
    page.wait_for_selector(".ds-svg image.ds-img[href]", timeout=60000)
    page.wait_for_function("document.querySelector('.ds-loading').hidden", timeout=60000)
    return page, views


def image_rect(page) -> dict:
    """Where the browser draws the image (CSS px): its own layout, independent of the canvas script's maths."""
    return page.evaluate(
        "(() => { const r = document.querySelector('.ds-img').getBoundingClientRect();"
        " return {x: r.x, y: r.y, width: r.width, height: r.height}; })()"
    )


def client_of(page, x: float, y: float) -> tuple[float, float]:
    """Page position of image pixel (x, y), from the image's drawn rectangle."""
    r = image_rect(page)
    w, h = (float(v) for v in page.evaluate("[document.querySelector('.ds-img').width.baseVal.value,"
                                               " document.querySelector('.ds-img').height.baseVal.value]"))  # fmt: skip
    return r["x"] + x * r["width"] / w, r["y"] + y * r["height"] / h


def image_at(page, cx: float, cy: float) -> tuple[float, float]:
    """Image pixel coordinates at page position (cx, cy), from the image's drawn rectangle."""
    r = image_rect(page)
    w, h = (float(v) for v in page.evaluate("[document.querySelector('.ds-img').width.baseVal.value,"
                                               " document.querySelector('.ds-img').height.baseVal.value]"))  # fmt: skip
    return (cx - r["x"]) * w / r["width"], (cy - r["y"]) * h / r["height"]


def expert_of(dev_data, project, page):
    name = page.locator(".ds-status").text_content().split(":")[0]
    return next(c for c in dev_data if c.image.name == name).load_mask()


def box_the_lesion(page, dev_data, project) -> np.ndarray:
    """Clear the prompts and drag a box 10 px around the shown image's expert mask; returns that mask."""
    from devtools.bench_browser import drag_box

    expert = expert_of(dev_data, project, page)
    page.keyboard.press("Escape")
    drag_box(page, box_from_mask(expert, margin=10))
    return expert


def lesion_centre(mask: np.ndarray) -> tuple[float, float]:
    from scipy import ndimage

    depth = ndimage.distance_transform_edt(mask)
    y, x = np.unravel_index(int(np.argmax(depth)), depth.shape)
    return float(x) + 0.5, float(y) + 0.5


def test_status_messages_and_saves_never_move_the_image(served, browser, dev_data):
    from devtools.bench_browser import drag_box, rendered, wait_measured, wait_rendered

    project, url = served
    page, _ = open_page(browser, url)
    expert = expert_of(dev_data, project, page)
    where = [image_rect(page)]
    status_box = page.locator(".ds-statusbar").bounding_box()

    page.get_by_role("button", name="⟷ Ruler").click()  # the steps: two ruler clicks
    for x in (40.0, 240.0):
        before = rendered(page)
        page.mouse.click(*client_of(page, x, 30.0))
        wait_rendered(page, before)
        where.append(image_rect(page))
    assert "ruler:" in page.locator(".ds-status").text_content()
    page.get_by_role("button", name="▭ Box").click()
    wait_measured(page, drag_box(page, box_from_mask(expert, margin=10)))
    where.append(image_rect(page))
    page.locator("#ds-accept").click()  # a save: one toast, the status says saved
    page.wait_for_function("document.querySelector('.ds-status').textContent.startsWith('saved')", timeout=30000)
    page.wait_for_timeout(500)
    where.append(image_rect(page))
    toasts = page.locator(".toast-body").all_text_contents()
    assert sum("saved" in t for t in toasts) == 1, toasts
    page.locator(".toast-body").wait_for(state="detached", timeout=8000)  # and it leaves the image list soon
    page.locator("#ds-title").click()
    page.keyboard.press("Escape")  # a new lesion beside the saved one, then an error (nothing to redo)
    page.wait_for_function("document.querySelector('.ds-status').textContent.startsWith('new lesion')")
    page.keyboard.press("Control+Shift+z")
    page.wait_for_function("document.querySelector('.ds-status').textContent.includes('nothing to redo')")
    where.append(image_rect(page))
    page.evaluate(
        "document.querySelector('.ds-status').textContent = 'a very long status ' .repeat(40)"
    )  # the longest message the server may send still takes one line
    where.append(image_rect(page))
    assert page.locator(".ds-statusbar").bounding_box() == status_box
    for r in where[1:]:
        assert r == pytest.approx(where[0], abs=0.5), where
    status = page.locator(".ds-status")
    assert "nothing to redo" in status.get_attribute("title")
    page.close()


def test_clicks_and_boxes_land_on_the_intended_pixel_when_zoomed_and_panned(served, browser, dev_data):
    from devtools.bench_browser import rendered, wait_rendered

    project, url = served
    page, views = open_page(browser, url)
    expert = expert_of(dev_data, project, page)
    width = float(page.evaluate("document.querySelector('.ds-img').width.baseVal.value"))
    fitted = image_rect(page)
    tx, ty = lesion_centre(expert)

    # wheel zoom about the cursor: the image point under it stays under it (a whole CSS pixel: the browser
    # gives wheel events integer positions)
    cx, cy = (round(v) for v in client_of(page, tx - 40, ty - 30))
    under = image_at(page, cx, cy)
    page.mouse.move(cx, cy)
    for _ in range(4):
        page.mouse.wheel(0, -240)
    page.wait_for_function(f"Number(document.querySelector('.ds-canvas').dataset.zoom) > {6 * fitted['width'] / width}")
    zoomed = image_rect(page)
    assert zoomed["width"] > 6 * fitted["width"]
    assert client_of(page, *under) == pytest.approx((cx, cy), abs=0.5)

    # pan: middle-button drag, then Space + left drag; the image follows the pointer exactly
    page.mouse.move(600, 400)
    page.mouse.down(button="middle")
    page.mouse.move(520, 360, steps=4)
    page.mouse.up(button="middle")
    panned = image_rect(page)
    assert (panned["x"] - zoomed["x"], panned["y"] - zoomed["y"]) == pytest.approx((-80, -40), abs=0.5)
    page.mouse.move(500, 400)
    page.keyboard.down(" ")
    page.mouse.down()
    page.mouse.move(560, 430, steps=4)
    page.mouse.up()
    page.keyboard.up(" ")
    again = image_rect(page)
    assert (again["x"] - panned["x"], again["y"] - panned["y"]) == pytest.approx((60, 30), abs=0.5)
    assert not views.sent  # panning sent no prompt

    # a lesion click at this zoom lands on the aimed pixel (checked in the prompts the server received)
    page.get_by_role("button", name="+ Lesion").click()
    before = rendered(page)
    col, row = int(tx), int(ty)
    page.mouse.click(*client_of(page, col + 0.5, row + 0.5))
    wait_rendered(page, before)
    (px, py) = views.last["prompts"]["points"][0]
    assert (int(px), int(py)) == (col, row) and views.last["prompts"]["labels"] == [1]

    # ctrl+wheel (a trackpad pinch) zooms too; a box dragged there lands on its pixels
    scale = image_rect(page)["width"] / width
    page.mouse.move(*client_of(page, tx, ty))
    page.keyboard.down("Control")
    page.mouse.wheel(0, -20)
    page.keyboard.up("Control")
    page.wait_for_timeout(100)
    assert image_rect(page)["width"] > scale * width * 1.1
    page.get_by_role("button", name="▭ Box").click()
    bx0, by0, bx1, by1 = tx - 6.3, ty - 4.7, tx + 5.1, ty + 3.9
    before = rendered(page)
    page.mouse.move(*client_of(page, bx0, by0))
    page.mouse.down()
    page.mouse.move(*client_of(page, bx1, by1), steps=5)
    page.mouse.up()
    wait_rendered(page, before)
    scale = image_rect(page)["width"] / width  # the browser's pointer positions are exact to 1/64 CSS px
    assert views.last["prompts"]["box"] == pytest.approx([bx0, by0, bx1, by1], abs=0.05 / scale + 0.01)

    # 1:1 shows one image pixel per CSS pixel; Fit brings the first view back
    page.get_by_role("button", name="1:1").click()
    assert image_rect(page)["width"] == pytest.approx(width, abs=0.5)
    assert page.locator(".ds-zoom").text_content() == "100%"
    page.get_by_role("button", name="Fit").click()
    assert image_rect(page) == pytest.approx(fitted, abs=0.5)
    page.close()


def mask_area(message: str) -> int:
    return int(re.search(r"outline ([\d,]+) px", message).group(1).replace(",", ""))


def test_brush_and_eraser_become_the_saved_mask_and_undo(served, browser):
    from devtools.bench_browser import rendered, wait_rendered

    project, url = served
    page, views = open_page(browser, url)
    rec = next(r for r in project.images() if not project.annotations(r.id))  # an image not annotated yet
    status = "document.querySelector('.ds-status').textContent"
    while not page.evaluate(status).startswith(rec.path):
        shown = page.evaluate(status)
        page.locator("#ds-next").click()
        page.wait_for_function(f"{status} !== {shown!r} && {status}.includes('embedding')", timeout=60000)
    page.locator("#ds-title").click()
    page.keyboard.press("Escape")
    page.keyboard.press("d")  # brush
    assert page.locator(".ds-canvas").get_attribute("data-mode") == "brush"
    page.locator(".ds-brush-size").fill("40")  # 40 screen px across
    width = float(page.evaluate("document.querySelector('.ds-img').width.baseVal.value"))
    radius = 20 / (image_rect(page)["width"] / width)

    before = rendered(page)
    page.mouse.move(*client_of(page, 200, 200))
    page.mouse.down()
    page.mouse.move(*client_of(page, 300, 220), steps=8)
    page.mouse.up()
    wait_rendered(page, before)
    stroke = views.sent[-1]
    assert stroke["type"] == "paint" and not stroke["erase"] and stroke["radius"] == pytest.approx(radius, abs=0.01)
    assert stroke["points"][0] == pytest.approx([200, 200], abs=0.6) and len(stroke["points"]) >= 3
    painted = mask_area(views.last["message"])
    assert painted > 100 * 2 * radius * 0.9 and views.last["polygons"] and views.last["edited"]
    d_painted = page.locator(".ds-mask").get_attribute("d")

    page.keyboard.press("Shift+D")  # eraser: a stroke across the middle of the painted band
    assert page.locator(".ds-canvas").get_attribute("data-mode") == "erase"
    page.keyboard.press("[")  # smaller
    before = rendered(page)
    page.mouse.move(*client_of(page, 250, 170))
    page.mouse.down()
    page.mouse.move(*client_of(page, 250, 250), steps=6)
    page.mouse.up()
    wait_rendered(page, before)
    assert views.sent[-1]["erase"] and views.sent[-1]["radius"] < radius
    erased = mask_area(views.last["message"])
    assert 0 < erased < painted and len(views.last["polygons"]) == 2  # cut in two parts

    before = rendered(page)
    page.keyboard.press("Control+z")  # undo the eraser stroke
    page.wait_for_function(f"document.querySelector('.ds-mask').getAttribute('d') === {d_painted!r}", timeout=15000)
    page.keyboard.press("Control+Shift+z")  # and redo it
    page.wait_for_function(f"document.querySelector('.ds-mask').getAttribute('d') !== {d_painted!r}", timeout=15000)

    page.locator("#ds-accept").click()
    page.wait_for_function("document.querySelector('.ds-status').textContent.startsWith('saved')", timeout=30000)
    saved = project.annotations(rec.id)[-1]
    mask = saved.mask()
    assert int(mask.sum()) == erased and saved.provenance.source == "manual"
    assert mask[200, 210] and mask[215, 290] and not mask[210, 250]  # painted at both ends, erased between
    page.close()


def test_fill_opacity_is_a_remembered_ui_preference(served, browser, dev_data):
    project, url = served
    page, _ = open_page(browser, url)
    box_the_lesion(page, dev_data, project)
    fill = "getComputedStyle(document.querySelector('.ds-mask')).fillOpacity"
    assert float(page.evaluate(fill)) == pytest.approx(0.25)
    page.locator(".ds-fill").fill("0")  # outline only: the lesion's colours unveiled
    assert float(page.evaluate(fill)) == 0 and page.locator(".ds-fill-out").text_content() == "0%"
    page.reload(wait_until="load")
    page.wait_for_selector(".ds-svg image.ds-img[href]", timeout=60000)
    assert float(page.evaluate(fill)) == 0 and page.locator(".ds-fill").input_value() == "0"
    page.locator("#ds-title").click()
    page.keyboard.press("o")  # back to the last fill
    assert float(page.evaluate(fill)) == pytest.approx(0.25)
    page.locator(".ds-fill").fill("60")
    assert float(page.evaluate(fill)) == pytest.approx(0.6)
    stored = page.evaluate("Object.fromEntries(Object.entries(localStorage))")
    assert {k: v for k, v in stored.items() if k.startswith("dermaseg.")} == {
        "dermaseg.fillOpacity": "60", "dermaseg.brushSize": "24"}  # fmt: skip
    assert sum(len(k) + len(v) for k, v in stored.items()) < 500  # preferences only, no image data
    page.close()


def test_saved_lesions_are_drawn_and_a_click_inside_one_selects_it(served, browser, monkeypatch):
    """The contract with the server's several lesions per image (built in another part): its views carry
    "lesions"; here the running server's `views.view` adds two, and the page must draw the one not
    selected as a labelled outline and, with the select tool, send "select" for a click inside it."""
    from devtools.bench_browser import rendered, wait_rendered

    from dermaseg.webui.page import views as page_views

    _, url = served
    page, views = open_page(browser, url)
    width = float(page.evaluate("document.querySelector('.ds-img').width.baseVal.value"))
    square = [{"exterior": [[50, 60], [150, 60], [150, 160], [50, 160]], "holes": []}]
    lesions = [
        {"id": 41, "label": "naevus", "polygons": square, "selected": False},
        {"id": 42, "label": "current", "polygons": [{"exterior": [[300, 300], [320, 300], [320, 320]]}],
         "selected": True},
    ]  # fmt: skip
    view = page_views.view
    monkeypatch.setattr(page_views, "view", lambda s, url_of: {**view(s, url_of), "lesions": lesions})

    page.get_by_role("button", name="⟷ Ruler").click()
    before = rendered(page)
    page.mouse.click(*client_of(page, width - 20, 20))
    before = wait_rendered(page, before)
    page.wait_for_selector(".ds-lesion-label")
    outline = page.locator(".ds-lesion")
    assert outline.count() == 1 and outline.get_attribute("data-id") == "41"  # the selected one is the outline
    assert page.locator(".ds-lesion-label").text_content() == "naevus"
    page.mouse.click(*client_of(page, 100, 110))  # not the select tool: a ruler point, no selection
    before = wait_rendered(page, before)
    page.keyboard.press("v")
    page.mouse.click(*client_of(page, 100, 110))
    wait_rendered(page, before)
    assert views.sent[-1]["type"] == "select" and views.sent[-1]["annotation_id"] == 41
    assert views.sent[-2]["type"] == "ruler"
    page.mouse.click(*client_of(page, 400, 300))  # outside every lesion: nothing sent
    page.wait_for_timeout(300)
    assert views.sent[-1]["type"] == "select" and len([g for g in views.sent if g["type"] == "select"]) == 1
    page.close()


def test_dragging_a_vertex_of_a_dense_outline_bends_it_instead_of_a_spike(served, browser, dev_data):
    from devtools.bench_browser import rendered, wait_rendered

    project, url = served
    page, views = open_page(browser, url)
    box_the_lesion(page, dev_data, project)
    page.get_by_role("button", name="✎ Edit outline").click()
    width = float(page.evaluate("document.querySelector('.ds-img').width.baseVal.value"))
    scale = image_rect(page)["width"] / width

    def drag_vertex(alt: bool, top: bool) -> tuple[np.ndarray, np.ndarray]:
        ring = np.array(views.last["polygons"][0]["exterior"], dtype=float)  # the outline on screen
        i = int(np.argmin(ring[:, 1]) if top else np.argmax(ring[:, 1]))  # top or bottom vertex, dragged 24 px up
        before = rendered(page)
        x, y = client_of(page, *ring[i])
        page.mouse.move(x, y)
        if alt:
            page.keyboard.down("Alt")
        page.mouse.down()
        page.mouse.move(x, y - 24, steps=6)
        page.mouse.up()
        if alt:
            page.keyboard.up("Alt")
        wait_rendered(page, before)
        sent = np.array(views.sent[-1]["polygons"][0]["exterior"], dtype=float)
        return ring, np.hypot(*(sent - ring).T) * scale, i  # each vertex's move, screen px

    ring, moved, i = drag_vertex(alt=False, top=True)
    assert len(ring) > 40 and moved.max() == pytest.approx(24, abs=1)
    # neighbours follow: the vertices within the falloff (36 screen px along the outline, on either side)
    # move, at least one on each side, while most of the outline stays put, ...
    steps = np.hypot(*np.diff(ring, axis=0, append=ring[:1]).T) * scale
    ahead = np.cumsum(np.roll(steps, -i))  # along the ring from vertex i onwards
    behind = np.cumsum(np.roll(steps, -i)[::-1])
    after = [(i + k + 1) % len(ring) for k in np.flatnonzero(ahead < 30)]
    before = [(i - k - 1) % len(ring) for k in np.flatnonzero(behind < 30)]
    assert after and before and all(moved[j] > 0.5 for j in after + before), (after, before, moved)
    assert (moved < 0.01).sum() > len(ring) / 2  # the rest of the outline stays put
    assert sorted(moved)[-2] < moved.max()  # ... less than the vertex itself
    ring, moved, _ = drag_vertex(alt=True, top=False)  # Alt: the vertex alone
    assert moved.max() == pytest.approx(24, abs=1) and (moved > 0.01).sum() == 1
    page.close()


def test_a_two_finger_pinch_zooms_about_the_fingers(served, browser):
    """Touch screens: two fingers spread apart zoom in, keeping the image point between them in place."""
    from devtools.bench_browser import VIEWPORT

    _, url = served
    context = browser.new_context(viewport=VIEWPORT, has_touch=True)
    page = context.new_page()
    views = Views(page)
    page.goto(url, wait_until="load")
    page.wait_for_selector(".ds-svg image.ds-img[href]", timeout=60000)
    page.wait_for_function("document.querySelector('.ds-loading').hidden", timeout=60000)
    cdp = context.new_cdp_session(page)
    fitted = image_rect(page)
    mid = (round(fitted["x"] + fitted["width"] * 0.4), round(fitted["y"] + fitted["height"] * 0.6))
    under = image_at(page, *mid)

    def touch(kind: str, spread: float) -> None:
        points = [{"x": mid[0] - spread, "y": mid[1], "id": 0}, {"x": mid[0] + spread, "y": mid[1], "id": 1}]
        cdp.send("Input.dispatchTouchEvent", {"type": kind, "touchPoints": [] if kind == "touchEnd" else points})

    touch("touchStart", 30)
    for spread in (40, 55, 75, 90):
        touch("touchMove", spread)
    touch("touchEnd", 90)
    page.wait_for_timeout(100)
    assert image_rect(page)["width"] == pytest.approx(3 * fitted["width"], rel=0.05)  # 90 / 30 apart
    assert client_of(page, *under) == pytest.approx(mid, abs=1.0)
    assert not views.sent  # the fingers sent no prompt
    context.close()


def test_a_cold_open_shows_a_progress_bar_and_uploads_keep_their_name(served, browser, dev_data, tmp_path):
    """Last in this module: the page opens the upload (not started) from then on."""
    project, url = served
    page, _ = open_page(browser, url)
    upload = tmp_path / "My lesion photo.png"
    # pixels no other test encodes (upside down: the embedding cache is shared by the test session)
    Image.open(dev_data[5].image).transpose(Image.Transpose.FLIP_TOP_BOTTOM).save(upload)
    page.get_by_role("tab", name="Open & export").click()
    page.locator("#ds-upload input[type=file]").set_input_files(str(upload))
    page.wait_for_selector(".ds-loading:not([hidden])", timeout=15000)  # the bar shows while it encodes
    page.wait_for_function("document.querySelector('.ds-status').textContent.startsWith('uploads/My_lesion_photo.png')",
                           timeout=60000)  # fmt: skip
    assert "embedding computed" in page.locator(".ds-status").text_content()
    assert page.locator(".ds-loading").is_hidden()
    rec = next(r for r in project.images() if r.path.startswith("uploads/"))
    assert Path(rec.path).name == "My_lesion_photo.png"
    page.locator("#ds-images input").click()
    assert page.get_by_role("option").filter(has_text=re.compile(r"uploads/My_lesion_photo\.png$")).count() == 1
    page.close()

"""The page's handler functions, called directly (no Gradio, no browser)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from dermaseg.core.dataset import box_from_mask
from dermaseg.core.errors import CalibrationError, DermasegError, ImageLoadError, PromptError
from dermaseg.core.metrics import DECISION_AID_NOTICE
from dermaseg.webui import handlers as h


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max((a | b).sum(), 1))


@pytest.fixture()
def session(engine, project, tmp_path):
    s = h.Session(engine.segmenter(), project, tmp_path / "views")
    first = project.images()[0]
    project.discard_draft(first.id)  # each test starts afresh, not from an earlier test's work
    h.open_project_image(s, first.id)
    return s


@pytest.fixture()
def expert(dev_data, session):
    case = next(c for c in dev_data if c.image.name == session.image.name)
    return case.load_mask()


def url(path):
    return f"file={path}"


def test_box_gives_lesion_mask_and_geometry_view(session, expert):
    h.prompt_box(session, box_from_mask(expert))
    assert session.mask is not None and iou(session.mask, expert) > 0.7
    v = h.view(session, url)
    assert v["image"]["width"] == session.image.width and v["image"]["src"].endswith(".jpg")
    assert v["polygons"] and len(v["polygons"][0]["exterior"]) >= 3
    assert v["prompts"]["box"] is not None and v["axes"] is None  # measured later, off the fast path
    h.measurements(session)
    assert h.view(session, url)["axes"]["feret"]
    json.loads(h.view_json(session, url))


def test_a_single_click_on_the_lesion_segments_it(session, expert):
    """Clicks go through the session's click method (the bundled decoder alone gives a click an empty mask)."""
    from scipy import ndimage

    depth = ndimage.distance_transform_edt(expert)
    y, x = np.unravel_index(int(np.argmax(depth)), depth.shape)
    h.prompt_click(session, float(x), float(y), positive=True)
    assert session.mask is not None and iou(session.mask, expert) > 0.6


def test_negative_click_undo_redo_clear(session, expert):
    h.prompt_box(session, box_from_mask(expert))
    boxed = session.mask.copy()
    ys, xs = np.nonzero(boxed)
    h.prompt_click(session, float(xs.mean()), float(ys.mean()), positive=False)
    assert session.prompts.labels == (0,)
    assert not np.array_equal(session.mask, boxed)
    h.undo_prompt(session)
    assert np.array_equal(session.mask, boxed) and session.prompts.points == ()
    h.redo_prompt(session)
    assert session.prompts.labels == (0,)
    h.clear_prompts(session)
    assert session.mask is None and session.prompts.is_empty
    with pytest.raises(DermasegError, match="nothing to undo"):
        h.undo_prompt(session)


def test_bad_prompt_is_reported_and_not_kept(session):
    with pytest.raises(PromptError):
        h.prompt_click(session, -5, 10, True)
    assert session.prompts.is_empty and len(session.history) == 1


def test_candidates_and_heatmap(session, expert):
    h.prompt_box(session, box_from_mask(expert))
    choices = h.candidate_choices(session)
    assert len(choices) == 5 and "IoU" in choices[0][0]
    h.choose_head(session, "best")
    assert session.result.head == int(np.argmax(session.result.head_scores))
    session.heatmap = True
    assert h.view(session, url)["heatmap"].startswith("data:image/png;base64,")


def test_vertex_drag_becomes_the_mask(session, expert):
    h.prompt_box(session, box_from_mask(expert))
    parts = session.polygons.to_json()["parts"]
    ring = parts[0]["exterior"]
    cx, cy = np.mean(ring, axis=0)
    i = int(np.argmax([(x - cx) ** 2 + (y - cy) ** 2 for x, y in ring]))
    x, y = ring[i]
    ring[i] = [cx + 1.3 * (x - cx), cy + 1.3 * (y - cy)]  # pull the farthest vertex outwards
    before = int(session.mask.sum())
    warnings = h.handle_gesture(session, {"kind": "gesture", "type": "edit", "seq": 7, "polygons": parts})
    assert session.ack == 7 and session.edited and isinstance(warnings, tuple)
    assert int(session.mask.sum()) > before
    h.set_tolerance(session, 2.0)
    assert session.polygons is not None and session.mask.any()


def test_calibration_by_number_and_ruler(session, expert):
    h.prompt_box(session, box_from_mask(expert))
    h.set_mm_per_px(session, 0.02)
    assert session.metrics.area_mm2 == pytest.approx(session.metrics.area_px * 0.0004)
    assert session.project.image(session.image_id).calibration.mm_per_px == 0.02
    h.ruler_point(session, 10, 10)
    h.ruler_point(session, 110, 10)
    cal = h.calibrate_from_ruler(session, 5.0)
    assert cal.mm_per_px == pytest.approx(0.05) and cal.source == "ruler"
    with pytest.raises(CalibrationError):
        h.set_mm_per_px(session, -1)
    html = h.metrics_html(session.metrics)
    assert "mm²" in html and DECISION_AID_NOTICE[:40] in html and "diagnosis" not in html.lower()


def test_accept_saves_at_once_and_exports(session, expert, tmp_path):
    import pycocotools.coco

    with pytest.raises(DermasegError, match="nothing to accept"):
        h.accept(session, "lesion")
    h.prompt_box(session, box_from_mask(expert))
    ann_id = h.accept(session, "lesion")
    saved = session.project.annotation(ann_id)
    assert np.array_equal(saved.mask(), session.mask) and saved.metrics["notice"]
    assert saved.provenance.source == "model" and saved.provenance.prompts["box"]
    assert session.project.image(session.image_id).status == "done"
    assert h.accept(session, "lesion") == ann_id  # accepting again updates, no duplicate
    coco_path, mask_png = h.export_image(session, tmp_path / "img")
    gt = pycocotools.coco.COCO(str(coco_path))
    ann = gt.loadAnns(gt.getAnnIds())[0]
    assert iou(gt.annToMask(ann).astype(bool), session.mask) > 0.999 and mask_png.is_file()
    coco_all, masks_zip = h.export_project(session.project, tmp_path / "all")
    assert json.loads(coco_all.read_text())["annotations"] and masks_zip.suffix == ".zip"


def test_reopening_shows_saved_annotation(session, expert):
    h.prompt_box(session, box_from_mask(expert))
    h.accept(session, "lesion")
    mask = session.mask.copy()
    h.open_project_image(session, session.image_id)
    assert np.array_equal(session.mask, mask) and session.polygons is not None


def test_upload_validates_before_writing(project, tmp_path, dev_data):
    n = len(list((project.root / h.UPLOADS_DIR).glob("*"))) if (project.root / h.UPLOADS_DIR).exists() else 0
    with pytest.raises(ImageLoadError):
        h.add_upload(project, b"not an image", "x.png", 10_000_000)
    after = len(list((project.root / h.UPLOADS_DIR).glob("*"))) if (project.root / h.UPLOADS_DIR).exists() else 0
    assert after == n
    data = dev_data[-1].image.read_bytes()
    image_id = h.add_upload(project, data, dev_data[-1].image.name, 50_000_000)
    assert project.image(image_id).path.startswith("uploads/")
    assert h.add_upload(project, data, dev_data[-1].image.name, 50_000_000) == image_id


def test_gallery_neighbours_and_prefetch(engine, project):
    ids = [r.id for r in project.images()]
    assert [c[1] for c in h.gallery_choices(project)] == ids
    assert h.neighbour_id(project, ids[-1], +1) == ids[0] and h.neighbour_id(project, ids[0], -1) == ids[-1]
    pre = h.Prefetcher(engine)
    queued = pre.schedule(project, ids[0])
    pre.wait()
    assert queued and all(not h.needs_encoding(engine, project.load_image(i)) for i in queued)
    # and the mirror image's, which the first click will need (`RefineSession.prepare`)
    assert all(not h.needs_encoding(engine, project.load_image(i).mirrored()) for i in queued)
    assert "of" in h.progress_summary(project)


def test_gesture_errors_are_dermaseg_errors(session):
    with pytest.raises(DermasegError, match="malformed"):
        h.handle_gesture(session, {"kind": "gesture", "type": "click"})
    with pytest.raises(DermasegError, match="unknown gesture"):
        h.handle_gesture(session, {"kind": "gesture", "type": "lasso"})
    assert h.handle_gesture(session, '{"kind": "view"}') == ()

"""The page's handler functions, called directly (no Gradio, no browser)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from dermaseg.core.annotation.metrics import DECISION_AID_NOTICE
from dermaseg.core.errors import CalibrationError, ConflictError, DermasegError, ImageLoadError, PromptError
from dermaseg.core.evaluation.dataset import box_from_mask
from dermaseg.webui.page.edits import edit_polygons, set_tolerance
from dermaseg.webui.page.exports import export_image, export_project
from dermaseg.webui.page.gestures import handle_gesture
from dermaseg.webui.page.lesions import lesion_choices, new_lesion, select_lesion
from dermaseg.webui.page.measuring import calibrate_from_ruler, measurements, ruler_point, set_mm_per_px
from dermaseg.webui.page.opening import needs_encoding, neighbour_id, open_project_image
from dermaseg.webui.page.prefetch import Prefetcher
from dermaseg.webui.page.prompts import choose_head, clear_prompts, prompt_box, prompt_click
from dermaseg.webui.page.saving import (
    ConfirmationNeeded,
    accept,
    cancel_pending,
    confirm_pending,
    delete_lesion,
    resolve_conflict,
)
from dermaseg.webui.page.session import Session
from dermaseg.webui.page.undo import redo_prompt, undo_prompt
from dermaseg.webui.page.uploads import UPLOADS_DIR, add_upload
from dermaseg.webui.page.views import (
    calibration_text,
    candidate_choices,
    gallery_choices,
    metrics_html,
    progress_summary,
    view,
    view_json,
)


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max((a | b).sum(), 1))


@pytest.fixture()
def session(engine, project, tmp_path):
    s = Session(engine.segmenter(), project, tmp_path / "views")
    first = project.images()[0]
    project.discard_draft(first.id)  # each test starts afresh, not from an earlier test's work
    open_project_image(s, first.id)
    return s


@pytest.fixture()
def expert(dev_data, session):
    case = next(c for c in dev_data if c.image.name == session.image.name)
    return case.load_mask()


def url(path):
    return f"file={path}"


def test_box_gives_lesion_mask_and_geometry_view(session, expert):
    prompt_box(session, box_from_mask(expert))
    assert session.mask is not None and iou(session.mask, expert) > 0.7
    v = view(session, url)
    assert v["image"]["width"] == session.image.width and v["image"]["src"].endswith(".jpg")
    assert v["polygons"] and len(v["polygons"][0]["exterior"]) >= 3
    assert v["prompts"]["box"] is not None and v["axes"] is None  # measured later, off the fast path
    measurements(session)
    assert view(session, url)["axes"]["feret"]
    json.loads(view_json(session, url))


def test_a_single_click_on_the_lesion_segments_it(session, expert):
    """Clicks go through the session's click method (the bundled decoder alone gives a click an empty mask)."""
    from scipy import ndimage

    depth = ndimage.distance_transform_edt(expert)
    y, x = np.unravel_index(int(np.argmax(depth)), depth.shape)
    prompt_click(session, float(x), float(y), positive=True)
    assert session.mask is not None and iou(session.mask, expert) > 0.6


def test_negative_click_undo_redo_clear(session, expert):
    prompt_box(session, box_from_mask(expert))
    boxed = session.mask.copy()
    ys, xs = np.nonzero(boxed)
    prompt_click(session, float(xs.mean()), float(ys.mean()), positive=False)
    assert session.prompts.labels == (0,)
    assert not np.array_equal(session.mask, boxed)
    undo_prompt(session)
    assert np.array_equal(session.mask, boxed) and session.prompts.points == ()
    redo_prompt(session)
    assert session.prompts.labels == (0,)
    clear_prompts(session)
    assert session.mask is None and session.prompts.is_empty
    with pytest.raises(DermasegError, match="nothing to undo"):
        undo_prompt(session)


def test_bad_prompt_is_reported_and_not_kept(session):
    with pytest.raises(PromptError):
        prompt_click(session, -5, 10, True)
    assert session.prompts.is_empty and len(session.history) == 1


def test_candidates_and_heatmap(session, expert):
    prompt_box(session, box_from_mask(expert))
    choices = candidate_choices(session)
    assert len(choices) == 5 and "IoU" in choices[0][0]
    choose_head(session, "best")
    assert session.result.head == int(np.argmax(session.result.head_scores))
    session.heatmap = True
    assert view(session, url)["heatmap"].startswith("data:image/png;base64,")


def test_vertex_drag_becomes_the_mask(session, expert):
    prompt_box(session, box_from_mask(expert))
    parts = session.polygons.to_json()["parts"]
    ring = parts[0]["exterior"]
    cx, cy = np.mean(ring, axis=0)
    i = int(np.argmax([(x - cx) ** 2 + (y - cy) ** 2 for x, y in ring]))
    x, y = ring[i]
    ring[i] = [cx + 1.3 * (x - cx), cy + 1.3 * (y - cy)]  # pull the farthest vertex outwards
    before = int(session.mask.sum())
    warnings = handle_gesture(session, {"kind": "gesture", "type": "edit", "seq": 7, "polygons": parts})
    assert session.ack == 7 and session.edited and isinstance(warnings, tuple)
    assert int(session.mask.sum()) > before
    set_tolerance(session, 2.0)
    assert session.polygons is not None and session.mask.any()


def test_calibration_by_number_and_ruler(session, expert):
    prompt_box(session, box_from_mask(expert))
    set_mm_per_px(session, 0.02)
    assert session.metrics.area_mm2 == pytest.approx(session.metrics.area_px * 0.0004)
    assert session.project.image(session.image_id).calibration.mm_per_px == 0.02
    ruler_point(session, 10, 10)
    ruler_point(session, 110, 10)
    cal = calibrate_from_ruler(session, 5.0)
    assert cal.mm_per_px == pytest.approx(0.05) and cal.source == "ruler"
    with pytest.raises(CalibrationError):
        set_mm_per_px(session, -1)
    html = metrics_html(session.metrics)
    assert "mm²" in html and DECISION_AID_NOTICE[:40] in html and "diagnosis" not in html.lower()


def test_accept_saves_at_once_and_exports(session, expert, tmp_path):
    import pycocotools.coco

    with pytest.raises(DermasegError, match="nothing to accept"):
        accept(session, "lesion")
    prompt_box(session, box_from_mask(expert))
    ann_id = accept(session, "lesion")
    saved = session.project.annotation(ann_id)
    assert np.array_equal(saved.mask(), session.mask) and saved.metrics["notice"]
    assert saved.provenance.source == "model" and saved.provenance.prompts["box"]
    assert session.project.image(session.image_id).status == "done"
    assert accept(session, "lesion") == ann_id  # accepting again updates, no duplicate
    coco_path, mask_png = export_image(session, tmp_path / "img")
    gt = pycocotools.coco.COCO(str(coco_path))
    ann = gt.loadAnns(gt.getAnnIds())[0]
    assert iou(gt.annToMask(ann).astype(bool), session.mask) > 0.999 and mask_png.is_file()
    coco_all, masks_zip = export_project(session.project, tmp_path / "all")
    assert json.loads(coco_all.read_text())["annotations"] and masks_zip.suffix == ".zip"


def test_reopening_shows_saved_annotation(session, expert):
    """Reopened, the image shows its saved lesion (drawing a new one); selecting it edits it."""
    prompt_box(session, box_from_mask(expert))
    ann_id = accept(session, "lesion")
    mask = session.mask.copy()
    open_project_image(session, session.image_id)
    assert session.annotation_id is None and session.mask is None  # a new lesion by default
    shown = {x["id"]: x for x in view(session, url)["lesions"]}
    assert ann_id in shown and shown[ann_id]["polygons"] and not shown[ann_id]["selected"]
    select_lesion(session, ann_id)
    assert np.array_equal(session.mask, mask) and session.polygons is not None


def test_upload_validates_before_writing(project, tmp_path, dev_data):
    n = len(list((project.root / UPLOADS_DIR).glob("*"))) if (project.root / UPLOADS_DIR).exists() else 0
    with pytest.raises(ImageLoadError):
        add_upload(project, b"not an image", "x.png", 10_000_000)
    after = len(list((project.root / UPLOADS_DIR).glob("*"))) if (project.root / UPLOADS_DIR).exists() else 0
    assert after == n
    data = dev_data[-1].image.read_bytes()
    image_id = add_upload(project, data, dev_data[-1].image.name, 50_000_000)
    assert project.image(image_id).path.startswith("uploads/")
    assert add_upload(project, data, dev_data[-1].image.name, 50_000_000) == image_id


def test_gallery_neighbours_and_prefetch(engine, project):
    ids = [r.id for r in project.images()]
    assert [c[1] for c in gallery_choices(project)] == ids
    assert neighbour_id(project, ids[-1], +1) == ids[0] and neighbour_id(project, ids[0], -1) == ids[-1]
    pre = Prefetcher(engine)
    queued = pre.schedule(project, ids[0])
    pre.wait()
    assert queued and all(not needs_encoding(engine, project.load_image(i)) for i in queued)
    # and the mirror image's, which the first click will need (`Refinement.prepare`)
    assert all(not needs_encoding(engine, project.load_image(i).mirrored()) for i in queued)
    assert "of" in progress_summary(project)


def test_an_image_opens_after_one_encoder_run_and_its_mirror_follows_in_the_background(engine, project, tmp_path):
    from dermaseg.core.segment.embedding_cache import EmbeddingCache
    from dermaseg.core.segment.segmenter import Engine

    cold = Engine(engine.backend, EmbeddingCache(None))
    encoded, encode = [], engine.backend.encode
    cold.backend = type("Counting", (), {})()
    for name in ("decode", "decode_features", "has_tuned_decoder", "model_id", "encoder_id"):
        setattr(cold.backend, name, getattr(engine.backend, name))
    cold.backend.encode = lambda x: encoded.append(1) or encode(x)
    s, rec = Session(cold.segmenter(), project, tmp_path / "views"), project.images()[1]
    project.discard_draft(rec.id)
    open_project_image(s, rec.id)
    assert encoded == [1]  # the image alone: the page shows it now
    pre = Prefetcher(cold)
    pre.prepare_clicks(s)
    pre.wait()
    assert encoded == [1, 1]  # its mirror image, in the background
    prompt_click(s, s.image.width / 2, s.image.height / 2, True)
    assert encoded == [1, 1] and s.mask is not None  # the click alone found what it needed ready


def test_gesture_errors_are_dermaseg_errors(session):
    with pytest.raises(DermasegError, match="malformed"):
        handle_gesture(session, {"kind": "gesture", "type": "click"})
    with pytest.raises(DermasegError, match="unknown gesture"):
        handle_gesture(session, {"kind": "gesture", "type": "lasso"})
    assert handle_gesture(session, '{"kind": "view"}') == ()


# ------------------------------------------------------------------------------- several lesions per image


def shifted(parts: list[dict], dx: float) -> dict:
    return [{**p, "exterior": [[x + dx, y] for x, y in p["exterior"]]} for p in parts]


@pytest.fixture()
def own(engine, dev_data, tmp_path):
    """A project of its own (one dev image) and a session on it: these tests edit labels and lesions."""
    import shutil

    from dermaseg.core.annotation.project import Project

    case = dev_data[3]
    folder = tmp_path / "own"
    folder.mkdir()
    shutil.copy(case.image, folder / case.image.name)
    project = Project.init(folder)
    s = Session(engine.segmenter(), project, tmp_path / "views")
    open_project_image(s, project.images()[0].id)
    yield s, case.load_mask()
    project.close()


def test_esc_and_a_new_box_never_replace_a_saved_lesion(own, engine, tmp_path, skin_box):
    """Issue 16 item 1: lesion outlined, edited and saved; reload, reopen, Esc, box on normal skin,
    accept: a second annotation, the first unchanged."""
    s, expert = own
    prompt_box(s, box_from_mask(expert, margin=8))
    edit_polygons(s, {"width": s.image.width, "height": s.image.height,
                        "parts": shifted(view(s, url)["polygons"], 12)})  # fmt: skip
    first = accept(s, "lesion")
    saved = s.project.annotation(first)
    assert "lesion 1 of 1" in s.message and saved.version == 1
    # the same tab, Esc right after the save: the saved lesion is left alone
    clear_prompts(s)
    assert s.annotation_id is None and s.project.annotation(first).version == 1
    # a reload: a new session opens the image again
    t = Session(engine.segmenter(), s.project, tmp_path / "views")
    open_project_image(t, s.image_id)
    clear_prompts(t)
    prompt_box(t, skin_box(expert))
    assert t.mask is not None and t.mask.any()
    second = accept(t, "lesion")
    assert second != first and "lesion 2 of 2" in t.message
    anns = s.project.annotations(s.image_id)
    assert [a.id for a in anns] == [first, second]
    assert np.array_equal(anns[0].mask(), saved.mask()) and anns[0].polygons == saved.polygons
    assert anns[0].version == 1 and anns[0].provenance == saved.provenance


def test_view_lists_lesions_and_gestures_select_and_start_new(own, skin_box):
    s, expert = own
    prompt_box(s, box_from_mask(expert, margin=8))
    a = accept(s, "lesion")
    new_lesion(s)
    assert s.annotation_id is None and s.mask is None and len(s.history) == 1
    prompt_box(s, skin_box(expert))
    b = accept(s, "lesion")
    v = view(s, url)
    assert v["annotation_id"] == b and v["annotation_version"] == 1
    assert [(x["id"], x["number"], x["label"], x["selected"]) for x in v["lesions"]] == [
        (a, 1, "lesion", False),
        (b, 2, "lesion", True),
    ]
    assert all(x["polygons"] and len(x["polygons"][0]["exterior"]) >= 3 for x in v["lesions"])
    handle_gesture(s, {"kind": "gesture", "type": "select", "annotation_id": a, "seq": 5})
    v = json.loads(view_json(s, url))
    assert v["annotation_id"] == a and v["ack"] == 5 and [x["selected"] for x in v["lesions"]] == [True, False]
    assert np.array_equal(s.mask, s.project.annotation(a).mask())
    handle_gesture(s, json.dumps({"kind": "gesture", "type": "new_lesion"}))
    v = view(s, url)
    assert v["annotation_id"] is None and v["polygons"] == [] and not any(x["selected"] for x in v["lesions"])
    with pytest.raises(DermasegError, match="not a saved lesion of this image"):
        handle_gesture(s, {"kind": "gesture", "type": "select", "annotation_id": 10**6})
    with pytest.raises(DermasegError, match="malformed gesture"):
        handle_gesture(s, {"kind": "gesture", "type": "select"})
    assert [c[1] for c in lesion_choices(s)] == [str(a), str(b), "new"]


def test_replacing_or_deleting_a_saved_lesion_asks_first_and_undo_brings_it_back(own, skin_box):
    s, expert = own
    prompt_box(s, box_from_mask(expert, margin=8))
    a = accept(s, "lesion")
    original = s.project.annotation(a)
    select_lesion(s, a)
    prompt_box(s, skin_box(expert))
    with pytest.raises(ConfirmationNeeded, match="replace saved lesion 1 of 1"):
        accept(s, "lesion")
    assert s.project.annotation(a) == original and s.pending == ("replace", a)
    cancel_pending(s)
    assert s.pending is None
    with pytest.raises(ConfirmationNeeded):
        accept(s, "lesion")
    confirm_pending(s, "lesion")
    replaced = s.project.annotation(a)
    assert replaced.version == 2 and not np.array_equal(replaced.mask(), original.mask())
    assert accept(s, "lesion") == a  # nothing changed since the save: no question, same annotation
    # Undo: the save is taken back (the previous saved version), Redo replaces it again
    undo_prompt(s)
    assert accept(s, "lesion") == a and s.project.annotation(a).version > 2  # unchanged, re-saved
    undo_prompt(s)
    back = s.project.annotation(a)
    assert np.array_equal(back.mask(), replaced.mask())
    undo_prompt(s)
    back = s.project.annotation(a)
    assert np.array_equal(back.mask(), original.mask()) and s.annotation_version == back.version
    assert np.array_equal(s.mask, original.mask()) and "undone" in s.message
    redo_prompt(s)
    assert np.array_equal(s.project.annotation(a).mask(), replaced.mask())
    # delete: asks first, then deletes; Undo restores it
    with pytest.raises(ConfirmationNeeded, match="Delete lesion 1 of 1"):
        delete_lesion(s)
    assert len(s.project.annotations(s.image_id)) == 1
    confirm_pending(s, "lesion")
    assert s.project.annotations(s.image_id) == [] and s.annotation_id is None
    undo_prompt(s)
    restored = s.project.annotations(s.image_id)
    assert [x.id for x in restored] == [a] and np.array_equal(restored[0].mask(), replaced.mask())
    assert s.annotation_id == a
    with pytest.raises(DermasegError, match="nothing to confirm"):
        confirm_pending(s, "lesion")


def test_two_tabs_on_one_saved_lesion_the_second_save_is_refused(own, engine, tmp_path, skin_box):
    """Issue 17 item 4: both tabs edit the same saved lesion; the second save gets the choice, nothing lost."""
    s, expert = own
    prompt_box(s, box_from_mask(expert, margin=8))
    a = accept(s, "lesion")
    tabs = [Session(engine.segmenter(), s.project, tmp_path / "views") for _ in range(2)]
    for t in tabs:
        open_project_image(t, s.image_id)
        select_lesion(t, a)
    x0, y0, x1, y1 = box_from_mask(expert, margin=8)
    prompt_box(tabs[0], (x0 - 30, y0 - 30, x1 + 30, y1 + 30))
    accept(tabs[0], "lesion", "Dr A", replace=True)
    mask_a = s.project.annotation(a).mask()
    assert np.array_equal(mask_a, tabs[0].mask)
    prompt_box(tabs[1], skin_box(expert))
    with pytest.raises(ConflictError, match="Dr A") as e:
        accept(tabs[1], "lesion", "Dr B", replace=True)
    assert "Reload" in str(e.value) and "Keep both" in str(e.value) and tabs[1].conflict == a
    assert np.array_equal(s.project.annotation(a).mask(), mask_a)  # A's save kept
    mine = tabs[1].mask.copy()
    resolve_conflict(tabs[1], "keep_both", "lesion", "Dr B")
    anns = s.project.annotations(s.image_id)
    assert len(anns) == 2 and np.array_equal(anns[0].mask(), mask_a) and np.array_equal(anns[1].mask(), mine)
    assert tabs[1].annotation_id == anns[1].id and "lesion 2 of 2" in tabs[1].message
    # A deletes B's annotation behind B's back; B edits and saves: refused, Reload gives a new lesion
    select_lesion(tabs[0], anns[1].id)
    delete_lesion(tabs[0], confirmed=True)
    prompt_box(tabs[1], box_from_mask(expert, margin=4))
    with pytest.raises(ConflictError, match="deleted"):
        accept(tabs[1], "lesion", replace=True)
    resolve_conflict(tabs[1], "reload", "lesion")
    assert tabs[1].annotation_id is None and "was deleted" in tabs[1].message
    # and Reload of a changed one shows the stored version
    select_lesion(tabs[1], a)
    select_lesion(tabs[0], a)
    prompt_box(tabs[0], box_from_mask(expert, margin=2))
    accept(tabs[0], "lesion", replace=True)
    prompt_box(tabs[1], skin_box(expert))
    with pytest.raises(ConflictError):
        accept(tabs[1], "lesion", replace=True)
    resolve_conflict(tabs[1], "reload", "lesion")
    assert np.array_equal(tabs[1].mask, s.project.annotation(a).mask())
    assert tabs[1].annotation_version == s.project.annotation(a).version


def test_image_export_is_the_project_export_of_that_image(own, tmp_path, skin_box):
    """Two lesions on one image, labels added, reordered and removed: the per-image export and the
    project export agree (category ids, polygons, tolerance), and a fresh project imports both."""
    import shutil

    from dermaseg.core.annotation.project import Project

    s, expert = own
    prompt_box(s, box_from_mask(expert, margin=8))
    accept(s, "lesion")
    new_lesion(s)
    set_tolerance(s, 2.0)
    prompt_box(s, skin_box(expert))
    s.project.set_labels(["lesion", "temporary"])
    s.project.set_labels(["naevus", "lesion"])  # one added before, one removed: ids no longer 1, 2, ...
    accept(s, "naevus")
    img = json.loads(export_image(s, tmp_path / "one")[0].read_text())
    coco_all, _ = export_project(s.project, tmp_path / "all")
    full = json.loads(coco_all.read_text())
    assert img["categories"] == full["categories"]

    def key(a):
        return (a["id"], a["category_id"], a["dermaseg"]["polygons"] is not None, a["dermaseg"]["tolerance_px"])

    assert len(img["annotations"]) == 2
    assert sorted(map(key, img["annotations"])) == sorted(
        key(a) for a in full["annotations"] if a["image_id"] == s.image_id
    )
    cats = {c["name"]: c["id"] for c in full["categories"]}
    assert [a["category_id"] for a in img["annotations"]] == [cats["lesion"], cats["naevus"]]
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    shutil.copy(s.project.root / s.project.images()[0].path, fresh)
    with Project.init(fresh) as p:
        report = p.import_coco(export_image(s, tmp_path / "two")[0])
        assert report.added == 2
        got, want = p.annotations(), s.project.annotations(s.image_id)
        assert [(a.label, a.polygons, a.tolerance_px) for a in got] == [
            (a.label, a.polygons, a.tolerance_px) for a in want
        ]
        assert [a.tolerance_px for a in got] == [1.0, 2.0]
        assert all(np.array_equal(x.mask(), y.mask()) for x, y in zip(got, want, strict=True))


def test_undo_after_a_save_takes_it_back_and_keeps_the_outline(own):
    s, expert = own
    prompt_box(s, box_from_mask(expert, margin=8))
    a = accept(s, "lesion")
    mask = s.mask.copy()
    undo_prompt(s)
    assert s.project.annotations(s.image_id) == [] and s.annotation_id is None
    assert np.array_equal(s.mask, mask) and "no longer saved" in s.message  # the outline stays, unsaved
    redo_prompt(s)
    assert [x.id for x in s.project.annotations(s.image_id)] == [a] and s.annotation_id == a
    with pytest.raises(DermasegError, match="nothing to redo"):
        redo_prompt(s)


def test_a_project_scale_serves_every_image_without_its_own(engine, tmp_path, dev_data):
    """Calibration per project (one dermatoscope), overridable per image; it survives a reopen."""
    import shutil

    from dermaseg.core.annotation.project import Project

    folder = tmp_path / "p"
    folder.mkdir()
    for c in dev_data[:3]:
        shutil.copy(c.image, folder / c.image.name)
    project = Project.init(folder)
    a, b, c = (r.id for r in project.images())
    s = Session(engine.segmenter(), project, tmp_path / "views")
    open_project_image(s, a)
    s.calibrate_project = True
    set_mm_per_px(s, 0.02)
    assert s.image.calibration.mm_per_px == 0.02 and "project" in calibration_text(s)
    open_project_image(s, b)
    assert s.image.calibration.mm_per_px == 0.02  # the device's scale, without setting it again
    s.calibrate_project = False
    set_mm_per_px(s, 0.03)  # this image's own
    assert "this image's" in calibration_text(s)
    project.close()
    project = Project.open(folder)
    assert project.load_image(b).calibration.mm_per_px == 0.03
    assert project.load_image(c).calibration.mm_per_px == 0.02
    assert project.load_image(a).calibration.source == "project"
    project.set_project_calibration(None)
    assert project.load_image(c).calibration is None
    project.close()

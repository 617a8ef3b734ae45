"""The brush and eraser (`page.paint.paint`): strokes become the mask, undoable, saved, validated."""

from __future__ import annotations

import math

import numpy as np
import pytest

from dermaseg.core.annotation.geometry import polygons_to_mask
from dermaseg.core.errors import DermasegError, GeometryError
from dermaseg.core.evaluation.dataset import box_from_mask
from dermaseg.webui.page.gestures import handle_gesture
from dermaseg.webui.page.opening import open_project_image
from dermaseg.webui.page.paint import MAX_BRUSH_RADIUS_PX, MAX_PAINT_POINTS
from dermaseg.webui.page.prompts import clear_prompts, prompt_box
from dermaseg.webui.page.saving import accept
from dermaseg.webui.page.session import Session
from dermaseg.webui.page.undo import redo_prompt, undo_prompt
from dermaseg.webui.page.views import view


@pytest.fixture()
def session(engine, project, tmp_path):
    s = Session(engine.segmenter(), project, tmp_path / "views")
    project.discard_draft(project.images()[0].id)  # another test's work in progress: start afresh
    open_project_image(s, project.images()[0].id)
    if s.annotation_id is not None:  # another test of this module saved one: start from a blank outline
        clear_prompts(s)
    return s


def capsule(shape: tuple[int, int], a: tuple[float, float], b: tuple[float, float], r: float) -> np.ndarray:
    """Brute force: pixels whose centres lie within r of segment ab (the definition `paint` promises)."""
    ys, xs = np.mgrid[0 : shape[0], 0 : shape[1]]
    p = np.stack([xs + 0.5, ys + 0.5], axis=-1).astype(float)
    a_, d = np.array(a), np.subtract(b, a)
    t = np.clip(((p - a_) @ d) / max(d @ d, 1e-12), 0, 1)[..., None]
    return np.linalg.norm(p - (a_ + t * d), axis=-1) <= r


def gesture(s: Session, points, radius, erase=False, seq=None) -> None:
    g = {"kind": "gesture", "type": "paint", "points": points, "radius": radius, "erase": erase}
    if seq is not None:
        g["seq"] = seq
    handle_gesture(s, g)


def test_a_stroke_on_a_blank_image_becomes_the_mask_and_outline(session):
    shape = session.mask_shape()
    gesture(session, [[100, 120], [160.5, 140.25]], 12.5, seq=3)
    expected = capsule(shape, (100, 120), (160.5, 140.25), 12.5)
    assert session.ack == 3 and np.array_equal(session.mask, expected)
    assert session.edited and len(session.history) == 2 and "painted" in session.message
    # the outline is re-derived from the mask and agrees with it (simplified at 1 px)
    back = polygons_to_mask(session.polygons, *shape)
    assert (back ^ expected).sum() / expected.sum() < 0.05
    assert view(session, str)["polygons"][0]["exterior"]


def test_one_point_is_a_disc(session):
    gesture(session, [[200, 200]], 10)
    assert abs(int(session.mask.sum()) - math.pi * 100) < 15


def test_brush_adds_eraser_removes_and_undo_redo_restore_exactly(session, dev_data):
    case = next(c for c in dev_data if c.image.name == session.image.name)
    prompt_box(session, box_from_mask(case.load_mask()))
    model = session.mask.copy()
    ys, xs = np.nonzero(model)
    top = (float(xs[ys.argmin()]), float(ys.min()))
    gesture(session, [top, [top[0], top[1] - 30]], 8)  # pull a stroke out of the top of the lesion
    stroke = capsule(model.shape, top, (top[0], top[1] - 30), 8)
    assert np.array_equal(session.mask, model | stroke)
    painted = session.mask.copy()
    cx, cy = float(xs.mean()), float(ys.mean())
    gesture(session, [[cx, cy], [cx + 20, cy]], 6, erase=True)
    hole = capsule(model.shape, (cx, cy), (cx + 20, cy), 6)
    assert np.array_equal(session.mask, painted & ~hole) and "erased" in session.message
    assert any(part.holes for part in session.polygons.parts)  # the erased hole is in the outline
    undo_prompt(session)
    assert np.array_equal(session.mask, painted)
    undo_prompt(session)
    assert np.array_equal(session.mask, model)
    redo_prompt(session)
    redo_prompt(session)
    assert np.array_equal(session.mask, painted & ~hole)


def test_a_stroke_changes_pixels_only_in_its_bounding_box(session):
    gesture(session, [[300, 200], [320, 260]], 40)
    before = session.mask.copy()
    gesture(session, [[50, 50], [70, 60]], 5)
    changed = np.argwhere(session.mask != before)
    assert changed[:, 0].min() >= 45 and changed[:, 0].max() < 65
    assert changed[:, 1].min() >= 45 and changed[:, 1].max() < 75


def test_painted_mask_is_what_accept_saves(session):
    gesture(session, [[120, 100], [180, 160], [240, 100]], 15)
    ann_id = accept(session, session.project.labels()[0])
    saved = session.project.annotation(ann_id)
    assert np.array_equal(saved.mask(), session.mask) and saved.provenance.source == "manual"


def test_erasing_everything_leaves_nothing_to_accept_and_undo_brings_it_back(session):
    gesture(session, [[100, 100]], 10)
    disc = session.mask.copy()
    gesture(session, [[100, 100]], 30, erase=True)
    assert not session.mask.any() and view(session, str)["polygons"] == []
    with pytest.raises(DermasegError, match="nothing to accept"):
        accept(session, "lesion")
    undo_prompt(session)
    assert np.array_equal(session.mask, disc)


@pytest.mark.parametrize(
    ("points", "radius", "erase", "message"),
    [
        ([], 5, False, "at least one point"),
        ([[1, float("nan")]], 5, False, "finite"),
        ([[1, 2, 3]], 5, False, "pairs"),
        ([["a", 2]], 5, False, "pairs of numbers"),
        ("10,10", 5, False, "at least one point"),
        ([[10, 10]] * (MAX_PAINT_POINTS + 1), 5, False, "at most"),
        ([[10, 10]], 0, False, "radius"),
        ([[10, 10]], float("inf"), False, "radius"),
        ([[10, 10]], MAX_BRUSH_RADIUS_PX * 2, False, "radius"),
        ([[-500, -500], [-400, -450]], 5, False, "outside the image"),
        ([[10, 10]], 5, True, "nothing to erase"),
        ([[0, 0], [1e6, 1e6], [0, 1e6], [1e6, 0]] * 50, 1000, False, "too large"),
    ],
)
def test_bad_strokes_are_refused_with_a_clear_message(session, points, radius, erase, message):
    with pytest.raises(DermasegError, match=message):
        gesture(session, points, radius, erase)
    assert session.mask is None and len(session.history) == 1


def test_malformed_paint_gesture_is_a_dermaseg_error(session):
    with pytest.raises(DermasegError, match="malformed"):
        handle_gesture(session, {"kind": "gesture", "type": "paint", "points": [[1, 1]]})
    with pytest.raises(GeometryError):
        handle_gesture(session, {"kind": "gesture", "type": "paint", "points": [[1, 1]], "radius": "big"})

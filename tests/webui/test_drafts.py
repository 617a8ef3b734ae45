"""Work in progress survives a reload (a new session opening the image), the page reopens the last image,
the annotator is remembered, and a damaged annotation is named, not fatal (page actions, real model, real images)."""

from __future__ import annotations

import json
import sqlite3
import time

import numpy as np
import pytest

from dermaseg.core.errors import DermasegError
from dermaseg.core.evaluation.dataset import box_from_mask
from dermaseg.webui.page.exports import export_project
from dermaseg.webui.page.gestures import handle_gesture
from dermaseg.webui.page.lesions import select_lesion
from dermaseg.webui.page.opening import last_image_id, neighbour_id, open_project_image, remembered_annotator
from dermaseg.webui.page.prompts import prompt_box
from dermaseg.webui.page.saving import accept
from dermaseg.webui.page.session import Session
from dermaseg.webui.page.undo import keep_draft, redo_prompt, undo_prompt
from dermaseg.webui.page.views import progress_summary


def new_tab(engine, project, tmp_path) -> Session:
    """What a reload gives: a fresh session on the same project."""
    return Session(engine.segmenter(), project, tmp_path / "views")


def moved(parts: list[dict], dx: float) -> list[dict]:
    out = json.loads(json.dumps(parts))
    out[0]["exterior"][0][0] = max(0.0, out[0]["exterior"][0][0] - dx)
    return out


def test_a_reload_restores_prompts_and_hand_edited_outline(engine, project, dev_data, tmp_path):
    rec = project.images()[0]
    expert = next(c for c in dev_data if c.image.name == rec.path).load_mask()
    s = new_tab(engine, project, tmp_path)
    open_project_image(s, rec.id)
    ys, xs = np.nonzero(expert)
    handle_gesture(s, {"kind": "gesture", "type": "click", "x": float(xs.mean()), "y": float(ys.mean())})
    handle_gesture(s, {"kind": "gesture", "type": "box", "box": list(box_from_mask(expert, margin=8))})
    edited = moved(s.polygons.to_json()["parts"], 30)
    handle_gesture(s, {"kind": "gesture", "type": "edit", "polygons": edited})
    prompts, polygons, mask = s.prompts, s.polygons, s.mask.copy()
    assert project.image(rec.id).status == "in_progress"
    assert progress_summary(project).startswith("0 of 3 done · 1 in progress")

    t = new_tab(engine, project, tmp_path)  # the reload
    assert last_image_id(project) == rec.id
    message = open_project_image(t, last_image_id(project))
    assert "restored the work in progress" in message
    assert t.prompts == prompts and t.polygons == polygons and np.array_equal(t.mask, mask) and t.edited
    undo_prompt(t)  # undo restarts at the draft: one step back is the image as it opened
    assert t.prompts.is_empty and t.mask is None
    assert project.draft(rec.id) is None  # back at the opening state: nothing in progress
    redo_prompt(t)
    assert project.draft(rec.id) is not None

    accept(t, "lesion", " Dr Draft ")
    assert project.draft(rec.id) is None and project.image(rec.id).status == "done"
    assert remembered_annotator(project) == "Dr Draft"
    u = new_tab(engine, project, tmp_path)
    assert "restored" not in open_project_image(u, rec.id)


def test_drafts_are_cheap(engine, project, dev_data, tmp_path, record_property):
    """One committed UPSERT per gesture (synchronous=FULL: an fsync), small beside the gesture's ~100 ms."""
    rec = project.images()[1]
    expert = next(c for c in dev_data if c.image.name == rec.path).load_mask()
    s = new_tab(engine, project, tmp_path)
    open_project_image(s, rec.id)
    prompt_box(s, box_from_mask(expert, margin=8))
    times = []
    for i in range(20):
        s.tolerance_px = 1.0 + i / 100  # a new row each time (SQLite skips writing an unchanged one)
        t0 = time.perf_counter()
        keep_draft(s)
        times.append(time.perf_counter() - t0)
    median_ms = 1000 * float(np.median(times))
    record_property("draft_save_median_ms", round(median_ms, 2))
    print(f"\ndraft save: median {median_ms:.2f} ms, max {1000 * max(times):.2f} ms (20 saves)")
    assert median_ms < 50, f"a draft save took {median_ms:.1f} ms"
    assert project.draft(rec.id).prompts["box"] == list(s.prompts.box)
    project.discard_draft(rec.id)


def test_a_damaged_annotation_is_named_and_the_rest_works(engine, project, dev_data, tmp_path):
    recs = project.images()
    s = new_tab(engine, project, tmp_path)
    for rec in recs[1:]:
        expert = next(c for c in dev_data if c.image.name == rec.path).load_mask()
        open_project_image(s, rec.id)
        prompt_box(s, box_from_mask(expert, margin=8))
        accept(s, "lesion")
    bad = project.annotations(recs[1].id)[-1].id
    con = sqlite3.connect(project.db_path)
    counts = con.execute("SELECT rle_counts FROM annotations WHERE id = ?", (bad,)).fetchone()[0]
    con.execute("UPDATE annotations SET rle_counts = ? WHERE id = ?", (counts[:4] + "zzzzzz" + counts[10:], bad))
    con.commit()
    con.close()

    message = open_project_image(s, recs[1].id)
    assert f"annotation {bad} (image id {recs[1].id}" in message and "project check" in message
    assert s.mask is None  # the image opens, without the damaged outline
    assert neighbour_id(project, recs[1].id, +1) == recs[2].id
    open_project_image(s, recs[2].id)
    assert "1 saved lesion shown" in s.message
    paths = export_project(project, tmp_path / "export")
    coco = json.loads(paths[0].read_text())
    assert bad not in [a["id"] for a in coco["annotations"]] and len(coco["annotations"]) >= 1
    with pytest.raises(DermasegError):
        project.annotation(bad)
    assert project.check(repair=True).repaired == ((bad, "restored from the edit history (the same version)"),)


def test_a_draft_edits_the_saved_lesion_it_was_editing(engine, dev_data, tmp_path):
    """Work on a selected saved lesion comes back as an edit of that lesion (Accept updates it, version
    + 1); if someone changed the lesion meanwhile, it comes back as a new lesion beside it (nothing lost)."""
    import shutil

    from dermaseg.core.annotation.project import Project

    case = dev_data[1]
    (tmp_path / "p").mkdir()
    shutil.copy(case.image, tmp_path / "p" / case.image.name)
    project = Project.init(tmp_path / "p")
    rec, expert = project.images()[0], case.load_mask()
    s = new_tab(engine, project, tmp_path)
    open_project_image(s, rec.id)
    prompt_box(s, box_from_mask(expert, margin=8))
    ann_id = accept(s, "lesion")
    select_lesion(s, ann_id)
    handle_gesture(s, {"kind": "gesture", "type": "edit", "polygons": moved(s.polygons.to_json()["parts"], 25)})
    edited = s.polygons

    t = new_tab(engine, project, tmp_path)  # the reload
    assert "restored the work in progress" in open_project_image(t, rec.id)
    assert t.annotation_id == ann_id and t.polygons == edited
    accept(t, "lesion", replace=True)
    assert project.annotation(ann_id).version == 2 and len(project.annotations(rec.id)) == 1

    select_lesion(t, ann_id)
    handle_gesture(t, {"kind": "gesture", "type": "edit", "polygons": moved(t.polygons.to_json()["parts"], 10)})
    saved = project.annotation(ann_id)  # someone else changes the lesion meanwhile
    project.update_annotation(ann_id, mask=~saved.mask(), label="lesion", expected_version=saved.version)
    u = new_tab(engine, project, tmp_path)
    assert "as a new lesion" in open_project_image(u, rec.id)
    assert u.annotation_id is None and u.edited
    project.close()

"""Undo/redo of outline edits (with prompts, in one history) and the annotator name in provenance."""

from __future__ import annotations

import json

import numpy as np
import pytest
from gradio_client import Client

from dermaseg.core.errors import DermasegError
from dermaseg.core.evaluation.dataset import box_from_mask
from dermaseg.webui.page.edits import edit_polygons
from dermaseg.webui.page.lesions import select_lesion
from dermaseg.webui.page.opening import open_project_image
from dermaseg.webui.page.prompts import prompt_box, prompt_click
from dermaseg.webui.page.saving import accept
from dermaseg.webui.page.session import Session
from dermaseg.webui.page.undo import redo_prompt, undo_prompt


@pytest.fixture()
def session(engine, project, tmp_path):
    s = Session(engine.segmenter(), project, tmp_path / "views")
    project.discard_draft(project.images()[1].id)  # each test starts afresh, not from an earlier test's work
    open_project_image(s, project.images()[1].id)  # the client test below uses image 0
    return s


@pytest.fixture()
def expert(dev_data, session):
    return next(c for c in dev_data if c.image.name == session.image.name).load_mask()


def moved(parts: list[dict], dx: float) -> list[dict]:
    """The outline with its first vertex moved `dx` px to the left."""
    out = json.loads(json.dumps(parts))
    out[0]["exterior"][0][0] = max(0.0, out[0]["exterior"][0][0] - dx)
    return out


def edit(s: Session, parts: list[dict]) -> None:
    edit_polygons(s, {"width": s.image.width, "height": s.image.height, "parts": parts})


def test_outline_edits_undo_and_redo_between_prompts(session, expert):
    prompt_box(session, box_from_mask(expert, margin=8))
    model_mask = session.mask.copy()
    parts = session.polygons.to_json()["parts"]
    edit(session, moved(parts, 40))
    first_edit = session.mask.copy()
    edit(session, moved(session.polygons.to_json()["parts"], 80))
    assert session.edited and not np.array_equal(session.mask, first_edit)

    undo_prompt(session)  # the second edit
    assert session.edited and np.array_equal(session.mask, first_edit)
    undo_prompt(session)  # the first edit: back to the model's mask
    assert not session.edited and np.array_equal(session.mask, model_mask)
    redo_prompt(session)
    assert session.edited and np.array_equal(session.mask, first_edit)
    redo_prompt(session)
    with pytest.raises(DermasegError, match="nothing to redo"):
        redo_prompt(session)

    ys, xs = np.nonzero(~expert)
    prompt_click(session, float(xs[0]), float(ys[0]), positive=False)  # a prompt after edits drops the edit
    assert not session.edited and session.prompts.labels == (0,)
    undo_prompt(session)  # back to the last edit
    assert session.edited and session.prompts.labels == ()
    assert "edited by hand" in session.message


def test_undo_comes_back_to_a_saved_outline(session, expert, project):
    prompt_box(session, box_from_mask(expert, margin=8))
    accept(session, project.labels()[0], "  Dr Undo ")
    saved = project.annotations(session.image_id)[-1]
    assert saved.provenance.annotator == "Dr Undo"
    open_project_image(session, session.image_id)
    select_lesion(session, saved.id)  # reopened, a new lesion is drawn until a saved one is selected
    edit(session, moved(session.polygons.to_json()["parts"], 40))
    undo_prompt(session)
    assert np.array_equal(session.mask, saved.mask())


def test_blank_annotator_is_none(session, expert, project):
    prompt_box(session, box_from_mask(expert, margin=8))
    ann_id = accept(session, project.labels()[0], "   ")
    assert project.annotation(ann_id).provenance.annotator is None


def test_annotator_and_edit_undo_through_the_api(served, project, dev_data):
    client = Client(served[1], verbose=False, download_files=False)
    rec = project.images()[0]
    expert = next(c for c in dev_data if c.image.name == rec.path).load_mask()
    client.predict(rec.id, api_name="/open_image")
    view = json.loads(client.predict(*box_from_mask(expert, margin=8), api_name="/box"))
    gesture = {"kind": "gesture", "type": "edit", "polygons": moved(view["polygons"], 60), "seq": 7}
    edited = json.loads(client.predict(json.dumps(gesture), api_name="/gesture"))
    assert edited["edited"] and edited["polygons"] != view["polygons"]
    undone = json.loads(client.predict(api_name="/undo"))
    assert not undone["edited"] and undone["polygons"] == view["polygons"]
    redone = json.loads(client.predict(api_name="/redo"))
    assert redone["edited"] and redone["polygons"] == edited["polygons"]
    canvas, _, _ = client.predict(project.labels()[0], "Dr API", api_name="/accept")
    assert json.loads(canvas)["message"].startswith("saved:")
    ann = project.annotations(rec.id)[-1]
    assert ann.provenance.annotator == "Dr API" and ann.provenance.source == "manual"

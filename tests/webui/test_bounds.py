"""One session's memory is bounded: the undo history (steps and edited vertices) and the size of one edit.

Before the bounds each POST of a 100,000-vertex outline added ~13 MB to the history, without end.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from dermaseg.core.errors import DermasegError, GeometryError
from dermaseg.webui.page.edits import MAX_EDIT_VERTICES, edit_polygons
from dermaseg.webui.page.masks import vertex_count
from dermaseg.webui.page.opening import open_project_image
from dermaseg.webui.page.session import Session
from dermaseg.webui.page.undo import MAX_HISTORY_VERTICES, MAX_UNDO, redo_prompt, undo_prompt


@pytest.fixture()
def session(engine, project, tmp_path):
    """A session on a project image, with no prompts (undo then needs no model run)."""
    s = Session(engine.segmenter(), project, tmp_path / "views")
    open_project_image(s, project.images()[2].id)
    return s


def circle(s: Session, vertices: int, radius: float) -> list[dict]:
    cx, cy = s.image.width / 2, s.image.height / 2
    ring = [
        [cx + radius * math.cos(2 * math.pi * i / vertices), cy + radius * math.sin(2 * math.pi * i / vertices)]
        for i in range(vertices)
    ]
    return [{"exterior": ring, "holes": []}]


def edit(s: Session, parts: list[dict]) -> None:
    edit_polygons(s, {"width": s.image.width, "height": s.image.height, "parts": parts})


def test_undo_keeps_the_newest_steps_and_drops_the_oldest(session):
    n = MAX_UNDO + 15
    areas = []
    for k in range(n):
        edit(session, circle(session, 12, 20 + k))
        areas.append(int(session.mask.sum()))
    assert len(session.history) == MAX_UNDO + 1 and len(set(areas)) == n
    for k in range(n - 2, n - 2 - MAX_UNDO, -1):
        undo_prompt(session)
        assert int(session.mask.sum()) == areas[k]
    assert int(session.mask.sum()) == areas[n - 1 - MAX_UNDO]  # the oldest kept: the 15 before it are gone
    with pytest.raises(DermasegError, match="nothing to undo"):
        undo_prompt(session)
    for _ in range(MAX_UNDO):
        redo_prompt(session)
    assert int(session.mask.sum()) == areas[-1]


def test_the_history_keeps_a_bounded_number_of_edited_vertices(session):
    for k in range(30):
        edit(session, circle(session, MAX_EDIT_VERTICES, 100 + k))  # the largest edit allowed, 30 times
    kept = [vertex_count(step.outline) for step in session.history if step.outline is not None]
    assert sum(kept) <= MAX_HISTORY_VERTICES and len(kept) == MAX_HISTORY_VERTICES // MAX_EDIT_VERTICES
    assert session.history[-1].outline == session.polygons  # the newest edit is current, and undoable
    undo_prompt(session)
    assert session.polygons == session.history[-1].outline


def test_an_edit_above_the_vertex_limit_is_refused_and_changes_nothing(session):
    edit(session, circle(session, 40, 60))
    before, steps = session.mask.copy(), len(session.history)
    with pytest.raises(GeometryError, match=f"at most {MAX_EDIT_VERTICES:,} vertices, this one has 20,001"):
        edit(session, circle(session, MAX_EDIT_VERTICES + 1, 80))
    assert np.array_equal(session.mask, before) and len(session.history) == steps

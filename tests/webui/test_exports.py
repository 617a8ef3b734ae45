"""One export path: the page's per-image export is the project's COCO export of that image (real model,
real images, real SQLite). After the label list is edited (a label renamed, one added in front, one
removed) both give each annotation the same category, and a per-image export re-imports with its
editable outline (`polygons`) and its simplification (`tolerance_px`)."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from dermaseg.core.annotation.project import Project
from dermaseg.core.evaluation.dataset import box_from_mask
from dermaseg.webui.page.edits import set_tolerance
from dermaseg.webui.page.exports import export_image, export_project
from dermaseg.webui.page.lesions import new_lesion, select_lesion
from dermaseg.webui.page.opening import open_project_image
from dermaseg.webui.page.prompts import prompt_box
from dermaseg.webui.page.saving import accept
from dermaseg.webui.page.session import Session


@pytest.fixture()
def two_images(engine, dev_data, tmp_path):
    """A project of two dev images, a session on it, and each image's (record, expert mask)."""
    cases = dev_data[4:6]
    folder = tmp_path / "two"
    folder.mkdir()
    for c in cases:
        shutil.copy(c.image, folder / c.image.name)
    project = Project.init(folder)
    s = Session(engine.segmenter(), project, tmp_path / "views")
    masks = {c.image.name: c.load_mask() for c in cases}
    yield s, [(r, masks[r.path]) for r in project.images()]
    project.close()


def categories(coco: dict) -> dict[int, tuple[int, str]]:
    """annotation id -> (category id, category name) of a COCO export."""
    names = {c["id"]: c["name"] for c in coco["categories"]}
    return {a["id"]: (a["category_id"], names[a["category_id"]]) for a in coco["annotations"]}


def test_both_exports_agree_after_labels_are_renamed_added_and_removed(two_images, tmp_path, skin_box):
    s, [(a, mask_a), (b, mask_b)] = two_images
    s.project.set_labels(["lesion", "temporary", "unused"])
    open_project_image(s, a.id)
    prompt_box(s, box_from_mask(mask_a, margin=8))
    first = accept(s, "lesion")
    new_lesion(s)
    set_tolerance(s, 2.5)
    prompt_box(s, skin_box(mask_a))
    second = accept(s, "temporary")
    open_project_image(s, b.id)
    prompt_box(s, box_from_mask(mask_b, margin=8))
    third = accept(s, "unused")

    # "temporary" renamed "naevus" (its annotation relabelled on the page), "melanoma" added in front,
    # "unused" renamed "other", then both old names removed: category ids are no longer 1, 2, 3
    s.project.set_labels(["lesion", "temporary", "naevus", "unused", "other"])
    open_project_image(s, a.id)
    select_lesion(s, second)
    accept(s, "naevus")
    open_project_image(s, b.id)
    select_lesion(s, third)
    accept(s, "other")
    s.project.set_labels(["melanoma", "other", "lesion", "naevus"])

    coco_all, _ = export_project(s.project, tmp_path / "all")
    whole = categories(json.loads(coco_all.read_text()))
    per_image: dict[int, tuple[int, str]] = {}
    for rec in (a, b):
        open_project_image(s, rec.id)
        one = categories(json.loads(export_image(s, tmp_path / f"image-{rec.id}")[0].read_text()))
        assert set(one) == {x.id for x in s.project.annotations(rec.id)}  # that image's annotations only
        per_image |= one
    assert per_image == whole
    assert [whole[x][1] for x in (first, second, third)] == ["lesion", "naevus", "other"]

    # a per-image export re-imported into a fresh project keeps the editable outlines and tolerances
    open_project_image(s, a.id)
    coco_a = export_image(s, tmp_path / "again")[0]
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    shutil.copy(s.project.root / a.path, fresh)
    with Project.init(fresh) as p:
        assert p.import_coco(coco_a).added == 2
        got, want = p.annotations(), s.project.annotations(a.id)
        assert [(g.label, g.polygons, g.tolerance_px) for g in got] == [
            (w.label, w.polygons, w.tolerance_px) for w in want
        ]
        assert [g.tolerance_px for g in got] == [1.0, 2.5] and all(g.polygons for g in got)
        assert all(np.array_equal(g.mask(), w.mask()) for g, w in zip(got, want, strict=True))

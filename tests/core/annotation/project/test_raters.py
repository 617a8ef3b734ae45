"""Raters in the project store: COCO imports filed per rater (never dropping or replacing another rater's
work), each rater's mask per image (`raters.rater_masks`, read one image at a time) and the consensus
written as COCO, on dev images."""

from __future__ import annotations

import gc
import json
import shutil
import weakref
from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage

from dermaseg.core.annotation import coco
from dermaseg.core.annotation.agreement import agreement
from dermaseg.core.annotation.project import Project, Provenance
from dermaseg.core.annotation.project.raters import (
    UNNAMED_RATER,
    ConsensusCoco,
    RaterMasks,
    measure_raters,
    rater_masks,
)
from dermaseg.core.calibration import Calibration
from dermaseg.core.errors import StoreError


def _coco(masks: dict[str, np.ndarray], label: str = "lesion") -> bytes:
    """A plain COCO file (no dermaseg provenance, as from another tool): one annotation per image."""
    images = [coco.image_dict(i, name, m.shape[1], m.shape[0]) for i, (name, m) in enumerate(masks.items(), 1)]
    anns = [coco.annotation_dict(i, i, 1, m) for i, m in enumerate(masks.values(), 1)]
    return json.dumps(coco.dataset_dict(images, anns, [(1, label)])).encode()


def _masks(gathered: RaterMasks) -> dict[str, dict[str, np.ndarray]]:
    """Every image's raters' masks, all at once (for checking; the command reads one image at a time)."""
    return {im.file_name: im.masks for im in gathered}


@pytest.fixture
def project(dev_data, tmp_path) -> tuple[Project, dict[str, np.ndarray]]:
    """A project of 3 dev images (nothing annotated) and the experts' masks by image path."""
    folder = tmp_path / "proj"
    folder.mkdir()
    for case in dev_data[:3]:
        shutil.copy(case.image, folder / case.image.name)
    p = Project.init(folder)
    yield p, {case.image.name: case.load_mask() for case in dev_data[:3]}
    p.close()


def test_identical_masks_of_two_raters_are_both_filed(project):
    p, expert = project
    assert p.import_coco(_coco(expert), annotator="expert").added == 3
    rep = p.import_coco(_coco(expert), annotator="b")  # b drew exactly the experts' pixels
    assert (rep.added, rep.skipped_duplicates) == (3, 0)
    assert p.import_coco(_coco(expert), annotator="b").skipped_duplicates == 3  # the same rater again: nothing
    got = rater_masks(p)
    masks = _masks(got)
    assert set(masks) == set(expert) and got.single_rater == ()
    for name, by_rater in masks.items():
        assert list(by_rater) == ["expert", "b"]
        assert np.array_equal(by_rater["expert"], expert[name]) and np.array_equal(by_rater["b"], expert[name])
    assert agreement(masks).mean_dice == 1.0 and measure_raters(got).mean_dice == 1.0
    for a in p.annotations():
        assert a.provenance.source == "import" and a.provenance.time_utc and a.created_utc


def test_replace_swaps_one_raters_annotations_only(project):
    p, expert = project
    p.import_coco(_coco(expert), annotator="expert")
    grown = {n: ndimage.binary_dilation(m, iterations=2) for n, m in expert.items()}
    p.import_coco(_coco(grown), annotator="b")
    shrunk = {n: ndimage.binary_erosion(m, iterations=2) for n, m in expert.items()}
    rep = p.import_coco(_coco(shrunk), annotator="b", replace=True)
    assert (rep.replaced, rep.added) == (3, 3)
    got = rater_masks(p)
    for name, by_rater in _masks(got).items():
        assert np.array_equal(by_rater["expert"], expert[name]) and np.array_equal(by_rater["b"], shrunk[name])
    rec = p.image_by_path(next(iter(expert)))
    assert p.undo(rec.id)  # the replacing import of an image is one undoable step: b's grown mask is back
    assert np.array_equal(_masks(rater_masks(p))[rec.path]["b"], grown[rec.path])
    with pytest.raises(StoreError, match="annotator's name is empty"):
        p.import_coco(_coco(expert), annotator="  ")


def test_rater_masks_unite_a_raters_lesions_and_skip_single_raters(project):
    p, expert = project
    a_name, b_name, c_name = expert
    recs = {n: p.image_by_path(n) for n in expert}
    m = expert[a_name]
    rows = np.nonzero(m.any(axis=1))[0]
    top, bottom = m.copy(), m.copy()
    top[rows[len(rows) // 2] :] = False
    bottom[: rows[len(rows) // 2]] = False
    p.add_annotation(recs[a_name].id, top, provenance=Provenance(source="manual", annotator="ann"))
    p.add_annotation(recs[a_name].id, bottom, provenance=Provenance(source="manual", annotator="ann"))
    p.add_annotation(recs[a_name].id, ndimage.binary_dilation(m, iterations=4), provenance=Provenance(source="model"))
    p.add_annotation(recs[b_name].id, expert[b_name], provenance=Provenance(annotator="ann"))
    p.add_annotation(recs[b_name].id, expert[b_name], provenance=Provenance(annotator="ann"))  # same rater twice
    p.set_project_calibration(Calibration(0.03))
    p.set_calibration(recs[a_name].id, Calibration(0.01))

    got = rater_masks(p)
    masks = _masks(got)
    assert list(masks) == [a_name] and got.single_rater == (b_name,)  # c: not annotated, not listed
    assert list(masks[a_name]) == ["ann", UNNAMED_RATER] and got.raters == (UNNAMED_RATER, "ann")
    assert np.array_equal(masks[a_name]["ann"], m)  # the two halves, united
    assert {im.file_name: im.calibration for im in got} == {a_name: Calibration(0.01)}
    p.set_calibration(recs[a_name].id, None)
    assert next(iter(rater_masks(p))).calibration.mm_per_px == 0.03  # the project's scale, else


def test_masks_are_read_one_image_at_a_time(project):
    """The masks of an image are read from the project when the iteration reaches it, not before: a rater
    added to image 2 after image 1 was handed out is there, image 1 is not kept, and an image left with
    one rater by then is passed over."""
    p, expert = project
    names = list(expert)
    p.import_coco(_coco(expert), annotator="expert")
    p.import_coco(_coco({n: ndimage.binary_dilation(m, iterations=3) for n, m in expert.items()}), annotator="b")
    got = rater_masks(p)
    assert [rec.path for rec in got.images] == names and got.raters == ("b", "expert")
    it = iter(got)
    first = next(it)
    assert first.file_name == names[0] and list(first.masks) == ["expert", "b"]
    first_mask = weakref.ref(first.masks["expert"])
    del first
    gc.collect()
    assert first_mask() is None  # the iterator holds no reference to the image it handed out
    late = ndimage.binary_erosion(expert[names[1]], iterations=2)
    p.add_annotation(p.image_by_path(names[1]).id, late, provenance=Provenance(source="manual", annotator="c"))
    second = next(it)
    assert second.file_name == names[1] and list(second.masks) == ["expert", "b", "c"]
    assert np.array_equal(second.masks["c"], late)
    # b's work on image 3 is deleted before the iteration reaches it: image 3 is passed over
    for a in p.annotations(p.image_by_path(names[2]).id):
        if a.provenance.annotator == "b":
            p.delete_annotation(a.id)
    assert list(it) == []


def test_consensus_coco(project, tmp_path: Path):
    p, expert = project
    names = list(expert)
    p.import_coco(_coco(expert), annotator="expert")
    shifted = {n: np.roll(m, 6, axis=1) for n, m in expert.items()}
    p.import_coco(_coco(shifted), annotator="b")
    far = np.zeros_like(expert[names[2]])
    far[:5, :5] = True  # disjoint from the expert's lesion: no pixel has a majority
    p.import_coco(_coco({names[2]: far}), annotator="c")
    p.import_coco(_coco({names[2]: expert[names[2]]}), annotator="d")
    got = rater_masks(p)
    consensus = ConsensusCoco("majority", p.labels())
    measure_raters(got, consensus)
    rep = consensus.write(tmp_path / "majority.json", got.raters)
    assert rep.annotations == 3 and rep.empty == ()
    ds = coco.read_coco(rep.coco_path)
    for ann in ds.annotations:
        name = ds.image(ann.image_id).file_name
        assert ann.extra["provenance"]["annotator"] == "consensus (majority vote)"
        # 2 of 2, or on the last image 3 of 4 (expert's pixels alone have 2 of 4: a tie, left out)
        assert np.array_equal(ann.rle.decode(), expert[name] & shifted[name])
    with pytest.raises(StoreError, match="consensus method 'mean'"):
        ConsensusCoco("mean", p.labels())

    # two raters who never overlap: an empty consensus is reported, not written
    q_folder = tmp_path / "q"
    q_folder.mkdir()
    shutil.copy(p.root / names[0], q_folder / names[0])
    with Project.init(q_folder) as q:
        q.import_coco(_coco({names[0]: expert[names[0]]}), annotator="a")
        q.import_coco(_coco({names[0]: far}), annotator="b")
        consensus = ConsensusCoco("majority", q.labels())
        measure_raters(rater_masks(q), consensus)
        rep = consensus.write(tmp_path / "empty.json", ["a", "b"])
    assert rep.annotations == 0 and rep.empty == (names[0],)


def test_measure_raters_shows_its_progress_one_image_at_a_time(project):
    """`progress` (the store's `Progress` convention) is handed the images, their number and a name, and
    what it passes on is what is measured (the page shows a progress bar with it)."""
    p, expert = project
    p.import_coco(_coco(expert), annotator="expert")
    p.import_coco(_coco({n: ndimage.binary_dilation(m, iterations=2) for n, m in expert.items()}), annotator="b")
    gathered = rater_masks(p)
    seen: list[tuple[int, str]] = []
    passed: list[str] = []

    def progress(images, total, desc):
        seen.append((total, desc))
        for image in images:
            passed.append(image.file_name)
            yield image

    result = measure_raters(gathered, progress=progress)
    assert seen == [(3, "agreement")] and passed == [im.file_name for im in result.images] == list(expert)
    assert result.mean_dice == measure_raters(rater_masks(p)).mean_dice < 1

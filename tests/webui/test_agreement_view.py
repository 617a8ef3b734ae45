"""The page's agreement view as data (`webui.page.agreement`), on dev images in a real project: the
figures are core's, the plot and table in the ranking core gives, and a plain "needs two raters" message
when no image has two."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from scipy import ndimage

from dermaseg.core.annotation import coco
from dermaseg.core.annotation.agreement import AGREEMENT_NOTICE, agreement
from dermaseg.core.annotation.project import Project
from dermaseg.core.calibration import Calibration
from dermaseg.webui.page.agreement import (
    MM_COLUMNS,
    NEEDS_RATERS,
    PLOT_COLUMNS,
    TABLE_COLUMNS,
    compute_agreement,
    dice_axis_min,
)


def _coco(masks: dict[str, np.ndarray]) -> bytes:
    """A plain COCO file (as from another tool): one annotation per image."""
    images = [coco.image_dict(i, name, m.shape[1], m.shape[0]) for i, (name, m) in enumerate(masks.items(), 1)]
    anns = [coco.annotation_dict(i, i, 1, m) for i, m in enumerate(masks.values(), 1)]
    return json.dumps(coco.dataset_dict(images, anns, [(1, "lesion")])).encode()


@pytest.fixture
def project(dev_data, tmp_path):
    folder = tmp_path / "proj"
    folder.mkdir()
    for case in dev_data[:3]:
        shutil.copy(case.image, folder / case.image.name)
    p = Project.init(folder)
    yield p, {case.image.name: case.load_mask() for case in dev_data[:3]}
    p.close()


def test_one_rater_says_two_are_needed(project):
    p, expert = project
    p.import_coco(_coco(expert), annotator="a")
    view = compute_agreement(p)
    assert NEEDS_RATERS in view.summary and "3 images annotated by one rater" in view.summary
    assert view.plot.empty and view.table.empty and list(view.table.columns) == list(TABLE_COLUMNS)
    assert "needs at least two raters on an image" in view.summary


def test_two_raters_figures_are_cores(project):
    p, expert = project
    names = list(expert)
    b = {names[0]: ndimage.binary_dilation(expert[names[0]], iterations=3),
         names[1]: np.roll(expert[names[1]], 8, axis=1)}  # fmt: skip
    p.import_coco(_coco(expert), annotator="a")
    p.import_coco(_coco(b), annotator="b")
    p.set_calibration(p.image_by_path(names[0]).id, Calibration(0.02))
    steps: list[str] = []

    def progress(images, total, desc):
        for im in images:
            steps.append(im.file_name)
            yield im

    view = compute_agreement(p, progress)
    want = agreement({n: {"a": expert[n], "b": b[n]} for n in b}, {names[0]: Calibration(0.02)})
    assert steps == names[:2]
    assert f"{want.mean_dice:.3f}" in view.summary and "2 image(s) with ≥ 2 raters" in view.summary
    assert "raters: a, b" in view.summary and "1 image(s) with one rater only" in view.summary
    assert AGREEMENT_NOTICE in view.summary and "not a diagnosis" in view.summary

    assert list(view.plot.columns) == list(PLOT_COLUMNS)
    assert list(view.plot["image"]) == [im.file_name for im in want.ranked]
    assert list(view.plot["mean Dice"]) == pytest.approx([im.mean_dice for im in want.ranked], abs=1e-12)
    assert 0 <= dice_axis_min(view.plot) < view.plot["mean Dice"].min()

    assert list(view.table.columns) == list(TABLE_COLUMNS + MM_COLUMNS)  # one image is calibrated
    for row, (name, pair) in zip(view.table.itertuples(index=False), want.ranked_pairs(), strict=True):
        assert row[:5] == (name, "a vs b", f"{pair.dice:.3f}", f"{pair.iou:.3f}", f"{pair.hd95_px:.1f}")
        assert row[5] == f"{pair.area_diff_px2:+d}" and row[6] == f"{pair.diameter_diff_px:+.1f}"
        assert row[7] == ("–" if pair.hd95_mm is None else f"{pair.hd95_mm:.2f}")
    calibrated = view.table[view.table["image"] == names[0]].iloc[0]
    assert calibrated["HD95 mm"] != "–" and float(calibrated["Δ area mm²"]) > 0  # b grew: positive difference

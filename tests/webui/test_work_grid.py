"""The page works on a bounded grid: on a 12-megapixel photo a prompt's mask, outline and measurements are
made at <= 1024 px a side; what is saved is the full-resolution mask, made once, pixel-identical to the
mask a session working at full resolution gives. Dermoscopy-size images are worked on at full size."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from dermaseg.core.annotation.metrics import measure
from dermaseg.core.annotation.project import Project
from dermaseg.core.evaluation.dataset import box_from_mask
from dermaseg.core.interactive.work_grid import WORK_MAX_SIDE, work_shape
from dermaseg.webui.page import session as page_session
from dermaseg.webui.page.edits import edit_polygons
from dermaseg.webui.page.masks import full_mask, rasterised
from dermaseg.webui.page.measuring import measurements
from dermaseg.webui.page.opening import open_project_image
from dermaseg.webui.page.prompts import prompt_box, prompt_click
from dermaseg.webui.page.saving import accept
from dermaseg.webui.page.session import Session

BIG = (4088, 3068)


@pytest.fixture(scope="module")
def big(dev_data, tmp_path_factory):
    """A project holding the first dev image enlarged to 12.5 megapixels, and its enlarged expert mask."""
    case = dev_data[0]
    folder = tmp_path_factory.mktemp("big")
    Image.open(case.image).convert("RGB").resize(BIG, Image.Resampling.BICUBIC).save(folder / "big.jpg", quality=95)
    gt = np.asarray(Image.fromarray(case.load_mask()).resize(BIG, Image.Resampling.NEAREST))
    project = Project.init(folder)
    yield project, gt
    project.close()


def _session(engine, project, tmp_path) -> Session:
    s = Session(engine.segmenter(), project, tmp_path / "views")
    project.discard_draft(project.images()[0].id)  # the other session's work in progress: start afresh
    open_project_image(s, project.images()[0].id)
    return s


def test_every_dev_image_is_worked_on_at_full_size(dev_data):
    for case in dev_data:
        w, h_ = Image.open(case.image).size
        assert work_shape(h_, w) == (h_, w), case.id


def test_a_12mp_click_works_on_the_grid_and_saves_the_full_resolution_mask(engine, big, tmp_path, monkeypatch):
    project, gt = big
    s = _session(engine, project, tmp_path)
    grid = work_shape(BIG[1], BIG[0])
    assert s.mask_shape() == grid and max(grid) == WORK_MAX_SIDE
    ys, xs = np.nonzero(gt)
    x, y = float(xs.mean()), float(ys.mean())
    prompt_box(s, box_from_mask(gt, 40))
    prompt_click(s, x, y, positive=True)
    assert s.mask.shape == grid
    assert (s.polygons.width, s.polygons.height) == BIG  # the outline is in image pixels
    xs_outline = [p[0] for part in s.polygons.parts for p in part.exterior]
    assert max(xs_outline) > 1024  # ... scaled up from the grid
    full = full_mask(s)
    assert full.shape == (BIG[1], BIG[0]) and full_mask(s) is full  # made once

    # The same prompts in a session working at full resolution: the same mask, pixel for pixel.
    monkeypatch.setattr(page_session, "work_shape", lambda height, width: (height, width))
    reference = _session(engine, project, tmp_path)
    prompt_box(reference, box_from_mask(gt, 40))
    prompt_click(reference, x, y, positive=True)
    assert reference.mask.shape == full.shape
    assert np.array_equal(reference.mask, full)

    # Measurements on the grid, in image pixels: within 1 % of the full-resolution ones.
    monkeypatch.undo()
    grid_metrics = measurements(s)
    exact = measure(full, reference.image.rgb, None)
    for name in ("area_px", "feret_max_px", "feret_min_px", "equivalent_diameter_px", "perimeter_px"):
        assert getattr(grid_metrics, name) == pytest.approx(getattr(exact, name), rel=0.01), name
    assert grid_metrics.asymmetry_index_major == pytest.approx(exact.asymmetry_index_major, abs=0.03)

    # Accept stores the full-resolution mask.
    ann_id = accept(s, "lesion")
    assert np.array_equal(project.annotation(ann_id).mask(), full)


def test_a_12mp_outline_edit_round_trips_through_the_grid(engine, big, tmp_path):
    project, gt = big
    s = _session(engine, project, tmp_path)
    prompt_box(s, box_from_mask(gt, 40))
    outline = s.polygons.to_json()
    edit_polygons(s, outline)  # the page sends back the outline it was given (image px)
    assert s.edited and s.mask.shape == work_shape(BIG[1], BIG[0])
    assert np.count_nonzero(s.mask ^ rasterised(s, s.polygons)) == 0
    full = full_mask(s)  # an edited outline is rasterised at full resolution
    grid_area = np.count_nonzero(s.mask) * s.pixel_size**2
    assert np.count_nonzero(full) == pytest.approx(grid_area, rel=0.01)

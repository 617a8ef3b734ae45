"""`tidy_mask`: one lesion without holes, as the clicks say; on real speckled dev masks."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from dermaseg.core.evaluation.click_simulator import iou, next_click
from dermaseg.core.image import load_image
from dermaseg.core.interactive.refine import Refinement
from dermaseg.core.interactive.session import InteractiveSession
from dermaseg.core.interactive.tidy import _sizes, tidy_mask
from dermaseg.core.segment.prompts import Prompts

NONE = Prompts()


def lesion() -> np.ndarray:
    """bool (100, 100): a 40 x 40 lesion (area 1600) with a 3 x 3 pinhole, and a 3 x 3 speck apart."""
    m = np.zeros((100, 100), bool)
    m[20:60, 20:60] = True
    m[30:33, 30:33] = False  # pinhole: 9 px < 2 % of the area
    m[80:83, 80:83] = True  # speck
    return m


def test_a_speck_goes_and_a_pinhole_is_filled() -> None:
    out = tidy_mask(lesion(), NONE)
    expected = np.zeros((100, 100), bool)
    expected[20:60, 20:60] = True
    assert np.array_equal(out, expected)


def two_parts() -> np.ndarray:
    """`lesion()` with a second part of 400 px (20 % of the area) and a hole of 100 px (5 %)."""
    m = lesion()
    m[70:90, 30:50] = True  # rows 70-89, columns 30-49
    m[40:50, 40:50] = False
    return m


def test_without_clicks_parts_above_the_fraction_stay_and_every_hole_is_filled() -> None:
    out = tidy_mask(two_parts(), NONE)
    assert out[75, 35] and out[45, 45] and out[31, 31] and not out[81, 81]
    assert not tidy_mask(two_parts(), NONE, min_fraction=0.3)[75, 35]  # a larger fraction drops it
    assert tidy_mask(lesion(), NONE, min_fraction=0)[81, 81]  # no fraction: every part stays


def test_positive_clicks_choose_the_parts_and_negative_clicks_keep_their_holes() -> None:
    on_lesion = Prompts().with_point(25, 25)
    out = tidy_mask(two_parts(), on_lesion)
    assert out[25, 25] and not out[75, 35]  # a part nobody clicked goes, whatever its size
    both = tidy_mask(two_parts(), on_lesion.with_point(35, 75).with_point(45, 45, positive=False))
    assert both[75, 35] and not both[81, 81] and not both[45, 45] and both[31, 31]
    assert tidy_mask(lesion(), Prompts().with_point(31, 31))[31, 31]  # a positive click in a hole: filled


def test_a_box_vouches_for_its_largest_part_beside_the_clicked_ones() -> None:
    boxed = Prompts(box=(10.0, 10.0, 95.0, 95.0)).with_point(81, 81)  # a correction on the speck
    out = tidy_mask(two_parts(), boxed)
    assert out[25, 25] and out[81, 81] and out[75, 35]  # largest, clicked, and >= 2 % parts all stay


def test_the_background_around_the_lesion_is_no_hole_and_edge_cases_pass_through() -> None:
    ring = np.zeros((50, 50), bool)
    ring[:, :3] = ring[:, -3:] = True  # two bands at the image's sides; the middle touches the edge
    assert np.array_equal(tidy_mask(ring, NONE), ring)
    empty = np.zeros((10, 10), bool)
    assert not tidy_mask(empty, NONE).any()
    lone = np.zeros((10, 10), bool)
    lone[5, 5] = True
    assert np.array_equal(tidy_mask(lone, NONE), lone)  # the largest part always stays


def _pieces(mask: np.ndarray) -> tuple[int, int]:
    """(parts, holes) of a bool mask, 4-connected."""
    holes = ndimage.label(ndimage.binary_fill_holes(mask) & ~mask)[1]
    return ndimage.label(mask)[1], holes


@pytest.fixture(scope="module")
def speckled(dev_data):
    """Dev images whose one-click masks came out in tens of pieces (IMD284, IMD424)."""
    return [c for c in dev_data if c.id in ("IMD284", "IMD424")]


def test_one_click_on_a_textured_lesion_gives_one_editable_outline(engine, speckled) -> None:
    assert len(speckled) == 2
    for case in speckled:
        seg, gt = engine.segmenter(), case.load_mask()
        seg.set_image(load_image(case.image))
        click = Prompts().with_point(*next_click(gt, np.zeros_like(gt)).xy)
        raw = Refinement(seg, mirror=False).predict(click).mask  # the decoder's own answer
        assert sum(_pieces(raw)) > 50  # measured: 272 and 288 pieces
        assert (_pieces(tidy_mask(raw, click))) == (1, 0)
        assert iou(gt, tidy_mask(raw, click)) >= iou(gt, raw)  # measured: +0.020 and +0.025
        # The product averages it with the mirror image's answer: one outline too. (On IMD424, a lesion
        # filling 98 % of the picture, that answer is worse, 0.44, and tidying it loses 0.046: see
        # docs/evaluation, "The mirror image".)
        assert _pieces(InteractiveSession(seg).predict(click).mask) == (1, 0)


def test_component_sizes_are_exact_counts() -> None:
    rng = np.random.default_rng(1)
    for _ in range(20):
        labels, n = ndimage.label(rng.random((40, 50)) < 0.5)
        assert np.array_equal(_sizes(labels, n), np.bincount(labels.ravel(), minlength=n + 1))

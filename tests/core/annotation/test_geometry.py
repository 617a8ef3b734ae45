"""Mask <-> polygon round trips (exact), simplification, repair of user edits, UI helpers."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
import shapely
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from dermaseg.core.annotation.geometry import (
    Polygon,
    Polygons,
    mask_to_polygons,
    polygons_area_px,
    polygons_bbox,
    polygons_svg_path,
    polygons_to_mask,
    repair_polygon,
    repair_polygons,
)
from dermaseg.core.errors import GeometryError


def _grid(text: str) -> np.ndarray:
    return np.array([[ch == "#" for ch in line.strip()] for line in text.strip().splitlines()])


def _round_trip(mask: np.ndarray) -> Polygons:
    polys = mask_to_polygons(mask)
    back = polygons_to_mask(polys, *mask.shape)
    np.testing.assert_array_equal(back, mask)
    if polys.parts:
        assert polys.to_shapely().is_valid, shapely.validation.explain_validity(polys.to_shapely())
    assert polygons_area_px(polys) == mask.sum()
    again = Polygons.from_json(json.loads(json.dumps(polys.to_json())))
    assert again == polys
    return polys


TRICKY = {
    "single pixel": "#",
    "diagonal pair": "#.\n.#",
    "anti-diagonal pair": ".#\n#.",
    "checker": "#.#\n.#.\n#.#",
    "one-pixel line": "#####",
    "one-pixel column": "#\n#\n#\n#",
    "one-pixel diagonal line": "#...\n.#..\n..#.\n...#",
    "ring (hole)": "###\n#.#\n###",
    "hole touching outside at a corner": "###\n#.#\n##.",
    "hole touching hole at a corner": "####\n#.##\n##.#\n####",
    "island in a lake": "#####\n#...#\n#.#.#\n#...#\n#####",
    "island touching lake corner": "#####\n#...#\n#..##\n#...#\n#####",
    "two holes": "#####\n#.#.#\n#####",
    "spiral": "######\n#....#\n#.##.#\n#.#..#\n#.####\n#.....",
    "full frame": "###\n###",
    "u shape": "#.#\n#.#\n###",
}


@pytest.mark.parametrize("name", sorted(TRICKY))
def test_round_trip_tricky(name: str) -> None:
    _round_trip(_grid(TRICKY[name]))


def test_known_polygons() -> None:
    polys = _round_trip(_grid("..\n.#"))
    assert polys.parts == (Polygon(((1.0, 1.0), (2.0, 1.0), (2.0, 2.0), (1.0, 2.0))),)
    assert len(_round_trip(_grid("#.\n.#")).parts) == 2  # 4-connected parts touching at a corner
    ring = _round_trip(_grid("###\n#.#\n###"))
    assert len(ring.parts) == 1 and len(ring.parts[0].holes) == 1
    assert len(ring.parts[0].exterior) == 4  # collinear vertices removed
    lake = _round_trip(_grid(TRICKY["island in a lake"]))
    assert len(lake.parts) == 2 and [len(p.holes) for p in lake.parts] == [1, 0]
    corner_hole = _round_trip(_grid(TRICKY["hole touching outside at a corner"]))
    assert len(corner_hole.parts) == 1 and len(corner_hole.parts[0].holes) == 1


def test_orientation_and_empty() -> None:
    polys = mask_to_polygons(_grid("###\n#.#\n###"))
    ext = np.asarray(polys.parts[0].exterior)
    hole = np.asarray(polys.parts[0].holes[0])

    def area(r: np.ndarray) -> float:
        return 0.5 * float(np.dot(r[:, 0], np.roll(r[:, 1], -1)) - np.dot(np.roll(r[:, 0], -1), r[:, 1]))

    assert area(ext) == 9 and area(hole) == -1
    empty = mask_to_polygons(np.zeros((4, 5), bool))
    assert empty.parts == () and (empty.width, empty.height) == (5, 4)
    assert not polygons_to_mask(empty, 4, 5).any()
    with pytest.raises(GeometryError):
        mask_to_polygons(np.zeros((2, 2, 2), bool))


@settings(max_examples=300, deadline=None)
@given(arrays(np.bool_, st.tuples(st.integers(1, 12), st.integers(1, 12))))
def test_round_trip_random(mask: np.ndarray) -> None:
    _round_trip(mask)


@settings(max_examples=40, deadline=None)
@given(
    arrays(np.bool_, st.tuples(st.integers(2, 24), st.integers(2, 24))),
    st.floats(0.3, 3.0),
)
def test_simplified_keeps_every_part_and_hole(mask: np.ndarray, tol: float) -> None:
    exact = mask_to_polygons(mask)
    simple = mask_to_polygons(mask, tolerance_px=tol)
    assert len(simple.parts) >= len(exact.parts) or not exact.parts
    assert sum(len(p.holes) for p in simple.parts) + len(simple.parts) >= sum(len(p.holes) for p in exact.parts)
    if simple.parts:
        assert simple.to_shapely().is_valid


def test_simplify_reduces_vertices_and_rederives(dev_data) -> None:
    mask = dev_data[0].load_mask()
    exact = mask_to_polygons(mask)
    simple = mask_to_polygons(mask, tolerance_px=1.5)
    n_exact = sum(len(p.exterior) for p in exact.parts)
    n_simple = sum(len(p.exterior) for p in simple.parts)
    assert n_simple < n_exact / 3
    iou = _iou(polygons_to_mask(simple, *mask.shape), mask)
    assert iou > 0.98
    with pytest.raises(GeometryError):
        mask_to_polygons(mask, tolerance_px=-1)


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / (a | b).sum())


def test_round_trip_dev_masks_and_timing(dev_data) -> None:
    times = []
    for case in dev_data:
        mask = case.load_mask()
        t = time.perf_counter()
        polys = mask_to_polygons(mask)
        times.append(time.perf_counter() - t)
        np.testing.assert_array_equal(polygons_to_mask(polys, *mask.shape), mask, err_msg=case.id)
        assert polys.to_shapely().is_valid, case.id
    assert float(np.median(times)) < 0.1


def test_image_border_and_noise_round_trip() -> None:
    rng = np.random.default_rng(7)
    mask = rng.random((60, 80)) > 0.5
    mask[0, :] = mask[-1, :] = mask[:, 0] = mask[:, -1] = True
    _round_trip(mask)


# ------------------------------------------------------------------------------------------------
# rasterisation of arbitrary (edited) polygons
# ------------------------------------------------------------------------------------------------


def test_rasterise_pixel_centre_rule() -> None:
    # A triangle through pixel centres' neighbourhood: exactly the centres inside are set.
    tri = Polygons((Polygon(((0.0, 0.0), (4.0, 0.0), (0.0, 4.0))),), 4, 4)
    got = polygons_to_mask(tri, 4, 4)
    yy, xx = np.mgrid[0:4, 0:4] + 0.5
    want = (xx + yy) < 4
    np.testing.assert_array_equal(got, want)
    # vertices outside the image are allowed by the rasteriser
    big = Polygons((Polygon(((-5.0, -5.0), (50.0, -5.0), (50.0, 50.0), (-5.0, 50.0))),), 3, 3)
    assert polygons_to_mask(big, 3, 2).all()


def test_rasterise_overlapping_parts_is_union() -> None:
    a = Polygon(((0.0, 0.0), (3.0, 0.0), (3.0, 2.0), (0.0, 2.0)))
    b = Polygon(((1.0, 1.0), (4.0, 1.0), (4.0, 3.0), (1.0, 3.0)))
    got = polygons_to_mask(Polygons((a, b), 4, 3), 3, 4)
    assert got.sum() == 6 + 6 - 2


# ------------------------------------------------------------------------------------------------
# repair of user edits
# ------------------------------------------------------------------------------------------------


def test_repair_valid_is_unchanged() -> None:
    polys = mask_to_polygons(_grid("###\n#.#\n###"))
    res = repair_polygons(polys)
    assert res.warnings == ()
    np.testing.assert_array_equal(polygons_to_mask(res.polygons, 3, 3), polygons_to_mask(polys, 3, 3))


def test_repair_self_intersection_reports_it() -> None:
    bowtie = Polygon(((0.0, 0.0), (10.0, 10.0), (10.0, 0.0), (0.0, 10.0)))
    res = repair_polygon(bowtie, 20, 20)
    assert len(res.polygons.parts) == 2
    assert res.polygons.to_shapely().is_valid
    assert len(res.warnings) == 1 and "part 1" in res.warnings[0] and "2 pieces" in res.warnings[0]
    assert polygons_area_px(res.polygons) == pytest.approx(50.0)


def test_repair_too_few_vertices_names_the_part() -> None:
    ok = Polygon(((0.0, 0.0), (4.0, 0.0), (4.0, 4.0)))
    line = Polygon(((5.0, 5.0), (6.0, 6.0), (5.0, 5.0)))
    with pytest.raises(GeometryError, match="part 2 exterior has 2 distinct vertices"):
        repair_polygons(Polygons((ok, line), 10, 10))
    with pytest.raises(GeometryError, match="part 1 hole 1"):
        repair_polygon(Polygon(((0.0, 0.0), (9.0, 0.0), (9.0, 9.0)), (((1.0, 1.0), (2.0, 1.0)),)), 10, 10)
    with pytest.raises(GeometryError, match="finite"):
        repair_polygon(Polygon(((0.0, 0.0), (float("nan"), 0.0), (4.0, 4.0))), 10, 10)


def test_repair_clips_to_image_and_reports_the_loss() -> None:
    part = Polygon(((-2.0, 0.0), (4.0, 0.0), (4.0, 4.0), (-2.0, 4.0)))
    res = repair_polygon(part, 10, 10)
    assert polygons_area_px(res.polygons) == pytest.approx(16.0)
    assert any("8.0 px² outside the image" in w for w in res.warnings)
    xs = [x for p in res.polygons.parts for x, _ in p.exterior]
    assert min(xs) == 0.0


def test_repair_refuses_part_outside_and_empty() -> None:
    inside = Polygon(((0.0, 0.0), (4.0, 0.0), (4.0, 4.0)))
    outside = Polygon(((20.0, 20.0), (30.0, 20.0), (30.0, 30.0)))
    with pytest.raises(GeometryError, match="part 2 lies entirely outside"):
        repair_polygons(Polygons((inside, outside), 10, 10))
    with pytest.raises(GeometryError, match="empty"):
        repair_polygons(Polygons((), 10, 10))
    flat = Polygon(((0.0, 0.0), (2.0, 0.0), (4.0, 0.0)))
    with pytest.raises(GeometryError, match="no area"):
        repair_polygon(flat, 10, 10)


def test_repair_merges_overlaps_and_says_so() -> None:
    a = Polygon(((0.0, 0.0), (3.0, 0.0), (3.0, 2.0), (0.0, 2.0)))
    b = Polygon(((1.0, 1.0), (4.0, 1.0), (4.0, 3.0), (1.0, 3.0)))
    res = repair_polygons(Polygons((a, b), 10, 10))
    assert len(res.polygons.parts) == 1
    assert any("merged" in w for w in res.warnings)
    assert polygons_area_px(res.polygons) == pytest.approx(10.0)


def test_from_json_rejects_garbage() -> None:
    with pytest.raises(GeometryError, match="malformed"):
        Polygons.from_json({"width": 3, "height": 3, "parts": [{"exterior": [[1, 2, 3]]}]})
    with pytest.raises(GeometryError, match="malformed"):
        Polygons.from_json({"width": 3})


# ------------------------------------------------------------------------------------------------
# helpers
# ------------------------------------------------------------------------------------------------


def test_bbox_area_svg() -> None:
    polys = mask_to_polygons(_grid("....\n.###\n.#.#\n.###"))
    assert polygons_bbox(polys) == [1, 1, 3, 3]
    assert polygons_area_px(polys) == 8
    d = polygons_svg_path(polys)
    assert d.count("M") == 2 and d.count("Z") == 2
    assert d.startswith("M1 1 L4 1 L4 4 L1 4 Z")
    assert polygons_svg_path(Polygons((Polygon(((0.5, 0.25), (1.0, 0.0), (1.0, 1.0))),), 2, 2)) == (
        "M0.5 0.25 L1 0 L1 1 Z"
    )
    with pytest.raises(GeometryError):
        polygons_bbox(Polygons((), 2, 2))

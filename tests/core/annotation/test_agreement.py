"""Agreement between raters, checked on the dev set's expert masks against perturbed copies, and against
independent computations: SciPy (directed_hausdorff, cKDTree), scikit-image, SimpleITK (Hausdorff,
overlap, STAPLE run directly), and majority votes counted by hand."""

from __future__ import annotations

import dataclasses
import itertools
import json
import tracemalloc

import numpy as np
import pytest
import SimpleITK as sitk
from scipy import ndimage
from scipy.spatial import cKDTree
from scipy.spatial.distance import directed_hausdorff
from skimage.measure import regionprops
from skimage.metrics import hausdorff_distance

from dermaseg.core.annotation.agreement import (
    AGREEMENT_NOTICE,
    Spread,
    agreement,
    boundary,
    compare_pair,
    hausdorff,
    image_agreement,
    image_agreement_and_consensus,
    majority_vote,
    project_agreement,
    staple,
)
from dermaseg.core.annotation.metrics import feret_diameters
from dermaseg.core.calibration import Calibration
from dermaseg.core.errors import GeometryError

N_CASES = 8  # dev masks used by the per-pair checks (spread over the manifest)


# --------------------------------------------------------------------------------------- perturbations
def shift(mask: np.ndarray, dy: int, dx: int) -> np.ndarray:
    """mask moved by (dy, dx) px, zero-filled (no wrap-around)."""
    out = np.zeros_like(mask)
    h, w = mask.shape
    out[max(dy, 0) : h + min(dy, 0), max(dx, 0) : w + min(dx, 0)] = mask[
        max(-dy, 0) : h - max(dy, 0), max(-dx, 0) : w - max(dx, 0)
    ]
    return out


def disk(r: int) -> np.ndarray:
    return np.hypot(*np.mgrid[-r : r + 1, -r : r + 1]) <= r


def dilate(mask: np.ndarray, r: int) -> np.ndarray:
    return ndimage.binary_dilation(mask, disk(r))


def erode(mask: np.ndarray, r: int) -> np.ndarray:
    return ndimage.binary_erosion(mask, disk(r))


PERTURBATIONS = {
    "shift(0,5)": lambda m: shift(m, 0, 5),
    "shift(-4,3)": lambda m: shift(m, -4, 3),
    "dilate(4)": lambda m: dilate(m, 4),
    "erode(3)": lambda m: erode(m, 3),
    "erode(2)+shift(2,-1)": lambda m: shift(erode(m, 2), 2, -1),
}


@pytest.fixture(scope="module")
def expert_masks(dev_data) -> dict[str, np.ndarray]:
    """N_CASES expert masks that stay >= 12 px away from the image edge (a shift keeps the whole lesion)."""
    out: dict[str, np.ndarray] = {}
    for case in dev_data:
        m = case.load_mask()
        rows, cols = np.nonzero(m)
        if rows.size and min(rows.min(), cols.min(), m.shape[0] - 1 - rows.max(), m.shape[1] - 1 - cols.max()) >= 12:
            out[case.id] = m
    assert len(out) >= N_CASES, f"only {len(out)} dev masks away from the edge"
    ids = sorted(out)
    return {i: out[i] for i in ids[:: max(len(ids) // N_CASES, 1)][:N_CASES]}


# ----------------------------------------------------------------------------- independent references
def boundary_points(mask: np.ndarray) -> np.ndarray:
    """(N, 2) (row, col) of the boundary pixels, as the module defines them, computed without it: a mask
    pixel with a 4-neighbour (or the image edge) outside."""
    p = np.pad(mask, 1)
    inner = p[1:-1, 1:-1] & p[:-2, 1:-1] & p[2:, 1:-1] & p[1:-1, :-2] & p[1:-1, 2:]
    return np.argwhere(mask & ~inner).astype(np.float64)


def reference_hd95(a: np.ndarray, b: np.ndarray) -> float:
    """max of the two directed 95th percentiles, nearest neighbours by a k-d tree (no distance transform)."""
    pa, pb = boundary_points(a), boundary_points(b)
    dab = cKDTree(pb).query(pa)[0]
    dba = cKDTree(pa).query(pb)[0]
    return max(float(np.percentile(dab, 95)), float(np.percentile(dba, 95)))


def sitk_image(mask: np.ndarray) -> sitk.Image:
    return sitk.GetImageFromArray(mask.astype(np.uint8))


# ------------------------------------------------------------------------------------------ pair tests
def test_boundary_matches_the_independent_definition(expert_masks) -> None:
    for m in expert_masks.values():
        assert np.array_equal(np.argwhere(boundary(m)).astype(np.float64), boundary_points(m))


@pytest.mark.parametrize("name", list(PERTURBATIONS))
def test_pair_against_scipy_skimage_and_simpleitk(expert_masks, name: str) -> None:
    perturb = PERTURBATIONS[name]
    for case_id, a in expert_masks.items():
        b = perturb(a)
        p = compare_pair(a, b, "expert", name)
        pa, pb = boundary_points(a), boundary_points(b)
        hd_scipy = max(directed_hausdorff(pa, pb)[0], directed_hausdorff(pb, pa)[0])
        assert p.hd_px == pytest.approx(hd_scipy, abs=1e-9), case_id
        assert p.hd_px == pytest.approx(hausdorff_distance(boundary(a), boundary(b)), abs=1e-9), case_id
        f = sitk.HausdorffDistanceImageFilter()
        f.Execute(sitk_image(boundary(a)), sitk_image(boundary(b)))
        assert p.hd_px == pytest.approx(f.GetHausdorffDistance(), abs=1e-6), case_id
        assert p.hd95_px == pytest.approx(reference_hd95(a, b), abs=1e-9), case_id
        assert 0 < p.hd95_px <= p.hd_px

        overlap = sitk.LabelOverlapMeasuresImageFilter()
        overlap.Execute(sitk_image(a), sitk_image(b))
        assert p.dice == pytest.approx(overlap.GetDiceCoefficient(), abs=1e-12), case_id
        assert p.iou == pytest.approx(overlap.GetJaccardCoefficient(), abs=1e-12), case_id

        assert p.area_diff_px2 == int(b.sum()) - int(a.sum())
        assert p.diameter_diff_px == pytest.approx(feret_diameters(b)[0] - feret_diameters(a)[0], abs=1e-12)
        # and the reused diameter agrees with scikit-image's own Feret measure to a pixel or so
        # (skimage's hull goes through pixel-edge midpoints, ours through pixel corners)
        assert p.diameter_a_px == pytest.approx(regionprops(a.astype(np.uint8))[0].feret_diameter_max, abs=2.0)


@pytest.mark.parametrize("dy,dx", [(0, 1), (0, 3), (7, 0), (0, -10)])
def test_shift_by_k_px_gives_hd_k_and_hd95_close_to_k(expert_masks, dy: int, dx: int) -> None:
    k = abs(dy) + abs(dx)
    for case_id, a in expert_masks.items():
        p = compare_pair(a, shift(a, dy, dx))
        # the extreme boundary pixel in the direction of the shift is exactly k from the shifted boundary
        assert p.hd_px == pytest.approx(k, abs=1e-9), case_id
        assert 0.9 * k <= p.hd95_px <= k, case_id
        assert p.area_diff_px2 == 0 and p.diameter_diff_px == pytest.approx(0.0, abs=1e-9), case_id
        assert p.dice < 1.0


def test_diagonal_shift_is_bounded_by_its_length(expert_masks) -> None:
    for case_id, a in expert_masks.items():
        p = compare_pair(a, shift(a, 4, 4))
        assert 4.0 <= p.hd95_px <= p.hd_px <= 4 * np.sqrt(2) + 1e-9, case_id


@pytest.mark.parametrize("r", [2, 5])
def test_dilation_and_erosion_by_r_give_hd95_close_to_r(expert_masks, r: int) -> None:
    for case_id, a in expert_masks.items():
        for b in (dilate(a, r), erode(a, r)):
            p = compare_pair(a, b)
            assert r - 0.5 <= p.hd95_px <= r + 1.5, (case_id, p.hd95_px)
            assert p.dice < 1.0


def test_more_perturbation_means_less_agreement(expert_masks) -> None:
    for case_id, a in expert_masks.items():
        ps = [compare_pair(a, shift(a, 0, k)) for k in (1, 4, 12)]
        assert ps[0].dice > ps[1].dice > ps[2].dice, case_id
        assert ps[0].hd95_px < ps[1].hd95_px < ps[2].hd95_px, case_id


def test_identical_masks_agree_fully(expert_masks) -> None:
    for a in expert_masks.values():
        p = compare_pair(a, a.copy(), calibration=Calibration(0.03))
        assert (p.dice, p.iou, p.hd95_px, p.hd_px, p.hd95_mm) == (1.0, 1.0, 0.0, 0.0, 0.0)
        assert p.area_diff_px2 == 0 and p.diameter_diff_px == 0.0 and p.area_diff_mm2 == 0.0


def test_millimetres_scale_lengths_by_mm_per_px_and_areas_by_its_square(expert_masks) -> None:
    a = next(iter(expert_masks.values()))
    b = dilate(a, 3)
    px = compare_pair(a, b)
    mm = compare_pair(a, b, calibration=Calibration(0.025))
    assert px.hd95_mm is None and px.area_diff_mm2 is None and px.diameter_diff_mm is None
    assert mm.hd95_mm == pytest.approx(px.hd95_px * 0.025)
    assert mm.hd_mm == pytest.approx(px.hd_px * 0.025)
    assert mm.area_diff_mm2 == pytest.approx(px.area_diff_px2 * 0.025**2)
    assert mm.diameter_diff_mm == pytest.approx(px.diameter_diff_px * 0.025)
    assert mm.area_diff_px2 > 0 and mm.diameter_diff_mm > 0  # the dilated rater drew larger


def test_empty_masks_have_defined_values() -> None:
    empty = np.zeros((40, 50), bool)
    lesion = empty.copy()
    lesion[10:20, 10:30] = True
    both = compare_pair(empty, empty.copy(), calibration=Calibration(0.1))
    assert (both.dice, both.iou, both.hd95_px, both.hd_px, both.hd95_mm) == (1.0, 1.0, 0.0, 0.0, 0.0)
    one = compare_pair(lesion, empty, calibration=Calibration(0.1))
    assert (one.dice, one.iou, one.hd95_px, one.hd_px, one.hd95_mm) == (0.0, 0.0, None, None, None)
    assert one.area_diff_px2 == -200 and one.diameter_diff_px == pytest.approx(-np.hypot(10, 20))
    assert hausdorff(empty, lesion) is None
    assert json.loads(json.dumps(one.to_json(), allow_nan=False))["hd95_px"] is None


def test_bad_shapes_are_a_clear_error() -> None:
    with pytest.raises(GeometryError, match="differ in shape"):
        compare_pair(np.zeros((4, 5), bool), np.zeros((5, 4), bool))
    with pytest.raises(GeometryError, match="2-D"):
        compare_pair(np.zeros((4, 5, 3), bool), np.zeros((4, 5, 3), bool))
    with pytest.raises(GeometryError, match="at least 2 raters"):
        image_agreement("x.png", {"ann": np.ones((4, 4), bool)})
    with pytest.raises(GeometryError, match="no image has two or more raters"):
        agreement({"x.png": {"ann": np.ones((4, 4), bool)}})


# ------------------------------------------------------------------------------------------ consensus
def test_majority_of_three_by_hand() -> None:
    a = np.array([[1, 1, 0, 0], [1, 0, 1, 0]], bool)
    b = np.array([[1, 0, 1, 0], [1, 0, 0, 0]], bool)
    c = np.array([[0, 1, 1, 0], [1, 0, 0, 1]], bool)
    want = np.array([[1, 1, 1, 0], [1, 0, 0, 0]], bool)  # a pixel counts when 2 or 3 of 3 marked it
    assert np.array_equal(majority_vote([a, b, c]), want)
    # with 2 raters a tie (one of two) is left out: the majority is the intersection
    assert np.array_equal(majority_vote([a, b]), a & b)


def test_majority_of_three_perturbed_experts(expert_masks) -> None:
    for a in list(expert_masks.values())[:3]:
        b, c = dilate(a, 4), shift(a, 3, -2)
        assert np.array_equal(majority_vote([a, b, c]), (a & b) | (a & c) | (b & c))


@pytest.mark.parametrize(
    "raters",
    [
        lambda a: [a, dilate(a, 3), erode(a, 2), shift(a, 0, 6)],
        lambda a: [a, shift(a, 0, 8)],  # the pixels of one rater only get a probability in (0.4, 0.5)
        lambda a: [a, dilate(a, 6)],  # ... here in (0.5, 0.6): the threshold matters
    ],
)
def test_staple_matches_simpleitk_run_directly(expert_masks, raters) -> None:
    for case_id, a in list(expert_masks.items())[:3]:
        masks = raters(a)
        ours = staple(masks)
        direct = sitk.STAPLEImageFilter()
        prob = sitk.GetArrayFromImage(direct.Execute([sitk_image(m) for m in masks]))
        np.testing.assert_allclose(ours.probability, prob, atol=1e-12, err_msg=case_id)
        assert np.array_equal(ours.mask, prob > 0.5), case_id
        assert ours.sensitivity == pytest.approx(direct.GetSensitivity())
        assert ours.specificity == pytest.approx(direct.GetSpecificity())
        # the consensus lies between what every rater marked and what any rater marked
        assert not (np.logical_and.reduce(masks) & ~ours.mask).any(), case_id
        assert not (ours.mask & ~np.logical_or.reduce(masks)).any(), case_id


def test_staple_trusts_the_raters_who_agree(expert_masks) -> None:
    """Two raters drew the expert outline, a third a far larger one: STAPLE's consensus is the expert's
    and the third rater gets the lowest specificity."""
    a = next(iter(expert_masks.values()))
    s = staple([a, a.copy(), dilate(a, 15)])
    assert np.array_equal(s.mask, a)
    assert s.specificity[2] < min(s.specificity[:2])
    assert s.sensitivity[0] == pytest.approx(1.0)


def test_staple_of_identical_and_of_empty_masks() -> None:
    m = np.zeros((30, 30), bool)
    m[5:20, 8:25] = True
    same = staple([m, m.copy(), m.copy()])
    assert np.array_equal(same.mask, m)
    empty = staple([np.zeros_like(m), np.zeros_like(m)])
    assert not empty.mask.any() and empty.sensitivity is None


# ------------------------------------------------------------------------------------ image, project
def test_image_agreement_has_every_pair_in_order(expert_masks) -> None:
    a = next(iter(expert_masks.values()))
    masks = {"ana": a, "ben": dilate(a, 2), "cai": shift(a, 0, 4)}
    im, cons = image_agreement_and_consensus("IMD.png", masks, Calibration(0.02))
    assert im == image_agreement("IMD.png", masks, Calibration(0.02))
    assert [(p.a, p.b) for p in im.pairs] == [("ana", "ben"), ("ana", "cai"), ("ben", "cai")]
    assert im.pairs[0] == compare_pair(a, dilate(a, 2), "ana", "ben", Calibration(0.02))
    assert im.mean_dice == pytest.approx(np.mean([p.dice for p in im.pairs]))
    assert im.disagreement == pytest.approx(1 - im.mean_dice)
    assert np.array_equal(cons.majority, majority_vote([a, dilate(a, 2), shift(a, 0, 4)]))
    assert np.array_equal(cons.mask("majority"), cons.majority)
    assert np.array_equal(cons.mask("staple"), cons.staple.mask)
    d = im.to_json()
    assert set(d["staple_sensitivity"]) == {"ana", "ben", "cai"}
    assert d["majority_area_px2"] == int(cons.majority.sum())
    assert d["staple_area_px2"] == int(cons.staple.mask.sum()) > 0
    assert d["staple_sensitivity"] == dict(zip(masks, cons.staple.sensitivity, strict=True))
    with pytest.raises(GeometryError, match="consensus method 'mean'"):
        cons.mask("mean")


def _arrays_in(obj: object) -> list[str]:
    """Type names of the numpy arrays held by `obj`: its dataclass fields, tuples and lists, recursively."""
    if isinstance(obj, np.ndarray):
        return [type(obj).__name__]
    if dataclasses.is_dataclass(obj):
        return [t for f in dataclasses.fields(obj) for t in _arrays_in(getattr(obj, f.name))]
    if isinstance(obj, tuple | list):
        return [t for x in obj for t in _arrays_in(x)]
    return []


def test_results_keep_figures_not_masks(expert_masks) -> None:
    """A project's result holds no array, and measuring many images takes the memory of one: images are
    measured one at a time and only their figures are kept (numpy's allocations, traced by tracemalloc)."""
    masks = {f"{case_id}.png": {"expert": a, "b": dilate(a, 3)} for case_id, a in expert_masks.items()}
    assert _arrays_in(agreement(dict(itertools.islice(masks.items(), 2)))) == []

    def peak(some: dict[str, dict[str, np.ndarray]]) -> int:
        tracemalloc.start()
        try:
            agreement(some)
            return tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()

    one = max(peak({name: m}) for name, m in masks.items())  # the largest image alone
    assert len(masks) >= 8 and peak(masks) < 1.5 * one, (peak(masks), one)


@pytest.fixture(scope="module")
def project(expert_masks) -> tuple[dict[str, dict[str, np.ndarray]], dict[str, int]]:
    """Each expert mask against two raters who shift it by a known, per-image amount."""
    amounts = {case_id: 1 + 2 * i for i, case_id in enumerate(expert_masks)}
    masks = {
        f"{case_id}.png": {"expert": a, "r1": shift(a, 0, amounts[case_id]), "r2": shift(a, amounts[case_id], 0)}
        for case_id, a in expert_masks.items()
    }
    return masks, amounts


def test_project_means_spreads_and_ranking(project) -> None:
    masks, amounts = project
    pa = agreement(masks, {name: Calibration(0.02) for name in list(masks)[:2]})
    per_image = [
        np.mean([compare_pair(m[x], m[y]).dice for x, y in (("expert", "r1"), ("expert", "r2"), ("r1", "r2"))])
        for m in masks.values()
    ]
    assert pa.mean_dice == pytest.approx(np.mean(per_image))
    assert pa.dice.sd == pytest.approx(np.std(per_image, ddof=1))
    assert pa.dice.median == pytest.approx(np.median(per_image))
    q1, q3 = np.percentile(per_image, [25, 75])
    assert pa.dice.iqr == pytest.approx(q3 - q1)
    assert pa.dice.n == len(masks) and pa.hd95_mm.n == 2  # mm only for the two calibrated images
    # ranked by 1 - mean Dice, computed independently above
    assert [im.file_name for im in pa.ranked] == [list(masks)[i] for i in np.argsort(per_image, kind="stable")]


def test_one_lesion_shifted_more_ranks_higher(expert_masks) -> None:
    """The same expert outline on every image, the raters shifted by a different known amount on each:
    the ranking is the order of the shifts, largest first, whatever order the images come in."""
    a = next(iter(expert_masks.values()))
    amounts = [3, 9, 1, 6, 12]
    masks = {f"img{k}.png": {"expert": a, "r1": shift(a, 0, k), "r2": shift(a, -k, 0)} for k in amounts}
    ranked = agreement(masks).ranked
    assert [im.file_name for im in ranked] == [f"img{k}.png" for k in sorted(amounts, reverse=True)]
    assert [im.mean_hd95_px for im in ranked] == sorted((im.mean_hd95_px for im in ranked), reverse=True)


def test_to_json_has_the_shape_issue_20_asks_for(project) -> None:
    masks, _ = project
    d = json.loads(json.dumps(agreement(masks).to_json(), allow_nan=False))
    assert isinstance(d["mean_dice"], float) and 0 < d["mean_dice"] < 1
    assert d["notice"] == AGREEMENT_NOTICE
    assert [im["file_name"] for im in d["images"]] == list(masks)
    for im in d["images"]:
        assert isinstance(im["file_name"], str) and len(im["pairs"]) == 3
        for p in im["pairs"]:
            assert isinstance(p["a"], str) and isinstance(p["b"], str)
            assert all(isinstance(p[k], float) for k in ("dice", "iou", "hd95_px"))
    assert d["ranked_by_disagreement"][0]["disagreement"] >= d["ranked_by_disagreement"][-1]["disagreement"]


def test_spread_of_values_by_hand() -> None:
    s = Spread.of([0.9, None, 0.7, 0.8, 1.0])
    assert (s.n, s.mean, s.median, s.min, s.max) == (4, pytest.approx(0.85), pytest.approx(0.85), 0.7, 1.0)
    assert s.sd == pytest.approx(np.sqrt(((0.05**2) * 2 + (0.15**2) * 2) / 3))
    assert s.q1 == pytest.approx(0.775) and s.q3 == pytest.approx(0.925) and s.iqr == pytest.approx(0.15)
    assert Spread.of([None]) is None
    assert Spread.of([0.5]).sd is None


def test_project_agreement_of_nothing_is_a_clear_error() -> None:
    with pytest.raises(GeometryError):
        project_agreement([])


def test_ranked_pairs_put_the_most_disagreement_first(expert_masks) -> None:
    """Rows of a "where raters disagree most" table: images in `ranked` order, an image's pairs lowest
    Dice first; every pair of the project once, as `compare_pair` measures it."""
    a, b = list(expert_masks.values())[:2]
    masks = {
        "small.png": {"expert": a, "r1": shift(a, 0, 1), "r2": shift(a, 1, 0)},  # close to each other
        "large.png": {"expert": b, "r1": shift(b, 0, 2), "r2": shift(b, 0, 9)},  # r2 far off
    }
    pa = agreement(masks)
    rows = pa.ranked_pairs()
    assert [name for name, _ in rows] == ["large.png"] * 3 + ["small.png"] * 3
    # shifted by 9, 7 and 2 px against each other: the largest shift is the lowest Dice
    assert [(p.a, p.b) for _, p in rows[:3]] == [("expert", "r2"), ("r1", "r2"), ("expert", "r1")]
    for name, p in rows:
        want = compare_pair(masks[name][p.a], masks[name][p.b], p.a, p.b)
        assert dataclasses.asdict(p) == dataclasses.asdict(want)
    for image in ("small.png", "large.png"):
        dice = [p.dice for name, p in rows if name == image]
        assert dice == sorted(dice) and len(dice) == 3

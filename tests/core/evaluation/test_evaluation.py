"""Evaluation: our ISIC scores against `isic-challenge-scoring` on the same masks, the click simulator
on synthetic masks with known answers, and the click translation on a few real dev images."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

from dermaseg.core.evaluation import protocols as ev
from dermaseg.core.evaluation.click_simulator import Click, error_distance, iou, jitter_click, next_click
from dermaseg.core.evaluation.dataset import box_from_mask
from dermaseg.core.image import load_image
from dermaseg.core.interactive.edits import distance_to, local_edits
from dermaseg.core.interactive.translate import Translation, grow_box, tight_box
from dermaseg.core.segment.prompts import Prompts


# ------------------------------------------------------------------------------- ISIC scores vs package
def _perturbations(gt: np.ndarray, rng: np.random.Generator) -> list[np.ndarray]:
    """Predictions of every quality: eroded, dilated, shifted, noisy, empty, full, and the truth."""
    shifted = np.roll(gt, (25, -40), axis=(0, 1))
    noisy = gt ^ (rng.random(gt.shape) < 0.05)
    return [
        ndimage.binary_erosion(gt, iterations=12),
        ndimage.binary_dilation(gt, iterations=30),
        shifted,
        noisy,
        np.zeros_like(gt),
        np.ones_like(gt),
        gt.copy(),
    ]


def test_scores_match_isic_challenge_scoring(dev_data, tmp_path: Path) -> None:
    segmentation = pytest.importorskip("isic_challenge_scoring.segmentation")
    rng = np.random.default_rng(0)
    truth_dir, pred_dir = tmp_path / "truth", tmp_path / "pred"
    truth_dir.mkdir()
    pred_dir.mkdir()
    ours = []
    n = 0
    for case in dev_data[::16]:  # a few dev masks, PH2 and HAM10000
        gt = case.load_mask()
        for pred in _perturbations(gt, rng):
            n += 1
            name = f"ISIC_{n:07d}"  # the package matches files by this id
            Image.fromarray(gt.astype(np.uint8) * 255, mode="L").save(truth_dir / f"{name}_segmentation.png")
            # Predictions as 8-bit grey levels around the 128 threshold, to check the binarisation too.
            grey = np.where(pred, 200, 100).astype(np.uint8)
            grey[0, 0] = 128 if not pred[0, 0] else grey[0, 0]
            Image.fromarray(grey, mode="L").save(pred_dir / f"{name}.png")
            ours.append(ev.score_masks(gt.astype(np.uint8) * 255, grey))
    ref = segmentation.SegmentationScore.from_dir(truth_dir, pred_dir).macro_average
    assert ref["dice"] == pytest.approx(np.mean([s.dice for s in ours]), abs=1e-12)
    assert ref["jaccard"] == pytest.approx(np.mean([s.jaccard for s in ours]), abs=1e-12)
    assert ref["threshold_jaccard"] == pytest.approx(np.mean([s.thresholded_jaccard for s in ours]), abs=1e-12)
    assert 0.0 in [s.thresholded_jaccard for s in ours]  # the 0.65 cut was exercised


def test_scores_edge_cases() -> None:
    empty = np.zeros((4, 4), bool)
    assert ev.score_masks(empty, empty) == ev.Scores(1.0, 1.0, 1.0)
    full = np.ones((4, 4), bool)
    assert ev.score_masks(full, empty) == ev.Scores(0.0, 0.0, 0.0)
    half = full.copy()
    half[:, 2:] = False
    s = ev.score_masks(full, half)
    assert (s.dice, s.jaccard, s.thresholded_jaccard) == (pytest.approx(2 / 3), 0.5, 0.0)


# ------------------------------------------------------------------------------------- click simulator
def _disk(h: int, w: int, cy: float, cx: float, r: float) -> np.ndarray:
    yy, xx = np.mgrid[:h, :w]
    return (yy - cy) ** 2 + (xx - cx) ** 2 <= r**2


def test_first_click_is_the_deepest_interior_point() -> None:
    gt = np.zeros((40, 60), bool)
    gt[10:31, 5:26] = True  # a 21x21 square: its centre (15, 20) is deepest
    click = next_click(gt, np.zeros_like(gt))
    assert click == Click(x=15, y=20, positive=True)
    assert click.xy == (15.5, 20.5)


def test_border_counts_as_outside() -> None:
    gt = np.zeros((20, 30), bool)
    gt[:, :9] = True  # touches the image's left, top and bottom edges
    d = error_distance(gt)
    assert d[10, 0] == 1.0  # 1 px from the (padded) border, not 10
    assert next_click(gt, np.zeros_like(gt)).x == 4


def test_larger_error_region_wins_and_sets_the_label() -> None:
    gt = _disk(100, 100, 50, 50, 30)
    fn_small = gt & ~_disk(100, 100, 50, 78, 3)  # a small miss at the right edge
    fp_big = fn_small | _disk(100, 100, 15, 85, 12)  # a big leak elsewhere
    click = next_click(gt, fp_big)
    assert not click.positive
    assert (click.x, click.y) == (85, 15)
    click = next_click(gt, gt & ~_disk(100, 100, 50, 50, 10))  # a hole: positive, at its centre
    assert click.positive and (click.x, click.y) == (50, 50)


def test_clicked_pixels_are_excluded_and_perfect_masks_need_no_click() -> None:
    gt = np.zeros((21, 21), bool)
    gt[5:16, 5:16] = True
    clicked = np.zeros_like(gt)
    clicked[10, 10] = True
    click = next_click(gt, np.zeros_like(gt), clicked)
    assert (click.x, click.y) != (10, 10)
    assert click.positive
    assert next_click(gt, gt) is None


def test_jittered_click_stays_in_its_region_and_is_seeded() -> None:
    gt = _disk(200, 200, 100, 100, 60)
    pred = np.zeros_like(gt)
    ideal = next_click(gt, pred)
    a = jitter_click(ideal, gt, pred, 10.0, np.random.default_rng(3))
    b = jitter_click(ideal, gt, pred, 10.0, np.random.default_rng(3))
    assert a == b and a != ideal and gt[a.y, a.x] and a.positive
    assert jitter_click(ideal, gt, pred, 0.0, np.random.default_rng(3)) == ideal


def test_noc_and_summary() -> None:
    assert ev.noc([0.5, 0.86, 0.91], 0.85, 20) == 2
    assert ev.noc([0.5, 0.86, 0.91], 0.90, 20) == 3
    assert ev.noc([0.5, 0.6], 0.90, 20) == 20
    s = ev.summarise_clicks([[0.9] * 20, [0.5] * 19 + [0.86]], 20)
    assert s["NoC@90"] == (1 + 20) / 2 and s["never@90"] == 0.5 and s["NoC@85"] == (1 + 20) / 2
    assert s["mIoU@1"] == pytest.approx(0.7)


def test_run_clicks_with_an_oracle_converges() -> None:
    gt = _disk(80, 80, 40, 40, 20)

    def predictor(p: Prompts) -> np.ndarray:  # grows a disk of radius 6 per positive click
        out = np.zeros_like(gt)
        for (x, y), lbl in zip(p.points, p.labels, strict=True):
            if lbl:
                out |= _disk(80, 80, y, x, 12) & gt
        return out

    trace = ev.run_clicks(predictor, gt, max_clicks=20)
    assert len(trace.ious) == 20 and trace.ious[0] < trace.ious[-1]
    assert all(c.positive for c in trace.clicks)


def test_boxes_are_seeded_and_loosened() -> None:
    gt = np.zeros((100, 200), bool)
    gt[20:60, 50:150] = True
    tight = ev.box_for("tight", gt, np.random.default_rng(0))
    assert tight == box_from_mask(gt, 5)
    j1 = ev.box_for("jittered", gt, np.random.default_rng(1))
    assert j1 == ev.box_for("jittered", gt, np.random.default_rng(1)) and j1 != tight
    loose = ev.box_for("loose", gt, np.random.default_rng(0))
    assert loose[0] < tight[0] and loose[2] > tight[2]


def test_box_helpers() -> None:
    m = np.zeros((50, 50), bool)
    m[10:20, 30:40] = True
    assert tight_box(m, 2) == (28.0, 8.0, 42.0, 22.0)
    assert grow_box((10, 10, 30, 30), (40, 20), 0.1, 50, 50) == (10.0, 10.0, 42.0, 30.0)


def test_distance_to_matches_brute_force() -> None:
    rng = np.random.default_rng(0)
    for _ in range(500):
        h, w = rng.integers(5, 150, 2)
        region = rng.random((h, w)) < rng.choice([0.0, 0.0005, 0.01, 0.3])
        y, x = int(rng.integers(0, h)), int(rng.integers(0, w))
        pts = np.argwhere(region)
        brute = float(np.sqrt(((pts - (y, x)) ** 2).sum(1).min())) if len(pts) else float(max(h, w))
        assert distance_to(region, x, y) == pytest.approx(brute, abs=1e-9)


# ------------------------------------------------------------------------- translation on real images
@pytest.fixture(scope="module")
def few(dev_data):
    return [dev_data[i] for i in (0, 62)]  # a PH2 naevus and a HAM10000 image


def test_click_translation_beats_raw_points_and_keeps_the_box_path(engine, few) -> None:
    first_click, raw_point = [], []
    for case in few:
        seg = engine.segmenter()
        seg.set_image(load_image(case.image))
        gt = case.load_mask()
        box = Prompts(box=box_from_mask(gt, 5))
        session = Translation(seg)
        # The box path is the plain decoder, bit for bit.
        assert np.array_equal(session.predict(box).mask, seg.predict(box, head=0, decoder="base").mask)
        click = next_click(gt, np.zeros_like(gt))
        one = Prompts().with_point(*click.xy)
        first_click.append(iou(gt, session.predict(one).mask))
        raw_point.append(iou(gt, seg.predict(one, head=0, decoder="base").mask))
    assert np.mean(first_click) > 0.75 > 0.1 > np.mean(raw_point)


def test_corrective_clicks_are_honoured(engine, few) -> None:
    case = few[0]
    seg = engine.segmenter()
    seg.set_image(load_image(case.image))
    gt = case.load_mask()
    session = Translation(seg)
    trace = ev.run_clicks(lambda p: session.predict(p).mask, gt, max_clicks=5)
    assert trace.ious[-1] >= trace.ious[0] - 0.02
    prompts = Prompts()
    for c in trace.clicks:
        prompts = prompts.with_point(*c.xy, positive=c.positive)
    result = session.predict(prompts)
    for c in trace.clicks:  # every click is on the side of the edge the user asked for
        assert result.mask[c.y, c.x] == c.positive
    assert np.array_equal(local_edits(result, prompts, 2.0), result.mask)  # already honoured: no-op


def test_negative_first_click_is_refused(engine, few) -> None:
    from dermaseg.core.errors import PromptError

    seg = engine.segmenter()
    seg.set_image(load_image(few[0].image))
    with pytest.raises(PromptError):
        Translation(seg).predict(Prompts(points=((5.0, 5.0),), labels=(0,)))


def test_evaluate_command_writes_its_report(dev_data, models_dir, tmp_path: Path) -> None:
    from dermaseg.webui.cli.main import main

    data = tmp_path / "data"
    (data / "images").mkdir(parents=True)
    (data / "masks").mkdir()
    for case in dev_data[-1:]:  # a link, not a copy, of one dev image
        (data / "images" / case.image.name).symlink_to(case.image)
        (data / "masks" / case.mask.name).symlink_to(case.mask)
    out = tmp_path / "out"
    cache = ["--cache-dir", str(models_dir.parent)]
    args = ["--protocol", "clicks", "--method", "points", "--max-clicks", "3", "--jitter", "5", "--save-masks"]
    args += ["--out", str(out)]
    assert main(["evaluate", str(data), *args, *cache]) == 0
    assert {"per_image.csv", "summary.json", "miou_vs_clicks.png"} <= {p.name for p in out.iterdir()}
    saved = sorted((out / "masks" / "points+jitter5px").iterdir())
    assert [p.stem for p in saved] == [dev_data[-1].image.stem]
    assert main(["evaluate", str(data), "--protocol", "box", "--out", str(tmp_path / "box"), *cache]) == 0
    assert "jittered" in (tmp_path / "box" / "summary.json").read_text()

"""Evaluation: ISIC-style scores, the box protocol, the interactive click protocols, and summaries.

Scores follow the ISIC challenge (`isic-challenge-scoring`, segmentation): per image, truth and
prediction binarised at > 128 (for bool masks: True), then Jaccard J = TP/(TP+FP+FN), thresholded
Jaccard = J if J >= 0.65 else 0, Dice = 2TP/(2TP+FP+FN); a zero denominator scores 1.0.

Protocols (one image at a time; `run_*` take a `Segmenter` with the image already set):
- box: the ground-truth box + margin ("tight"), a jittered box and a loosened box (seeded).
- clicks: the RITM/SAM click simulator (`dermaseg.core.evaluation.click_simulator`), up to `max_clicks`
  clicks, IoU after each click; ideal clicks or clicks jittered off the ideal point.
- box-clicks: a (jittered) box first, then corrective clicks from the simulator.
`NoC@t` is the first click count reaching IoU >= t (`max_clicks` if never).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from dermaseg.core.evaluation.click_simulator import Click, iou, jitter_click, next_click
from dermaseg.core.evaluation.dataset import box_from_mask
from dermaseg.core.interactive.session import InteractiveSession, click_method
from dermaseg.core.segment.prompts import Box, Prompts
from dermaseg.core.segment.segmenter import Segmenter

THRESHOLDED_JACCARD_MIN = 0.65  # ISIC 2018 Task 1
NOC_THRESHOLDS = (0.85, 0.90)
MIOU_AT = (1, 2, 3, 4, 5)
BOX_MARGIN = 5.0  # px around the ground-truth box, as in the model notes


# ---------------------------------------------------------------------------------------------- scores
@dataclass(frozen=True)
class Scores:
    """ISIC per-image scores in [0, 1]."""

    dice: float
    jaccard: float
    thresholded_jaccard: float


def binarise(mask: np.ndarray) -> np.ndarray:
    """bool (H, W) from a bool mask or an 8-bit (or wider) 0..255 mask (> 128 is lesion), as ISIC does."""
    mask = np.asarray(mask)
    return mask if mask.dtype == bool else mask > 128


def score_masks(truth: np.ndarray, prediction: np.ndarray) -> Scores:
    """ISIC Dice, Jaccard and thresholded Jaccard of two same-shape masks (bool, or uint8 0..255)."""
    t, p = binarise(truth), binarise(prediction)
    if t.shape != p.shape:
        raise ValueError(f"truth {t.shape} and prediction {p.shape} differ in shape")
    tp = int(np.count_nonzero(t & p))
    fp = int(np.count_nonzero(~t & p))
    fn = int(np.count_nonzero(t & ~p))
    if tp + fp + fn == 0:
        return Scores(1.0, 1.0, 1.0)
    j = tp / (tp + fp + fn)
    return Scores(2 * tp / (2 * tp + fp + fn), j, j if j >= THRESHOLDED_JACCARD_MIN else 0.0)


# ----------------------------------------------------------------------------------------------- boxes
def jittered_box(box: Box, width: int, height: int, rng: np.random.Generator, fraction: float = 0.1) -> Box:
    """Each edge of `box` moved independently by a uniform offset within +-`fraction` of the box side
    along its axis (a hand-drawn box), clipped to the image and kept at least 2 px wide."""
    x0, y0, x1, y1 = box
    dx, dy = (x1 - x0) * fraction, (y1 - y0) * fraction
    ox0, ox1 = rng.uniform(-dx, dx, size=2)
    oy0, oy1 = rng.uniform(-dy, dy, size=2)
    return _clip_box((x0 + ox0, y0 + oy0, x1 + ox1, y1 + oy1), width, height)


def loosened_box(box: Box, width: int, height: int, fraction: float = 0.1) -> Box:
    """`box` grown outward by `fraction` of its side on every edge, clipped to the image."""
    x0, y0, x1, y1 = box
    dx, dy = (x1 - x0) * fraction, (y1 - y0) * fraction
    return _clip_box((x0 - dx, y0 - dy, x1 + dx, y1 + dy), width, height)


def _clip_box(box: Box, width: int, height: int) -> Box:
    x0, y0, x1, y1 = box
    x0, x1 = float(np.clip(x0, 0, width - 2)), float(np.clip(x1, 0, width))
    y0, y1 = float(np.clip(y0, 0, height - 2)), float(np.clip(y1, 0, height))
    return (x0, y0, max(x1, x0 + 2), max(y1, y0 + 2))


BOX_KINDS = ("tight", "jittered", "loose")


def box_for(kind: str, gt: np.ndarray, rng: np.random.Generator, jitter_fraction: float = 0.1) -> Box:
    """The prompt box of one box-protocol `kind` for bool (H, W) truth `gt`."""
    h, w = gt.shape
    tight = box_from_mask(gt, BOX_MARGIN)
    if kind == "tight":
        return tight
    if kind == "jittered":
        return jittered_box(tight, w, h, rng, jitter_fraction)
    if kind == "loose":
        return loosened_box(tight, w, h, jitter_fraction)
    raise ValueError(f"unknown box kind {kind!r}: use one of {BOX_KINDS}")


# ---------------------------------------------------------------------------------------------- clicks
Predictor = Callable[[Prompts], np.ndarray]
"""Prompts in image pixels -> bool (H, W) mask: the method under evaluation, bound to one image."""


@dataclass(frozen=True)
class ClickTrace:
    """One image's interactive run: the clicks made and the IoU after each (index k = k+1 clicks);
    `masks[-1]` is the last prediction (bool (H, W))."""

    clicks: tuple[Click, ...]
    ious: tuple[float, ...]
    final_mask: np.ndarray


def run_clicks(
    predictor: Predictor,
    gt: np.ndarray,
    *,
    max_clicks: int = 20,
    box: Box | None = None,
    jitter: float = 0.0,
    rng: np.random.Generator | None = None,
    stop_at: float | None = None,
) -> ClickTrace:
    """Simulate up to `max_clicks` corrective clicks on bool (H, W) truth `gt`.

    box: None (clicks protocol: the first click on an empty prediction) or a box given first
    (box-clicks protocol: clicks correct the box's prediction; the box's own IoU is not a click).
    jitter: Gaussian std in px of each click's offset from the ideal point (0 = ideal clicks).
    stop_at: stop early once IoU >= this (the remaining clicks keep the last IoU; saves time).
    """
    rng = rng or np.random.default_rng(0)
    pred = predictor(Prompts(box=box)) if box is not None else np.zeros_like(gt)
    clicked = np.zeros_like(gt)
    prompts = Prompts(box=box)
    clicks: list[Click] = []
    ious: list[float] = []
    for _ in range(max_clicks):
        click = next_click(gt, pred, clicked)
        if click is None:  # nothing left to correct
            ious.append(ious[-1] if ious else iou(gt, pred))
            continue
        clicked[click.y, click.x] = True
        click = jitter_click(click, gt, pred, jitter, rng)
        clicks.append(click)
        prompts = prompts.with_point(*click.xy, positive=click.positive)
        pred = predictor(prompts)
        ious.append(iou(gt, pred))
        if stop_at is not None and ious[-1] >= stop_at:
            ious += [ious[-1]] * (max_clicks - len(ious))
            break
    return ClickTrace(tuple(clicks), tuple(ious), pred)


def noc(ious: Sequence[float], threshold: float, max_clicks: int) -> int:
    """Number of clicks to reach IoU >= `threshold` (`max_clicks` when never reached)."""
    for k, v in enumerate(ious[:max_clicks], start=1):
        if v >= threshold:
            return k
    return max_clicks


# ------------------------------------------------------------------------------------------- predictors
METHODS = ("auto", "translate", "refine", "points")
"""auto: the product's path (`InteractiveSession`: the variant's click method, then the mask tidied);
translate: `Translation` (clicks turned into box prompts the bundled box-trained decoder answers well)
and refine: `Refinement` (the variant's fine-tuned decoder, fed its previous logits), both untidied;
points: the bundled decoder given the clicks as points."""


def predictor(method: str, segmenter: Segmenter) -> Predictor:
    """A `Predictor` for `method` on the segmenter's current image."""
    if method == "auto":
        session = InteractiveSession(segmenter)
        return lambda p: session.predict(p).mask
    if method in ("translate", "refine"):
        clicks = click_method(segmenter, method)  # untidied
        return lambda p: clicks.predict(p).mask
    if method == "points":
        return lambda p: segmenter.predict(p, head=0, decoder="base").mask
    raise ValueError(f"unknown method {method!r}: use one of {METHODS}")


# ---------------------------------------------------------------------------------------------- summary
def summarise_clicks(traces: Sequence[Sequence[float]], max_clicks: int) -> dict[str, float]:
    """mIoU@k, NoC@t and the share of images never reaching t, over per-image IoU curves."""
    curves = np.array([list(t)[:max_clicks] for t in traces], dtype=np.float64)
    out: dict[str, float] = {"images": float(len(curves))}
    for k in MIOU_AT:
        if k <= max_clicks:
            out[f"mIoU@{k}"] = float(curves[:, k - 1].mean())
    for t in NOC_THRESHOLDS:
        nocs = [noc(c, t, max_clicks) for c in curves]
        tag = f"{round(t * 100)}"
        out[f"NoC@{tag}"] = float(np.mean(nocs))
        out[f"never@{tag}"] = float(np.mean([c.max() < t for c in curves]))
    out["mIoU_curve"] = [float(v) for v in curves.mean(axis=0)]  # type: ignore[assignment]
    return out


def summarise_scores(scores: Sequence[Scores]) -> dict[str, float]:
    """Mean ISIC scores over images."""
    return {
        "images": float(len(scores)),
        "dice": float(np.mean([s.dice for s in scores])),
        "jaccard": float(np.mean([s.jaccard for s in scores])),
        "thresholded_jaccard": float(np.mean([s.thresholded_jaccard for s in scores])),
    }

"""Prompt translation, the click method of the bundled box-trained decoder: clicks become box prompts.

The bundled weights were trained with boxes only (a lone positive click gives Jaccard ~0; box +
positive click is worse than the box; box + negative click works). So `Translation.predict` turns the
user's prompts into box-centred decoder prompts:

1. No clicks: the box goes to the decoder unchanged (head 0), exactly the plain box path.
2. The lesion's extent: the user's box if there is one; else proposed from the first positive click.
   Candidate boxes (several sizes and aspect ratios centred on the click) are decoded; each mask's own
   bounding box (+ margin) is decoded again ("tightened"); the candidate whose tightened mask covers
   the click and has the highest decoder-predicted IoU wins. Proposals are cached per click.
3. Later positive clicks outside the box grow the box to include them (with a margin relative to the
   box size); positive clicks inside the box are not sent to the decoder (they make it worse).
4. Negative clicks go to the decoder as negative points with the box.
5. Each click decodes a few candidates (the box, the box with its edge nearest the click moved, and
   the previous mask); the highest decoder-predicted IoU wins. Then `local_edits` (`edits.py`) makes the mask honour
   every click by moving the decision threshold locally along the decoder's own logits.

Coordinates are image pixels (x, y); see `dermaseg.core.segment.prompts`.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from dermaseg.core.errors import PromptError
from dermaseg.core.interactive.edits import local_edits
from dermaseg.core.interactive.prefix_cache import PrefixCache
from dermaseg.core.segment.prompts import NEGATIVE, POSITIVE, Box, Point, Prompts
from dermaseg.core.segment.segmenter import MaskResult, Segmenter


@dataclass(frozen=True)
class TranslationConfig:
    """Knobs of the translation, measured with `dermaseg evaluate` on the dev set.

    scales: candidate box side as a fraction of the image's shorter side.
    aspects: candidate width/height ratios (the box area stays that of a square of the scale).
    margin: px added around a mask's bounding box to make a tight box (the box protocol uses 5).
    grow: a box grown to reach a positive click outside it extends past the click by this fraction
        of the box side.
    positive_points: also try sending positive clicks inside the box to the decoder as points.
    edge_moves: also try the box with its edge nearest the click moved past it (out for a positive,
        in for a negative click).
    mask_input: also try the previous step's logits as the decoder's mask input.
    all_heads: consider all four decoder heads, not only head 0.
    violation_cost: a candidate's value is its predicted IoU less this per click it disagrees with.
    decoder_negatives: send negative clicks to the decoder as negative points with the box.
    local_edits: edit the decoder's mask so that it honours every click (`local_edits`).
    edit_reach: how far a click's edit reaches, in multiples of its distance to the mask's edge.
    """

    scales: tuple[float, ...] = (0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)
    aspects: tuple[float, ...] = (0.75, 1.0, 1.33)
    margin: float = 5.0
    grow: float = 0.05
    positive_points: bool = False
    edge_moves: bool = True
    mask_input: bool = False
    all_heads: bool = False
    violation_cost: float = 0.0
    decoder_negatives: bool = True
    local_edits: bool = True
    edit_reach: float = 2.0


DEFAULT_CONFIG = TranslationConfig()


@dataclass(frozen=True)
class PrefixTranslation:
    """The translation of a prefix of the user's clicks: the lesion box, the decoder prompts that made the
    chosen mask, and that mask."""

    box: Box
    decoder_prompts: Prompts
    result: MaskResult


class Translation:
    """Prompt translation on the segmenter's current image (a `ClickMethod`, see `session.py`).

    `predict(prompts)` takes everything the user gave so far (box and/or clicks in order) and returns
    the mask. It is a function of the prompts and the image; each click prefix's translation is cached,
    so adding one click costs one step (a few decoder runs), and the first click's proposal ~2 x 27.
    It always runs the bundled decoder (`decoder="base"`), the one the translation was designed for.
    """

    def __init__(
        self, segmenter: Segmenter, cache: PrefixCache | None = None, config: TranslationConfig = DEFAULT_CONFIG
    ) -> None:
        self.segmenter = segmenter
        self.config = config
        self.cache = cache if cache is not None else PrefixCache()

    def prepare(self) -> None:
        """Nothing to do before the first click (`Refinement.prepare` has)."""

    def preview(self, prompts: Prompts, shape: tuple[int, int] | None = None) -> MaskResult | None:
        """None: no cheaper answer to show first (`Refinement.preview` has one)."""
        return None

    def predict(self, prompts: Prompts, shape: tuple[int, int] | None = None) -> MaskResult:
        """Mask for the user's `prompts` (image pixels), at image resolution or at `shape` (h, w), a smaller
        grid over the image. PromptError when no click is positive and there is no box."""
        image = self.segmenter.image
        if image is None:
            return self.segmenter.predict(prompts)  # raises the usual "open an image first"
        prompts = prompts.validated(image.width, image.height)
        if not prompts.points:
            return self.segmenter.predict(prompts, head=0, decoder="base").at(shape)  # the plain box path
        result = self.translate(prompts).result
        if not self.config.local_edits:
            return result.at(shape)
        result = replace(result, prompts=prompts).at(shape)
        return result.with_mask(local_edits(result, prompts, self.config.edit_reach))

    def translate(self, prompts: Prompts) -> PrefixTranslation:
        """The (cached) translation of all of `prompts`' clicks."""
        image = self.segmenter.image
        assert image is not None
        return self.cache.get(image.sha256, ("translate", prompts), lambda: self._translated(prompts))

    def _translated(self, prompts: Prompts) -> PrefixTranslation:
        """The translation of `prompts`' clicks, one step on from that of their prefix."""
        prefix = Prompts(prompts.box, prompts.points[:-1], prompts.labels[:-1])
        previous = self.translate(prefix) if prefix.points else None
        click, label = prompts.points[-1], prompts.labels[-1]
        if previous is None and prompts.box is None:
            if label == NEGATIVE:
                raise PromptError("start with a click on the lesion (or draw a box): there is no positive click")
            return self._first(click)
        if previous is None:  # the user's box, then a first click
            assert prompts.box is not None
            box = prompts.box
            result = self.segmenter.predict(Prompts(box=box), head=0, decoder="base")
            previous = PrefixTranslation(box, Prompts(box=box), result)
        return self._correct(previous, prompts, click, label == POSITIVE)

    def _first(self, click: Point) -> PrefixTranslation:
        """Propose the lesion box for a first positive click: decode candidate boxes, tighten each to
        its mask's bounding box, keep the one covering the click with the highest predicted IoU."""
        image = self.segmenter.image
        assert image is not None
        cfg = self.config
        best: PrefixTranslation | None = None
        for box in candidate_boxes(click, image.width, image.height, cfg.scales, cfg.aspects):
            first = self.segmenter.predict(Prompts(box=box), head=0, decoder="base").mask
            if not first.any():
                continue
            tight = tight_box(first, cfg.margin)
            result = self.segmenter.predict(Prompts(box=tight), head=0, decoder="base")
            key = (_covers(result.mask, click), result.score)
            if best is None or key > (_covers(best.result.mask, click), best.result.score):
                best = PrefixTranslation(tight, Prompts(box=tight), result)
        if best is None:  # nothing anywhere: fall back to the middle-sized box
            box = candidate_boxes(click, image.width, image.height, (0.5,), (1.0,))[0]
            result = self.segmenter.predict(Prompts(box=box), head=0, decoder="base")
            best = PrefixTranslation(box, Prompts(box=box), result)
        return best

    def _value(self, result: MaskResult, prompts: Prompts) -> float:
        """Predicted IoU less `violation_cost` per click the mask disagrees with."""
        violations = len(prompts.points) - _agreement(result.mask, prompts)
        return result.score - self.config.violation_cost * violations

    def _correct(
        self, previous: PrefixTranslation, prompts: Prompts, click: Point, positive: bool
    ) -> PrefixTranslation:
        """One corrective click: decode a few candidate prompts and keep the one whose mask agrees with
        the most clicks (positives inside, negatives outside), then with the highest predicted IoU."""
        image = self.segmenter.image
        assert image is not None
        cfg = self.config
        negatives = tuple(p for p, lbl in zip(prompts.points, prompts.labels, strict=True) if lbl == NEGATIVE)
        if not cfg.decoder_negatives:
            negatives = ()
        box = previous.box
        if positive and not _inside(click, box):
            box = grow_box(box, click, cfg.grow, image.width, image.height)
        boxes = [box]
        if cfg.edge_moves:
            moved = move_nearest_edge(box, click, positive, cfg.grow, image.width, image.height)
            if moved is not None:
                boxes.append(moved)
        options: list[tuple[Box, Prompts, np.ndarray | None]] = []
        for b in boxes:
            options.append((b, Prompts(b, negatives, (NEGATIVE,) * len(negatives)), None))
            if positive and cfg.positive_points:
                pos = tuple(p for p, lbl in zip(prompts.points, prompts.labels, strict=True) if lbl == POSITIVE)
                pos = tuple(p for p in pos if _inside(p, b))
                pts, lbls = pos + negatives, (POSITIVE,) * len(pos) + (NEGATIVE,) * len(negatives)
                options.append((b, Prompts(b, pts, lbls), None))
        if cfg.mask_input:
            options += [(b, p, previous.result.low_res_logits) for b, p, _ in list(options)]
        # The previous mask stays a candidate: a correction that wrecks the mask is worse than none.
        best: tuple[float, PrefixTranslation] | None = (self._value(previous.result, prompts), previous)
        for b, p, mask_input in options:
            results = (
                self.segmenter.candidates(p, mask_input=mask_input, decoder="base")
                if cfg.all_heads
                else (self.segmenter.predict(p, mask_input=mask_input, head=0, decoder="base"),)
            )
            for r in results:
                key = self._value(r, prompts)
                if best is None or key > best[0]:
                    best = (key, PrefixTranslation(b, p, r))
        assert best is not None
        return best[1]


def candidate_boxes(
    click: Point, width: int, height: int, scales: tuple[float, ...], aspects: tuple[float, ...]
) -> list[Box]:
    """Boxes centred on `click`, side = scale x the image's shorter side, for each aspect (w/h)."""
    side = min(width, height)
    boxes = []
    for s in scales:
        for a in aspects:
            hw, hh = s * side / 2 * np.sqrt(a), s * side / 2 / np.sqrt(a)
            boxes.append(_clip((click[0] - hw, click[1] - hh, click[0] + hw, click[1] + hh), width, height))
    return boxes


def tight_box(mask: np.ndarray, margin: float) -> Box:
    """Bounding box (pixel edges) of a non-empty bool (H, W) mask, grown by `margin` px, clipped."""
    rows, cols = np.nonzero(mask)
    h, w = mask.shape
    return _clip((cols.min() - margin, rows.min() - margin, cols.max() + 1 + margin, rows.max() + 1 + margin), w, h)


def grow_box(box: Box, click: Point, grow: float, width: int, height: int) -> Box:
    """`box` extended to contain `click` plus `grow` x the box side beyond it, on the click's side."""
    x0, y0, x1, y1 = box
    mx, my = grow * (x1 - x0), grow * (y1 - y0)
    x, y = click
    return _clip((min(x0, x - mx), min(y0, y - my), max(x1, x + mx), max(y1, y + my)), width, height)


def move_nearest_edge(box: Box, click: Point, positive: bool, grow: float, width: int, height: int) -> Box | None:
    """`box` with the edge nearest `click` moved just past it: outward by `grow` x side beyond a positive
    click, inward to 1 px inside a negative one. None when the result would be degenerate."""
    x0, y0, x1, y1 = box
    x, y = click
    dists = {0: abs(x - x0), 1: abs(y - y0), 2: abs(x1 - x), 3: abs(y1 - y)}
    edge = min(dists, key=dists.__getitem__)
    side = (x1 - x0) if edge in (0, 2) else (y1 - y0)
    new = [x0, y0, x1, y1]
    if positive:
        step = grow * side
        new[edge] = (min(new[edge], (x, y)[edge % 2] - step)) if edge < 2 else max(new[edge], (x, y)[edge % 2] + step)
    else:
        new[edge] = (x, y)[edge % 2] + (1.0 if edge < 2 else -1.0)
    b = _clip((new[0], new[1], new[2], new[3]), width, height)
    return b if b[2] - b[0] >= 4 and b[3] - b[1] >= 4 and b != box else None


def _agreement(mask: np.ndarray, prompts: Prompts) -> int:
    """How many clicks `mask` honours: positives inside it, negatives outside."""
    return sum(_covers(mask, p) == (lbl == POSITIVE) for p, lbl in zip(prompts.points, prompts.labels, strict=True))


def _clip(box: tuple[float, float, float, float], width: int, height: int) -> Box:
    x0, y0, x1, y1 = (float(v) for v in box)
    return (max(0.0, x0), max(0.0, y0), min(float(width), x1), min(float(height), y1))


def _inside(xy: Point, box: Box) -> bool:
    return box[0] <= xy[0] <= box[2] and box[1] <= xy[1] <= box[3]


def _covers(mask: np.ndarray, xy: Point) -> bool:
    h, w = mask.shape
    x, y = min(int(xy[0]), w - 1), min(int(xy[1]), h - 1)
    return bool(mask[y, x])

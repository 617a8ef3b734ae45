"""Agreement between raters who outlined the same lesion: per pair, per image (with consensus), per project.

These figures measure how alike two people's *outlines* are. They say nothing about a diagnosis, and a
high agreement does not make an outline correct. Conventions as in `dermaseg.core.annotation.metrics`:
masks are bool (H, W) arrays in (row, col), all masks of one image have the same shape; lengths are in
px (centre-to-centre distance between pixels) and, when a `Calibration` is given, in mm (square pixels of
`mm_per_px`); areas in px^2 (a pixel count) and mm^2.

Definitions (see docs/agreement.md):
- Dice = 2|A & B| / (|A| + |B|), IoU = |A & B| / |A | B|; both 1.0 when both masks are empty (the ISIC
  convention: nothing to disagree on), 0.0 when exactly one is.
- Boundary of a mask: its pixels that have at least one 4-neighbour outside the mask, the image edge
  counting as outside (`mask & ~binary_erosion(mask, border_value=0)`); points are pixel centres.
- Directed distances d(A->B): for every boundary pixel of A, the Euclidean distance to the nearest
  boundary pixel of B. HD95 = max(P95 d(A->B), P95 d(B->A)), percentiles by linear interpolation
  (`numpy.percentile`), as MONAI's `compute_hausdorff_distance(percentile=95)`; HD = max of both
  maxima (the classic Hausdorff distance of the two boundaries). Both 0.0 when both masks are empty;
  None (JSON null: undefined, there is no boundary to measure to) when exactly one is. A shift by k px
  along an axis gives HD = k and HD95 a little under k.
- Area difference = area(B) - area(A) (signed: positive when B drew larger), largest diameter the max
  Feret diameter of `metrics.feret_diameters` (convex hull of pixel corners); an empty mask has area 0
  and largest diameter 0.
- Consensus of n >= 2 raters: majority vote = pixels marked by more than n/2 raters (with an even n a
  tie is left out); STAPLE (Warfield et al. 2004, SimpleITK's `STAPLEImageFilter`, run on the whole image
  with foreground 1) gives each pixel a probability of being lesion and each rater a sensitivity and
  specificity; the STAPLE consensus is probability > 0.5.
- Project: an image's figure is the mean over its pairs; the project's mean and spread (sd with
  ddof=1, median, quartiles by linear interpolation, IQR) are over images, so an image with more raters
  does not weigh more. Images are ranked by disagreement = 1 - mean pairwise Dice, ties broken by the
  larger mean HD95.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from scipy import ndimage

from dermaseg.core.annotation.metrics import feret_diameters
from dermaseg.core.calibration import Calibration
from dermaseg.core.errors import GeometryError

HD_PERCENTILE = 95.0
STAPLE_THRESHOLD = 0.5
CONSENSUS_METHODS = ("staple", "majority")
AGREEMENT_NOTICE = (
    "Agreement figures compare raters' outlines of the same lesion. They measure annotation agreement, "
    "not the correctness of an outline, and are not a diagnosis."
)


# -------------------------------------------------------------------------------------------- pair
@dataclass(frozen=True)
class PairAgreement:
    """Agreement of rater `a`'s and rater `b`'s masks on one image.

    Signed differences are b - a. `hd95_*`/`hd_*` are None when exactly one mask is empty; `*_mm*` are
    None without a calibration. Units are in the field names (px2 = px^2 = a pixel count).
    """

    a: str
    b: str
    dice: float
    iou: float
    hd95_px: float | None
    hd_px: float | None
    area_a_px2: int
    area_b_px2: int
    area_diff_px2: int
    diameter_a_px: float
    diameter_b_px: float
    diameter_diff_px: float
    mm_per_px: float | None = None
    hd95_mm: float | None = None
    hd_mm: float | None = None
    area_diff_mm2: float | None = None
    diameter_diff_mm: float | None = None

    def to_json(self) -> dict[str, Any]:
        """JSON-safe dict (numbers, strings, None) with the field names as keys."""
        return asdict(self)


def _check_pair(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    a, b = np.asarray(a), np.asarray(b)
    if a.ndim != 2 or b.ndim != 2:
        raise GeometryError(f"masks must be 2-D (H, W) arrays, got shapes {a.shape} and {b.shape}")
    if a.shape != b.shape:
        raise GeometryError(f"two raters' masks of one image differ in shape: {a.shape} and {b.shape}")
    return a.astype(bool, copy=False), b.astype(bool, copy=False)


def boundary(mask: np.ndarray) -> np.ndarray:
    """Boundary pixels, bool (H, W): mask pixels with a 4-neighbour outside the mask or the image."""
    return mask & ~ndimage.binary_erosion(mask, border_value=0)


def boundary_distances(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Directed boundary distances (d(A->B), d(B->A)) in px of two non-empty bool (H, W) masks.

    d(A->B) is a float (N_A,) array: for each boundary pixel of A, the distance to the nearest boundary
    pixel of B. The distance transform runs on the bounding box of both boundaries only: the nearest
    boundary pixel of any pixel in that box lies in the box, so the result is exact.
    """
    ea, eb = boundary(a), boundary(b)
    rows, cols = np.nonzero(ea | eb)
    box = np.s_[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1]
    ea, eb = ea[box], eb[box]
    return ndimage.distance_transform_edt(~eb)[ea], ndimage.distance_transform_edt(~ea)[eb]


def hausdorff(a: np.ndarray, b: np.ndarray, percentile: float = HD_PERCENTILE) -> tuple[float, float] | None:
    """(HD at `percentile`, HD) in px between the boundaries of two same-shape bool masks.

    (0.0, 0.0) when both are empty, None when exactly one is (see the module docstring).
    """
    a, b = _check_pair(a, b)
    if not a.any() and not b.any():
        return 0.0, 0.0
    if not a.any() or not b.any():
        return None
    dab, dba = boundary_distances(a, b)
    hdp = max(float(np.percentile(dab, percentile)), float(np.percentile(dba, percentile)))
    return hdp, max(float(dab.max()), float(dba.max()))


def largest_diameter(mask: np.ndarray) -> float:
    """Max Feret diameter in px (`metrics.feret_diameters`); 0.0 for an empty mask."""
    return feret_diameters(mask)[0] if mask.any() else 0.0


def compare_pair(
    a: np.ndarray, b: np.ndarray, name_a: str = "a", name_b: str = "b", calibration: Calibration | None = None
) -> PairAgreement:
    """Every pair figure for rater `name_a`'s bool (H, W) mask `a` and rater `name_b`'s mask `b`."""
    a, b = _check_pair(a, b)
    inter = int(np.count_nonzero(a & b))
    area_a, area_b = int(np.count_nonzero(a)), int(np.count_nonzero(b))
    union = area_a + area_b - inter
    dice = 1.0 if union == 0 else 2 * inter / (area_a + area_b)
    iou = 1.0 if union == 0 else inter / union
    hd = hausdorff(a, b)
    hd95, hd_max = hd if hd is not None else (None, None)
    da, db = largest_diameter(a), largest_diameter(b)
    s = calibration.mm_per_px if calibration is not None else None

    def mm(v: float | None, power: int = 1) -> float | None:
        return None if v is None or s is None else v * s**power

    return PairAgreement(
        a=name_a,
        b=name_b,
        dice=dice,
        iou=iou,
        hd95_px=hd95,
        hd_px=hd_max,
        area_a_px2=area_a,
        area_b_px2=area_b,
        area_diff_px2=area_b - area_a,
        diameter_a_px=da,
        diameter_b_px=db,
        diameter_diff_px=db - da,
        mm_per_px=s,
        hd95_mm=mm(hd95),
        hd_mm=mm(hd_max),
        area_diff_mm2=mm(area_b - area_a, 2),
        diameter_diff_mm=mm(db - da),
    )


# ------------------------------------------------------------------------------------------ consensus
def majority_vote(masks: Sequence[np.ndarray]) -> np.ndarray:
    """bool (H, W): pixels marked by more than half of the n masks (a tie, with an even n, is left out)."""
    stack = np.stack([np.asarray(m, dtype=bool) for m in masks])
    return np.count_nonzero(stack, axis=0) * 2 > len(masks)


@dataclass(frozen=True)
class Staple:
    """STAPLE's estimate from n raters' masks of one image.

    probability: float (H, W) in [0, 1], each pixel's estimated probability of being lesion;
    sensitivity, specificity: one per rater, in the raters' order (None when no rater marked anything:
    STAPLE then has nothing to estimate and the consensus is empty).
    """

    probability: np.ndarray = field(repr=False, compare=False)
    sensitivity: tuple[float, ...] | None
    specificity: tuple[float, ...] | None

    @property
    def mask(self) -> np.ndarray:
        """The consensus, bool (H, W): probability > `STAPLE_THRESHOLD`."""
        return self.probability > STAPLE_THRESHOLD


def staple(masks: Sequence[np.ndarray]) -> Staple:
    """STAPLE over n >= 2 same-shape bool (H, W) masks (SimpleITK's `STAPLEImageFilter`, foreground 1)."""
    masks = [np.asarray(m, dtype=bool) for m in masks]
    if len(masks) < 2:
        raise GeometryError(f"a consensus needs at least 2 raters' masks, got {len(masks)}")
    for m in masks[1:]:
        _check_pair(masks[0], m)
    if not any(m.any() for m in masks):
        return Staple(np.zeros(masks[0].shape, np.float64), None, None)
    # Imported on first use: importing SimpleITK adds ~91 MiB to a process (its one 270 MB library), which
    # the annotation server would otherwise hold from startup for a figure only team reviews ask for.
    import SimpleITK as sitk

    f = sitk.STAPLEImageFilter()
    f.SetForegroundValue(1.0)
    prob = sitk.GetArrayFromImage(f.Execute([sitk.GetImageFromArray(m.astype(np.uint8)) for m in masks]))
    return Staple(prob.astype(np.float64), tuple(f.GetSensitivity()), tuple(f.GetSpecificity()))


# ---------------------------------------------------------------------------------------------- image
def _mean(values: Iterable[float | None]) -> float | None:
    vs = [v for v in values if v is not None]
    return float(np.mean(vs)) if vs else None


@dataclass(frozen=True)
class ImageAgreement:
    """The figures of all pairs of raters on one image and of their consensus; no mask is kept, so a
    project's results take memory in proportion to its number of pairs, not its pixels.

    `pairs` are in the order of `itertools.combinations(raters)`. `majority_area_px2` and
    `staple_area_px2` are the consensus masks' pixel counts. `staple_sensitivity` and
    `staple_specificity` follow `raters` (None when no rater marked anything).
    """

    file_name: str
    raters: tuple[str, ...]
    pairs: tuple[PairAgreement, ...]
    majority_area_px2: int
    staple_area_px2: int
    staple_sensitivity: tuple[float, ...] | None
    staple_specificity: tuple[float, ...] | None

    @property
    def mean_dice(self) -> float:
        return float(np.mean([p.dice for p in self.pairs]))

    @property
    def mean_iou(self) -> float:
        return float(np.mean([p.iou for p in self.pairs]))

    @property
    def mean_hd95_px(self) -> float | None:
        """Mean HD95 over the pairs where it is defined (None if none is)."""
        return _mean(p.hd95_px for p in self.pairs)

    @property
    def mean_hd95_mm(self) -> float | None:
        return _mean(p.hd95_mm for p in self.pairs)

    @property
    def disagreement(self) -> float:
        """1 - mean pairwise Dice, in [0, 1]: 0 when every rater drew the same pixels."""
        return 1.0 - self.mean_dice

    def to_json(self) -> dict[str, Any]:
        """JSON-safe dict: file_name, raters, means, STAPLE's per-rater figures, consensus areas, pairs."""
        return {
            "file_name": self.file_name,
            "raters": list(self.raters),
            "mean_dice": self.mean_dice,
            "mean_iou": self.mean_iou,
            "mean_hd95_px": self.mean_hd95_px,
            "mean_hd95_mm": self.mean_hd95_mm,
            "disagreement": self.disagreement,
            "majority_area_px2": self.majority_area_px2,
            "staple_area_px2": self.staple_area_px2,
            "staple_sensitivity": _per_rater(self.raters, self.staple_sensitivity),
            "staple_specificity": _per_rater(self.raters, self.staple_specificity),
            "pairs": [p.to_json() for p in self.pairs],
        }


def _per_rater(raters: Sequence[str], values: Sequence[float] | None) -> dict[str, float] | None:
    return None if values is None else dict(zip(raters, map(float, values), strict=True))


@dataclass(frozen=True)
class Consensus:
    """One image's consensus masks: `majority` bool (H, W) and STAPLE's estimate. Meant to be used (e.g.
    written as COCO) and dropped while that image is processed, so that only one image's arrays live."""

    majority: np.ndarray = field(repr=False, compare=False)
    staple: Staple = field(repr=False, compare=False)

    def mask(self, method: str) -> np.ndarray:
        """bool (H, W): the STAPLE consensus for "staple", the majority vote for "majority"."""
        if method not in CONSENSUS_METHODS:
            raise GeometryError(f"consensus method {method!r}: use one of {', '.join(CONSENSUS_METHODS)}")
        return self.staple.mask if method == "staple" else self.majority


def image_agreement_and_consensus(
    file_name: str, masks: Mapping[str, np.ndarray], calibration: Calibration | None = None
) -> tuple[ImageAgreement, Consensus]:
    """Agreement on one image and its consensus masks: `masks` maps each rater's name to their bool (H, W)
    mask (n >= 2)."""
    if len(masks) < 2:
        raise GeometryError(f"{file_name}: agreement needs at least 2 raters, got {len(masks)}")
    raters = tuple(masks)
    arrays = [np.asarray(masks[r], dtype=bool) for r in raters]
    pairs = tuple(
        compare_pair(arrays[i], arrays[j], raters[i], raters[j], calibration)
        for i, j in itertools.combinations(range(len(raters)), 2)
    )
    cons = Consensus(majority_vote(arrays), staple(arrays))
    figures = ImageAgreement(
        file_name,
        raters,
        pairs,
        int(np.count_nonzero(cons.majority)),
        int(np.count_nonzero(cons.staple.mask)),
        cons.staple.sensitivity,
        cons.staple.specificity,
    )
    return figures, cons


def image_agreement(
    file_name: str, masks: Mapping[str, np.ndarray], calibration: Calibration | None = None
) -> ImageAgreement:
    """Agreement on one image (`image_agreement_and_consensus` without the masks)."""
    return image_agreement_and_consensus(file_name, masks, calibration)[0]


# -------------------------------------------------------------------------------------------- project
@dataclass(frozen=True)
class Spread:
    """Mean and spread of one figure over n images. sd uses ddof=1 (None when n < 2); quartiles by
    linear interpolation (`numpy.percentile`)."""

    n: int
    mean: float
    sd: float | None
    median: float
    q1: float
    q3: float
    min: float
    max: float

    @property
    def iqr(self) -> float:
        return self.q3 - self.q1

    @classmethod
    def of(cls, values: Iterable[float | None]) -> Spread | None:
        """Spread of the values that are not None; None when there are none."""
        v = np.asarray([x for x in values if x is not None], dtype=np.float64)
        if v.size == 0:
            return None
        q1, median, q3 = (float(q) for q in np.percentile(v, [25, 50, 75]))
        sd = float(np.std(v, ddof=1)) if v.size > 1 else None
        return cls(int(v.size), float(v.mean()), sd, median, q1, q3, float(v.min()), float(v.max()))

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "iqr": self.iqr}


@dataclass(frozen=True)
class ProjectAgreement:
    """Agreement over a project's images (each with >= 2 raters); spreads are over images' means."""

    images: tuple[ImageAgreement, ...]
    dice: Spread
    iou: Spread
    hd95_px: Spread | None
    hd95_mm: Spread | None

    @property
    def mean_dice(self) -> float:
        return self.dice.mean

    @property
    def ranked(self) -> tuple[ImageAgreement, ...]:
        """The images, most disagreement first (1 - mean Dice, then mean HD95, then file name)."""
        return tuple(sorted(self.images, key=lambda im: (-im.disagreement, -(im.mean_hd95_px or 0.0), im.file_name)))

    def ranked_pairs(self) -> tuple[tuple[str, PairAgreement], ...]:
        """Every pair of raters as (file name, pair), where raters disagree most first: the images in
        `ranked` order, an image's pairs lowest Dice first (ties: larger HD95 first)."""
        return tuple(
            (im.file_name, p)
            for im in self.ranked
            for p in sorted(im.pairs, key=lambda p: (p.dice, -(p.hd95_px or 0.0)))
        )

    def to_json(self) -> dict[str, Any]:
        """`{"mean_dice": float, "images": [{"file_name", "pairs": [{"a", "b", "dice", "iou", "hd95_px",
        ...}], ...}], ...}` plus spreads, the ranking and the notice. Strict JSON (no NaN)."""

        def spread(s: Spread | None) -> dict[str, Any] | None:
            return None if s is None else s.to_json()

        return {
            "mean_dice": self.mean_dice,
            "n_images": len(self.images),
            "n_pairs": sum(len(im.pairs) for im in self.images),
            "dice": spread(self.dice),
            "iou": spread(self.iou),
            "hd95_px": spread(self.hd95_px),
            "hd95_mm": spread(self.hd95_mm),
            "ranked_by_disagreement": [
                {"file_name": im.file_name, "disagreement": im.disagreement} for im in self.ranked
            ],
            "images": [im.to_json() for im in self.images],
            "notice": AGREEMENT_NOTICE,
        }


def project_agreement(images: Iterable[ImageAgreement]) -> ProjectAgreement:
    """Means and spreads over images (each image's figure is the mean over its pairs)."""
    images = tuple(images)
    if not images:
        raise GeometryError("no image has two or more raters: there is no agreement to measure")
    dice = Spread.of(im.mean_dice for im in images)
    iou = Spread.of(im.mean_iou for im in images)
    assert dice is not None and iou is not None  # every image has a pair, and Dice is always defined
    return ProjectAgreement(
        images, dice, iou, Spread.of(im.mean_hd95_px for im in images), Spread.of(im.mean_hd95_mm for im in images)
    )


def agreement(
    masks_by_image: Mapping[str, Mapping[str, np.ndarray]], calibrations: Mapping[str, Calibration] | None = None
) -> ProjectAgreement:
    """Project agreement from {file_name: {rater: bool (H, W) mask}}; images with fewer than 2 raters are
    left out. `calibrations` maps a file name to its scale (images without one get no mm figures).
    Measured one image at a time: only the figures are kept (see `ImageAgreement`)."""
    calibrations = calibrations or {}
    return project_agreement(
        image_agreement(name, masks, calibrations.get(name))
        for name, masks in masks_by_image.items()
        if len(masks) >= 2
    )

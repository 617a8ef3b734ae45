"""The RITM / SAM click simulator: where an annotator clicks next to correct a predicted mask.

Protocol (RITM, Sofiiuk et al. 2022; SAM, Kirillov et al. 2023): the error regions are
FN = gt & ~pred and FP = ~gt & pred. Each is padded by 1 px (so the image border counts as outside),
its L2 distance transform is taken, already-clicked pixels are excluded, and the next click goes to
the deepest point of the larger region (the one with the larger maximal distance); it is positive
when it falls in FN. With an empty prediction this is the deepest interior point of the lesion.
Coordinates: `Click.x, Click.y` are pixel centres (column, row) in image pixels.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage


@dataclass(frozen=True)
class Click:
    """One simulated click at pixel (row `y`, column `x`); `positive` when it marks missed lesion."""

    x: int
    y: int
    positive: bool

    @property
    def xy(self) -> tuple[float, float]:
        """Pixel-centre coordinates (x + 0.5, y + 0.5) in the prompt convention (edges at 0 and W)."""
        return (self.x + 0.5, self.y + 0.5)


def error_distance(region: np.ndarray, clicked: np.ndarray | None = None) -> np.ndarray:
    """float64 (H, W): L2 distance of each `region` pixel to the nearest pixel outside it (or to the
    image border, via a 1-px pad); 0 outside the region and on already `clicked` pixels."""
    padded = np.pad(region, 1, mode="constant", constant_values=False)
    dist = ndimage.distance_transform_edt(padded)[1:-1, 1:-1]
    if clicked is not None:
        dist = np.where(clicked, 0.0, dist)
    return dist


def next_click(gt: np.ndarray, pred: np.ndarray, clicked: np.ndarray | None = None) -> Click | None:
    """The next corrective click for bool (H, W) truth `gt` and prediction `pred`; None when there is
    no error left to click on. `clicked`: bool (H, W) of pixels clicked before (excluded)."""
    fn_dist = error_distance(gt & ~pred, clicked)
    fp_dist = error_distance(~gt & pred, clicked)
    fn_max, fp_max = float(fn_dist.max()), float(fp_dist.max())
    if max(fn_max, fp_max) <= 0.0:
        return None
    positive = fn_max > fp_max  # ties go negative, as in RITM's reference clicker
    dist = fn_dist if positive else fp_dist
    y, x = np.unravel_index(int(np.argmax(dist)), dist.shape)
    return Click(int(x), int(y), positive)


def jitter_click(
    click: Click, gt: np.ndarray, pred: np.ndarray, sigma: float, rng: np.random.Generator, tries: int = 20
) -> Click:
    """`click` moved by an isotropic Gaussian offset of `sigma` px, as a real annotator misses the ideal
    point (RClicks, arXiv 2410.11722). The jittered point stays inside the error region it corrects
    (resampled up to `tries` times, else the ideal point is kept), so its label stays truthful."""
    if sigma <= 0:
        return click
    region = (gt & ~pred) if click.positive else (~gt & pred)
    h, w = region.shape
    for _ in range(tries):
        dx, dy = rng.normal(0.0, sigma, size=2)
        x, y = int(round(click.x + dx)), int(round(click.y + dy))
        if 0 <= x < w and 0 <= y < h and region[y, x]:
            return Click(x, y, click.positive)
    return click


def iou(gt: np.ndarray, pred: np.ndarray) -> float:
    """Jaccard of two bool masks; 1.0 when both are empty."""
    union = int(np.count_nonzero(gt | pred))
    return 1.0 if union == 0 else int(np.count_nonzero(gt & pred)) / union

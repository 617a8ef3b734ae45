"""Click edits: a mask made to honour every click by moving the decision threshold locally along the
decoder's own logits (both click methods end with them)."""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from dermaseg.core.segment.preprocess import upscale_logits
from dermaseg.core.segment.prompts import POSITIVE, Prompts
from dermaseg.core.segment.segmenter import MaskResult


def local_edits(result: MaskResult, prompts: Prompts, reach: float, beyond: float = 0.0) -> np.ndarray:
    """The decoder's mask edited so that it honours every click, using the decoder's own logits.

    For each click the mask disagrees with (in order), at distance d px from the mask's edge: a
    positive click adds the pixels connected to it, within `reach` x d of it, whose logit is at least
    the lowest logit within `beyond` x d of the click; a negative click removes those whose logit is at
    most the highest there. So a click shifts the decision threshold locally, along the model's own
    uncertainty; `beyond` carries the edit past the click, since a click in the middle of a missed
    stretch has about as much of it beyond as behind. Where that would take a pixel a click of the
    other sign holds, the threshold falls back to the click's own logit. bool (H, W).
    """
    mask = result.mask.copy()
    h, w = mask.shape
    logits = None  # upscaled only when a click needs an edit (most clicks are already honoured)
    on_mask = prompts.scaled(w / result.image_size[1], h / result.image_size[0])  # the mask may be a smaller grid
    clicks = [
        (min(int(x), w - 1), min(int(y), h - 1), label == POSITIVE)
        for (x, y), label in zip(on_mask.points, on_mask.labels, strict=True)
    ]
    for px, py, positive in clicks:
        if mask[py, px] == positive:
            continue
        if logits is None:
            logits = upscale_logits(result.low_res_logits, result.transform, (h, w))
        d = distance_to(mask if positive else ~mask, px, py)  # across the edge
        r = reach * max(d, 2.0)
        y0, y1 = max(0, int(py - r)), min(h, int(py + r) + 1)
        x0, x1 = max(0, int(px - r)), min(w, int(px + r) + 1)
        yy, xx = np.ogrid[y0:y1, x0:x1]
        window = logits[y0:y1, x0:x1]
        squared = (xx - px) ** 2 + (yy - py) ** 2  # px^2 from the click
        near = window[squared <= (beyond * d) ** 2]  # holds the click itself
        others = [(y - y0, x - x0) for x, y, sign in clicks if sign != positive and y0 <= y < y1 and x0 <= x < x1]
        past = near.min() if positive else near.max()
        for v in dict.fromkeys((past, window[py - y0, px - x0])):  # past the click, else its own
            candidate = (squared <= r * r) & ((window >= v) if positive else (window <= v))
            labelled, _ = ndimage.label(candidate)
            region = labelled == labelled[py - y0, px - x0]
            if not any(region[at] for at in others):
                break
        if positive:
            mask[y0:y1, x0:x1] |= region
        else:
            mask[y0:y1, x0:x1] &= ~region
    return mask


def distance_to(region: np.ndarray, x: int, y: int, start: int = 16) -> float:
    """Euclidean distance in px from pixel (x, y) to the nearest True pixel of bool (H, W) `region`
    (max(H, W) when there is none). Searches square windows of doubling half-side around the pixel: a
    hit at distance <= the half-side is the global nearest, so most calls read a few hundred pixels."""
    h, w = region.shape
    half = start
    while True:
        y0, y1, x0, x1 = max(0, y - half), min(h, y + half + 1), max(0, x - half), min(w, x + half + 1)
        hits = np.argwhere(region[y0:y1, x0:x1])
        whole = y0 == 0 and x0 == 0 and y1 == h and x1 == w
        if len(hits):
            d = float(np.sqrt(((hits + (y0 - y, x0 - x)) ** 2).sum(axis=1).min()))
            if d <= half or whole:
                return d
        elif whole:
            return float(max(h, w))
        half *= 2

"""Fit the decoder's answer to the user's clicks in its own feature space (after f-BRS, Sofiiuk et al.,
CVPR 2020, reduced to the decoder's last, linear layer).

The decoder's head-0 logits are a dot product: logit(p) = w . U[:, p], with U the 32 upscaled mask
features of pixel p and w the head's 32 weights. A corrective click says "this pixel is wrong". So we
look for the smallest change delta of w after which every click's logit has the click's sign with a
margin; the pixels whose features resemble the clicked pixel's change with it, wherever they lie
(the whole stretch of a band the model drew too tight or too wide), the others barely move.

    minimise  sum_i softplus(margin - y_i (l_i + delta . u_i))  +  lam / 2 * mean_p (delta . U[:, p])^2

over the clicks i (y = +1 positive, -1 negative; l_i, u_i: the click pixel's logit and features); the
second term is the mean squared change of the logits over the image. A 35-dimensional convex problem
(with the colour below), a few Newton steps.

The decoder's features see the image at 1/4 of the frame through the encoder; `colour_features` adds
the image's own colour, in the 256 x 256 frame, as three more features, so that pixels the colour of a
clicked one may follow it too (out of fold: NoC@90 3.34 -> 3.18).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from dermaseg.core.segment.prompts import POSITIVE

NEWTON_STEPS = 25


def fit_logits(
    logits: np.ndarray,
    features: np.ndarray,
    clicks: np.ndarray,
    labels: Sequence[int],
    extent: tuple[int, int],
    lam: float,
    margin: float,
    colour: np.ndarray | None = None,
) -> np.ndarray:
    """The logits refitted to the clicks.

    logits: float32 (256, 256), the decoder's head-0 low-res logits; features: float32 (K, 256, 256),
    its 32 upscaled mask features; colour: float32 (C, 256, 256), more features fitted with them
    (`colour_features`), or None; clicks: (N, 2) (x, y) in decoder-frame pixels; labels: N click labels
    (1 positive, 0 negative); extent: (h, w) of the image inside the frame (padding is ignored). lam:
    weight of the mean squared change of the logits; margin: the logit each click should reach on its
    side. Returns float32 (256, 256): logits + delta . features (the input when N == 0).
    """
    h, w = extent
    if len(labels) == 0:
        return logits
    blocks = [features] if colour is None else [features, colour]
    rows = np.minimum(np.asarray(clicks)[:, 1].astype(int), h - 1)
    cols = np.minimum(np.asarray(clicks)[:, 0].astype(int), w - 1)
    u = np.concatenate([b[:, rows, cols] for b in blocks]).T.astype(np.float64)  # (N, K)
    l0 = logits[rows, cols].astype(np.float64)
    y = np.where(np.asarray(labels) == POSITIVE, 1.0, -1.0)
    # One (K, n) @ (n, K) product over the image's pixels: the copy into one array costs ~0.2 ms, the
    # product block by block (one of them 3 x n by n x 32) 2.3x the time of this one.
    inside = np.concatenate([b[:, :h, :w] for b in blocks]).reshape(-1, h * w)
    gram = (inside @ inside.T).astype(np.float64)
    delta = _newton(l0, u, y, lam * gram / (h * w), margin)  # delta' (gram / n) delta: mean squared change
    out, start = logits.copy(), 0
    for b in blocks:
        out += np.tensordot(delta[start : start + len(b)].astype(np.float32), b, axes=1)
        start += len(b)
    return out


def colour_features(frame: np.ndarray, extent: tuple[int, int]) -> np.ndarray:
    """The image's colour as features for `fit_logits`: frame float32 (1, 3, 256, 256), the encoder
    input (`preprocess.encoder_input`); extent: (h, w) of the image inside the frame. Returns float32
    (3, 256, 256): each channel standardised over the image (mean 0, standard deviation 1), 0 on padding."""
    h, w = extent
    out = np.zeros(frame.shape[1:], np.float32)
    inside = frame[0, :, :h, :w].astype(np.float64)
    mean = inside.mean(axis=(1, 2), keepdims=True)
    std = inside.std(axis=(1, 2), keepdims=True)
    out[:, :h, :w] = (inside - mean) / np.maximum(std, 1e-6)
    return out


def _newton(l0: np.ndarray, u: np.ndarray, y: np.ndarray, reg: np.ndarray, margin: float) -> np.ndarray:
    """argmin_d sum softplus(margin - y (l0 + u d)) + d' reg d / 2 (convex; reg positive semi-definite)."""
    d = np.zeros(u.shape[1])
    ridge = 1e-9 * np.eye(u.shape[1])
    for _ in range(NEWTON_STEPS):
        s = 1.0 / (1.0 + np.exp(np.clip(y * (l0 + u @ d) - margin, -50, 50)))  # softplus' at each click
        grad = -(s * y) @ u + reg @ d
        hess = (u.T * (s * (1 - s))) @ u + reg + ridge
        step = np.linalg.solve(hess, grad)
        d -= step
        if np.abs(step).max() < 1e-6:
            break
    return d

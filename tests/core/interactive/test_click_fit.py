"""`fit_logits` on hand-made decoder features, and on the real tuned decoder's."""

from __future__ import annotations

import numpy as np
import pytest

from dermaseg.core.errors import DermasegError
from dermaseg.core.evaluation.click_simulator import next_click
from dermaseg.core.image import load_image
from dermaseg.core.interactive.fit import colour_features, fit_logits
from dermaseg.core.segment.preprocess import FEATURES_SHAPE, Transform
from dermaseg.core.segment.prompts import Prompts

EXTENT = (200, 256)  # a landscape image inside the 256 x 256 frame: rows 200-255 are padding


def _scene() -> tuple[np.ndarray, np.ndarray]:
    """Features: channel 0 constant, 1 on a lesion (rows 60-139, cols 60-179), 2 on a band around it
    (4 px wide), 3 on a far patch. Logits +5 on the lesion, -5 elsewhere: the band was drawn too tight."""
    f = np.zeros(FEATURES_SHAPE[1:], np.float32)
    f[0] = 1.0
    f[1, 60:140, 60:180] = 1.0
    f[2, 56:144, 56:184] = 1.0
    f[2, 60:140, 60:180] = 0.0
    f[3, 170:190, 10:30] = 1.0
    return np.where(f[1] > 0, 5.0, -5.0).astype(np.float32), f


def test_a_click_in_a_missed_band_brings_the_whole_band_and_nothing_else() -> None:
    logits, f = _scene()
    out = fit_logits(logits, f, np.array([[120.5, 57.5]]), [1], EXTENT, lam=1.0, margin=2.0)
    assert out[57, 120] > 1.0  # the click
    band = f[2] > 0
    assert (out[band] > 0).all()  # all of it, the far side of the lesion too
    assert (out[f[1] > 0] > 0).all() and (out[(f[1] == 0) & (f[2] == 0)] < 0).all()


def test_a_negative_click_takes_out_what_looks_like_it() -> None:
    logits, f = _scene()
    logits[170:190, 10:30] = 5.0  # a false lesion far away
    out = fit_logits(logits, f, np.array([[20.0, 180.0]]), [0], EXTENT, lam=1.0, margin=2.0)
    assert (out[170:190, 10:30] < 0).all() and (out[f[1] > 0] > 0).all()


def test_clicks_already_agreeing_change_next_to_nothing() -> None:
    logits, f = _scene()
    clicks = np.array([[100.0, 100.0], [20.0, 20.0]])  # inside the lesion, far outside it
    out = fit_logits(logits, f, clicks, [1, 0], EXTENT, lam=10.0, margin=2.0)
    assert np.abs(out - logits).max() < 0.05
    assert fit_logits(logits, f, np.zeros((0, 2)), [], EXTENT, 10.0, 2.0) is logits


def test_the_weight_of_the_change_holds_the_fit_back() -> None:
    logits, f = _scene()
    at = np.array([[120.5, 57.5]])
    reached = [fit_logits(logits, f, at, [1], EXTENT, lam, 2.0)[57, 120] for lam in (0.1, 10.0, 1000.0)]
    assert reached[0] > reached[1] > reached[2] and reached[2] < 0  # a heavy weight lets the click go


def test_padding_neither_weighs_in_nor_holds_a_click() -> None:
    logits, f = _scene()
    click = np.array([[120.5, 57.5]])
    plain = fit_logits(logits, f, click, [1], EXTENT, lam=1.0, margin=2.0)
    f[:, 200:, :] = 1000.0  # whatever the padding holds
    padded = fit_logits(logits, f, click, [1], EXTENT, lam=1.0, margin=2.0)
    assert np.allclose(padded[:200], plain[:200], atol=1e-4)
    below = fit_logits(logits, f, np.array([[120.5, 230.0]]), [1], EXTENT, lam=1.0, margin=2.0)
    at_edge = fit_logits(logits, f, np.array([[120.5, 199.0]]), [1], EXTENT, lam=1.0, margin=2.0)
    assert np.array_equal(below, at_edge)  # a click in the padding counts on the image's last row


def test_colour_features_are_standardised_over_the_image_and_zero_on_padding() -> None:
    rng = np.random.default_rng(0)
    frame = np.zeros((1, 3, 256, 256), np.float32)
    frame[0, :, :200] = rng.uniform(0.2, 0.9, (3, 200, 256))
    frame[0, :, 200:] = 7.0  # never counted: padding
    c = colour_features(frame, EXTENT)
    assert c.shape == (3, 256, 256) and c.dtype == np.float32
    assert np.allclose(c[:, :200].mean(axis=(1, 2)), 0, atol=1e-5)
    assert np.allclose(c[:, :200].std(axis=(1, 2)), 1, atol=1e-4)
    assert (c[:, 200:] == 0).all()
    flat = colour_features(np.full((1, 3, 256, 256), 0.5, np.float32), EXTENT)
    assert np.isfinite(flat).all() and (flat == 0).all()  # one colour: nothing to tell apart


def test_with_colour_a_click_brings_the_pixels_of_its_colour() -> None:
    """The decoder's features cannot tell a darker rim from the skin around it; the colour can."""
    logits, f = _scene()
    frame = np.full((1, 3, 256, 256), 0.8, np.float32)  # skin
    frame[0, :, 60:140, 60:180] = 0.3  # the lesion
    frame[0, :, 50:60, 60:180] = 0.4  # a rim above it, missed by the model
    rim = np.zeros((256, 256), bool)
    rim[50:60, 60:180] = True
    click = np.array([[120.5, 55.5]])
    decoder_only = fit_logits(logits, f[[0, 1, 3]], click, [1], EXTENT, lam=1.0, margin=2.0)
    assert (decoder_only[rim] > 0).mean() < 0.1  # the decoder's features alone cannot single the rim out
    both = np.concatenate([f[[0, 1, 3]], colour_features(frame, EXTENT)])
    out = fit_logits(logits, both, click, [1], EXTENT, lam=1.0, margin=2.0)
    assert (out[rim] > 0).all() and (out[f[1] > 0] > 0).all()
    # the colour as its own block (how `Refinement` passes it, no 9 MB copy) is the same fit
    apart = fit_logits(logits, f[[0, 1, 3]], click, [1], EXTENT, lam=1.0, margin=2.0, colour=both[3:])
    np.testing.assert_allclose(apart, out, rtol=0, atol=1e-4)
    assert not np.allclose(apart, decoder_only, atol=1e-2)
    skin = (f[1] == 0) & ~rim
    skin[EXTENT[0] :] = False
    assert (out[skin] < 0).all()


def test_the_tuned_decoder_logits_are_a_dot_product_of_its_features(engine, dev_data) -> None:
    """The contract `fit_logits` rests on: head 0's logits = w . features, for one w of 32 numbers."""
    case = dev_data[3]
    seg, gt = engine.segmenter(), case.load_mask()
    seg.set_image(load_image(case.image))
    first = Prompts().with_point(*next_click(gt, np.zeros_like(gt)).xy)
    result = seg.predict(first, features=True)
    assert result.features is not None and result.features.shape == FEATURES_SHAPE[1:]
    assert np.array_equal(result.low_res_logits, seg.predict(first).low_res_logits)
    u = result.features.reshape(32, -1).T.astype(np.float64)
    w, *_ = np.linalg.lstsq(u, result.low_res_logits.ravel().astype(np.float64), rcond=None)
    assert np.abs(u @ w - result.low_res_logits.ravel()).max() < 1e-3 * np.abs(result.low_res_logits).max()
    click = next_click(gt, result.mask)  # the deepest error of the one-click mask
    prompts = first.with_point(*click.xy, positive=click.positive)
    second = seg.predict(prompts, mask_input=result.low_res_logits, features=True)
    t = Transform(seg.image.height, seg.image.width)
    xy = t.to_model(np.array(prompts.points))
    fitted = fit_logits(second.low_res_logits, second.features, xy, prompts.labels, t.resized, 1e-3, 2.0)
    signs = np.where(np.array(prompts.labels) == 1, 1.0, -1.0)
    assert (signs * fitted[xy[:, 1].astype(int), xy[:, 0].astype(int)] > 1.0).all()  # light weight: every click
    with pytest.raises(DermasegError, match="fine-tuned decoder"):
        seg.predict(first, features=True, decoder="base")

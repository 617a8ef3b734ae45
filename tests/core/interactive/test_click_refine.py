"""The fine-tuned decoder through `Refinement`, on real dev images with the built artifacts."""

from __future__ import annotations

import numpy as np
import pytest

from dermaseg.core.errors import PromptError
from dermaseg.core.evaluation import protocols as ev
from dermaseg.core.evaluation.click_simulator import iou, next_click
from dermaseg.core.evaluation.dataset import box_from_mask
from dermaseg.core.image import load_image
from dermaseg.core.interactive.edits import local_edits
from dermaseg.core.interactive.fit import colour_features, fit_logits
from dermaseg.core.interactive.refine import FIT_LAMBDA, FIT_MARGIN, Refinement
from dermaseg.core.interactive.session import InteractiveSession
from dermaseg.core.interactive.translate import Translation
from dermaseg.core.segment.preprocess import Transform, encoder_input
from dermaseg.core.segment.prompts import Prompts
from dermaseg.core.segment.segmenter import MaskResult


@pytest.fixture(scope="module")
def cases(dev_data):
    return [dev_data[i] for i in (3, 40, 63)]  # two PH2 images and a HAM10000 one


@pytest.fixture
def counted(engine, monkeypatch):
    """The engine's backend with its decoder runs counted, True for the tuned decoder (the real decoder
    still runs)."""
    calls = []
    decode, decode_features = engine.backend.decode, engine.backend.decode_features

    def counting(*args, **kwargs):
        calls.append(kwargs.get("tuned", False))
        return decode(*args, **kwargs)

    def counting_features(*args, **kwargs):
        calls.append(True)
        return decode_features(*args, **kwargs)

    monkeypatch.setattr(engine.backend, "decode", counting)
    monkeypatch.setattr(engine.backend, "decode_features", counting_features)
    return calls


def _segmenter(engine, case):
    seg = engine.segmenter()
    seg.set_image(load_image(case.image))
    return seg


def test_the_default_variant_ships_a_tuned_decoder_and_names_it(engine) -> None:
    assert engine.backend.has_tuned_decoder
    files = engine.backend.files
    assert engine.model_id.endswith(files.tuned_decoder_sha256[:12]) and files.tuned_decoder.is_file()
    assert isinstance(InteractiveSession(engine.segmenter()).method, Refinement)


def test_one_click_segments_where_the_box_decoder_cannot(engine, cases) -> None:
    clicked, box_decoder = [], []
    for case in cases:
        seg, gt = _segmenter(engine, case), case.load_mask()
        one = Prompts().with_point(*next_click(gt, np.zeros_like(gt)).xy)
        clicked.append(iou(gt, Refinement(seg).predict(one).mask))
        box_decoder.append(iou(gt, seg.predict(one, head=0, decoder="base").mask))
    assert np.mean(clicked) > 0.75 and np.mean(box_decoder) < 0.1  # dev set, cross-validated: 0.86 vs 0.0001
    assert all(c > b + 0.3 for c, b in zip(clicked, box_decoder, strict=True))


def test_a_box_alone_is_one_run_of_the_tuned_decoder(engine, cases, counted) -> None:
    seg, gt = _segmenter(engine, cases[0]), cases[0].load_mask()
    box = Prompts(box=box_from_mask(gt, 5))
    ours = Refinement(seg).predict(box).low_res_logits
    assert counted == [True]
    assert np.array_equal(ours, seg.predict(box).low_res_logits)
    assert not np.array_equal(ours, seg.predict(box, decoder="base").low_res_logits)


def test_a_click_after_a_box_in_the_session_is_one_more_decoder_run(engine, cases, counted) -> None:
    seg, gt = _segmenter(engine, cases[0]), cases[0].load_mask()
    session, box = InteractiveSession(seg), Prompts(box=box_from_mask(gt, 5))
    session.predict(box, (200, 260))  # the page's box, on its working grid
    session.predict(box.with_point(*next_click(gt, np.zeros_like(gt)).xy))
    assert counted == [True, True]  # the box's answer is the click's prefix, kept: not decoded again
    session.predict(box, head=1)  # another head is the segmenter's own answer
    assert counted == [True, True, True]


def test_each_click_costs_one_decoder_run_and_feeds_the_last_fitted_logits(engine, cases, counted) -> None:
    seg, gt = _segmenter(engine, cases[1]), cases[1].load_mask()
    session = Refinement(seg, mirror=False)
    trace = ev.run_clicks(lambda p: session.predict(p).mask, gt, max_clicks=4)
    assert counted == [True] * len(trace.clicks)
    prompts = _prompts(trace)
    counted.clear()
    again = session.predict(prompts)  # cached: no decoder run
    assert counted == [] and np.array_equal(again.mask, trace.final_mask)
    prefix = Prompts(None, prompts.points[:-1], prompts.labels[:-1])
    fresh = seg.predict(prompts, mask_input=session.predict(prefix).low_res_logits, features=True)
    t = Transform(seg.image.height, seg.image.width)
    clicks = t.to_model(np.array(prompts.points))
    colour = colour_features(encoder_input(seg.image.rgb)[0], t.resized)
    fitted = fit_logits(
        fresh.low_res_logits, fresh.features, clicks, prompts.labels, t.resized, FIT_LAMBDA, FIT_MARGIN, colour
    )
    assert np.array_equal(fitted, again.low_res_logits)
    assert again.features is None  # not kept in the session's cache: 8 MB a click


def test_the_mirror_image_answers_too_and_the_logits_are_averaged(engine, cases, counted, monkeypatch) -> None:
    seg, gt = _segmenter(engine, cases[1]), cases[1].load_mask()
    session = Refinement(seg)
    session.prepare()  # the mirror image's embedding, before the first click
    encoded, encode = [], engine.backend.encode
    monkeypatch.setattr(engine.backend, "encode", lambda *a, **k: encoded.append(1) or encode(*a, **k))
    trace = ev.run_clicks(lambda p: session.predict(p).mask, gt, max_clicks=4)
    assert encoded == [] and counted == [True, True] * len(trace.clicks)  # each click: image and mirror
    prompts, width = _prompts(trace), seg.image.width
    mirror = engine.segmenter()
    mirror.set_image(seg.image.mirrored())
    h, w = Transform(seg.image.height, width).resized
    ours = Refinement(seg, mirror=False).predict(prompts).low_res_logits[:h, :w]
    theirs = Refinement(mirror, mirror=False).predict(prompts.mirrored(width)).low_res_logits[:h, :w]
    averaged = session.predict(prompts)
    assert np.allclose(averaged.low_res_logits[:h, :w], (ours + theirs[:, ::-1]) / 2, atol=1e-6)
    # so the answer does not depend on which way round the image was opened
    flipped = Refinement(mirror).predict(prompts.mirrored(width))
    assert np.array_equal(flipped.low_res_logits[:h, :w], averaged.low_res_logits[:h, w - 1 :: -1])
    assert iou(flipped.mask[:, ::-1], averaged.mask) > 0.999
    counted.clear()
    session.predict(Prompts(box=box_from_mask(gt, 5)).with_point(*prompts.points[0]))
    assert counted == [True, True]  # after a box, no mirror: the box's decoder run and the click's


def test_a_click_alone_previews_the_images_own_answer_and_the_final_adds_only_the_mirrors(engine, cases, counted):
    seg, gt = _segmenter(engine, cases[2]), cases[2].load_mask()
    session, plain = InteractiveSession(seg), InteractiveSession(_segmenter(engine, cases[2]))
    session.prepare()
    first = Prompts().with_point(*next_click(gt, np.zeros_like(gt)).xy)
    shape = (180, 240)  # a working grid smaller than the image: the preview is made on it too
    preview = session.preview(first, shape)
    assert counted == [True]  # the image's own decoder run
    alone = InteractiveSession(seg, method="refine")
    alone.method.mirror = False
    assert np.array_equal(preview.low_res_logits, alone.predict(first, shape).low_res_logits)
    assert np.array_equal(preview.mask, alone.predict(first, shape).mask)  # edited and tidied the same way
    counted.clear()
    final = session.predict(first, shape)
    assert counted == [True]  # only the mirror image's run: the image's answer was kept
    expected = plain.predict(first, shape)  # a session that never previewed: the same final answer
    assert np.array_equal(final.low_res_logits, expected.low_res_logits) and np.array_equal(final.mask, expected.mask)
    assert 0.8 < iou(preview.mask, final.mask) < 1.0  # close, not the same answer
    box = Prompts(box=box_from_mask(gt, 5))
    assert session.preview(box) is None and session.preview(box.with_point(*first.points[0])) is None
    assert Translation(seg).preview(first) is None  # nothing cheaper to show first


def test_an_image_is_made_into_the_encoders_input_once_for_its_embedding_and_colours(engine, cases, monkeypatch):
    import dermaseg.core.segment.segmenter as segmenter_module
    from dermaseg.core.segment.embedding_cache import EmbeddingCache
    from dermaseg.core.segment.segmenter import Engine

    made, make = [], segmenter_module.encoder_input
    monkeypatch.setattr(segmenter_module, "encoder_input", lambda rgb: made.append(1) or make(rgb))
    seg = Engine(engine.backend, EmbeddingCache(None)).segmenter()  # a cold cache: both sides are encoded
    image = load_image(cases[0].image)
    seg.set_image(image)
    session = Refinement(seg)
    session.prepare()  # the mirror image's embedding and both sides' colour features
    assert len(made) == 2  # (it was 4 per image: ~55 ms each on a 12-megapixel photo)
    frame = encoder_input(image.rgb)[0]
    assert np.array_equal(seg.encoder_frame(), frame)
    expected = colour_features(frame, Transform(image.height, image.width).resized)
    assert np.array_equal(session.cache.get(image.sha256, ("colour", False), lambda: None), expected)


def test_prompts_mirrored() -> None:
    p = Prompts(box=(10.0, 20.0, 50.0, 60.0)).with_point(15.0, 25.0).with_point(0.0, 5.0, positive=False)
    m = p.mirrored(100)
    assert m.box == (50.0, 20.0, 90.0, 60.0) and m.points == ((85.0, 25.0), (100.0, 5.0)) and m.labels == p.labels
    assert m.mirrored(100) == p


def _prompts(trace: ev.ClickTrace) -> Prompts:
    prompts = Prompts()
    for c in trace.clicks:
        prompts = prompts.with_point(*c.xy, positive=c.positive)
    return prompts


def test_a_click_the_decoder_disagrees_with_is_honoured(engine, cases) -> None:
    seg, gt = _segmenter(engine, cases[0]), cases[0].load_mask()
    ys, xs = np.nonzero(gt)
    inside = (float(xs.mean()), float(ys.mean()))
    prompts = Prompts(box=box_from_mask(gt, 5)).with_point(*inside, positive=False)
    session = Refinement(seg)
    assert session.predict(prompts).mask[int(inside[1]), int(inside[0])] == np.False_
    assert Refinement(seg, edit_reach=None).predict(prompts).mask[int(inside[1]), int(inside[0])]


def test_box_then_clicks_improve_on_the_box(engine, cases) -> None:
    gains = []
    for case in cases:
        seg, gt = _segmenter(engine, case), case.load_mask()
        trace = ev.run_clicks(ev.predictor("refine", seg), gt, max_clicks=3, box=box_from_mask(gt, 5))
        gains.append(max(trace.ious) - iou(gt, seg.predict(Prompts(box=box_from_mask(gt, 5))).mask))
    assert min(gains) >= -0.01 and np.mean(gains) > 0


def test_a_negative_first_click_is_refused_and_a_new_image_starts_afresh(engine, cases) -> None:
    seg = _segmenter(engine, cases[0])
    session = Refinement(seg)
    with pytest.raises(PromptError, match="first click is negative"):
        session.predict(Prompts(points=((5.0, 5.0),), labels=(0,)))
    gt = cases[0].load_mask()
    one = Prompts().with_point(*next_click(gt, np.zeros_like(gt)).xy)
    first = session.predict(one)
    seg.set_image(load_image(cases[2].image))
    assert session.predict(one).image_sha256 != first.image_sha256


def test_translation_keeps_using_the_bundled_decoder(engine, cases, counted) -> None:
    seg, gt = _segmenter(engine, cases[0]), cases[0].load_mask()
    session = Translation(seg)
    session.predict(Prompts(box=box_from_mask(gt, 5)))
    session.predict(Prompts(box=box_from_mask(gt, 5)).with_point(10.0, 10.0, positive=False))
    session.predict(Prompts().with_point(*next_click(gt, np.zeros_like(gt)).xy))
    assert counted and not any(counted)


def _ramp_result(prompts: Prompts) -> MaskResult:
    """A 256 x 256 image whose decoder logits fall 1 per px along x, 0 at x = 100: mask x < 100."""
    logits = np.tile(100.0 - np.arange(256, dtype=np.float32), (256, 1))
    return MaskResult(logits, 1.0, 0, (1.0,), prompts, "ramp", "0" * 64, (256, 256)).with_mask(logits > 0)


@pytest.mark.parametrize("positive", [True, False])
def test_a_click_edit_reaches_past_the_click(positive: bool) -> None:
    """A click d px across the edge moves it to the click (beyond 0) or d / 2 past it (beyond 0.5)."""
    x, d = (120, 21) if positive else (80, 20)  # the mask's last column is x = 99
    prompts = Prompts(points=((float(x), 128.0),), labels=(int(positive),))
    result = _ramp_result(prompts)
    past = x + 5 if positive else x - 5  # 5 px further from the edge than the click
    at_click = local_edits(result, prompts, 3.0)
    beyond = local_edits(result, prompts, 3.0, beyond=0.5)
    assert at_click[128, x] == beyond[128, x] == positive
    assert at_click[128, past] != positive and beyond[128, past] == positive
    assert beyond[128, x + d if positive else x - d] != positive  # not further than d / 2 past it
    changed = at_click != result.mask
    assert np.array_equal(beyond[changed], at_click[changed])  # it only adds to the old edit
    outside = 128 - 3 * d - 2  # a row beyond the edit's reach, 3 d
    assert beyond[outside, x] == result.mask[outside, x]


def test_a_click_edit_spares_the_other_clicks() -> None:
    """Past the click, the edit stops short of a pixel a click of the other sign holds."""
    positive_only = Prompts(points=((120.0, 128.0),), labels=(1,))
    both = positive_only.with_point(126.0, 158.0, positive=False)  # inside the edit past the click
    assert local_edits(_ramp_result(positive_only), positive_only, 3.0, beyond=0.5)[128, 125]
    spared = local_edits(_ramp_result(both), both, 3.0, beyond=0.5)
    assert spared[128, 120] and not spared[128, 125] and not spared[158, 126]

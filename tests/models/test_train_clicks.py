"""The click-training recipe on real dev images: samples, determinism, what it trains, the shipped deltas."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace

import numpy as np
import pytest
import torch

from dermaseg.core.errors import DermasegError
from dermaseg.core.evaluation.dataset import read_dataset
from dermaseg.models import train_clicks as tc
from dermaseg.models.build import TUNED_WEIGHTS
from dermaseg.models.litemedsam import PromptDecoder, load_model

TINY = tc.TrainConfig(steps=3, batch=2, max_rounds=3)


@pytest.fixture(scope="module")
def samples(engine, dev_data):
    cases = read_dataset(dev_data[0].image.parent.parent)
    return tc.prepare(engine, [cases[0], cases[-1]])


def test_samples_are_four_flips_in_the_decoder_frame(samples) -> None:
    assert [s.name for s in samples[:4]] == [samples[0].case_id + sfx for sfx in ("", "-h", "-v", "-h-v")]
    for s in samples:
        assert s.embedding.shape == (1, 256, 64, 64) and s.truth.shape == s.valid.shape == (256, 256)
        assert s.truth.any() and not (s.truth & ~s.valid).any()
    first = samples[0]
    h_flip = samples[1]
    cols = np.flatnonzero(first.valid.any(axis=0))
    w = cols[-1] + 1
    np.testing.assert_array_equal(h_flip.truth[:, :w], first.truth[:, :w][:, ::-1])
    assert not np.allclose(h_flip.embedding, first.embedding)  # each flip is encoded, not flipped


def test_dihedral_adds_the_transposes_flips(engine, dev_data) -> None:
    case = read_dataset(dev_data[0].image.parent.parent)[0]
    eight = tc.prepare(engine, [case], dihedral=True)
    suffixes = ("", "-h", "-v", "-h-v", "-t", "-t-h", "-t-v", "-t-h-v")
    assert [s.name for s in eight] == [case.id + sfx for sfx in suffixes]
    plain, transposed = eight[0], eight[4]
    h, w = np.flatnonzero(plain.valid.any(axis=1))[-1] + 1, np.flatnonzero(plain.valid.any(axis=0))[-1] + 1
    assert transposed.valid[:w, :h].all() and not transposed.valid[w:, :].any()  # the frame is w x h now
    assert not (transposed.truth & ~transposed.valid).any() and transposed.truth.sum() > 0


def test_training_is_deterministic_and_touches_only_the_decoder(samples) -> None:
    a, b = tc.train(samples, TINY, log=False), tc.train(samples, TINY, log=False)
    assert all(torch.equal(a[k], b[k]) for k in a)
    base = PromptDecoder(load_model()).state_dict()
    changed = {k for k in a if not torch.equal(a[k], base[k])}
    assert any(k.startswith("mask_decoder.transformer.") for k in changed)
    assert not any(k.startswith("prompt_encoder.pe_layer") or k == "image_pe" for k in changed)
    other = tc.train(samples, replace(TINY, seed=1), log=False)
    assert any(not torch.equal(a[k], other[k]) for k in changed)


def test_deltas_round_trip(samples, tmp_path) -> None:
    state = tc.train(samples, TINY, log=False)
    path = tmp_path / "w.npz"
    tc.save_deltas(state, path, TINY, ["a", "b"])
    loaded = tc.load_deltas(PromptDecoder(load_model()), path).state_dict()
    for k, v in state.items():
        torch.testing.assert_close(loaded[k], v, atol=1e-3, rtol=0)
    recipe = json.loads(path.with_suffix(".json").read_text())
    assert recipe["config"]["steps"] == TINY.steps and recipe["images"] == ["a", "b"]


def test_shipped_weights_record_their_recipe(dev_data) -> None:
    recipe = json.loads(TUNED_WEIGHTS.with_suffix(".json").read_text())
    assert recipe["images"] == [c.id for c in dev_data]  # trained on the dev set, nothing else
    assert recipe["config"] == {**recipe["config"], "seed": 0}
    with np.load(TUNED_WEIGHTS, allow_pickle=False) as npz:
        assert npz.files and all(npz[k].dtype == np.float16 for k in npz.files)


def test_cross_validation_evaluates_each_fold_on_images_it_did_not_train_on(engine, dev_data, tmp_path) -> None:
    cases = read_dataset(dev_data[0].image.parent.parent)[:4]
    summary = tc.cross_validate(engine, cases, TINY, 2, tmp_path)
    assert set(summary) == {"box/tight", "box/jittered", "box/loose", "clicks", "box-clicks"}
    assert summary["clicks"]["images"] == 4 and len(summary["clicks"]["mIoU_curve"]) == 20
    for k in (0, 1):
        trained = {c.id for i, c in enumerate(cases) if i % 2 != k}
        evaluated = (tmp_path / f"fold{k}" / "clicks" / "per_image.csv").read_text()
        assert not any(i in evaluated for i in trained)
    assert json.loads((tmp_path / "summary.json").read_text())["folds"] == 2
    # the saved fold decoders score again without training (an inference change, measured in minutes)
    assert tc.cross_validate(engine, cases, replace(TINY, steps=10**6), 2, tmp_path, reuse=True) == summary
    assert json.loads((tmp_path / "summary.json").read_text())["config"]["steps"] == TINY.steps
    with pytest.raises(DermasegError, match="held out other images"):
        tc.cross_validate(engine, cases[:3], TINY, 2, tmp_path, reuse=True)
    with pytest.raises(DermasegError, match="nothing to reuse"):
        tc.cross_validate(engine, cases, TINY, 2, tmp_path / "elsewhere", reuse=True)
    shutil.copy(engine.backend.files.decoder, tmp_path / "fold0" / "decoder-tuned-fp32.onnx")  # no mask features
    with pytest.raises(DermasegError, match="predates the decoder's mask_features"):
        tc.cross_validate(engine, cases, TINY, 2, tmp_path, reuse=True)


def test_reuse_folds_needs_folds_on_the_command_line(dev_data, capsys) -> None:
    from dermaseg.webui.cli.main import main

    assert main(["models", "train-clicks", str(dev_data[0].image.parent.parent), "--reuse-folds"]) == 2
    assert "--reuse-folds goes with --folds K" in capsys.readouterr().err


def test_shown_mask_is_what_the_product_would_show() -> None:
    """The training simulator's view of a decoder answer: every click honoured, one lesion, no holes."""
    logits = np.tile(100.0 - np.arange(256, dtype=np.float32), (256, 1))  # mask: x < 100
    raw = logits > 0
    raw[40:60, 40:60] = False  # a hole
    raw[200:210, 200:210] = True  # a stray part
    coords, labels = [[120.5, 128.5], [0.0, 0.0]], [1.0, -1.0]  # a click past the edge, SAM's padding
    shown = tc.shown_mask(raw, logits, coords, labels)
    assert shown[128, 120] and shown[50, 50] and not shown[205, 205]
    box = tc.shown_mask(raw, logits, [[10.0, 10.0], [240.0, 240.0]], [2.0, 3.0])  # a box: largest part kept
    assert box[50, 50] and box[128, 50] and not box[128, 120]


def test_training_on_shown_masks_runs(samples) -> None:
    state = tc.train(samples, replace(TINY, click_shown=True, max_rounds=4), log=False)
    plain = tc.train(samples, replace(TINY, max_rounds=4), log=False)
    assert any(not torch.equal(state[k], plain[k]) for k in state)  # other clicks, other training

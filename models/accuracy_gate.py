"""The accuracy gate of a runtime variant: box Dice and clicks NoC@90 / mIoU@1 against ORT fp32, per image.

    python -m dermaseg.models.accuracy_gate DATASET [--variant onnx/float] [--variant openvino:int8:bf16/int8] ...
        [--folds CV_DIR] [--start I] [--limit N] [--json FILE]

A variant is BACKEND[:ENCODER[:PRECISION]][/TUNED]: the runtime, OpenVINO's encoder and precision, and the
tuned decoder's precision (`Settings.tuned_decoder`: auto, int8, float).

The same protocol functions as `dermaseg evaluate` (`core.evaluation`): the ground-truth box + 5 px
("tight") answered through the product's path, and the clicks protocol with the same seeds, stopped once
IoU >= 0.90 (exact for NoC@85, NoC@90 and mIoU@1, several times faster than the full 20-click curves).
Variants are interleaved image by image, so a run cut short still compares them on the same images; the
JSON is rewritten after every image. A variant passes when its box Dice is >= the first variant's - 0.003
and its NoC@90 <= the first's + 0.1 (issue 18), on all images and on those held out from int8 calibration
(odd positions, `quantize_openvino.calibration_split`). The tuned click decoder was trained on the dev set:
click figures there are in-sample, so they compare encoders under one decoder, not the decoder itself.
`--folds CV_DIR` scores each image with the decoder of the cross-validation fold that held it out instead
(`dermaseg models train-clicks DATASET --folds K --cv-out CV_DIR`; its int8 copy made as the build makes
the shipped one): the out-of-fold gate of a change to the decoder.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path

import numpy as np

from dermaseg.core.evaluation import protocols as ev
from dermaseg.core.evaluation.dataset import read_dataset
from dermaseg.core.image import load_image
from dermaseg.core.interactive.session import InteractiveSession
from dermaseg.core.segment.artifacts import VariantFiles, file_sha256, resolve_variant
from dermaseg.core.segment.backends import openvino as bov
from dermaseg.core.segment.backends.onnx_runtime import OnnxBackend
from dermaseg.core.segment.embedding_cache import EmbeddingCache
from dermaseg.core.segment.prompts import Prompts
from dermaseg.core.segment.segmenter import Engine, _open_backend
from dermaseg.core.settings import Settings
from dermaseg.models.build import TUNED_DECODERS, TUNED_INT8
from dermaseg.models.export_onnx import quantize_int8

DICE_TOLERANCE = 0.003
NOC90_TOLERANCE = 0.1
MAX_CLICKS = 20


def open_variant(spec: str, settings: Settings, fold: Path | None = None) -> Engine:
    """ "onnx" or "openvino[:int8|fp32[:bf16|f32]]", then optionally "/auto|int8|float" (the tuned
    decoder) -> an engine with a memory-only embedding cache; `fold`: with that cross-validation fold's
    tuned decoder (a `train-clicks --cv-out` fold folder) instead of the shipped one."""
    runtime, _, tuned = spec.partition("/")
    backend, *rest = runtime.split(":")
    s = replace(settings, backend=backend, tuned_decoder=tuned or settings.tuned_decoder)
    if rest:
        s = replace(s, openvino_encoder=rest[0], openvino_precision=rest[1] if len(rest) > 1 else "auto")
    cache = EmbeddingCache(None, 64 * 1024 * 1024)
    if fold is None:
        return Engine(_open_backend(s), cache)
    files = fold_decoder(resolve_variant(s.models_dir, s.variant), fold, int8=s.tuned_decoder != "float")
    if backend == "onnx":
        return Engine(OnnxBackend(files, s.threads), cache)
    return Engine(bov.OpenVinoBackend(files, bov.choose_encoder(s, files), s.threads), cache)


def fold_decoder(files: VariantFiles, fold: Path, int8: bool) -> VariantFiles:
    """`files` with the tuned decoder of a cross-validation fold: its fp32 ONNX file, or (`int8`) its
    int8 copy, made beside it by the build's own quantisation at every run (~5 s; a copy kept from an
    earlier run may have been made another way: one made by an experiment skewed a gate once)."""
    path = fold / TUNED_DECODERS["fp32"]
    if int8:
        quantised = fold / TUNED_INT8
        quantize_int8(path, quantised)
        path = quantised
    return replace(files, tuned_decoder=path, tuned_decoder_sha256=file_sha256(path))


def read_folds(cv_dir: Path) -> dict[str, Path]:
    """Image id -> the fold folder whose decoder never saw it (`fold<k>/fold.json` of a cross-validation)."""
    held_out = {}
    for record in sorted(cv_dir.glob("fold*/fold.json")):
        held_out |= dict.fromkeys(json.loads(record.read_text())["held_out"], record.parent)
    if not held_out:
        raise SystemExit(f"{cv_dir}: no fold*/fold.json (dermaseg models train-clicks DATASET --folds K --cv-out DIR)")
    return held_out


def score_image(engine: Engine, image_path: Path, gt: np.ndarray, index: int, seed: int = 0) -> dict[str, float]:
    """Box Dice (GT box + 5 px), NoC@85, NoC@90 and IoU@1 of one image, seeded as `dermaseg evaluate` is."""
    segmenter = engine.segmenter()
    segmenter.set_image(load_image(image_path))
    rng = np.random.default_rng([seed, index])
    box = ev.box_for("tight", gt, rng)
    dice = ev.score_masks(gt, InteractiveSession(segmenter).predict(Prompts(box=box)).mask).dice
    trace = ev.run_clicks(
        ev.predictor("auto", segmenter),
        gt,
        max_clicks=MAX_CLICKS,
        rng=np.random.default_rng([seed, index, 1]),
        stop_at=0.90,
    )
    return {
        "box_dice": float(dice),
        "NoC@85": ev.noc(trace.ious, 0.85, MAX_CLICKS),
        "NoC@90": ev.noc(trace.ious, 0.90, MAX_CLICKS),
        "IoU@1": float(trace.ious[0]),
    }


def summarise(per_image: dict[str, dict[str, dict[str, float]]], ids: list[str]) -> dict[str, dict[str, float]]:
    """Per variant: means over `ids` (those scored by every variant)."""
    out = {}
    for variant, rows in per_image.items():
        done = [i for i in ids if i in rows]
        if not done:
            continue
        out[variant] = {"images": len(done)} | {
            k: round(float(np.mean([rows[i][k] for i in done])), 4) for k in ("box_dice", "NoC@85", "NoC@90", "IoU@1")
        }
    ref = next(iter(out.values()), None)
    for s in out.values():
        s["passes"] = bool(
            ref is not None
            and s["box_dice"] >= ref["box_dice"] - DICE_TOLERANCE
            and s["NoC@90"] <= ref["NoC@90"] + NOC90_TOLERANCE
        )
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("dataset", type=Path)
    p.add_argument("--variant", action="append", help="onnx (first: the reference), openvino:int8:bf16, ...")
    p.add_argument("--start", type=int, default=0, help="first image (dataset order): split a run over processes")
    p.add_argument("--limit", type=int, help="end before this image (dataset order)")
    p.add_argument("--json", type=Path)
    p.add_argument("--folds", type=Path, help="score each image with its cross-validation fold's decoder")
    args = p.parse_args(argv)
    variants = args.variant or ["onnx", "openvino:int8:bf16", "openvino:fp32:bf16"]
    cases = read_dataset(args.dataset)
    held_out = {c.id for c in cases[1::2]}
    first, cases = args.start, cases[: args.limit]
    settings = Settings.from_env()
    folds = read_folds(args.folds) if args.folds else {c.id: None for c in cases}
    engines = {(v, f): open_variant(v, settings, f) for v in variants for f in dict.fromkeys(folds.values())}
    per_image: dict[str, dict[str, dict[str, float]]] = {v: {} for v in variants}
    result: dict = {}
    for index, case in list(enumerate(cases))[first:]:
        gt = case.load_mask()
        for v in variants:
            per_image[v][case.id] = score_image(engines[v, folds[case.id]], case.image, gt, index)
        done = [c.id for c in cases[first : index + 1]]
        result = {
            "all": summarise(per_image, done),
            "held_out": summarise(per_image, [i for i in done if i in held_out]),
            "per_image": per_image,
        }
        if args.json:
            args.json.write_text(json.dumps(result, indent=1))
        print(case.id, {v: per_image[v][case.id] for v in variants}, flush=True)
    for subset in ("all", "held_out"):
        for v, s in result[subset].items():
            print(f"{subset:<9} {v:<22} " + " ".join(f"{k} {val}" for k, val in s.items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Encoder and decoder speed of ONNX Runtime against the OpenVINO variants, interleaved in one process.

    python -m dermaseg.models.bench_backends --images DIR [--n-images 6] [--runs 24] [--json FILE]

No torch in this process (its thread pool would inflate every figure). Each round times every variant
once, in an order rotated round by round, on the next image, so load from other jobs falls on all
variants alike: on a shared machine the ratios to ORT fp32 are what holds, the milliseconds less so.
Encoders: ORT fp32; OpenVINO fp32 ONNX in f32 and in bf16; the NNCF int8 IR in bf16 and f32 (those the
machine can run and the build made). Decoders: the variant's tuned decoder (else the bundled one) for a
click alone (one point + SAM's padding point) and for a box, on ORT and on OpenVINO f32 / bf16.
"""

from __future__ import annotations

import argparse
import json
import platform
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np

from dermaseg.core.errors import ModelArtifactError
from dermaseg.core.evaluation.dataset import box_from_mask, read_dataset
from dermaseg.core.image import load_image
from dermaseg.core.segment.artifacts import resolve_variant
from dermaseg.core.segment.backends import openvino as bov
from dermaseg.core.segment.backends.onnx_runtime import OnnxBackend
from dermaseg.core.segment.preprocess import DECODER_INPUTS, LOW_RES_SIZE, encoder_input
from dermaseg.core.segment.prompts import Prompts
from dermaseg.core.segment.segmenter import decoder_points
from dermaseg.core.settings import Settings
from dermaseg.core.timing import call_ms, latency_stats


def interleaved(fns: dict[str, Callable[[int], object]], runs: int, warmup: int = 1) -> dict[str, list[float]]:
    """Milliseconds per call of each `fns[name](i)` (i: the run index), `runs` rounds, variants rotated."""
    names = list(fns)
    for name in names:
        for i in range(warmup):
            fns[name](i)
    times: dict[str, list[float]] = {n: [] for n in names}
    for r in range(runs):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            times[name].append(call_ms(lambda name=name, r=r: fns[name](r)))
    return times


def encoders(settings: Settings) -> dict[str, Callable[[np.ndarray], np.ndarray]]:
    """Every encoder variant this machine and build can run, name -> encode."""
    files = resolve_variant(settings.models_dir, settings.variant)
    out = {"ort-fp32": OnnxBackend(files, settings.threads).encode}
    precisions = ["f32"] + (["bf16"] if bov.best_precision(bov.import_openvino().Core()) == "bf16" else [])
    kinds = ["fp32"] + (["int8"] if bov.openvino_int8_encoder(settings.models_dir) is not None else [])
    for kind in kinds:
        for precision in precisions:
            s = replace(settings, openvino_encoder=kind, openvino_precision=precision)
            backend = bov.OpenVinoBackend(files, bov.choose_encoder(s, files), settings.threads)
            out[f"ov-{kind}-{precision}"] = backend.encode
    return out


def decoders(settings: Settings) -> dict[str, Callable[[dict[str, np.ndarray]], object]]:
    """The variant's tuned (else bundled) decoder on ORT (float, and int8 where built) and on OpenVINO
    f32 / bf16, name -> run(feed)."""
    files = resolve_variant(settings.models_dir, settings.variant)
    path = files.tuned_decoder or files.decoder
    out: dict[str, Callable[[dict[str, np.ndarray]], object]] = {}
    for name, tuned in (("ort", "float"), ("ort-int8", "int8")):
        try:
            ort_files = resolve_variant(settings.models_dir, settings.variant, tuned=tuned)
        except ModelArtifactError:
            continue  # no int8 tuned decoder in this build
        ort_backend = OnnxBackend(ort_files, settings.threads, encoder=False)
        session = ort_backend._tuned_decoder or ort_backend._decoder  # noqa: SLF001 - the same session decode runs
        out[name] = lambda feed, session=session: session.run(None, feed)
    ov = bov.import_openvino()
    core = ov.Core()
    for precision in ["f32"] + (["bf16"] if bov.best_precision(core) == "bf16" else []):
        config = {"INFERENCE_NUM_THREADS": settings.threads, "PERFORMANCE_HINT": "LATENCY"}
        compiled = core.compile_model(
            core.read_model(str(path)), "CPU", config | {"INFERENCE_PRECISION_HINT": precision}
        )
        request = compiled.create_infer_request()
        out[f"ov-{precision}"] = lambda feed, req=request: req.infer(feed)
    return out


def run(settings: Settings, dataset: Path, n_images: int, runs: int) -> dict:
    """Figures of every encoder and decoder variant; ratios are p50 / the ORT p50."""
    cases = read_dataset(dataset)[:n_images]
    images = [load_image(c.image) for c in cases]
    xs = [encoder_input(img.rgb) for img in images]
    enc = encoders(settings)
    enc_times = interleaved({n: (lambda i, f=f: f(xs[i % len(xs)][0])) for n, f in enc.items()}, runs)
    embeddings = [enc["ort-fp32"](x) for x, _ in xs]
    feeds = {"click": [], "box": []}
    no_mask = (np.zeros((1, 1, LOW_RES_SIZE, LOW_RES_SIZE), np.float32), np.zeros(1, np.float32))
    for case, img, (_, t), emb in zip(cases, images, xs, embeddings, strict=True):
        box = box_from_mask(case.load_mask())
        centre = ((box[0] + box[2]) / 2, (box[1] + box[3]) / 2)
        for kind, prompts in (("click", Prompts(points=(centre,), labels=(1,))), ("box", Prompts(box=box))):
            coords, labels = decoder_points(prompts.validated(img.width, img.height), t)
            feeds[kind].append(dict(zip(DECODER_INPUTS, (emb, coords, labels, *no_mask), strict=True)))
    dec = decoders(settings)
    result: dict = {
        "machine": {"platform": platform.platform(), "processor": platform.processor(), "threads": settings.threads},
        "images": [c.id for c in cases],
        "runs": runs,
        "encoder": {n: latency_stats(v, decimals=1) for n, v in enc_times.items()},
    }
    for kind, kind_feeds in feeds.items():
        times = interleaved({n: (lambda i, f=f, fs=kind_feeds: f(fs[i % len(fs)])) for n, f in dec.items()}, runs)
        result[f"decoder_{kind}"] = {n: latency_stats(v, decimals=1) for n, v in times.items()}
    for section in [k for k in result if k == "encoder" or k.startswith("decoder_")]:
        ref = next(iter(result[section].values()))["p50_ms"]
        for s in result[section].values():
            s["ratio"] = round(s["p50_ms"] / ref, 3)
    return result


def table(result: dict) -> str:
    lines = [f"{'what':<16} {'variant':<14} {'p50 ms':>8} {'p95 ms':>8} {'ratio':>6} {'n':>4}"]
    for section in [k for k in result if k == "encoder" or k.startswith("decoder_")]:
        for name, s in result[section].items():
            lines.append(
                f"{section:<16} {name:<14} {s['p50_ms']:>8.1f} {s['p95_ms']:>8.1f} {s['ratio']:>6.3f} {s['n']:>4}"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--images", type=Path, required=True, help="dataset folder, e.g. ../shared/data/dermoscopy-dev")
    p.add_argument("--n-images", type=int, default=6)
    p.add_argument("--runs", type=int, default=24, help="timed runs per variant (images cycled)")
    p.add_argument("--json", type=Path, help="write the figures as JSON")
    args = p.parse_args(argv)
    result = run(Settings.from_env(), args.images, args.n_images, args.runs)
    print(table(result))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

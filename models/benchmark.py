"""`dermaseg bench`: the engine's speed and memory, with the torch model measured in the same run.

Timings are wall-clock on this process; figures are medians and 95th percentiles in milliseconds.
The ONNX part runs first, so the peak RSS it reports is not inflated by torch.
"""

from __future__ import annotations

import argparse
import json
import resource
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from dermaseg.core.embedding_cache import EmbeddingCache
from dermaseg.core.image import LesionImage, load_image
from dermaseg.core.preprocess import encoder_input
from dermaseg.core.prompts import Prompts
from dermaseg.core.segmenter import Engine, decoder_points
from dermaseg.core.settings import Settings


def _timed(fn: Callable[[], object], n: int) -> list[float]:
    out = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t) * 1e3)
    return out


def _stats(ms: list[float]) -> dict[str, float]:
    return {"p50_ms": round(float(np.median(ms)), 2), "p95_ms": round(float(np.percentile(ms, 95)), 2), "n": len(ms)}


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


def _cases(images: Path | None, limit: int) -> list[tuple[LesionImage, tuple[float, float, float, float]]]:
    if images is None:
        from dermaseg.models.build import synthetic_parity_cases

        return [(c.image, c.box) for c in synthetic_parity_cases(limit)]
    from dermaseg.core.dataset import box_from_mask, read_dataset

    return [(load_image(c.image), box_from_mask(c.load_mask(), 5)) for c in read_dataset(images)[:limit]]


def _decoder_call(backend, emb: np.ndarray, points: tuple[np.ndarray, np.ndarray]) -> Callable[[], object]:
    """The decoder the app runs (the tuned one when the variant has it: the same graph, other weights)."""
    no_mask, no = np.zeros((1, 1, 256, 256), np.float32), np.zeros(1, np.float32)
    return lambda: backend.decode(emb, *points, no_mask, no, tuned=backend.has_tuned_decoder)


def measure_onnx(settings: Settings, cases: list, repeats: int) -> dict[str, dict]:
    backend = Engine.open(settings).backend
    enc, dec, p2m, mem_hit, disk_hit = [], [], [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        engine = Engine(backend, EmbeddingCache(Path(tmp)))
        for image, box in cases:
            x, t = encoder_input(image.rgb)
            backend.encode(x)  # warm-up on this input size
            enc += _timed(lambda x=x: backend.encode(x), 3)
            seg = engine.segmenter()
            seg.set_image(image)
            emb, _ = engine.embedding(image)
            dec += _timed(_decoder_call(backend, emb, decoder_points(Prompts(box=box), t)), repeats)
            p2m += _timed(lambda seg=seg, box=box: seg.predict(Prompts(box=box)), repeats)
            mem_hit += _timed(lambda seg=seg, image=image: seg.set_image(image), 5)
            disk_hit += _timed(
                lambda image=image: Engine(backend, EmbeddingCache(Path(tmp))).segmenter().set_image(image), 5
            )
    return {
        "encoder": _stats(enc),
        "decoder": _stats(dec),
        "prompt_to_mask": _stats(p2m),
        "set_image_memory_hit": _stats(mem_hit),
        "set_image_disk_hit": _stats(disk_hit),
        "_model_id": {"id": backend.model_id},  # type: ignore[dict-item]
    }


def measure_torch(cases: list, repeats: int) -> dict[str, dict]:
    import torch

    from dermaseg.models.litemedsam import load_model, reference_decode

    torch.set_num_threads(2)
    model = load_model()
    enc, dec = [], []
    with torch.no_grad():
        for image, box in cases:
            x, t = encoder_input(image.rgb)
            xt = torch.from_numpy(x)
            model.image_encoder(xt)
            enc += _timed(lambda xt=xt: model.image_encoder(xt), 3)
            emb = model.image_encoder(xt)
            bt = torch.from_numpy(t.to_model(np.array(box).reshape(2, 2)).reshape(1, 4))
            dec += _timed(lambda emb=emb, bt=bt: reference_decode(model, emb, None, None, bt, None), repeats)
    return {"encoder": _stats(enc), "decoder": _stats(dec)}


def run_benchmark(settings: Settings, args: argparse.Namespace) -> int:
    cases = _cases(args.images, args.max_images)
    onnx = measure_onnx(settings, cases, args.repeats)
    model_id = onnx.pop("_model_id")["id"]
    rss = round(_peak_rss_mb(), 1)
    ref = {} if args.no_torch else measure_torch(cases, max(5, args.repeats // 3))
    rows = []
    for name, s in onnx.items():
        r = ref.get(name)
        ratio = round(r["p50_ms"] / s["p50_ms"], 2) if r else None
        rows.append((name, s["p50_ms"], s["p95_ms"], r["p50_ms"] if r else None, ratio))
    print(f"\nmodel {model_id}; {len(cases)} images; ONNX Runtime threads={settings.threads}")
    print(f"{'operation':<22}{'p50 ms':>10}{'p95 ms':>10}{'torch p50':>12}{'speed-up':>10}")
    for name, p50, p95, tp50, ratio in rows:
        print(f"{name:<22}{p50:>10.2f}{p95:>10.2f}{tp50 if tp50 is not None else '-':>12}{ratio or '-':>10}")
    print(f"{'peak RSS (ONNX part)':<22}{rss:>10.1f} MB")
    if args.json:
        payload = {"model_id": model_id, "images": len(cases), "onnx": onnx, "torch": ref, "peak_rss_mb": rss}
        args.json.write_text(json.dumps(payload, indent=2))
    return 0

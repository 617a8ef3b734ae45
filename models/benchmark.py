"""The torch reference of `dermaseg bench`: LiteMedSAM's encoder and box decoder in torch, on the same
images, run in a process of its own so that torch's thread pool never shares a process with the runtime.

    python -m dermaseg.models.benchmark --images DIR [--max-images 6] [--repeats 10] --json FILE

Writes {"encoder": {p50_ms, p95_ms, n}, "decoder": {...}}.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from dermaseg.core.evaluation.dataset import box_from_mask, read_dataset
from dermaseg.core.image import load_image
from dermaseg.core.segment.preprocess import encoder_input
from dermaseg.core.timing import calls_ms, latency_stats


def measure_torch(images: Path, max_images: int, repeats: int, threads: int = 2) -> dict[str, dict]:
    """Encoder (3 runs per image) and box decoder (`repeats` per image) of the torch model, ms."""
    import torch

    from dermaseg.models.litemedsam import load_model, reference_decode

    torch.set_num_threads(threads)
    model = load_model()
    enc, dec = [], []
    with torch.no_grad():
        for case in read_dataset(images)[:max_images]:
            x, t = encoder_input(load_image(case.image).rgb)
            xt = torch.from_numpy(x)
            model.image_encoder(xt)  # warm-up at this input
            enc += calls_ms(lambda xt=xt: model.image_encoder(xt), 3)
            emb = model.image_encoder(xt)
            box = np.array(box_from_mask(case.load_mask(), 5)).reshape(2, 2)
            bt = torch.from_numpy(t.to_model(box).reshape(1, 4))
            dec += calls_ms(lambda emb=emb, bt=bt: reference_decode(model, emb, None, None, bt, None), repeats)
    return {"encoder": latency_stats(enc), "decoder": latency_stats(dec)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=Path, required=True, help="dataset folder (manifest.csv, or images/ + masks/)")
    ap.add_argument("--max-images", type=int, default=6)
    ap.add_argument("--repeats", type=int, default=10, help="decoder runs per image")
    ap.add_argument("--json", type=Path, required=True)
    args = ap.parse_args(argv)
    args.json.write_text(json.dumps(measure_torch(args.images, args.max_images, args.repeats), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

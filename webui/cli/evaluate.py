"""`dermaseg evaluate`: score box and click prompting on a dataset with ground-truth masks."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from dermaseg.core.evaluation.protocols import METHODS


def register(subparsers: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    e = subparsers.add_parser(
        "evaluate",
        help="score box / click prompting on a dataset (manifest.csv or images/ + masks/)",
        description="Box protocol: ground-truth box + 5 px, jittered and loosened boxes. Clicks protocol: "
        "RITM/SAM click simulation (NoC@85/90, mIoU@1..5), ideal and jittered clicks. box-clicks: a box "
        "then corrective clicks.",
        parents=[common],
    )
    e.add_argument("dataset", type=Path)
    e.add_argument("--protocol", choices=["box", "clicks", "box-clicks"], required=True)
    e.add_argument(
        "--method",
        action="append",
        choices=list(METHODS),
        help="click method(s); default auto: the variant's own (refine with a fine-tuned decoder, else translate)",
    )
    e.add_argument("--max-clicks", type=int, default=20)
    e.add_argument("--jitter", type=float, default=0.0, help="click jitter std in px (default 0: ideal clicks)")
    e.add_argument("--box-jitter", type=float, default=0.1, help="box edge jitter / loosening, fraction of side")
    e.add_argument("--seed", type=int, default=0)
    e.add_argument("--limit", type=int, help="evaluate only the first N images")
    e.add_argument("--save-masks", action="store_true", help="write predicted masks (PNG 0/255) under OUT/masks/")
    e.add_argument("--out", type=Path, required=True)
    e.set_defaults(run=_evaluate)


def _evaluate(args: argparse.Namespace) -> int:
    from dermaseg.core.evaluation.dataset import read_dataset
    from dermaseg.core.evaluation.report import EvalConfig, run
    from dermaseg.core.segment.segmenter import Engine
    from dermaseg.webui.cli.main import settings_from

    cases = read_dataset(args.dataset)[: args.limit]
    settings = settings_from(args)
    config = EvalConfig(
        protocol=args.protocol,
        methods=tuple(args.method or ("auto",)),
        max_clicks=args.max_clicks,
        jitter=args.jitter,
        box_jitter=args.box_jitter,
        seed=args.seed,
        save_masks=args.save_masks,
        max_pixels=settings.max_pixels,
    )
    report = run(Engine.open(settings), cases, config, args.out)
    for name, s in report.summary.items():
        print(name, json.dumps({k: round(v, 4) for k, v in s.items() if isinstance(v, float)}))
    print(f"wrote {args.out}/per_image.csv, summary.json" + ("" if args.protocol == "box" else ", miou_vs_clicks.png"))
    return 0

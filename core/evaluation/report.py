"""Run an evaluation protocol over a dataset and write its report: per-image CSV, summary JSON, a plot
of mIoU against the number of clicks (one line per method) and, optionally, the predicted masks."""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from dermaseg.core.evaluation import protocols as ev
from dermaseg.core.evaluation.dataset import DatasetCase
from dermaseg.core.image import DEFAULT_MAX_PIXELS, load_image
from dermaseg.core.interactive.session import InteractiveSession
from dermaseg.core.segment.prompts import Prompts
from dermaseg.core.segment.segmenter import Engine

PROTOCOLS = ("box", "clicks", "box-clicks")


@dataclass(frozen=True)
class EvalConfig:
    """What to run. jitter: click jitter std in px (0: ideal clicks; in box-clicks, > 0 also jitters
    the starting box); box_jitter: fraction of the box side for jittered/loosened boxes; seed: all randomness;
    max_pixels: largest image accepted, width x height (`Settings.max_pixels`)."""

    protocol: str
    methods: tuple[str, ...] = ("auto",)
    max_clicks: int = 20
    jitter: float = 0.0
    box_jitter: float = 0.1
    seed: int = 0
    save_masks: bool = False
    max_pixels: int = DEFAULT_MAX_PIXELS


@dataclass
class EvalReport:
    """Per-image rows (dicts of CSV columns) and per-method summaries."""

    rows: list[dict[str, object]] = field(default_factory=list)
    summary: dict[str, dict[str, object]] = field(default_factory=dict)


def run(engine: Engine, cases: list[DatasetCase], config: EvalConfig, out: Path) -> EvalReport:
    """Evaluate `cases` with `config`, writing everything under `out`; returns the report."""
    if config.protocol not in PROTOCOLS:
        raise ValueError(f"unknown protocol {config.protocol!r}: use one of {PROTOCOLS}")
    out.mkdir(parents=True, exist_ok=True)
    report = EvalReport()
    curves: dict[str, list[tuple[float, ...]]] = {}
    box_scores: dict[str, list[ev.Scores]] = {}
    for index, case in enumerate(tqdm(cases, desc=f"evaluate {config.protocol}", unit="image")):
        image = load_image(case.image, max_pixels=config.max_pixels)
        segmenter = engine.segmenter()
        segmenter.set_image(image)
        gt = case.load_mask()
        rng = np.random.default_rng([config.seed, index])
        if config.protocol == "box":
            for kind in ev.BOX_KINDS:
                box = ev.box_for(kind, gt, rng, config.box_jitter)
                mask = InteractiveSession(segmenter).predict(Prompts(box=box)).mask
                s = ev.score_masks(gt, mask)
                box_scores.setdefault(kind, []).append(s)
                report.rows.append({"id": case.id, "method": kind, "box": _fmt_box(box), **_scores_row(s)})
                _save(config, out, kind, case, mask)
            continue
        for method in config.methods:
            for jitter in (config.jitter,):
                name = method if jitter == 0 else f"{method}+jitter{jitter:g}px"
                box = None
                if config.protocol == "box-clicks":
                    box = ev.box_for("jittered" if jitter else "tight", gt, rng, config.box_jitter)
                n = config.max_clicks
                trace = ev.run_clicks(
                    ev.predictor(method, segmenter),
                    gt,
                    max_clicks=config.max_clicks,
                    box=box,
                    jitter=jitter,
                    rng=np.random.default_rng([config.seed, index, 1]),
                )
                curves.setdefault(name, []).append(trace.ious)
                s = ev.score_masks(gt, trace.final_mask)
                report.rows.append(
                    {
                        "id": case.id,
                        "method": name,
                        **{f"NoC@{round(t * 100)}": ev.noc(trace.ious, t, n) for t in ev.NOC_THRESHOLDS},
                        **{f"IoU@{k}": round(trace.ious[k - 1], 5) for k in ev.MIOU_AT if k <= config.max_clicks},
                        **_scores_row(s),
                        "ious": " ".join(f"{v:.4f}" for v in trace.ious),
                    }
                )
                _save(config, out, name, case, trace.final_mask)
    for name, scores in box_scores.items():
        report.summary[name] = ev.summarise_scores(scores)
    for name, traces in curves.items():
        report.summary[name] = ev.summarise_clicks(traces, config.max_clicks)
    write(report, config, out)
    return report


def write(report: EvalReport, config: EvalConfig, out: Path) -> None:
    """per_image.csv, summary.json and (click protocols) miou_vs_clicks.png under `out`."""
    columns: list[str] = []
    for row in report.rows:
        columns += [k for k in row if k not in columns]
    with open(out / "per_image.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows(report.rows)
    meta = {k: v for k, v in config.__dict__.items() if k != "save_masks"}
    (out / "summary.json").write_text(json.dumps({"config": meta, "methods": report.summary}, indent=2) + "\n")
    if config.protocol != "box":
        plot_curves(
            {m: s["mIoU_curve"] for m, s in report.summary.items()},  # type: ignore[misc]
            out / "miou_vs_clicks.png",
            title=f"{config.protocol} protocol",
        )


def plot_curves(curves: dict[str, list[float]], path: Path, title: str = "") -> None:
    """mIoU against number of clicks, one line per method, to a small PNG (matplotlib, Agg)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 3.6), dpi=100)
    for name, curve in curves.items():
        ax.plot(range(1, len(curve) + 1), curve, marker=".", label=name)
    ax.axhline(0.9, color="grey", lw=0.6, ls="--")
    ax.set(xlabel="number of clicks", ylabel="mIoU", title=title, ylim=(0, 1))
    ax.xaxis.set_major_locator(plt.MaxNLocator(integer=True))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _scores_row(s: ev.Scores) -> dict[str, float]:
    return {
        "dice": round(s.dice, 5),
        "jaccard": round(s.jaccard, 5),
        "thresholded_jaccard": round(s.thresholded_jaccard, 5),
    }


def _fmt_box(box: tuple[float, float, float, float]) -> str:
    return " ".join(f"{v:.1f}" for v in box)


def _save(config: EvalConfig, out: Path, method: str, case: DatasetCase, mask: np.ndarray) -> None:
    if config.save_masks:
        folder = out / "masks" / method
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(mask.astype(np.uint8) * 255, mode="L").save(folder / f"{case.image.stem}.png")

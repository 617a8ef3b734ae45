"""Agreement of the mask-based asymmetry score with the PH2 experts' 0/1/2 asymmetry labels.

    python -m dermaseg.core.evaluation.asymmetry_validation [DEV_DIR]

DEV_DIR holds `manifest.csv` (columns id, image, mask, ..., dataset, diagnosis, asymmetry) and the
masks it names; rows with an empty `asymmetry` are skipped. Prints the 3x3 confusion matrix
(experts in rows, measured score in columns), Spearman's rank correlation, exact agreement, and the
threshold the prevalence rule would pick on this set (for information: the shipped threshold is the
constant `ASYMMETRY_THRESHOLD`, fixed once, so a held-out set checks it honestly).
"""

from __future__ import annotations

import argparse
import csv
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from scipy.stats import spearmanr

from dermaseg.core.annotation.metrics import ASYMMETRY_THRESHOLD, asymmetry_indices, asymmetry_score
from dermaseg.core.evaluation.dataset import dev_data_dir


@dataclass(frozen=True)
class AsymmetryAgreement:
    """Expert vs measured 0/1/2 asymmetry over n lesions.

    confusion[i][j]: lesions the experts scored i and we scored j. spearman_rho / spearman_p from
    scipy.stats.spearmanr; agreement: share of exact matches (0..1); prevalence_threshold: the per-axis
    AI quantile matching the experts' share of asymmetric axes (what the rule picks on this set).
    """

    n: int
    threshold: float
    confusion: tuple[tuple[int, int, int], ...]
    spearman_rho: float
    spearman_p: float
    agreement: float
    prevalence_threshold: float

    def table(self) -> str:
        lines = [
            f"Asymmetry score vs expert labels, n = {self.n}, threshold AI > {self.threshold:.2f}",
            "",
            "            measured 0  measured 1  measured 2",
        ]
        for i, row in enumerate(self.confusion):
            lines.append(f"expert {i}  " + "".join(f"{v:>12d}" for v in row))
        lines += [
            "",
            f"Spearman rho = {self.spearman_rho:.3f} (p = {self.spearman_p:.2g})",
            f"exact agreement = {100 * self.agreement:.1f} %",
            f"prevalence-matching threshold on this set = {self.prevalence_threshold:.3f}",
        ]
        return "\n".join(lines)


def prevalence_threshold(ai_pairs: np.ndarray, labels: np.ndarray) -> float:
    """Per-axis AI quantile at which the share of asymmetric axes equals the experts' share.

    ai_pairs: (n, 2) AI per lesion; labels: (n,) expert 0/1/2 (= number of asymmetric axes).
    """
    share = float(labels.sum()) / (2 * len(labels))
    return float(np.quantile(ai_pairs.ravel(), 1.0 - share))


def agreement(
    ai_pairs: Sequence[tuple[float, float]], labels: Sequence[int], threshold: float = ASYMMETRY_THRESHOLD
) -> AsymmetryAgreement:
    """Compare measured scores (from per-axis AIs and `threshold`) with expert labels 0/1/2."""
    ai = np.asarray(ai_pairs, dtype=np.float64).reshape(-1, 2)
    truth = np.asarray(labels, dtype=np.int64)
    pred = np.array([asymmetry_score(a, b, threshold) for a, b in ai], dtype=np.int64)
    conf = np.zeros((3, 3), dtype=np.int64)
    np.add.at(conf, (truth, pred), 1)
    rho, p = spearmanr(truth, pred)
    return AsymmetryAgreement(
        n=len(truth),
        threshold=threshold,
        confusion=tuple(tuple(int(v) for v in row) for row in conf),
        spearman_rho=float(rho),
        spearman_p=float(p),
        agreement=float((truth == pred).mean()),
        prevalence_threshold=prevalence_threshold(ai, truth),
    )


def labelled_masks(dev_dir: Path) -> Iterable[tuple[str, np.ndarray, int]]:
    """(id, bool mask, expert asymmetry) for every manifest row with an asymmetry label."""
    with open(dev_dir / "manifest.csv", newline="") as f:
        for row in csv.DictReader(f):
            label = (row.get("asymmetry") or "").strip()
            if label:
                mask = np.asarray(Image.open(dev_dir / row["mask"]).convert("L")) > 128
                yield row["id"], mask, int(label)


def validate(dev_dir: Path, threshold: float = ASYMMETRY_THRESHOLD) -> AsymmetryAgreement:
    pairs, labels = [], []
    for _, mask, label in labelled_masks(dev_dir):
        pairs.append(asymmetry_indices(mask))
        labels.append(label)
    if not labels:
        raise ValueError(f"{dev_dir / 'manifest.csv'} has no rows with an asymmetry label")
    return agreement(pairs, labels, threshold)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m dermaseg.core.evaluation.asymmetry_validation", description=__doc__.split("\n")[0]
    )
    ap.add_argument("dev_dir", nargs="?", type=Path, default=dev_data_dir(), help="folder with manifest.csv")
    ap.add_argument("--threshold", type=float, default=ASYMMETRY_THRESHOLD, help="per-axis AI threshold")
    args = ap.parse_args(argv)
    if not (args.dev_dir / "manifest.csv").is_file():
        print(f"no manifest.csv in {args.dev_dir}: pass the dev data folder", file=sys.stderr)
        return 2
    print(validate(args.dev_dir, args.threshold).table())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Folders of images with ground-truth masks: a `manifest.csv` (like the shared dev set) or
`images/` + `masks/` matched by name."""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from dermaseg.core.errors import DermasegError
from dermaseg.core.image import IMAGE_SUFFIXES

DEV_DATA_ENV = "DERMASEG_DEV_DATA"


def dev_data_dir() -> Path | None:
    """The shared dev set for developers, the tests and `dermaseg bench`: `$DERMASEG_DEV_DATA`, else
    `../shared/data/dermoscopy-dev` beside a source checkout; None where neither holds a `manifest.csv`."""
    env = os.environ.get(DEV_DATA_ENV)
    candidates = [Path(env)] if env else []
    candidates.append(Path(__file__).resolve().parents[3] / "shared" / "data" / "dermoscopy-dev")
    return next((p for p in candidates if (p / "manifest.csv").is_file()), None)


@dataclass(frozen=True)
class DatasetCase:
    """One image and its expert mask; `meta` holds the manifest's other columns (strings)."""

    id: str
    image: Path
    mask: Path
    meta: dict[str, str] = field(default_factory=dict)

    def load_mask(self) -> np.ndarray:
        """bool (H, W): pixels > 128 are lesion."""
        return np.asarray(Image.open(self.mask).convert("L")) > 128


def read_dataset(root: Path) -> list[DatasetCase]:
    """Cases of a dataset folder, in manifest (or name) order; DermasegError when there are none."""
    root = Path(root)
    manifest = root / "manifest.csv"
    if manifest.is_file():
        with open(manifest, newline="") as f:
            rows = list(csv.DictReader(f))
        missing = {"id", "image", "mask"} - set(rows[0] if rows else {})
        if missing:
            raise DermasegError(f"{manifest}: missing column(s) {', '.join(sorted(missing))}")
        cases = [
            DatasetCase(
                r["id"],
                root / r["image"],
                root / r["mask"],
                {k: v for k, v in r.items() if k not in ("id", "image", "mask")},
            )
            for r in rows
        ]
    else:
        cases = _pairs_by_name(root)
    if not cases:
        raise DermasegError(f"{root}: no image/mask pairs (expected manifest.csv, or images/ and masks/)")
    return cases


def _pairs_by_name(root: Path) -> list[DatasetCase]:
    images, masks = root / "images", root / "masks"
    if not (images.is_dir() and masks.is_dir()):
        return []
    by_stem: dict[str, Path] = {}
    for m in masks.iterdir():
        if m.suffix.lower() in IMAGE_SUFFIXES:
            stem = m.stem
            for suffix in ("_segmentation", "_lesion", "_mask"):
                stem = stem.removesuffix(suffix)
            by_stem[stem] = m
    return [
        DatasetCase(p.stem, p, by_stem[p.stem])
        for p in sorted(images.iterdir())
        if p.suffix.lower() in IMAGE_SUFFIXES and p.stem in by_stem
    ]


def box_from_mask(mask: np.ndarray, margin: float = 5.0) -> tuple[float, float, float, float]:
    """Bounding box (x0, y0, x1, y1) in pixel edges of a bool (H, W) mask, grown by `margin` px and
    clipped to the image."""
    rows, cols = np.nonzero(mask)
    if rows.size == 0:
        raise DermasegError("the mask is empty: no box can be drawn around it")
    h, w = mask.shape
    return (
        float(max(0.0, cols.min() - margin)),
        float(max(0.0, rows.min() - margin)),
        float(min(w, cols.max() + 1 + margin)),
        float(min(h, rows.max() + 1 + margin)),
    )

"""Shared fixtures. The dev dataset is found in one place: `dev_data`."""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
DEV_DATA_ENV = "DERMASEG_DEV_DATA"


@dataclass(frozen=True)
class DevCase:
    """One row of the shared dev manifest."""

    id: str
    image: Path
    mask: Path
    dataset: str
    diagnosis: int | None
    asymmetry: int | None

    def load_mask(self) -> np.ndarray:
        """Expert mask as bool (H, W)."""
        return np.asarray(Image.open(self.mask).convert("L")) > 128


def find_dev_data() -> Path | None:
    """`$DERMASEG_DEV_DATA`, else `../shared/data/dermoscopy-dev` beside the repository."""
    env = os.environ.get(DEV_DATA_ENV)
    candidates = [Path(env)] if env else []
    candidates.append(REPO.parent / "shared" / "data" / "dermoscopy-dev")
    return next((p for p in candidates if (p / "manifest.csv").is_file()), None)


def _int_or_none(v: str) -> int | None:
    return int(v) if v.strip() else None


@pytest.fixture(scope="session")
def dev_data() -> list[DevCase]:
    """All 65 dev cases, or skip: the dataset lives outside the repository."""
    root = find_dev_data()
    if root is None:
        pytest.skip(f"dev dataset not found: set {DEV_DATA_ENV} or place shared/ beside the repository")
    with open(root / "manifest.csv", newline="") as f:
        return [
            DevCase(
                r["id"],
                root / r["image"],
                root / r["mask"],
                r["dataset"],
                _int_or_none(r.get("diagnosis", "")),
                _int_or_none(r.get("asymmetry", "")),
            )
            for r in csv.DictReader(f)
        ]

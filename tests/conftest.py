"""Shared fixtures. The dev dataset is found in one place: `dev_data`."""

from __future__ import annotations

import csv
import os
import re
import secrets
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from postgres_cluster import PostgresCluster, find_bindir

from dermaseg.core.evaluation.dataset import DEV_DATA_ENV, dev_data_dir

REPO = Path(__file__).resolve().parents[1]
# The developer tools (tests/devtools) import as `devtools` here (pyproject's pythonpath) and in the programs
# the tests start.
os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO / "tests"), os.environ.get("PYTHONPATH")]))


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
    return dev_data_dir()


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


@pytest.fixture(scope="session")
def dev_folder(dev_data: list[DevCase]):
    """`dev_folder(folder, n)`: `folder` (made if needed) holding copies of the first `n` dev images, as a
    project's images; the cases copied. Always a temporary folder, never the repository."""

    def make(folder: Path, n: int) -> list[DevCase]:
        folder.mkdir(parents=True, exist_ok=True)
        for case in dev_data[:n]:
            shutil.copy(case.image, folder / case.image.name)
        return dev_data[:n]

    return make


@pytest.fixture(scope="session")
def models_dir() -> Path:
    """Built model artifacts (`dermaseg models build`, idempotent: a no-op when the manifest is valid).

    Uses the configured cache (DERMASEG_CACHE_DIR or ~/.cache/dermaseg), as the app does.
    """
    from dermaseg.core.settings import Settings

    settings = Settings.from_env()
    try:
        from dermaseg.models.build import build
    except ImportError:  # a runtime-only install cannot export: use what was built before, or fail loudly
        from dermaseg.core.segment.artifacts import read_manifest

        read_manifest(settings.models_dir)  # raises ModelArtifactError with the rebuild hint
        return settings.models_dir
    build(settings.models_dir, coreml=False, log=lambda _: None)
    return settings.models_dir


def _onnx_engine(models_dir: Path, tmp_path_factory: pytest.TempPathFactory, tuned: str):
    """The default variant on ONNX Runtime with the tuned decoder `tuned` (`resolve_variant`), and an
    embedding disk cache private to this test session."""
    from dermaseg.core.segment.artifacts import resolve_variant
    from dermaseg.core.segment.backends.onnx_runtime import OnnxBackend
    from dermaseg.core.segment.embedding_cache import EmbeddingCache
    from dermaseg.core.segment.segmenter import Engine

    backend = OnnxBackend(resolve_variant(models_dir, "default", tuned=tuned))
    return Engine(backend, EmbeddingCache(tmp_path_factory.mktemp("embeddings")))


@pytest.fixture(scope="session")
def engine(models_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    """The default variant on ONNX Runtime, its tuned decoder as the product picks it (`tuned="auto"`)."""
    return _onnx_engine(models_dir, tmp_path_factory, "auto")


@pytest.fixture(scope="session")
def float_engine(models_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    """The same with the float tuned decoder, for tests whose expectations were recorded with it."""
    return _onnx_engine(models_dir, tmp_path_factory, "float")


@pytest.fixture(scope="session")
def skin_box():
    """`skin_box(expert, side=120)`: a box (x0, y0, x1, y1) on normal skin, a corner of the image clear of
    the bool (H, W) expert mask (AssertionError when no corner is)."""

    def box(expert: np.ndarray, side: int = 120) -> tuple[float, float, float, float]:
        hgt, wid = expert.shape
        for x0, y0 in ((20, 20), (wid - side - 20, 20), (20, hgt - side - 20), (wid - side - 20, hgt - side - 20)):
            if not expert[y0 : y0 + side, x0 : x0 + side].any():
                return (float(x0), float(y0), float(x0 + side), float(y0 + side))
        raise AssertionError("no lesion-free corner")

    return box


@pytest.fixture(scope="session")
def postgres_cluster() -> Iterator[PostgresCluster]:
    """One throwaway PostgreSQL server for the whole run (tests/postgres_cluster.py), stopped and deleted at the
    end. Skips where PostgreSQL is not installed, but fails under CI or DERMASEG_REQUIRE_POSTGRES=1 (.ci/run sets
    it), so a run can never pass by skipping the PostgreSQL tests."""
    if find_bindir() is None:
        reason = "PostgreSQL's server programs (initdb, pg_ctl) are not installed (Debian: apt-get install postgresql)"
        required = os.environ.get("CI", "").lower() not in ("", "0", "false")
        if required or os.environ.get("DERMASEG_REQUIRE_POSTGRES") == "1":
            pytest.fail(f"{reason}; required here (CI or DERMASEG_REQUIRE_POSTGRES=1)", pytrace=False)
        pytest.skip(reason)
    with PostgresCluster.create() as cluster:
        yield cluster


@pytest.fixture
def postgres_url(postgres_cluster: PostgresCluster, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh empty database for this test, dropped after it: its SQLAlchemy URL,
    `postgresql+psycopg://postgres:PASSWORD@127.0.0.1:PORT/NAME` (the superuser, password login)."""
    name = (
        f"t_{re.sub(r'[^a-z0-9]+', '_', request.node.name.lower())[:48]}_{secrets.token_hex(4)}"  # readable in the log
    )
    url = postgres_cluster.create_database(name)
    yield url
    postgres_cluster.drop_database(name)

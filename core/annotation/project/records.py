"""The project's nouns (images, annotations, provenance, drafts, reports) and the JSON values they store.

Plain frozen dataclasses with no database in them; `records.dumps` / `records.loads` are the one way a
value becomes the JSON text stored in a column.
"""

from __future__ import annotations

import datetime as dt
import importlib.metadata
import json
import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field, is_dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from dermaseg.core.annotation import coco
from dermaseg.core.calibration import Calibration
from dermaseg.core.errors import StoreError

STATUSES = ("not_started", "in_progress", "done")
EXACT_OUTLINE_TOLERANCE_PX = 0.0  # polygons made by the store itself are the exact pixel-edge outline

Json = Any
T = TypeVar("T")
# A progress wrapper, e.g. `lambda it, total, desc: tqdm(it, total=total, desc=desc)`.
Progress = Callable[[Iterable[T], int, str], Iterable[T]]


def no_progress(it: Iterable[T], total: int, desc: str) -> Iterable[T]:
    return it


def utc_now() -> str:
    """Current time, UTC, ISO 8601 with seconds and a +00:00 offset."""
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def tool_version() -> str:
    """Installed dermaseg version (importlib.metadata), or "unknown" when not installed."""
    try:
        return importlib.metadata.version("dermaseg")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def to_json_value(v: Any) -> Json:
    """Plain JSON values from dicts/lists/tuples/dataclasses/objects with to_dict or to_json.

    Non-finite floats become None (JSON has no NaN) and numpy scalars become Python numbers.
    """
    if v is None or isinstance(v, (str, bool, int)):
        return v
    if isinstance(v, float):
        return v if math.isfinite(v) else None
    if isinstance(v, np.generic):
        return to_json_value(v.item())
    if isinstance(v, np.ndarray):
        return to_json_value(v.tolist())
    if isinstance(v, Mapping):
        return {str(k): to_json_value(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [to_json_value(x) for x in v]
    for method in ("to_dict", "to_json"):
        if callable(getattr(v, method, None)):
            return to_json_value(getattr(v, method)())
    if is_dataclass(v) and not isinstance(v, type):
        return to_json_value(asdict(v))
    raise StoreError(f"cannot store a {type(v).__name__} as JSON")


def dumps(v: Any) -> str:
    return json.dumps(to_json_value(v), separators=(",", ":"), allow_nan=False)


def finite_or_none(v: Json) -> float | None:
    """A JSON number as a finite float, else None (also for bools and ints beyond float range)."""
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return None
    try:
        f = float(v)
    except OverflowError:
        return None
    return f if math.isfinite(f) else None


def loads(s: str | None) -> Json:
    return None if s is None else json.loads(s)


# --------------------------------------------------------------------------------------------------
# Nouns


@dataclass(frozen=True)
class ImageRecord:
    """One image of the project.

    path: relative to the project folder, '/' separators. width/height: upright (EXIF applied) pixels.
    file_sha256: hash of the file's bytes; pixel_sha256: `LesionImage.sha256`, known once loaded.
    status: "not_started", "in_progress" or "done".
    """

    id: int
    path: str
    file_sha256: str
    pixel_sha256: str | None
    width: int
    height: int
    calibration: Calibration | None
    status: str
    added_utc: str


@dataclass(frozen=True)
class Provenance:
    """Where an annotation came from.

    source: "model" (Med-SAM answered prompts), "manual" (drawn or edited by hand) or "import".
    prompts: JSON of the prompts (box, points, labels), None when there were none.
    embedding_sha256: hash of the image embedding the decoder used.
    time_utc: ISO 8601 UTC; tool_version: dermaseg's version; annotator: a person's name or None.
    """

    source: str = "model"
    prompts: Json = None
    model_id: str | None = None
    model_variant: str | None = None
    embedding_sha256: str | None = None
    annotator: str | None = None
    tool_version: str = field(default_factory=tool_version)
    time_utc: str = field(default_factory=utc_now)

    def to_json(self) -> dict[str, Json]:
        return {
            "source": self.source,
            "prompts": to_json_value(self.prompts),
            "model_id": self.model_id,
            "model_variant": self.model_variant,
            "embedding_sha256": self.embedding_sha256,
            "annotator": self.annotator,
            "tool_version": self.tool_version,
            "time_utc": self.time_utc,
        }

    @classmethod
    def from_json(cls, d: Mapping[str, Json]) -> Provenance:
        """Inverse of `to_json`; unknown keys are ignored, non-string fields dropped."""

        def s(key: str) -> str | None:
            v = d.get(key)
            return v if isinstance(v, str) else None

        return cls(
            source=s("source") or "import",
            prompts=d.get("prompts"),
            model_id=s("model_id"),
            model_variant=s("model_variant"),
            embedding_sha256=s("embedding_sha256"),
            annotator=s("annotator"),
            tool_version=s("tool_version") or "unknown",
            time_utc=s("time_utc") or utc_now(),
        )


@dataclass(frozen=True)
class Annotation:
    """One lesion outline on one image.

    rle: the mask (truth), of the image's size. polygons: `Polygons.to_json()` dict (editable
    outline, simplified with `tolerance_px` pixels). metrics: `LesionMetrics.to_dict()` or None.
    version: 1 when inserted, +1 on every change (update, undo, redo); a save names the version it
    was made from (`Project.update_annotation(expected_version=...)`), so none silently replaces another.
    """

    id: int
    image_id: int
    label: str
    rle: coco.Rle
    polygons: Json
    metrics: Json
    tolerance_px: float | None
    provenance: Provenance
    created_utc: str
    updated_utc: str
    version: int = 1

    def mask(self) -> np.ndarray:
        """bool (H, W)."""
        return self.rle.decode()

    @property
    def area_px(self) -> int:
        return self.rle.area


@dataclass(frozen=True)
class ScanReport:
    """What a folder scan found; paths are relative to the project folder."""

    added: tuple[str, ...] = ()
    moved: tuple[tuple[str, str], ...] = ()  # (old path, new path)
    changed: tuple[str, ...] = ()  # same path, different file content
    missing: tuple[str, ...] = ()  # known images whose file is gone (records and annotations kept)
    unreadable: tuple[str, ...] = ()  # image-like files that cannot be read as images (not added)
    refused: tuple[str, ...] = ()  # symlinks leading outside the folder (not added)
    remote: tuple[str, ...] = ()  # shared project: images with no copy here (their pixels come from the database)

    def summary(self) -> str:
        parts = [
            f"{len(v)} {k}"
            for k, v in (
                ("added", self.added),
                ("moved", self.moved),
                ("changed", self.changed),
                ("missing", self.missing),
                ("unreadable", self.unreadable),
                ("refused", self.refused),
                ("only on the server", self.remote),
            )
            if v
        ]
        return ", ".join(parts) if parts else "no changes"


@dataclass(frozen=True)
class ExportReport:
    coco_path: Path
    masks_dir: Path | None
    images: int
    annotations: int
    polygon_annotations: int
    rle_annotations: int
    damaged: tuple[DamagedAnnotation, ...] = ()  # left out: they do not decode (`Project.check --repair`)


@dataclass(frozen=True)
class ImportReport:
    images: int  # images of the project that received annotations
    added: int
    replaced: int  # existing annotations removed (replace mode)
    skipped_duplicates: int
    new_labels: tuple[str, ...]


@dataclass(frozen=True)
class Draft:
    """The work in progress on one image, not yet accepted: enough to put it back after a reload or crash.

    prompts: {"box": [x0, y0, x1, y1] | None, "points": [[x, y], ...], "labels": [1|0, ...], "head": ...}
    in image pixels (the decoder re-runs them). polygons: `Polygons.to_json()` of an outline edited by
    hand, None when the outline is the model's answer to the prompts. tolerance_px: outline simplification.
    """

    image_id: int
    prompts: Json
    polygons: Json
    tolerance_px: float | None
    updated_utc: str


@dataclass(frozen=True)
class DamagedAnnotation:
    """A stored annotation that cannot be decoded; it is left out of listings and exports, never raised."""

    id: int
    image_id: int
    label: str
    reason: str

    def describe(self) -> str:
        return f"annotation {self.id} (image id {self.image_id}, {self.label!r}): {self.reason}"


@dataclass(frozen=True)
class CheckReport:
    """What `Project.check` found, and with repair=True, what it did.

    integrity: the database's own check ("ok" when sound). damaged: annotations that do not decode.
    missing_files: image paths whose file is gone. repaired: (annotation id, how). quarantined: ids
    moved to the `quarantine` table (kept there, with the row as it was).
    """

    integrity: str
    damaged: tuple[DamagedAnnotation, ...]
    missing_files: tuple[str, ...]
    repaired: tuple[tuple[int, str], ...] = ()
    quarantined: tuple[int, ...] = ()

    @property
    def healthy(self) -> bool:
        return self.integrity == "ok" and not self.damaged and not self.missing_files


ROLES = ("annotator", "reviewer")  # a reviewer also annotates


@dataclass(frozen=True)
class User:
    """A named person of a shared project (`users`); never holds the password or its hash."""

    id: int
    name: str
    role: str  # one of ROLES
    created_utc: str
    disabled: bool = False

"""Saving annotations: add, update and delete, each one undoable step, and the version checks that
refuse a save made from an outdated version (`ConflictError`) instead of silently replacing another."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
from sqlalchemy import Connection

from dermaseg.core.annotation import coco
from dermaseg.core.annotation.geometry import Polygons, polygons_to_mask
from dermaseg.core.annotation.project import annotation_rows as rows
from dermaseg.core.annotation.project import history, labels
from dermaseg.core.annotation.project.database import Database
from dermaseg.core.annotation.project.images import image, mark_in_progress
from dermaseg.core.annotation.project.records import (
    EXACT_OUTLINE_TOLERANCE_PX,
    Annotation,
    ImageRecord,
    Json,
    Provenance,
    dumps,
    utc_now,
)
from dermaseg.core.errors import ConflictError, StoreError

UNSET: Any = object()  # an argument not given: the stored value stays


def check_mask(rec: ImageRecord, mask: np.ndarray) -> np.ndarray:
    """`mask` as bool (H, W); StoreError when it is not of the image's size or is empty."""
    m = np.asarray(mask)
    if m.shape != (rec.height, rec.width):
        raise StoreError(
            f"{rec.path}: the mask has shape {m.shape} (rows, cols), "
            f"the image is {rec.width} wide and {rec.height} high"
        )
    m = m.astype(bool, copy=False)
    if not m.any():
        raise StoreError(f"{rec.path}: the mask is empty; delete the annotation instead")
    return m


def add_annotation(
    db: Database,
    image_id: int,
    mask: np.ndarray,
    label: str | None = None,
    *,
    polygons: Polygons | Mapping[str, Json] | None = None,
    metrics: Any = None,
    tolerance_px: float | None = None,
    provenance: Provenance | None = None,
) -> Annotation:
    """Save a new annotation (committed on return) and make it undoable.

    mask: bool (H, W) of the image's size, not empty. label: default the first of the label list.
    polygons: the editable outline (`Polygons` or its JSON); default the exact outline of `mask`.
    metrics: `LesionMetrics` (anything with to_dict()) or a dict. The image becomes "in_progress"
    if it was "not_started".
    """
    rec = image(db, image_id)
    m = check_mask(rec, mask)
    if polygons is None:
        tolerance_px = EXACT_OUTLINE_TOLERANCE_PX if tolerance_px is None else tolerance_px
        polygons = rows.default_polygons(m, tolerance_px)
    rle = coco.Rle.from_mask(m)
    prov = provenance or Provenance(source="manual")
    with db.write() as c:
        label = label if label is not None else labels.first_label(c)
        labels.check_label(c, label)
        ann_id = rows.insert(
            c, image_id, label, rle, dumps(polygons), None if metrics is None else dumps(metrics),
            tolerance_px, prov, utc_now(),
        )  # fmt: skip
        action = history.begin_action(c, image_id, "add")
        history.record(c, action, ann_id, None, rows.snapshot(c, ann_id))
        mark_in_progress(c, image_id)
    return rows.annotation(db, ann_id)


def update_annotation(
    db: Database,
    ann_id: int,
    *,
    mask: np.ndarray | None = None,
    polygons: Polygons | Mapping[str, Json] | None = None,
    label: str | None = None,
    metrics: Any = UNSET,
    tolerance_px: float | None = UNSET,
    provenance: Provenance | None = None,
    expected_version: int | None = None,
) -> Annotation:
    """Change an annotation (committed on return, undoable; its version goes up by one). Unset
    arguments keep their value.

    A new mask without polygons gets its exact outline; new polygons without a mask are
    rasterised (`geometry.polygons_to_mask`) into the new mask, so the two never disagree.
    expected_version: the version the change was made from; when the stored one differs, or the
    annotation was deleted meanwhile, nothing is written and `ConflictError` says who changed it.
    The check and the write are one transaction (BEGIN IMMEDIATE): two processes cannot both pass.
    """
    try:
        old = rows.annotation(db, ann_id)
    except StoreError:
        if expected_version is None:
            raise
        with db.read() as c:
            raise conflict(c, ann_id, expected_version) from None
    rec = image(db, old.image_id)
    if polygons is not None and not isinstance(polygons, Polygons):
        polygons = Polygons.from_json(dict(polygons))
    if mask is None and polygons is not None:
        mask = polygons_to_mask(polygons, rec.height, rec.width)
    m = check_mask(rec, mask) if mask is not None else None
    if m is not None and polygons is None:
        tol = EXACT_OUTLINE_TOLERANCE_PX if tolerance_px is UNSET or tolerance_px is None else tolerance_px
        polygons, tolerance_px = rows.default_polygons(m, tol), tol
    with db.write() as c:
        version = check_version(c, ann_id, expected_version)
        before = rows.snapshot(c, ann_id)
        sets: dict[str, Any] = {"updated_utc": utc_now(), "version": version + 1}
        if m is not None:
            rle = coco.Rle.from_mask(m)
            sets.update(height=rle.height, width=rle.width, rle_counts=rle.counts, area=rle.area)
        if polygons is not None:
            sets["polygons_json"] = dumps(polygons)
        if label is not None:
            labels.check_label(c, label)
            sets["label"] = label
        if metrics is not UNSET:
            sets["metrics_json"] = None if metrics is None else dumps(metrics)
        if tolerance_px is not UNSET:
            sets["tolerance_px"] = tolerance_px
        rows.set_columns(c, ann_id, sets)
        if provenance is not None:
            rows.write_provenance(c, ann_id, provenance)
        action = history.begin_action(c, old.image_id, "update")
        history.record(c, action, ann_id, before, rows.snapshot(c, ann_id))
    return rows.annotation(db, ann_id)


def delete_annotation(db: Database, ann_id: int, *, expected_version: int | None = None) -> None:
    """Delete an annotation (committed on return, undoable).

    expected_version: as in `update_annotation` (ConflictError when it changed or is gone).
    """
    with db.write() as c:
        check_version(c, ann_id, expected_version)
        before = rows.snapshot(c, ann_id)
        action = history.begin_action(c, rows.image_of(c, ann_id), "delete")
        rows.restore(c, ann_id, None)
        history.record(c, action, ann_id, before, None)


def check_version(c: Connection, ann_id: int, expected: int | None) -> int:
    """The stored version of `ann_id` (inside the caller's write transaction); StoreError when it is
    not in the project, ConflictError when `expected` is given and differs (or it was deleted)."""
    version = rows.version_of(c, ann_id)
    if version is None and expected is None:
        raise StoreError(f"annotation id {ann_id}: not in this project")
    if version is None or (expected is not None and version != expected):
        raise conflict(c, ann_id, expected)
    return version


def conflict(c: Connection, ann_id: int, expected: int | None) -> ConflictError:
    """A ConflictError naming who changed `ann_id` and when (or when it was deleted), as far as known."""
    row = rows.last_change(c, ann_id)
    if row is not None:
        return ConflictError(ann_id, expected, row[0], row[2], row[1])
    return ConflictError(ann_id, expected, None, None, history.deleted_utc(c, ann_id))

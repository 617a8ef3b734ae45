"""`dermaseg project check [--repair]`: the database's integrity, damaged annotations, missing image files;
a damaged annotation is mended when it can be, else moved to the `quarantine` table, never deleted."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any

from sqlalchemy import Connection, delete, insert

from dermaseg.core.annotation import coco
from dermaseg.core.annotation.geometry import Polygons, polygons_to_mask
from dermaseg.core.annotation.project import annotation_rows as rows
from dermaseg.core.annotation.project.annotation_rows import ANN_COLUMNS, annotation_damage, rle_damage
from dermaseg.core.annotation.project.database import Database
from dermaseg.core.annotation.project.history import snapshots_of
from dermaseg.core.annotation.project.images import images
from dermaseg.core.annotation.project.records import (
    EXACT_OUTLINE_TOLERANCE_PX,
    CheckReport,
    ImageRecord,
    dumps,
    loads,
    utc_now,
)
from dermaseg.core.annotation.project.schema import annotations, quarantine
from dermaseg.core.errors import GeometryError

_COLS = list(ANN_COLUMNS)
_CONTENT = ("rle_counts", "area", "polygons_json", "metrics_json", "tolerance_px")  # what damage may touch


def check(
    db: Database, missing_files: Callable[[Sequence[ImageRecord]], tuple[str, ...]], repair: bool = False
) -> CheckReport:
    """Check the database (integrity, damaged annotations, missing image files); repair=True mends them.

    A damaged annotation is repaired, in this order, from: the edit history's snapshot of the same
    version (same id and update time: exact); its outline, rasterised into the mask (exact for outlines
    the store made, within the simplification tolerance for the page's); its mask, outlined anew.
    What cannot be repaired is moved to the `quarantine` table with its row as it was, never deleted.
    """
    integrity = db.integrity_check()
    damaged = tuple(rows.damaged_annotations(db))
    missing = missing_files(images(db))
    if not repair or not damaged:
        return CheckReport(integrity, damaged, missing)
    repaired: list[tuple[int, str]] = []
    quarantined: list[int] = []
    with db.write() as c:
        for d in damaged:
            how = _repair_annotation(c, d.id)
            if how is not None:
                repaired.append((d.id, how))
                continue
            c.execute(
                insert(quarantine).values(
                    annotation_id=d.id, image_id=d.image_id, reason=d.reason, row_json=rows.snapshot(c, d.id),
                    time_utc=utc_now(),
                )
            )  # fmt: skip
            c.execute(delete(annotations).where(annotations.c.id == d.id))
            quarantined.append(d.id)
    return CheckReport(integrity, damaged, missing, tuple(repaired), tuple(quarantined))


def _from_history(c: Connection, ann_id: int, row: list[Any]) -> dict[str, Any] | None:
    """The content columns of the history's snapshot of this version (identity and update time equal,
    sound, closest in content), or None when there is none."""
    best: tuple[int, int, list[Any]] | None = None
    for change_id, *snaps in snapshots_of(c, ann_id):
        for snap in snaps:
            try:
                a = json.loads(snap)["a"] if snap else None
            except (TypeError, ValueError, KeyError):
                continue
            if not a or len(a) != len(row) or annotation_damage(a) is not None:
                continue
            same = [a[i] == row[i] for i in range(len(_COLS)) if _COLS[i] not in _CONTENT]
            if not all(same):
                continue
            score = sum(a[_COLS.index(f)] == row[_COLS.index(f)] for f in _CONTENT)
            if best is None or (score, change_id) >= best[:2]:
                best = (score, change_id, a)
    return None if best is None else {f: best[2][_COLS.index(f)] for f in _CONTENT}


def _repair_annotation(c: Connection, ann_id: int) -> str | None:
    """Mend one damaged annotation row in the open transaction; returns how, or None when it cannot."""
    row = rows.stored_row(c, ann_id)
    if row is None:  # pragma: no cover - it was listed as damaged in this transaction
        return None
    col = dict(zip(_COLS, row, strict=True))
    sets = _from_history(c, ann_id, row)
    if sets is not None:
        how = "restored from the edit history (the same version)"
    else:
        h, w = col["height"], col["width"]
        sets = {}
        try:
            polys = Polygons.from_json(json.loads(col["polygons_json"]))
            polys_ok = (polys.width, polys.height) == (w, h)
        except (TypeError, ValueError, GeometryError):
            polys_ok = False
        rle_ok = rle_damage(h, w, col["rle_counts"], col["area"]) is None
        if polys_ok and not rle_ok:
            mask = polygons_to_mask(polys, h, w)
            if not mask.any():
                return None
            rle = coco.Rle.from_mask(mask)
            sets.update(rle_counts=rle.counts, area=rle.area)
            how = "mask re-derived from its outline"
        elif rle_ok and not polys_ok:
            tol = EXACT_OUTLINE_TOLERANCE_PX
            mask = coco.Rle(h, w, col["rle_counts"]).decode()
            sets.update(polygons_json=dumps(rows.default_polygons(mask, tol)), tolerance_px=tol)
            how = "outline re-derived from its mask"
        else:
            return None
        try:
            loads(col["metrics_json"])
        except (TypeError, ValueError):
            sets["metrics_json"] = None
            how += ", measurements dropped"
    rows.set_columns(c, ann_id, sets)
    mended = rows.stored_row(c, ann_id)
    return how if mended is not None and annotation_damage(mended) is None else None

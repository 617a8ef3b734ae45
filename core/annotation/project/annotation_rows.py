"""How an annotation is stored: its columns, a row's damage, rows to `Annotation`s, snapshots of a row.

An annotation is a mask (COCO compressed RLE, the source of truth), its editable polygons (JSON of
`geometry.Polygons.to_json()`), a label, measurements (JSON of `metrics.LesionMetrics.to_dict()`), the
simplification tolerance and its `Provenance`. A row that does not decode is "damaged": left out of
`annotations()` and exports, listed by `damaged_annotations()`, never raised.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import sqlalchemy as sa
from sqlalchemy import Connection, delete, select, update

from dermaseg.core.annotation import coco
from dermaseg.core.annotation.geometry import Polygons, mask_to_polygons
from dermaseg.core.annotation.project.database import Database, upsert
from dermaseg.core.annotation.project.records import (
    EXACT_OUTLINE_TOLERANCE_PX,
    Annotation,
    DamagedAnnotation,
    Json,
    Provenance,
    dumps,
    loads,
)
from dermaseg.core.annotation.project.schema import annotations as A
from dermaseg.core.annotation.project.schema import provenance as P
from dermaseg.core.errors import GeometryError, StoreError

ANN_COLUMNS = (
    "id", "image_id", "label", "height", "width", "rle_counts", "area", "polygons_json", "metrics_json",
    "tolerance_px", "created_utc", "updated_utc", "version",
)  # fmt: skip
N_ANN = len(ANN_COLUMNS)
PROV_COLUMNS = (
    "source", "prompts_json", "model_id", "model_variant", "embedding_sha256", "annotator", "tool_version",
    "time_utc",
)  # fmt: skip
_ANN = [A.c[n] for n in ANN_COLUMNS]
_PROV = [P.c[n] for n in PROV_COLUMNS]
_JOINED = select(*_ANN, P.c.annotation_id, *_PROV).select_from(A.outerjoin(P, P.c.annotation_id == A.c.id))


def default_polygons(mask: np.ndarray, tolerance_px: float = EXACT_OUTLINE_TOLERANCE_PX) -> dict[str, Json]:
    """Editable outline of a bool (H, W) mask: `geometry.mask_to_polygons(...).to_json()`."""
    return mask_to_polygons(mask, tolerance_px).to_json()


def annotation_damage(row: Sequence[Any]) -> str | None:
    """Why a stored annotation row (the `ANN_COLUMNS`, in order) cannot be used, or None when it is sound.

    Checks the mask (`rle_damage`) and that the polygons (and measurements) JSON parse for its size.
    """
    _, _, _, h, w, counts, area, polygons_json, metrics_json = row[:9]
    damage = rle_damage(h, w, counts, area)
    if damage is not None:
        return damage
    try:
        polys = Polygons.from_json(json.loads(polygons_json))
        if (polys.width, polys.height) != (w, h):
            return f"the outline is for a {polys.width}x{polys.height} image, the mask {w}x{h}"
        if metrics_json is not None:
            json.loads(metrics_json)
    except (TypeError, ValueError, GeometryError) as e:
        return f"the outline or measurements do not parse ({str(e):.120})"
    return None


def rle_damage(height: Any, width: Any, counts: Any, area: Any) -> str | None:
    """Why a stored mask cannot be used, or None: the compressed RLE must decode (characters, run
    lengths adding up to height x width) and its foreground must equal the stored area (pixels)."""
    if not (isinstance(height, int) and isinstance(width, int) and height > 0 and width > 0):
        return f"bad mask size {width!r}x{height!r}"
    if not isinstance(counts, str):
        return "the RLE mask is not text"
    try:
        runs = coco.decode_counts_string(counts)
    except ValueError as e:
        return f"the RLE mask does not decode ({e})"
    if any(v < 0 for v in runs) or sum(runs) != height * width:
        return f"the RLE mask's runs cover {sum(runs)} pixels, not the {width}x{height} image"
    if sum(runs[1::2]) != area:
        return f"the RLE mask has {sum(runs[1::2])} lesion pixels but the stored area is {area}"
    return None


# ---- reading


def _from_row(a: Sequence[Any], p: Sequence[Any] | None) -> Annotation:
    prov = (
        Provenance(p[0], loads(p[1]), p[2], p[3], p[4], p[5], p[6], p[7])
        if p is not None
        else Provenance(source="unknown", tool_version="unknown", time_utc=a[10])
    )
    return Annotation(
        id=a[0],
        image_id=a[1],
        label=a[2],
        rle=coco.Rle(a[3], a[4], a[5]),
        polygons=loads(a[7]),
        metrics=loads(a[8]),
        tolerance_px=a[9],
        provenance=prov,
        created_utc=a[10],
        updated_utc=a[11],
        version=a[12],
    )


def _split(r: Sequence[Any]) -> tuple[Sequence[Any], Sequence[Any] | None]:
    """A joined row (annotation columns, provenance key, provenance columns) as its two parts."""
    return r[:N_ANN], (r[N_ANN + 1 :] if r[N_ANN] is not None else None)


def annotations(db: Database, image_id: int | None = None) -> list[Annotation]:
    """Annotations of one image (or all), oldest first; damaged ones left out."""
    stmt = _JOINED if image_id is None else _JOINED.where(A.c.image_id == image_id)
    rows = db.query(stmt.order_by(A.c.id))
    return [_from_row(*_split(r)) for r in rows if annotation_damage(r[:N_ANN]) is None]


def annotation(db: Database, ann_id: int) -> Annotation:
    """One annotation; StoreError when it is not in the project or is damaged."""
    rows = db.query(_JOINED.where(A.c.id == ann_id))
    if not rows:
        raise StoreError(f"annotation id {ann_id}: not in this project")
    a, p = _split(rows[0])
    damage = annotation_damage(a)
    if damage is not None:
        raise StoreError(f"annotation id {ann_id} is damaged ({damage}); run `dermaseg project check --repair`")
    return _from_row(a, p)


def damaged_annotations(db: Database, image_id: int | None = None) -> list[DamagedAnnotation]:
    """Stored annotations that cannot be decoded (see `annotation_damage`), oldest first."""
    stmt = select(*_ANN) if image_id is None else select(*_ANN).where(A.c.image_id == image_id)
    rows = db.query(stmt.order_by(A.c.id))
    return [DamagedAnnotation(r[0], r[1], r[2], damage) for r in rows if (damage := annotation_damage(r)) is not None]


def stored_row(c: Connection, ann_id: int) -> list[Any] | None:
    """The annotation's `ANN_COLUMNS`, as stored (damaged or not), or None."""
    row = c.execute(select(*_ANN).where(A.c.id == ann_id)).first()
    return None if row is None else list(row)


# ---- writing (inside the caller's write transaction)


def insert(
    c: Connection,
    image_id: int,
    label: str,
    rle: coco.Rle,
    polygons_json: str,
    metrics_json: str | None,
    tolerance_px: float | None,
    prov: Provenance,
    now: str,
) -> int:
    """Insert a new annotation and its provenance; returns its id."""
    ann_id = c.execute(
        sa.insert(A),
        dict(image_id=image_id, label=label, height=rle.height, width=rle.width, rle_counts=rle.counts,
             area=rle.area, polygons_json=polygons_json, metrics_json=metrics_json, tolerance_px=tolerance_px,
             created_utc=now, updated_utc=now),
    ).inserted_primary_key[0]  # fmt: skip
    write_provenance(c, ann_id, prov)
    return ann_id


def write_provenance(c: Connection, ann_id: int, prov: Provenance) -> None:
    values = (prov.source, dumps(prov.prompts) if prov.prompts is not None else None, prov.model_id,
              prov.model_variant, prov.embedding_sha256, prov.annotator, prov.tool_version, prov.time_utc)  # fmt: skip
    upsert(c, P, {"annotation_id": ann_id, **dict(zip(PROV_COLUMNS, values, strict=True))}, ["annotation_id"])


def set_columns(c: Connection, ann_id: int, sets: Mapping[str, Any]) -> None:
    """UPDATE the annotation's columns named in `sets` (names from `ANN_COLUMNS`) to their values."""
    c.execute(update(A).where(A.c.id == ann_id).values(**sets))


def version_of(c: Connection, ann_id: int) -> int | None:
    """The stored version of the annotation, None when it is not in the project; the row stays locked
    (`FOR UPDATE` on PostgreSQL) until the caller's transaction ends."""
    v = c.execute(select(A.c.version).where(A.c.id == ann_id).with_for_update()).scalar()
    return None if v is None else int(v)


def image_of(c: Connection, ann_id: int) -> int:
    """The id of the image an existing annotation is on."""
    return int(c.execute(select(A.c.image_id).where(A.c.id == ann_id)).scalar_one())


def last_change(c: Connection, ann_id: int) -> tuple[int, str, str | None] | None:
    """(version, updated_utc, annotator) of the annotation, None when it is not in the project."""
    row = c.execute(_JOINED.with_only_columns(A.c.version, A.c.updated_utc, P.c.annotator).where(A.c.id == ann_id))
    return row.first()


def image_contents(c: Connection, image_id: int) -> list[tuple[int, str, str, str | None]]:
    """(id, label, rle_counts, annotator) of the image's annotations: enough to recognise a duplicate
    (the same rater's same mask) and to find one rater's annotations."""
    stmt = _JOINED.with_only_columns(A.c.id, A.c.label, A.c.rle_counts, P.c.annotator).where(A.c.image_id == image_id)
    return [tuple(r) for r in c.execute(stmt)]


# ---- snapshots: the unit of undo/redo


def snapshot(c: Connection, ann_id: int) -> str | None:
    """The annotation row and its provenance as JSON text, None when it is not in the project."""
    a = c.execute(select(*_ANN).where(A.c.id == ann_id)).first()
    if a is None:
        return None
    p = c.execute(select(*_PROV).where(P.c.annotation_id == ann_id)).first()
    return json.dumps({"a": list(a), "p": list(p) if p is not None else None}, separators=(",", ":"))


def restore(c: Connection, ann_id: int, snap: str | None) -> None:
    """Put the annotation back as `snap` says (None: delete it).

    The restored row gets a version above both the snapshot's and the stored one's, so a save made
    from any version seen before the undo/redo is refused (`update_annotation(expected_version)`).
    """
    now = c.execute(select(A.c.version).where(A.c.id == ann_id)).first()
    c.execute(delete(A).where(A.c.id == ann_id))  # provenance goes with it (cascade)
    if snap is None:
        return
    s = json.loads(snap)
    row = list(s["a"])[:N_ANN]
    if len(row) < N_ANN:  # a snapshot from a schema-1 project: no version
        row.append(1)
    row[-1] = max(int(row[-1]), now[0] if now else 0) + 1
    c.execute(sa.insert(A).values(dict(zip(ANN_COLUMNS, row, strict=True))))
    if s["p"] is not None:
        c.execute(sa.insert(P).values(annotation_id=ann_id, **dict(zip(PROV_COLUMNS, s["p"], strict=True))))

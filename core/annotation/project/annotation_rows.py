"""How an annotation is stored: its columns, a row's damage, rows to `Annotation`s, snapshots of a row.

An annotation is a mask (COCO compressed RLE, the source of truth), its editable polygons (JSON of
`geometry.Polygons.to_json()`), a label, measurements (JSON of `metrics.LesionMetrics.to_dict()`), the
simplification tolerance and its `Provenance`. A row that does not decode is "damaged": left out of
`annotations()` and exports, listed by `damaged_annotations()`, never raised.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from dermaseg.core.annotation import coco
from dermaseg.core.annotation.geometry import Polygons, mask_to_polygons
from dermaseg.core.annotation.project.database import Database
from dermaseg.core.annotation.project.records import (
    EXACT_OUTLINE_TOLERANCE_PX,
    Annotation,
    DamagedAnnotation,
    Json,
    Provenance,
    dumps,
    loads,
)
from dermaseg.core.errors import GeometryError, StoreError

ANN_COLUMNS = (
    "id, image_id, label, height, width, rle_counts, area, polygons_json, metrics_json, tolerance_px, "
    "created_utc, updated_utc, version"
)
N_ANN = len(ANN_COLUMNS.split(","))
PROV_COLUMNS = "source, prompts_json, model_id, model_variant, embedding_sha256, annotator, tool_version, time_utc"
_JOINED = (
    ", ".join(f"a.{c.strip()}" for c in ANN_COLUMNS.split(","))
    + ", p.annotation_id, "
    + ", ".join(f"p.{c.strip()}" for c in PROV_COLUMNS.split(","))
)


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
    where, params = ("WHERE a.image_id = ?", (image_id,)) if image_id is not None else ("", ())
    rows = db.query(
        f"SELECT {_JOINED} FROM annotations a LEFT JOIN provenance p ON p.annotation_id = a.id {where} ORDER BY a.id",
        params,
    )
    return [_from_row(*_split(r)) for r in rows if annotation_damage(r[:N_ANN]) is None]


def annotation(db: Database, ann_id: int) -> Annotation:
    """One annotation; StoreError when it is not in the project or is damaged."""
    rows = db.query(
        f"SELECT {_JOINED} FROM annotations a LEFT JOIN provenance p ON p.annotation_id = a.id WHERE a.id = ?",
        (ann_id,),
    )
    if not rows:
        raise StoreError(f"annotation id {ann_id}: not in this project")
    a, p = _split(rows[0])
    damage = annotation_damage(a)
    if damage is not None:
        raise StoreError(f"annotation id {ann_id} is damaged ({damage}); run `dermaseg project check --repair`")
    return _from_row(a, p)


def damaged_annotations(db: Database, image_id: int | None = None) -> list[DamagedAnnotation]:
    """Stored annotations that cannot be decoded (see `annotation_damage`), oldest first."""
    where, params = ("WHERE image_id = ?", (image_id,)) if image_id is not None else ("", ())
    rows = db.query(f"SELECT {ANN_COLUMNS} FROM annotations {where} ORDER BY id", params)
    return [DamagedAnnotation(r[0], r[1], r[2], damage) for r in rows if (damage := annotation_damage(r)) is not None]


def stored_row(c: sqlite3.Connection, ann_id: int) -> list[Any] | None:
    """The annotation's `ANN_COLUMNS`, as stored (damaged or not), or None."""
    row = c.execute(f"SELECT {ANN_COLUMNS} FROM annotations WHERE id = ?", (ann_id,)).fetchone()
    return None if row is None else list(row)


# ---- writing (inside the caller's write transaction)


def insert(
    c: sqlite3.Connection,
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
    cur = c.execute(
        "INSERT INTO annotations(image_id, label, height, width, rle_counts, area, polygons_json, "
        "metrics_json, tolerance_px, created_utc, updated_utc) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
        (image_id, label, rle.height, rle.width, rle.counts, rle.area, polygons_json, metrics_json,
         tolerance_px, now, now),
    )  # fmt: skip
    ann_id = int(cur.lastrowid)
    write_provenance(c, ann_id, prov)
    return ann_id


def write_provenance(c: sqlite3.Connection, ann_id: int, prov: Provenance) -> None:
    c.execute(
        f"INSERT OR REPLACE INTO provenance(annotation_id, {PROV_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?)",
        (ann_id, prov.source, dumps(prov.prompts) if prov.prompts is not None else None, prov.model_id,
         prov.model_variant, prov.embedding_sha256, prov.annotator, prov.tool_version, prov.time_utc),
    )  # fmt: skip


def set_columns(c: sqlite3.Connection, ann_id: int, sets: Mapping[str, Any]) -> None:
    """UPDATE the annotation's columns named in `sets` (names from `ANN_COLUMNS`) to their values."""
    assignments = ", ".join(f"{k} = ?" for k in sets)
    c.execute(f"UPDATE annotations SET {assignments} WHERE id = ?", (*sets.values(), ann_id))


def version_of(c: sqlite3.Connection, ann_id: int) -> int | None:
    """The stored version of the annotation, None when it is not in the project."""
    row = c.execute("SELECT version FROM annotations WHERE id = ?", (ann_id,)).fetchone()
    return None if row is None else int(row[0])


def image_of(c: sqlite3.Connection, ann_id: int) -> int:
    """The id of the image an existing annotation is on."""
    return int(c.execute("SELECT image_id FROM annotations WHERE id = ?", (ann_id,)).fetchone()[0])


def last_change(c: sqlite3.Connection, ann_id: int) -> tuple[int, str, str | None] | None:
    """(version, updated_utc, annotator) of the annotation, None when it is not in the project."""
    return c.execute(
        "SELECT a.version, a.updated_utc, p.annotator FROM annotations a "
        "LEFT JOIN provenance p ON p.annotation_id = a.id WHERE a.id = ?",
        (ann_id,),
    ).fetchone()


def image_contents(c: sqlite3.Connection, image_id: int) -> list[tuple[int, str, str, str | None]]:
    """(id, label, rle_counts, annotator) of the image's annotations: enough to recognise a duplicate
    (the same rater's same mask) and to find one rater's annotations."""
    return c.execute(
        "SELECT a.id, a.label, a.rle_counts, p.annotator FROM annotations a "
        "LEFT JOIN provenance p ON p.annotation_id = a.id WHERE a.image_id = ?",
        (image_id,),
    ).fetchall()


# ---- snapshots: the unit of undo/redo


def snapshot(c: sqlite3.Connection, ann_id: int) -> str | None:
    """The annotation row and its provenance as JSON text, None when it is not in the project."""
    a = c.execute(f"SELECT {ANN_COLUMNS} FROM annotations WHERE id = ?", (ann_id,)).fetchone()
    if a is None:
        return None
    p = c.execute(f"SELECT {PROV_COLUMNS} FROM provenance WHERE annotation_id = ?", (ann_id,)).fetchone()
    return json.dumps({"a": list(a), "p": list(p) if p is not None else None}, separators=(",", ":"))


def restore(c: sqlite3.Connection, ann_id: int, snap: str | None) -> None:
    """Put the annotation back as `snap` says (None: delete it).

    The restored row gets a version above both the snapshot's and the stored one's, so a save made
    from any version seen before the undo/redo is refused (`update_annotation(expected_version)`).
    """
    now = c.execute("SELECT version FROM annotations WHERE id = ?", (ann_id,)).fetchone()
    c.execute("DELETE FROM annotations WHERE id = ?", (ann_id,))  # provenance goes with it (cascade)
    if snap is None:
        return
    s = json.loads(snap)
    row = list(s["a"])[:N_ANN]
    if len(row) < N_ANN:  # a snapshot from a schema-1 project: no version
        row.append(1)
    row[-1] = max(int(row[-1]), now[0] if now else 0) + 1
    c.execute(f"INSERT INTO annotations({ANN_COLUMNS}) VALUES ({','.join('?' * N_ANN)})", row)
    if s["p"] is not None:
        c.execute(
            f"INSERT INTO provenance(annotation_id, {PROV_COLUMNS}) VALUES (?, {','.join('?' * 8)})",
            [ann_id, *s["p"]],
        )

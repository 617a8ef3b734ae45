"""The project in and out as COCO: export (JSON plus one PNG mask per image) and all-or-nothing import.

COCO image ids and annotation ids are the project's ids; category ids are the label ids. Our own
exports carry a "dermaseg" block (editable polygons, tolerance, measurements, provenance, file hashes,
status, calibration), so an export imported again keeps everything.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Collection
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from dermaseg.core.annotation import coco
from dermaseg.core.annotation.geometry import Polygons
from dermaseg.core.annotation.project import annotation_rows as rows
from dermaseg.core.annotation.project import history
from dermaseg.core.annotation.project import images as image_rows
from dermaseg.core.annotation.project import labels as label_list
from dermaseg.core.annotation.project.database import DB_DIR, Database
from dermaseg.core.annotation.project.paths import relative_posix
from dermaseg.core.annotation.project.records import (
    EXACT_OUTLINE_TOLERANCE_PX,
    STATUSES,
    Annotation,
    ExportReport,
    ImageRecord,
    ImportReport,
    Progress,
    Provenance,
    dumps,
    finite_or_none,
    no_progress,
    tool_version,
    utc_now,
)
from dermaseg.core.calibration import Calibration
from dermaseg.core.errors import CalibrationError, CocoError, StoreError


def export_coco(
    db: Database,
    root: Path,
    coco_path: str | Path,
    *,
    masks_dir: str | Path | None = None,
    force_rle: bool = False,
    statuses: Collection[str] | None = None,
    image_ids: Collection[int] | None = None,
    progress: Progress | None = None,
) -> ExportReport:
    """Write the project (or the images with one of `statuses`, or those of `image_ids`) as COCO
    JSON, plus PNG masks. Every annotation is one COCO annotation (several per image).

    COCO image ids and annotation ids are the project's ids; category ids are the label ids.
    `file_name` is the image's path relative to the project folder. Damaged annotations (that do not
    decode) are left out and named in the report's `damaged`. masks_dir: one 0/255 PNG per
    annotated (or "done") image, the union of its annotations, at `<masks_dir>/<path>.png`; it
    may not be inside the project folder (the next scan would take the masks for images).
    """
    progress = progress or no_progress
    masks = Path(masks_dir).resolve() if masks_dir is not None else None
    if masks is not None and masks.is_relative_to(root) and not masks.is_relative_to(root / DB_DIR):
        raise StoreError(
            f"{masks}: the masks folder is inside the project folder, where its PNGs would be taken "
            "for images to annotate; choose a folder outside it"
        )
    cats = label_list.category_ids(db)
    images = image_rows.images(db, statuses)
    if image_ids is not None:
        wanted = set(image_ids)
        images = [r for r in images if r.id in wanted]
    by_image: dict[int, list[Annotation]] = {}
    for a in rows.annotations(db) if image_ids is None else [a for r in images for a in rows.annotations(db, r.id)]:
        by_image.setdefault(a.image_id, []).append(a)
    coco_images, coco_anns = [], []
    n_poly = 0
    for rec in progress(images, len(images), "exporting COCO"):
        coco_images.append(
            coco.image_dict(
                rec.id, rec.path, rec.width, rec.height,
                {"file_sha256": rec.file_sha256, "pixel_sha256": rec.pixel_sha256, "status": rec.status,
                 "mm_per_px": rec.calibration.mm_per_px if rec.calibration else None,
                 "calibration_source": rec.calibration.source if rec.calibration else None},
            )
        )  # fmt: skip
        union = np.zeros((rec.height, rec.width), dtype=bool)
        for a in by_image.get(rec.id, []):
            if (a.rle.height, a.rle.width) != (rec.height, rec.width):
                raise StoreError(
                    f"{rec.path}: annotation id {a.id} is {a.rle.width}x{a.rle.height} but the image is "
                    f"now {rec.width}x{rec.height} (the file changed); fix or delete the annotation"
                )
            m = a.mask()
            union |= m
            extra = {
                "label": a.label,
                "metrics": a.metrics,
                "polygons": a.polygons,
                "tolerance_px": a.tolerance_px,
                "provenance": a.provenance.to_json(),
            }
            ann = coco.annotation_dict(a.id, rec.id, cats[a.label], m, force_rle=force_rle, extra=extra)
            n_poly += ann["dermaseg"]["encoding"] == "polygon"
            coco_anns.append(ann)
        if masks is not None and (by_image.get(rec.id) or rec.status == "done"):
            png = masks / PurePosixPath(rec.path).with_suffix(".png")
            try:
                coco.write_png_mask(union, png)
            except OSError as e:
                raise StoreError(
                    f"{png}: cannot write the mask ({e.strerror or e}); is the disk full or the folder read-only?"
                ) from None
    info = {
        "description": f"dermaseg project {root.name}",
        "version": tool_version(),
        "date_created": utc_now(),
    }
    data = coco.dataset_dict(coco_images, coco_anns, [(i, n) for n, i in cats.items()], info)
    out = write_coco_file(data, coco_path)
    exported = {rec.id for rec in images}
    damaged = tuple(d for d in rows.damaged_annotations(db) if d.image_id in exported)
    return ExportReport(out, masks, len(coco_images), len(coco_anns), n_poly, len(coco_anns) - n_poly, damaged)


def write_coco_file(data: dict[str, Any], coco_path: str | Path) -> Path:
    """Write a COCO dict as JSON, atomically; StoreError (with what to check) when the disk refuses."""
    out = Path(coco_path)
    try:
        coco.write_json_atomic(data, out)
    except OSError as e:
        raise StoreError(
            f"{out}: cannot write the COCO file ({e.strerror or e}); is the disk full or the folder read-only?"
        ) from None
    return out


def import_coco(
    db: Database,
    root: Path,
    source: str | Path | bytes,
    *,
    replace: bool = False,
    annotator: str | None = None,
    progress: Progress | None = None,
) -> ImportReport:
    """Import a COCO file's annotations, all or nothing.

    Images are matched by `file_name` (a path relative to the project folder), else by the
    "dermaseg" file_sha256 of our own exports; width and height must agree. Categories map to
    labels by name; unknown names are added to the label list. The whole file is validated and
    converted first; then one transaction writes it, so an error leaves the project unchanged.
    annotator: the rater the annotations are filed under, unless the file's own provenance (our
    exports) already names one: that name is who did it and is kept. Every imported annotation
    records who (annotator, None when neither names anyone) and when (`Provenance.time_utc`: the
    file's, else the import's; `created_utc`: the import's).
    replace=False: annotations are added beside those already there (other raters' too), skipping
    exact duplicates (same image, label, mask and rater), so importing a file twice adds nothing,
    while a second rater's identical mask is still filed under that rater.
    replace=True: on each image of the file, the annotations of the raters the file brings there
    are replaced; other raters' annotations stay. Each image's import is one undoable step.
    Raises CocoError naming the entry.
    """
    progress = progress or no_progress
    if annotator is not None and not annotator.strip():
        raise StoreError("the annotator's name is empty: give the name of the rater to file the annotations under")
    annotator = annotator.strip() if annotator is not None else None
    ds = coco.read_coco(source)
    by_path = {r.path: r for r in image_rows.images(db)}
    by_sha: dict[str, ImageRecord] = {}
    for r in by_path.values():
        by_sha.setdefault(r.file_sha256, r)
    targets: dict[int, ImageRecord] = {}
    for ci in ds.images:
        try:
            rec = by_path.get(relative_posix(ci.file_name))
        except StoreError as e:
            raise CocoError(f"image id {ci.id}: {e}") from None
        sha = ci.extra.get("file_sha256")
        if rec is None and isinstance(sha, str):
            rec = by_sha.get(sha)
        if rec is None:
            raise CocoError(
                f"image id {ci.id} ({ci.file_name!r}): not in this project; put the image in {root} "
                "(at that relative path) and reopen the project"
            )
        if (rec.width, rec.height) != (ci.width, ci.height):
            raise CocoError(
                f"image id {ci.id} ({ci.file_name!r}): the file says {ci.width}x{ci.height}, "
                f"the project's image {rec.path} is {rec.width}x{rec.height}"
            )
        targets[ci.id] = rec
    labels = list(label_list.labels(db))
    cat_names = {c.id: c.name for c in ds.categories}
    new_labels = tuple(dict.fromkeys(n for n in cat_names.values() if n not in labels))
    prepared: dict[int, list[tuple[str, coco.Rle, str, str | None, float | None, Provenance]]] = {}
    for a in progress(ds.annotations, len(ds.annotations), "checking annotations"):
        label = cat_names[a.category_id]
        pj, tol = _imported_polygons(a)
        metrics = a.extra.get("metrics")
        prov_d = a.extra.get("provenance")
        prov = Provenance.from_json(prov_d) if isinstance(prov_d, dict) else Provenance(source="import")
        if prov.annotator is None or not prov.annotator.strip():
            prov = dataclasses.replace(prov, annotator=annotator)
        prepared.setdefault(targets[a.image_id].id, []).append(
            (label, a.rle, pj, dumps(metrics) if isinstance(metrics, dict) else None, tol, prov)
        )
    statuses = {targets[ci.id].id: ci.extra["status"] for ci in ds.images if ci.extra.get("status") in STATUSES}
    added = replaced = skipped = 0
    now = utc_now()
    with db.write() as c:
        label_list.append_labels(c, new_labels)
        for image_id, items in prepared.items():
            action = history.begin_action(c, image_id, "import")
            existing = rows.image_contents(c, image_id)
            if replace:
                raters = {prov.annotator for *_, prov in items}
                mine = [e for e in existing if e[3] in raters]
                for ann_id, *_ in mine:
                    history.record(c, action, ann_id, rows.snapshot(c, ann_id), None)
                    rows.restore(c, ann_id, None)
                    replaced += 1
                existing = [e for e in existing if e not in mine]
            seen = {(lbl, counts, who) for _, lbl, counts, who in existing}
            for label, rle, pj, mj, tol, prov in items:
                key = (label, rle.counts, prov.annotator)
                if key in seen:
                    skipped += 1
                    continue
                seen.add(key)
                ann_id = rows.insert(c, image_id, label, rle, pj, mj, tol, prov, now)
                history.record(c, action, ann_id, None, rows.snapshot(c, ann_id))
                added += 1
            image_rows.mark_in_progress(c, image_id)
        for image_id, status in statuses.items():
            image_rows.import_status(c, image_id, status)
        for ci in ds.images:
            mm, src = ci.extra.get("mm_per_px"), ci.extra.get("calibration_source")
            try:
                cal = Calibration(float(mm), src if src in ("user", "metadata", "ruler") else "user")
            except (TypeError, ValueError, OverflowError, CalibrationError):
                continue
            image_rows.import_calibration(c, targets[ci.id].id, cal)
    return ImportReport(len(prepared), added, replaced, skipped, new_labels)


def _imported_polygons(a: coco.CocoAnnotation) -> tuple[str, float | None]:
    """Editable polygons JSON for an imported annotation and its tolerance.

    Our own exports carry the editable polygons; if they are well-formed they are kept.
    Otherwise the exact outline of the imported mask is used.
    """
    label = f"annotation id {a.id}"
    pj = a.extra.get("polygons")
    if isinstance(pj, dict):
        try:
            polys = Polygons.from_json(pj)
        except Exception as e:  # noqa: BLE001 - any malformed polygon data is the file's fault
            raise CocoError(f"{label}: bad dermaseg polygons ({e})") from None
        if (polys.width, polys.height) != (a.rle.width, a.rle.height):
            raise CocoError(f"{label}: dermaseg polygons are for a {polys.width}x{polys.height} image")
        tol = a.extra.get("tolerance_px")
        return dumps(polys), finite_or_none(tol)
    return dumps(rows.default_polygons(a.rle.decode(), EXACT_OUTLINE_TOLERANCE_PX)), EXACT_OUTLINE_TOLERANCE_PX

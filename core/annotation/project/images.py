"""The project's images: their records, status and calibration (per image and for the whole project).

Images are known by their path relative to the folder (posix separators) and their file SHA-256; the
scan (`scanning.scan`) keeps the file columns up to date through the small writers at the end.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Collection, Sequence
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, case, delete, exists, insert, select, update

from dermaseg.core.annotation.project.database import Database
from dermaseg.core.annotation.project.paths import relative_posix
from dermaseg.core.annotation.project.records import STATUSES, ImageRecord
from dermaseg.core.annotation.project.schema import drafts, meta
from dermaseg.core.annotation.project.schema import images as I
from dermaseg.core.calibration import Calibration
from dermaseg.core.errors import StoreError
from dermaseg.core.image import LesionImage, load_image

# An image with a draft (work not yet accepted) is shown "in progress", whatever was saved before.
SHOWN_STATUS = case((exists().where(drafts.c.image_id == I.c.id), "in_progress"), else_=I.c.status)
_IMG = select(
    I.c.id, I.c.path, I.c.file_sha256, I.c.pixel_sha256, I.c.width, I.c.height, I.c.mm_per_px,
    I.c.calibration_source, SHOWN_STATUS, I.c.added_utc,
)  # fmt: skip
_CALIBRATION_KEY = "calibration_mm_per_px"


def _image(row: Sequence[Any]) -> ImageRecord:
    cal = Calibration(row[6], row[7] or "user") if row[6] is not None else None
    return ImageRecord(row[0], row[1], row[2], row[3], row[4], row[5], cal, row[8], row[9])


def images(db: Database, statuses: Collection[str] | None = None) -> list[ImageRecord]:
    """All images (or those with one of `statuses`), ordered by path."""
    out = [_image(r) for r in db.query(_IMG.order_by(I.c.path))]
    return [i for i in out if statuses is None or i.status in statuses]


def image(db: Database, image_id: int) -> ImageRecord:
    rows = db.query(_IMG.where(I.c.id == image_id))
    if not rows:
        raise StoreError(f"image id {image_id}: not in this project")
    return _image(rows[0])


def image_by_path(db: Database, rel: str) -> ImageRecord | None:
    rows = db.query(_IMG.where(I.c.path == relative_posix(rel)))
    return _image(rows[0]) if rows else None


def load_project_image(
    db: Database, file_of: Callable[[ImageRecord], Path], image_id: int, max_pixels: int
) -> LesionImage:
    """Decode an image (`core.image.load_image`, at most `max_pixels`) from the file `file_of` gives, with
    its stored calibration; records the pixel hash."""
    rec = image(db, image_id)
    img = load_image(file_of(rec), name=rec.path, max_pixels=max_pixels)
    if (img.width, img.height) != (rec.width, rec.height):
        raise StoreError(
            f"{rec.path}: is {img.width}x{img.height} now, the project knows it as "
            f"{rec.width}x{rec.height}; reopen the project to rescan"
        )
    if rec.pixel_sha256 != img.sha256:
        with db.write() as c:
            c.execute(update(I).where(I.c.id == image_id).values(pixel_sha256=img.sha256))
    return img.with_calibration(rec.calibration or project_calibration(db) or img.calibration)


def set_status(db: Database, image_id: int, status: str) -> None:
    if status not in STATUSES:
        raise StoreError(f"status must be one of {', '.join(STATUSES)}, got {status!r}")
    with db.write() as c:
        if c.execute(update(I).where(I.c.id == image_id).values(status=status)).rowcount != 1:
            raise StoreError(f"image id {image_id}: not in this project")


def mark_in_progress(c: Connection, image_id: int) -> None:
    """An image that received an annotation is "in_progress" if it was "not_started"."""
    c.execute(update(I).where(I.c.id == image_id, I.c.status == "not_started").values(status="in_progress"))


def import_status(c: Connection, image_id: int, status: str) -> None:
    """Set an imported image status (one of STATUSES, checked by the caller) in the open transaction."""
    c.execute(update(I).where(I.c.id == image_id).values(status=status))


# ---- calibration


def project_calibration(db: Database) -> Calibration | None:
    """The project's scale (one device at contact), used by every image without a scale of its own
    (it comes before a file's resolution metadata, which cameras rarely fill in truly)."""
    rows = db.query(select(meta.c.value).where(meta.c.key == _CALIBRATION_KEY))
    return Calibration(float(rows[0][0]), "project") if rows else None


def set_project_calibration(db: Database, calibration: Calibration | None) -> None:
    """Set (or, with None, remove) the project's scale."""
    with db.write() as c:
        c.execute(delete(meta).where(meta.c.key == _CALIBRATION_KEY))
        if calibration is not None:
            c.execute(insert(meta).values(key=_CALIBRATION_KEY, value=repr(calibration.mm_per_px)))


def set_calibration(db: Database, image_id: int, calibration: Calibration | None) -> None:
    """Set (or, with None, remove) one image's own scale."""
    mm, src = (calibration.mm_per_px, calibration.source) if calibration else (None, None)
    with db.write() as c:
        n = c.execute(update(I).where(I.c.id == image_id).values(mm_per_px=mm, calibration_source=src)).rowcount
        if n != 1:
            raise StoreError(f"image id {image_id}: not in this project")


def import_calibration(c: Connection, image_id: int, calibration: Calibration) -> None:
    """Give an image an imported scale unless it has one already (in the open transaction)."""
    c.execute(
        update(I)
        .where(I.c.id == image_id, I.c.mm_per_px.is_(None))
        .values(mm_per_px=calibration.mm_per_px, calibration_source=calibration.source)
    )


# ---- the file columns, for the folder scan


def known_files(db: Database) -> dict[str, tuple[Any, ...]]:
    """{path: (id, path, file_sha256, file_size, file_mtime_ns, width, height)} of every known image."""
    rows = db.query(select(I.c.id, I.c.path, I.c.file_sha256, I.c.file_size, I.c.file_mtime_ns, I.c.width, I.c.height))
    return {r[1]: tuple(r) for r in rows}


def _set(c: Connection, image_id: int, **values: Any) -> None:
    c.execute(update(I).where(I.c.id == image_id).values(**values))


def touched(c: Connection, image_id: int, st: os.stat_result) -> None:
    """The file was touched but its content is the same."""
    _set(c, image_id, file_size=st.st_size, file_mtime_ns=st.st_mtime_ns)


def changed(c: Connection, image_id: int, sha: str, st: os.stat_result, w: int, h: int) -> None:
    """Same path, new content: new hash and size, the pixel hash to be found again."""
    _set(c, image_id, file_sha256=sha, file_size=st.st_size, file_mtime_ns=st.st_mtime_ns, pixel_sha256=None,
         width=w, height=h)  # fmt: skip


def moved(c: Connection, image_id: int, rel: str, st: os.stat_result) -> None:
    """A known file (same hash) found at a new path."""
    _set(c, image_id, path=rel, file_size=st.st_size, file_mtime_ns=st.st_mtime_ns)


def added(c: Connection, rel: str, sha: str, st: os.stat_result, w: int, h: int, now: str) -> None:
    """A new image."""
    c.execute(
        insert(I).values(path=rel, file_sha256=sha, file_size=st.st_size, file_mtime_ns=st.st_mtime_ns,
                         width=w, height=h, added_utc=now)
    )  # fmt: skip

"""Moving a project between engines (`dermaseg project migrate`): a folder's SQLite project to a PostgreSQL
server, or a server's project into a folder, every table copied row for row with its ids.

Ids are kept (the edit history and exports refer to them) and so are the engines' id counters, so an id
is never given twice, not even that of a deleted annotation the history can bring back. The source is
upgraded to this dermaseg's schema first (after its backup); the target must be empty. Image files: a
project going to a server shares its folder's files (their bytes, when the folder is opened with `--db`:
`image_files.SharedFiles.scan`); a project coming into a folder gets, at its recorded path, every image
the folder does not have, from the bytes on the server.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import delete, func, insert, select

from dermaseg.core.annotation.project import schema, schema_versions
from dermaseg.core.annotation.project.database import (
    Database,
    check_folder,
    existing_database,
    make_database_folder,
)
from dermaseg.core.annotation.project.image_files import SharedFiles
from dermaseg.core.annotation.project.paths import file_sha256, safe_path, write_bytes_atomic
from dermaseg.core.annotation.project.records import Progress, ScanReport, no_progress
from dermaseg.core.errors import StoreError

BATCH_ROWS = 200  # rows per INSERT (image files are a few MB each)


@dataclass(frozen=True)
class TransferReport:
    """What `migrate` copied: rows per table, and image files written into the target folder."""

    source: str
    target: str
    rows: dict[str, int]
    files_written: tuple[str, ...] = ()  # into the target folder, from the server's bytes
    files_shared: int = 0  # image files whose bytes the server holds
    scan: ScanReport | None = None  # the folder as the shared project saw it (images added, unreadable)


def copy_database(
    src: Database, dst: Database, *, files: bool = True, progress: Progress | None = None
) -> dict[str, int]:
    """Copy every row of `src` (a checked project at this dermaseg's schema) into the empty `dst`, in one
    transaction on `dst`; files=False leaves out the image files' bytes. Returns {table: rows}."""
    progress = progress or no_progress
    with dst.read() as c:
        if schema_versions.revision(c) is not None:
            raise StoreError(f"{dst.where}: already holds a project; migrate into an empty database")
    tables = [t for t in schema.metadata.sorted_tables if files or t is not schema.image_files]
    counts: dict[str, int] = {}
    with dst.write() as w, src.read() as r:
        schema_versions.upgrade(w, None)
        w.execute(delete(schema.meta))  # the migrations' own rows: the source's come instead
        for table in progress(tables, len(tables), "copying tables"):
            keys = list(table.primary_key.columns)
            result = r.execution_options(yield_per=BATCH_ROWS).execute(select(table).order_by(*keys))
            counts[table.name] = 0
            for batch in result.mappings().partitions():
                w.execute(insert(table), [dict(row) for row in batch])
                counts[table.name] += len(batch)
        dst.set_id_counters(w, src.id_counters(r))
    return counts


def migrate_to_server(folder: str | Path, url: str, progress: Progress | None = None) -> TransferReport:
    """Copy the SQLite project of `folder` to the empty PostgreSQL database at `url`, with the bytes of
    its image files, so that people without a copy of the folder can work on it (the folder's own
    project stays as it was)."""
    root = check_folder(folder)
    src, dst = Database.sqlite(existing_database(root)), Database.server(url)
    try:
        src.open_checked()
        rows = copy_database(src, dst, progress=progress)
        scan = SharedFiles(dst, root, cache=root).scan(progress)  # cache unused: every file is local
        shared = dst.query_scalars(select(func.count()).select_from(schema.image_files))[0]
    finally:
        src.close()
        dst.close()
    return TransferReport(str(src.where), dst.where, rows, files_shared=shared, scan=scan)


def migrate_to_folder(url: str, folder: str | Path, progress: Progress | None = None) -> TransferReport:
    """Copy the project at the PostgreSQL `url` into a new SQLite project in `folder`, writing there every
    image the folder lacks (at its recorded path, from the bytes on the server)."""
    root = check_folder(folder)
    src, dst = Database.server(url), Database.sqlite(make_database_folder(root))
    try:
        src.open_checked()
        rows = copy_database(src, dst, files=False, progress=progress)
        written = _write_image_files(src, root, progress or no_progress)
    finally:
        src.close()
        dst.close()
    return TransferReport(src.where, str(dst.where), rows, written)


def _write_image_files(src: Database, root: Path, progress: Progress) -> tuple[str, ...]:
    """Write the images `root` does not have from the server's bytes; StoreError names one that cannot be."""
    images, blobs = schema.images, schema.image_files
    want = [(p, sha) for p, sha in src.query(select(images.c.path, images.c.file_sha256).order_by(images.c.path))]
    written: list[str] = []
    for path, sha in progress(want, len(want), "writing image files"):
        target = safe_path(root, path)
        if target.is_file() and file_sha256(target) == sha:
            continue
        if target.exists():
            raise StoreError(f"{target}: a different file is already there; move it away and migrate again")
        data = src.query_scalars(select(blobs.c.data).where(blobs.c.sha256 == sha))
        if not data:
            raise StoreError(f"{path}: the server has no copy of this image; open the project once where it is")
        write_bytes_atomic(target, data[0])
        written.append(path)
    return tuple(written)

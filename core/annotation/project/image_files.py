"""Where a project's image files are: `FolderFiles` for a project in its folder (SQLite), `SharedFiles` for
a project shared on a database server.

A shared project knows its images by content (the file's SHA-256). Each person's folder may hold copies
anywhere inside it, under any name, or none: a local copy is found by its hash; an image without one is
read from the database, where the person who added it put the file's bytes (`image_files`), and kept in
the local cache (`Settings.images_dir`, `<sha256><suffix>`), checked against its hash before it is written. The
hashes of local files are remembered in `<folder>/.dermaseg/local-files.json` by size and modification
time, so a file is hashed again only when it changed.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from PIL import Image, UnidentifiedImageError
from sqlalchemy import insert, select

from dermaseg.core.annotation.project import images as image_rows
from dermaseg.core.annotation.project.database import DB_DIR, Database
from dermaseg.core.annotation.project.paths import file_sha256, safe_path, upright_size, write_bytes_atomic
from dermaseg.core.annotation.project.records import ImageRecord, Progress, ScanReport, no_progress, utc_now
from dermaseg.core.annotation.project.scanning import image_files_in, scan
from dermaseg.core.annotation.project.schema import image_files
from dermaseg.core.annotation.project.schema import images as I
from dermaseg.core.errors import StoreError
from dermaseg.core.settings import Settings

LOCAL_INDEX = "local-files.json"


class ImageFiles(Protocol):
    """Finds a project's image files and keeps the image records up to date with them."""

    def scan(self, progress: Progress | None = None) -> ScanReport: ...

    def path(self, rec: ImageRecord) -> Path:
        """A local file with the image's content; StoreError when there is none to be had."""
        ...

    def missing(self, recs: Iterable[ImageRecord]) -> tuple[str, ...]:
        """Paths of the images whose file cannot be had."""
        ...


@dataclass(frozen=True)
class FolderFiles:
    """The images are the files of the project folder, at their recorded paths (`scanning`)."""

    db: Database
    root: Path

    def scan(self, progress: Progress | None = None) -> ScanReport:
        return scan(self.db, self.root, progress)

    def path(self, rec: ImageRecord) -> Path:
        return safe_path(self.root, rec.path)

    def missing(self, recs: Iterable[ImageRecord]) -> tuple[str, ...]:
        return tuple(r.path for r in recs if not (self.root / r.path).is_file())


class SharedFiles:
    """The images of a project on a server: local copies found by hash, else the bytes in the database."""

    def __init__(self, db: Database, root: Path, cache: Path) -> None:
        self.db, self.root, self.cache = db, root, cache
        self._local: dict[str, str] = {}  # sha256 -> path of a local copy, relative to the folder

    def scan(self, progress: Progress | None = None) -> ScanReport:
        """Hash the folder's images (unchanged files are not hashed again), add those the project does not
        know (with their bytes), and upload the bytes of known images the database lacks."""
        progress = progress or no_progress
        found, refused = image_files_in(self.root)
        index = self._read_index()
        to_hash = [r for r, st in found.items() if index.get(r, [None, None])[:2] != [st.st_size, st.st_mtime_ns]]
        unreadable: list[str] = []
        for rel in progress(to_hash, len(to_hash), "hashing images"):
            try:
                index[rel] = [found[rel].st_size, found[rel].st_mtime_ns, file_sha256(self.root / rel)]
            except OSError:
                unreadable.append(rel)
        index = {rel: v for rel, v in index.items() if rel in found and rel not in unreadable}
        self._write_index(index)
        local = {v[2]: rel for rel, v in sorted(index.items(), reverse=True)}  # the first path of each content
        known = {sha: path for sha, path in self.db.query(select(I.c.file_sha256, I.c.path))}
        stored = set(self.db.query_scalars(select(image_files.c.sha256)))
        taken = set(known.values())
        added: list[str] = []
        for sha, rel in progress(sorted(local.items(), key=lambda x: x[1]), len(local), "sharing images"):
            if sha in known and sha in stored:
                continue
            p = self.root / rel
            try:
                size = upright_size(p) if sha not in known else None
                data = p.read_bytes()
            except (OSError, ValueError, UnidentifiedImageError, Image.DecompressionBombError):
                unreadable.append(rel)
                continue
            with self.db.write() as c:
                if sha not in stored:
                    c.execute(insert(image_files).values(sha256=sha, suffix=Path(rel).suffix.lower(), data=data))
                if size is not None:
                    name = rel if rel not in taken else _unique_name(rel, sha)
                    st = found[rel]
                    image_rows.added(c, name, sha, st, size[0], size[1], utc_now())
                    taken.add(name)
                    added.append(name)
        self._local = local
        remote = tuple(sorted(path for sha, path in known.items() if sha not in local))
        return ScanReport(added=tuple(added), unreadable=tuple(unreadable), refused=tuple(refused), remote=remote)

    def path(self, rec: ImageRecord) -> Path:
        rel = self._local.get(rec.file_sha256)
        if rel is not None and (self.root / rel).is_file():
            return self.root / rel
        return self._fetch(rec)

    def missing(self, recs: Iterable[ImageRecord]) -> tuple[str, ...]:
        stored = set(self.db.query_scalars(select(image_files.c.sha256)))
        return tuple(r.path for r in recs if r.file_sha256 not in self._local and r.file_sha256 not in stored)

    def _fetch(self, rec: ImageRecord) -> Path:
        """The cached copy of the image's bytes from the database (fetched and checked on first use)."""
        rows = self.db.query(select(image_files.c.suffix).where(image_files.c.sha256 == rec.file_sha256))
        if not rows:
            raise StoreError(
                f"{rec.path}: no copy of this image here and none in the database; put the file in "
                f"{self.root}, or ask whoever added it to open the project once"
            )
        out = self.cache / f"{rec.file_sha256}{rows[0][0]}"
        if out.is_file():
            return out
        data = self.db.query_scalars(select(image_files.c.data).where(image_files.c.sha256 == rec.file_sha256))[0]
        if hashlib.sha256(data).hexdigest() != rec.file_sha256:
            raise StoreError(f"{rec.path}: the image's bytes in the database do not match its hash")
        try:
            write_bytes_atomic(out, data)
        except OSError as e:
            raise StoreError(f"{self.cache}: cannot keep a copy of {rec.path} here ({e.strerror or e})") from None
        return out

    def _read_index(self) -> dict[str, list]:
        try:
            index = json.loads((self.root / DB_DIR / LOCAL_INDEX).read_text())
            return {str(k): list(v) for k, v in index.items() if isinstance(v, list) and len(v) == 3}
        except (OSError, ValueError, AttributeError):
            return {}  # none yet, or unreadable: everything is hashed again

    def _write_index(self, index: dict[str, list]) -> None:
        with contextlib.suppress(OSError):  # a read-only folder: hash again next time
            write_bytes_atomic(self.root / DB_DIR / LOCAL_INDEX, json.dumps(index).encode())


def files_of(db: Database, root: Path, cache: Path | None = None) -> ImageFiles:
    """The project's image files: in its folder (SQLite), or shared (a server; fetched ones kept in `cache`,
    default `Settings.images_dir`)."""
    if db.path is not None:
        return FolderFiles(db, root)
    return SharedFiles(db, root, cache or Settings.from_env().images_dir)


def _unique_name(rel: str, sha: str) -> str:
    """Another person's image already has this path: the new one is named after its content too."""
    p = Path(rel)
    return (p.parent / f"{p.stem}~{sha[:8]}{p.suffix}").as_posix()

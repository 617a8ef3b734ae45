"""Finding the folder's images: new files are added, a known hash at a new path is a move, a known path
with a new hash is a change. Only files inside the folder are used (symlinks resolved)."""

from __future__ import annotations

import os
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from dermaseg.core.annotation.project import images as image_rows
from dermaseg.core.annotation.project.database import Database
from dermaseg.core.annotation.project.paths import file_sha256, upright_size
from dermaseg.core.annotation.project.records import Progress, ScanReport, no_progress, utc_now
from dermaseg.core.image import IMAGE_SUFFIXES


def image_files_in(root: Path) -> tuple[dict[str, os.stat_result], list[str]]:
    """({relative path: stat} of the image files inside `root`, [symlinks leading outside it]).

    Hidden files and folders (a leading '.') are skipped, so is `.dermaseg/`.
    """
    found: dict[str, os.stat_result] = {}
    refused: list[str] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            if name.startswith(".") or Path(name).suffix.lower() not in IMAGE_SUFFIXES:
                continue
            full = Path(dirpath) / name
            rel = full.relative_to(root).as_posix()
            real = full.resolve()
            if not real.is_relative_to(root):
                refused.append(rel)
                continue
            try:
                st = real.stat()
            except OSError:
                continue
            found[rel] = st
    return found, refused


def scan(db: Database, root: Path, progress: Progress | None = None) -> ScanReport:
    """Add new images, follow moved ones (same hash), update changed ones (same path, new hash).

    Files whose size and modification time did not change are not hashed again.
    """
    progress = progress or no_progress
    found, refused = image_files_in(root)
    known = image_rows.known_files(db)
    to_hash = [
        rel
        for rel, st in found.items()
        if rel not in known or (known[rel][3], known[rel][4]) != (st.st_size, st.st_mtime_ns)
    ]
    hashes: dict[str, str] = {}
    sizes: dict[str, tuple[int, int]] = {}
    unreadable: list[str] = []
    for rel in progress(to_hash, len(to_hash), "hashing images"):
        p = root / rel
        try:
            hashes[rel] = file_sha256(p)
            sizes[rel] = upright_size(p)
        except (OSError, ValueError, UnidentifiedImageError, Image.DecompressionBombError):
            unreadable.append(rel)
    missing = {path: row for path, row in known.items() if path not in found}
    missing_by_hash: dict[str, str] = {}
    for path, row in missing.items():
        missing_by_hash.setdefault(row[2], path)
    added: list[str] = []
    moved: list[tuple[str, str]] = []
    changed: list[str] = []
    now = utc_now()
    with db.write() as c:
        for rel in to_hash:
            if rel in unreadable:
                continue
            st, sha, (w, h) = found[rel], hashes[rel], sizes[rel]
            if rel in known:
                row = known[rel]
                if row[2] == sha:  # touched but same content
                    image_rows.touched(c, row[0], st)
                else:
                    image_rows.changed(c, row[0], sha, st, w, h)
                    changed.append(rel)
            elif sha in missing_by_hash:
                old = missing_by_hash.pop(sha)
                del missing[old]
                image_rows.moved(c, known[old][0], rel, st)
                moved.append((old, rel))
            else:
                image_rows.added(c, rel, sha, st, w, h, now)
                added.append(rel)
    return ScanReport(
        tuple(added), tuple(moved), tuple(changed), tuple(sorted(missing)), tuple(unreadable), tuple(refused)
    )

"""Paths and files of a project folder: relative paths kept inside it, file hashes, image sizes, atomic writes."""

from __future__ import annotations

import hashlib
import os
import threading
from pathlib import Path, PurePosixPath, PureWindowsPath

from PIL import Image

from dermaseg.core.errors import StoreError
from dermaseg.core.image import SUPPORTED_FORMATS


def write_bytes_atomic(path: Path, data: bytes) -> None:
    """Write `data` to `path` (its folder made if needed) through a temporary file beside it, renamed onto
    it: readers see no file or the whole file, and processes writing the same file at once do not mix."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        tmp.write_bytes(data)
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)


def relative_posix(rel: str) -> str:
    """Validate a user- or file-given relative path; raise StoreError for absolute or '..' paths."""
    if not isinstance(rel, str) or not rel or "\x00" in rel:
        raise StoreError(f"{rel!r}: not a usable file path")
    if "\\" in rel or PureWindowsPath(rel).drive or PurePosixPath(rel).is_absolute():
        raise StoreError(f"{rel!r}: only paths relative to the project folder, with '/', are allowed")
    parts = PurePosixPath(rel).parts
    if any(p == ".." for p in parts):
        raise StoreError(f"{rel!r}: paths may not leave the project folder ('..')")
    return PurePosixPath(*[p for p in parts if p != "."]).as_posix()


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def upright_size(path: Path) -> tuple[int, int]:
    """(width, height) after EXIF orientation, from the header only. Raises OSError/ValueError."""
    with Image.open(path) as img:
        w, h = img.size
        if img.format not in SUPPORTED_FORMATS:
            raise ValueError(f"unsupported format {img.format}")
        orientation = img.getexif().get(0x0112, 1)
    return (h, w) if orientation in (5, 6, 7, 8) else (w, h)


def safe_path(root: Path, rel: str) -> Path:
    """Absolute path of a path relative to the (resolved) folder `root`; StoreError unless it stays inside."""
    rel = relative_posix(rel)
    p = (root / rel).resolve()
    if not p.is_relative_to(root):
        raise StoreError(f"{rel!r}: leads outside the project folder (to {p})")
    return p

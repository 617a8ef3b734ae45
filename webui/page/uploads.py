"""Files the page writes: uploads copied into the project (and named as a person knows them), atomically."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from pathlib import Path

from dermaseg.core.annotation.project import Project
from dermaseg.core.errors import DermasegError
from dermaseg.core.image import load_image

UPLOADS_DIR = "uploads"  # an upload is kept as uploads/<first 8 hex of its sha256>/<its file name>


def add_upload(project: Project, data: bytes, name: str, max_pixels: int) -> int:
    """Validate an uploaded file, copy it into the project's `uploads/` folder, return its image id."""
    image = load_image(data, name=name, max_pixels=max_pixels)  # raises ImageLoadError on a bad file
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in Path(name).name) or "image.png"
    rel = f"{UPLOADS_DIR}/{image.sha256[:8]}/{safe}"  # the folder keeps two files of one name apart
    target = project.root / rel
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        write_atomically(target, lambda tmp: tmp.write_bytes(data))
    rec = project.image_by_path(rel)
    if rec is None:
        project.scan()
        rec = project.image_by_path(rel)
    if rec is None:
        raise DermasegError(f"{name}: could not be added to the project")
    return rec.id


def shown_path(path: str) -> str:
    """The path a person recognises: an upload as uploads/<its file name>, without the hash folder."""
    parts = path.split("/")
    if len(parts) == 3 and parts[0] == UPLOADS_DIR and len(parts[1]) == 8:
        return f"{UPLOADS_DIR}/{parts[2]}"
    return path


def write_atomically(path: Path, write: Callable[[Path], object]) -> None:
    """`write(tmp)` then rename onto `path`: readers see no file or the whole file, and sessions writing
    the same file at once (same image, same upload) each use a temporary name of their own."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        write(tmp)
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)

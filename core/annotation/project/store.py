"""The project store: a folder of images and one SQLite database of their annotations.

Layout: `<folder>/.dermaseg/project.sqlite` (WAL journal, `synchronous=FULL`: a commit that returned
is on disk and survives a crash or SIGKILL). Every accepted change is one transaction, committed at
once (autosave).

- Images are known by their path relative to the folder (posix separators) and their file SHA-256.
  `Project.open` / `Project.init` scan the folder: new files are added, a known hash at a new path is
  a move, a known path with a new hash is a change; `Project.scan_report` says what was found.
  Only files inside the folder are used (symlinks resolved; `..` and outside paths refused).
- An annotation is a mask (COCO compressed RLE, the source of truth), its editable polygons (JSON of
  `geometry.Polygons.to_json()`), a label from the project's label list, measurements (JSON of
  `metrics.LesionMetrics.to_dict()`), the simplification tolerance and its `Provenance`.
- Edits of annotations (add, update, delete, import) are recorded per image, so `undo(image_id)` and
  `redo(image_id)` work, also after a restart. A new edit after an undo drops the redo steps.
- Work in progress (prompts, hand-edited outline) is kept per image as a `Draft` until accepted; an
  image with a draft is shown "in_progress". Small page state (last image, annotator) is in `ui_state`.
- An annotation row that does not decode is listed by `damaged_annotations()`, left out of
  `annotations()` and exports, never raised; `check(repair=True)` mends it or moves it to `quarantine`.
- Before and after each write transaction the database and its WAL file must be the ones opened (same
  inode): a deleted or replaced file makes saves fail with a StoreError instead of vanishing at exit.
- `FolderLock`: one process at a time writes a project folder (`dermaseg serve`, `import-coco`).

Thread safety: one SQLite connection per thread (thread-local, created on first use) and one
in-process lock around write transactions; readers never wait for writers (WAL). Other processes
writing the same database wait up to `BUSY_TIMEOUT_S`.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import importlib.metadata
import json
import math
import os
import sqlite3
import threading
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, is_dataclass
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any, TypeVar

import numpy as np
from PIL import Image, UnidentifiedImageError

from dermaseg.core.annotation import coco
from dermaseg.core.annotation.geometry import Polygons, mask_to_polygons, polygons_to_mask
from dermaseg.core.calibration import Calibration
from dermaseg.core.errors import CalibrationError, CocoError, ConflictError, GeometryError, StoreError
from dermaseg.core.image import LesionImage, load_image

DB_DIR = ".dermaseg"
DB_NAME = "project.sqlite"
SCHEMA_VERSION = 2  # 2: annotations.version (optimistic concurrency); 1 -> 2 in `_migrate`
BUSY_TIMEOUT_S = 10.0
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp"})
STATUSES = ("not_started", "in_progress", "done")
DEFAULT_LABELS = ("lesion",)
HISTORY_LIMIT = 200  # undo steps kept per image
DEFAULT_TOLERANCE_PX = 0.0  # polygons made by the store itself are the exact pixel-edge outline

Json = Any
T = TypeVar("T")
# A progress wrapper, e.g. `lambda it, total, desc: tqdm(it, total=total, desc=desc)`.
Progress = Callable[[Iterable[T], int, str], Iterable[T]]


def _no_progress(it: Iterable[T], total: int, desc: str) -> Iterable[T]:
    return it


def utc_now() -> str:
    """Current time, UTC, ISO 8601 with seconds and a +00:00 offset."""
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def tool_version() -> str:
    """Installed dermaseg version (importlib.metadata), or "unknown" when not installed."""
    try:
        return importlib.metadata.version("dermaseg")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def _to_json_value(v: Any) -> Json:
    """Plain JSON values from dicts/lists/tuples/dataclasses/objects with to_dict or to_json.

    Non-finite floats become None (JSON has no NaN) and numpy scalars become Python numbers.
    """
    if v is None or isinstance(v, (str, bool, int)):
        return v
    if isinstance(v, float):
        return v if math.isfinite(v) else None
    if isinstance(v, np.generic):
        return _to_json_value(v.item())
    if isinstance(v, np.ndarray):
        return _to_json_value(v.tolist())
    if isinstance(v, Mapping):
        return {str(k): _to_json_value(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_to_json_value(x) for x in v]
    for method in ("to_dict", "to_json"):
        if callable(getattr(v, method, None)):
            return _to_json_value(getattr(v, method)())
    if is_dataclass(v) and not isinstance(v, type):
        return _to_json_value(asdict(v))
    raise StoreError(f"cannot store a {type(v).__name__} as JSON")


def _dumps(v: Any) -> str:
    return json.dumps(_to_json_value(v), separators=(",", ":"), allow_nan=False)


def _finite_or_none(v: Json) -> float | None:
    """A JSON number as a finite float, else None (also for bools and ints beyond float range)."""
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return None
    try:
        f = float(v)
    except OverflowError:
        return None
    return f if math.isfinite(f) else None


def _loads(s: str | None) -> Json:
    return None if s is None else json.loads(s)


# --------------------------------------------------------------------------------------------------
# Nouns


@dataclass(frozen=True)
class ImageRecord:
    """One image of the project.

    path: relative to the project folder, '/' separators. width/height: upright (EXIF applied) pixels.
    file_sha256: hash of the file's bytes; pixel_sha256: `LesionImage.sha256`, known once loaded.
    status: "not_started", "in_progress" or "done".
    """

    id: int
    path: str
    file_sha256: str
    pixel_sha256: str | None
    width: int
    height: int
    calibration: Calibration | None
    status: str
    added_utc: str


@dataclass(frozen=True)
class Provenance:
    """Where an annotation came from.

    source: "model" (Med-SAM answered prompts), "manual" (drawn or edited by hand) or "import".
    prompts: JSON of the prompts (box, points, labels), None when there were none.
    embedding_sha256: hash of the image embedding the decoder used.
    time_utc: ISO 8601 UTC; tool_version: dermaseg's version; annotator: a person's name or None.
    """

    source: str = "model"
    prompts: Json = None
    model_id: str | None = None
    model_variant: str | None = None
    embedding_sha256: str | None = None
    annotator: str | None = None
    tool_version: str = field(default_factory=tool_version)
    time_utc: str = field(default_factory=utc_now)

    def to_json(self) -> dict[str, Json]:
        return {
            "source": self.source,
            "prompts": _to_json_value(self.prompts),
            "model_id": self.model_id,
            "model_variant": self.model_variant,
            "embedding_sha256": self.embedding_sha256,
            "annotator": self.annotator,
            "tool_version": self.tool_version,
            "time_utc": self.time_utc,
        }

    @classmethod
    def from_json(cls, d: Mapping[str, Json]) -> Provenance:
        """Inverse of `to_json`; unknown keys are ignored, non-string fields dropped."""

        def s(key: str) -> str | None:
            v = d.get(key)
            return v if isinstance(v, str) else None

        return cls(
            source=s("source") or "import",
            prompts=d.get("prompts"),
            model_id=s("model_id"),
            model_variant=s("model_variant"),
            embedding_sha256=s("embedding_sha256"),
            annotator=s("annotator"),
            tool_version=s("tool_version") or "unknown",
            time_utc=s("time_utc") or utc_now(),
        )


@dataclass(frozen=True)
class Annotation:
    """One lesion outline on one image.

    rle: the mask (truth), of the image's size. polygons: `Polygons.to_json()` dict (editable
    outline, simplified with `tolerance_px` pixels). metrics: `LesionMetrics.to_dict()` or None.
    version: 1 when inserted, +1 on every change (update, undo, redo); a save names the version it
    was made from (`Project.update_annotation(expected_version=...)`), so none silently replaces another.
    """

    id: int
    image_id: int
    label: str
    rle: coco.Rle
    polygons: Json
    metrics: Json
    tolerance_px: float | None
    provenance: Provenance
    created_utc: str
    updated_utc: str
    version: int = 1

    def mask(self) -> np.ndarray:
        """bool (H, W)."""
        return self.rle.decode()

    @property
    def area_px(self) -> int:
        return self.rle.area


@dataclass(frozen=True)
class ScanReport:
    """What a folder scan found; paths are relative to the project folder."""

    added: tuple[str, ...] = ()
    moved: tuple[tuple[str, str], ...] = ()  # (old path, new path)
    changed: tuple[str, ...] = ()  # same path, different file content
    missing: tuple[str, ...] = ()  # known images whose file is gone (records and annotations kept)
    unreadable: tuple[str, ...] = ()  # image-like files that cannot be read as images (not added)
    refused: tuple[str, ...] = ()  # symlinks leading outside the folder (not added)

    def summary(self) -> str:
        parts = [
            f"{len(v)} {k}"
            for k, v in (
                ("added", self.added),
                ("moved", self.moved),
                ("changed", self.changed),
                ("missing", self.missing),
                ("unreadable", self.unreadable),
                ("refused", self.refused),
            )
            if v
        ]
        return ", ".join(parts) if parts else "no changes"


@dataclass(frozen=True)
class ExportReport:
    coco_path: Path
    masks_dir: Path | None
    images: int
    annotations: int
    polygon_annotations: int
    rle_annotations: int
    damaged: tuple[DamagedAnnotation, ...] = ()  # left out: they do not decode (`Project.check --repair`)


@dataclass(frozen=True)
class ImportReport:
    images: int  # images of the project that received annotations
    added: int
    replaced: int  # existing annotations removed (replace mode)
    skipped_duplicates: int
    new_labels: tuple[str, ...]


# --------------------------------------------------------------------------------------------------
# Schema

_SCHEMA = """
CREATE TABLE meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE labels(
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL UNIQUE,
    position INTEGER NOT NULL
);
CREATE TABLE images(
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    path TEXT NOT NULL UNIQUE,
    file_sha256 TEXT NOT NULL,
    file_size INTEGER NOT NULL,
    file_mtime_ns INTEGER NOT NULL,
    pixel_sha256 TEXT,
    width INTEGER NOT NULL CHECK (width > 0),
    height INTEGER NOT NULL CHECK (height > 0),
    mm_per_px REAL CHECK (mm_per_px IS NULL OR mm_per_px > 0),
    calibration_source TEXT,
    status TEXT NOT NULL DEFAULT 'not_started'
        CHECK (status IN ('not_started', 'in_progress', 'done')),
    added_utc TEXT NOT NULL
);
CREATE INDEX images_sha ON images(file_sha256);
CREATE TABLE annotations(
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    image_id INTEGER NOT NULL REFERENCES images(id) ON DELETE CASCADE,
    label TEXT NOT NULL,
    height INTEGER NOT NULL,
    width INTEGER NOT NULL,
    rle_counts TEXT NOT NULL,
    area INTEGER NOT NULL CHECK (area > 0),
    polygons_json TEXT NOT NULL,
    metrics_json TEXT,
    tolerance_px REAL,
    created_utc TEXT NOT NULL,
    updated_utc TEXT NOT NULL,
    version INTEGER NOT NULL DEFAULT 1 CHECK (version > 0)
);
CREATE INDEX annotations_image ON annotations(image_id);
CREATE TABLE provenance(
    annotation_id INTEGER PRIMARY KEY REFERENCES annotations(id) ON DELETE CASCADE,
    source TEXT NOT NULL,
    prompts_json TEXT,
    model_id TEXT,
    model_variant TEXT,
    embedding_sha256 TEXT,
    annotator TEXT,
    tool_version TEXT NOT NULL,
    time_utc TEXT NOT NULL
);
CREATE TABLE actions(
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    image_id INTEGER NOT NULL REFERENCES images(id) ON DELETE CASCADE,
    kind TEXT NOT NULL,
    time_utc TEXT NOT NULL,
    undone INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX actions_image ON actions(image_id, id);
CREATE TABLE action_changes(
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    action_id INTEGER NOT NULL REFERENCES actions(id) ON DELETE CASCADE,
    annotation_id INTEGER NOT NULL,
    before_json TEXT,
    after_json TEXT
);
CREATE INDEX action_changes_action ON action_changes(action_id);
"""

_ANN_COLUMNS = (
    "id, image_id, label, height, width, rle_counts, area, polygons_json, metrics_json, tolerance_px, "
    "created_utc, updated_utc, version"
)
_N_ANN = len(_ANN_COLUMNS.split(","))
_PROV_COLUMNS = "source, prompts_json, model_id, model_variant, embedding_sha256, annotator, tool_version, time_utc"

# --------------------------------------------------------------------------------------------------
# Durability: drafts, page state, damaged annotations, the files in use, one process per project

# Tables added to any project when it opens (no schema version change: older dermaseg ignores them).
_DURABILITY_SCHEMA = """
CREATE TABLE IF NOT EXISTS drafts(
    image_id INTEGER PRIMARY KEY REFERENCES images(id) ON DELETE CASCADE,
    prompts_json TEXT NOT NULL,
    polygons_json TEXT,
    tolerance_px REAL,
    updated_utc TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS ui_state(key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS quarantine(
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    annotation_id INTEGER NOT NULL,
    image_id INTEGER,
    reason TEXT NOT NULL,
    row_json TEXT NOT NULL,
    time_utc TEXT NOT NULL
);
"""
# An image with a draft (work not yet accepted) is shown "in progress", whatever was saved before.
_SHOWN_STATUS = (
    "CASE WHEN EXISTS (SELECT 1 FROM drafts d WHERE d.image_id = images.id) THEN 'in_progress' ELSE status END"
)
LOCK_NAME = "serve.lock"
FILES_CHANGED = (
    "the project database was moved, replaced or its journal deleted while dermaseg was running; "
    "restart dermaseg: your last change was NOT saved"
)


def annotation_damage(row: Sequence[Any]) -> str | None:
    """Why a stored annotation row (the `_ANN_COLUMNS`, in order) cannot be used, or None when it is sound.

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


@dataclass(frozen=True)
class Draft:
    """The work in progress on one image, not yet accepted: enough to put it back after a reload or crash.

    prompts: {"box": [x0, y0, x1, y1] | None, "points": [[x, y], ...], "labels": [1|0, ...], "head": ...}
    in image pixels (the decoder re-runs them). polygons: `Polygons.to_json()` of an outline edited by
    hand, None when the outline is the model's answer to the prompts. tolerance_px: outline simplification.
    """

    image_id: int
    prompts: Json
    polygons: Json
    tolerance_px: float | None
    updated_utc: str


@dataclass(frozen=True)
class DamagedAnnotation:
    """A stored annotation that cannot be decoded; it is left out of listings and exports, never raised."""

    id: int
    image_id: int
    label: str
    reason: str

    def describe(self) -> str:
        return f"annotation {self.id} (image id {self.image_id}, {self.label!r}): {self.reason}"


@dataclass(frozen=True)
class CheckReport:
    """What `Project.check` found, and with repair=True, what it did.

    integrity: `PRAGMA integrity_check` ("ok" when sound). damaged: annotations that do not decode.
    missing_files: image paths whose file is gone. repaired: (annotation id, how). quarantined: ids
    moved to the `quarantine` table (kept there, with the row as it was).
    """

    integrity: str
    damaged: tuple[DamagedAnnotation, ...]
    missing_files: tuple[str, ...]
    repaired: tuple[tuple[int, str], ...] = ()
    quarantined: tuple[int, ...] = ()

    @property
    def healthy(self) -> bool:
        return self.integrity == "ok" and not self.damaged and not self.missing_files


@dataclass(frozen=True)
class FileIds:
    """(device, inode) of the database file and of its WAL journal (None: no journal file)."""

    db: tuple[int, int] | None
    wal: tuple[int, int] | None


def _file_id(path: Path) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return st.st_dev, st.st_ino


@dataclass(frozen=True)
class LockHolder:
    """The process that holds a project folder: its pid, host, start time (UTC) and command."""

    pid: int | None
    host: str
    started_utc: str
    command: str

    def describe(self) -> str:
        return f"{self.command!r} (pid {self.pid} on {self.host}, since {self.started_utc})"


class FolderLock:
    """One dermaseg process at a time writes a project folder: an OS lock (`flock`) on `.dermaseg/serve.lock`.

    The file holds the holder's pid, host, start time and command, so a refused process can name it. The
    operating system releases the lock when the holder exits, however it ends (even `kill -9`), so a lock
    is never stale. Where `fcntl` does not exist (Windows), nothing is locked.
    """

    def __init__(self, folder: str | Path, command: str) -> None:
        self.path = Path(folder).expanduser().resolve() / DB_DIR / LOCK_NAME
        self.command = command
        self._fd: int | None = None

    def acquire(self) -> FolderLock:
        """Take the lock, or raise StoreError naming the process that holds it."""
        try:
            import fcntl
        except ImportError:  # pragma: no cover - Windows
            return self
        try:
            self.path.parent.mkdir(exist_ok=True)  # the project folder itself must exist
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            raise StoreError(f"{self.path}: cannot create the project lock ({e.strerror or e})") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = self._read(fd)
            os.close(fd)
            who = holder.describe() if holder else "another dermaseg process"
            raise StoreError(
                f"{self.path.parent.parent}: this project is already open in {who}; one project folder is "
                "served by one dermaseg at a time: use that one's page, or stop it first"
            ) from None
        me = LockHolder(os.getpid(), _hostname(), utc_now(), self.command)
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(asdict(me)).encode(), 0)
        self._fd = fd
        return self

    @staticmethod
    def _read(fd: int) -> LockHolder | None:
        try:
            d = json.loads(os.pread(fd, 4096, 0) or b"null")
            return LockHolder(int(d["pid"]), str(d["host"]), str(d["started_utc"]), str(d["command"]))
        except (OSError, ValueError, TypeError, KeyError):
            return None

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor drops the flock
            self._fd = None

    def __enter__(self) -> FolderLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def _hostname() -> str:
    import socket

    return socket.gethostname()


def _sqlite_error(e: sqlite3.Error, db: Path) -> StoreError:
    msg = str(e)
    low = msg.lower()
    if isinstance(e, sqlite3.DatabaseError) and ("not a database" in low or "malformed" in low):
        return StoreError(
            f"{db}: the project database is corrupt ({msg}); move it aside and run "
            "`dermaseg project init` again, or restore it from a backup"
        )
    if "disk is full" in low:
        return StoreError(
            f"{db}: cannot save to the project database ({msg}); the last change was NOT saved. "
            "Free some disk space and try again"
        )
    if "disk i/o error" in low:
        return StoreError(f"{db}: cannot use the project database ({msg}); is the disk full or failing?")
    if "readonly" in low or "read-only" in low or "unable to open" in low:
        return StoreError(f"{db}: cannot write the project database ({msg}); is the folder read-only?")
    if "locked" in low or "busy" in low:
        return StoreError(f"{db}: the project database is busy in another program ({msg}); try again")
    return StoreError(f"{db}: database error ({msg})")


# --------------------------------------------------------------------------------------------------
# Paths and files


def _relative_posix(rel: str) -> str:
    """Validate a user- or file-given relative path; raise StoreError for absolute or '..' paths."""
    if not isinstance(rel, str) or not rel or "\x00" in rel:
        raise StoreError(f"{rel!r}: not a usable file path")
    if "\\" in rel or PureWindowsPath(rel).drive or PurePosixPath(rel).is_absolute():
        raise StoreError(f"{rel!r}: only paths relative to the project folder, with '/', are allowed")
    parts = PurePosixPath(rel).parts
    if any(p == ".." for p in parts):
        raise StoreError(f"{rel!r}: paths may not leave the project folder ('..')")
    return PurePosixPath(*[p for p in parts if p != "."]).as_posix()


def _file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def _upright_size(path: Path) -> tuple[int, int]:
    """(width, height) after EXIF orientation, from the header only. Raises OSError/ValueError."""
    with Image.open(path) as img:
        w, h = img.size
        if img.format not in ("JPEG", "MPO", "PNG", "TIFF", "BMP"):
            raise ValueError(f"unsupported format {img.format}")
        orientation = img.getexif().get(0x0112, 1)
    return (h, w) if orientation in (5, 6, 7, 8) else (w, h)


def default_polygons(mask: np.ndarray, tolerance_px: float = DEFAULT_TOLERANCE_PX) -> dict[str, Json]:
    """Editable outline of a bool (H, W) mask: `geometry.mask_to_polygons(...).to_json()`."""
    return mask_to_polygons(mask, tolerance_px).to_json()


# --------------------------------------------------------------------------------------------------
# The project


class Project:
    """An annotation project: use `Project.init(folder)` or `Project.open(folder)`, then `close()`."""

    def __init__(self, root: Path, db_path: Path) -> None:
        self.root = root
        self.db_path = db_path
        self._local = threading.local()
        self._conns: list[sqlite3.Connection] = []
        self._conns_lock = threading.Lock()
        self._write_lock = threading.RLock()
        self.scan_report = ScanReport()
        self._files: FileIds | None = None  # the database and journal files this project writes to

    # ---- opening

    @classmethod
    def init(
        cls,
        folder: str | Path,
        labels: Sequence[str] | None = None,
        *,
        scan: bool = True,
        progress: Progress | None = None,
    ) -> Project:
        """Create the project database in `folder` (or open an existing one) and scan the folder.

        labels: the label list for a new project (default ("lesion",)); ignored for an existing one.
        """
        root = cls._check_folder(folder)
        db_dir = root / DB_DIR
        db_path = db_dir / DB_NAME
        try:
            db_dir.mkdir(exist_ok=True)
        except OSError as e:
            raise StoreError(
                f"{root}: cannot create {DB_DIR}/ in the folder ({e.strerror or e}); is it read-only?"
            ) from None
        if not os.access(db_dir, os.W_OK):
            raise StoreError(f"{db_dir}: the folder is read-only; a project needs to write its database")
        names = cls._check_labels(labels if labels is not None else DEFAULT_LABELS)
        with cls(root, db_path) as creator:
            creator._create_schema(names)
        return cls.open(root, scan=scan, progress=progress)

    def _create_schema(self, labels: list[str]) -> None:
        """Create the tables in one transaction; a database left empty by a crash here is recreated."""
        try:
            self._conn().execute("PRAGMA journal_mode=WAL")  # persistent: stored in the database file
        except sqlite3.Error as e:
            raise _sqlite_error(e, self.db_path) from None
        with self._write() as c:
            if c.execute("SELECT 1 FROM sqlite_master WHERE name = 'meta'").fetchone() is not None:
                return
            for stmt in _SCHEMA.split(";"):
                if stmt.strip():
                    c.execute(stmt)
            c.execute("INSERT INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
            c.execute("INSERT INTO meta VALUES ('created_utc', ?)", (utc_now(),))
            c.executemany("INSERT INTO labels(name, position) VALUES (?, ?)", [(n, i) for i, n in enumerate(labels)])

    @classmethod
    def open(cls, folder: str | Path, *, scan: bool = True, progress: Progress | None = None) -> Project:
        """Open the project in `folder`, check its database, and scan the folder for changes."""
        root = cls._check_folder(folder)
        db_path = root / DB_DIR / DB_NAME
        if not db_path.is_file():
            raise StoreError(f"{root}: not a dermaseg project (no {DB_DIR}/{DB_NAME}); run `dermaseg project init`")
        if not (os.access(db_path.parent, os.W_OK) and os.access(db_path, os.W_OK)):
            raise StoreError(f"{root}: the project folder is read-only; dermaseg saves every edit as you go")
        project = cls(root, db_path)
        try:
            c = project._conn()
            ok = c.execute("PRAGMA quick_check").fetchone()[0]
            if ok != "ok":
                raise StoreError(f"{db_path}: the project database is corrupt ({ok}); restore it from a backup")
            version = c.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
            if version is not None and version[0].isdigit() and 1 <= int(version[0]) < SCHEMA_VERSION:
                project._migrate(int(version[0]))
            elif version is not None and version[0].isdigit() and int(version[0]) > SCHEMA_VERSION:
                raise StoreError(
                    f"{db_path}: made by a newer dermaseg (database version {version[0]}, this one knows "
                    f"{SCHEMA_VERSION}); update dermaseg to open it"
                )
            elif version is None or version[0] != str(SCHEMA_VERSION):
                raise StoreError(f"{db_path}: unknown project database version {version and version[0]}")
            project._open_durability()
        except sqlite3.Error as e:
            project.close()
            raise _sqlite_error(e, db_path) from None
        except BaseException:
            project.close()
            raise
        if scan:
            project.scan(progress)
        return project

    def _migrate(self, version: int) -> None:
        """Upgrade a database of schema `version` to SCHEMA_VERSION, after a consistent copy of it
        (SQLite's backup API: the WAL's content included) at `project.sqlite.v<version>.bak` beside it.

        The upgrade is one write transaction that checks the version again inside it, so two processes
        opening the same old project at once upgrade it once.
        """
        backup = self.db_path.with_name(f"{DB_NAME}.v{version}.bak")
        if not backup.exists():
            tmp = backup.with_name(f"{backup.name}.{os.getpid()}.tmp")  # two processes may upgrade at once
            tmp.unlink(missing_ok=True)
            dest = sqlite3.connect(tmp)
            try:
                self._conn().backup(dest)
            finally:
                dest.close()
            tmp.replace(backup)
        with self._write() as c:
            current = int(c.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()[0])
            if current < 2:
                c.execute("ALTER TABLE annotations ADD COLUMN version INTEGER NOT NULL DEFAULT 1 CHECK (version > 0)")
            c.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", (str(SCHEMA_VERSION),))

    @staticmethod
    def _check_folder(folder: str | Path) -> Path:
        root = Path(folder).expanduser()
        if not root.exists():
            raise StoreError(f"{root}: no such folder")
        if not root.is_dir():
            raise StoreError(f"{root}: not a folder")
        return root.resolve()

    @staticmethod
    def _check_labels(labels: Iterable[str]) -> list[str]:
        names = [str(n).strip() for n in labels]
        if not names or any(not n for n in names):
            raise StoreError("the label list needs at least one non-empty label")
        if len(set(names)) != len(names):
            raise StoreError(f"the label list has duplicates: {names}")
        return names

    def close(self) -> None:
        """Close every connection this project opened (in any thread)."""
        with self._conns_lock:
            for c in self._conns:
                c.close()
            self._conns.clear()
        self._local = threading.local()
        self._files = None  # SQLite may delete the journal with the last connection

    def __enter__(self) -> Project:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- connections and transactions

    def _conn(self) -> sqlite3.Connection:
        c = getattr(self._local, "conn", None)
        if c is None:
            try:
                # isolation_level=None: no implicit transactions; we BEGIN/COMMIT ourselves.
                # check_same_thread=False only so that close() may close it from another thread;
                # each thread still uses its own connection.
                c = sqlite3.connect(self.db_path, timeout=BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False)
                c.execute("PRAGMA synchronous=FULL")
                c.execute("PRAGMA foreign_keys=ON")
                c.execute(f"PRAGMA busy_timeout={int(BUSY_TIMEOUT_S * 1000)}")
            except sqlite3.Error as e:
                raise _sqlite_error(e, self.db_path) from None
            self._local.conn = c
            with self._conns_lock:
                self._conns.append(c)
        return c

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One write transaction (BEGIN IMMEDIATE ... COMMIT), rolled back on any error."""
        with self._write_lock:
            c = self._conn()
            self._check_files()
            try:
                c.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as e:
                raise _sqlite_error(e, self.db_path) from None
            try:
                yield c
                c.execute("COMMIT")
                self._check_files()  # a commit into a journal deleted meanwhile is not kept
            except BaseException as e:
                if c.in_transaction:
                    c.execute("ROLLBACK")
                if isinstance(e, sqlite3.Error):
                    raise _sqlite_error(e, self.db_path) from None
                raise

    def _query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        try:
            return self._conn().execute(sql, params).fetchall()
        except sqlite3.Error as e:
            raise _sqlite_error(e, self.db_path) from None

    def integrity_check(self) -> str:
        """`PRAGMA integrity_check`: "ok" when the database is sound."""
        return "\n".join(str(r[0]) for r in self._query("PRAGMA integrity_check"))

    # ---- paths

    def safe_path(self, rel: str) -> Path:
        """Absolute path of a project-relative path; StoreError unless it stays inside the folder."""
        rel = _relative_posix(rel)
        p = (self.root / rel).resolve()
        if not p.is_relative_to(self.root):
            raise StoreError(f"{rel!r}: leads outside the project folder (to {p})")
        return p

    # ---- scanning

    def scan(self, progress: Progress | None = None) -> ScanReport:
        """Add new images, follow moved ones (same hash), update changed ones (same path, new hash).

        Files whose size and modification time did not change are not hashed again.
        """
        progress = progress or _no_progress
        found: dict[str, os.stat_result] = {}
        refused: list[str] = []
        for dirpath, dirnames, filenames in os.walk(self.root):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            for name in sorted(filenames):
                if name.startswith(".") or Path(name).suffix.lower() not in IMAGE_SUFFIXES:
                    continue
                full = Path(dirpath) / name
                rel = full.relative_to(self.root).as_posix()
                real = full.resolve()
                if not real.is_relative_to(self.root):
                    refused.append(rel)
                    continue
                try:
                    st = real.stat()
                except OSError:
                    continue
                found[rel] = st
        known = {
            r[1]: r
            for r in self._query("SELECT id, path, file_sha256, file_size, file_mtime_ns, width, height FROM images")
        }
        to_hash = [
            rel
            for rel, st in found.items()
            if rel not in known or (known[rel][3], known[rel][4]) != (st.st_size, st.st_mtime_ns)
        ]
        hashes: dict[str, str] = {}
        sizes: dict[str, tuple[int, int]] = {}
        unreadable: list[str] = []
        for rel in progress(to_hash, len(to_hash), "hashing images"):
            p = self.root / rel
            try:
                hashes[rel] = _file_sha256(p)
                sizes[rel] = _upright_size(p)
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
        with self._write() as c:
            for rel in to_hash:
                if rel in unreadable:
                    continue
                st, sha, (w, h) = found[rel], hashes[rel], sizes[rel]
                if rel in known:
                    row = known[rel]
                    if row[2] == sha:  # touched but same content
                        c.execute(
                            "UPDATE images SET file_size = ?, file_mtime_ns = ? WHERE id = ?",
                            (st.st_size, st.st_mtime_ns, row[0]),
                        )
                    else:
                        c.execute(
                            "UPDATE images SET file_sha256 = ?, file_size = ?, file_mtime_ns = ?, "
                            "pixel_sha256 = NULL, width = ?, height = ? WHERE id = ?",
                            (sha, st.st_size, st.st_mtime_ns, w, h, row[0]),
                        )
                        changed.append(rel)
                elif sha in missing_by_hash:
                    old = missing_by_hash.pop(sha)
                    del missing[old]
                    c.execute(
                        "UPDATE images SET path = ?, file_size = ?, file_mtime_ns = ? WHERE id = ?",
                        (rel, st.st_size, st.st_mtime_ns, known[old][0]),
                    )
                    moved.append((old, rel))
                else:
                    c.execute(
                        "INSERT INTO images(path, file_sha256, file_size, file_mtime_ns, width, height, "
                        "added_utc) VALUES (?, ?, ?, ?, ?, ?, ?)",
                        (rel, sha, st.st_size, st.st_mtime_ns, w, h, now),
                    )
                    added.append(rel)
        report = ScanReport(
            tuple(added),
            tuple(moved),
            tuple(changed),
            tuple(sorted(missing)),
            tuple(unreadable),
            tuple(refused),
        )
        self.scan_report = report
        return report

    # ---- labels

    def labels(self) -> tuple[str, ...]:
        """The label list, in display order."""
        return tuple(r[0] for r in self._query("SELECT name FROM labels ORDER BY position, id"))

    def set_labels(self, names: Sequence[str]) -> None:
        """Replace the label list; a label still used by an annotation cannot be removed."""
        names = self._check_labels(names)
        with self._write() as c:
            used = {r[0] for r in c.execute("SELECT DISTINCT label FROM annotations")}
            dropped = sorted(used - set(names))
            if dropped:
                raise StoreError(f"labels still used by annotations cannot be removed: {', '.join(dropped)}")
            c.execute("DELETE FROM labels WHERE name NOT IN (%s)" % ",".join("?" * len(names)), names)  # noqa: UP031
            for i, n in enumerate(names):
                c.execute(
                    "INSERT INTO labels(name, position) VALUES (?, ?) "
                    "ON CONFLICT(name) DO UPDATE SET position = excluded.position",
                    (n, i),
                )

    def _category_ids(self) -> dict[str, int]:
        return {r[1]: r[0] for r in self._query("SELECT id, name FROM labels ORDER BY position, id")}

    # ---- images

    @staticmethod
    def _image(row: Sequence[Any]) -> ImageRecord:
        cal = Calibration(row[6], row[7] or "user") if row[6] is not None else None
        return ImageRecord(row[0], row[1], row[2], row[3], row[4], row[5], cal, row[8], row[9])

    _IMG_SQL = (
        "SELECT id, path, file_sha256, pixel_sha256, width, height, mm_per_px, calibration_source, "
        f"{_SHOWN_STATUS}, added_utc FROM images"
    )

    def images(self, statuses: Collection[str] | None = None) -> list[ImageRecord]:
        """All images (or those with one of `statuses`), ordered by path."""
        rows = self._query(self._IMG_SQL + " ORDER BY path")
        out = [self._image(r) for r in rows]
        return [i for i in out if statuses is None or i.status in statuses]

    def image(self, image_id: int) -> ImageRecord:
        rows = self._query(self._IMG_SQL + " WHERE id = ?", (image_id,))
        if not rows:
            raise StoreError(f"image id {image_id}: not in this project")
        return self._image(rows[0])

    def image_by_path(self, rel: str) -> ImageRecord | None:
        rows = self._query(self._IMG_SQL + " WHERE path = ?", (_relative_posix(rel),))
        return self._image(rows[0]) if rows else None

    def load_image(self, image_id: int) -> LesionImage:
        """Decode an image (`core.image.load_image`) with its stored calibration; records the pixel hash."""
        rec = self.image(image_id)
        img = load_image(self.safe_path(rec.path), name=rec.path)
        if (img.width, img.height) != (rec.width, rec.height):
            raise StoreError(
                f"{rec.path}: is {img.width}x{img.height} now, the project knows it as "
                f"{rec.width}x{rec.height}; reopen the project to rescan"
            )
        if rec.pixel_sha256 != img.sha256:
            with self._write() as c:
                c.execute("UPDATE images SET pixel_sha256 = ? WHERE id = ?", (img.sha256, image_id))
        return img.with_calibration(rec.calibration or self.project_calibration() or img.calibration)

    def project_calibration(self) -> Calibration | None:
        """The project's scale (one device at contact), used by every image without a scale of its own
        (it comes before a file's resolution metadata, which cameras rarely fill in truly)."""
        rows = self._query("SELECT value FROM meta WHERE key = 'calibration_mm_per_px'")
        return Calibration(float(rows[0][0]), "project") if rows else None

    def set_project_calibration(self, calibration: Calibration | None) -> None:
        """Set (or, with None, remove) the project's scale."""
        with self._write() as c:
            c.execute("DELETE FROM meta WHERE key = 'calibration_mm_per_px'")
            if calibration is not None:
                c.execute("INSERT INTO meta VALUES ('calibration_mm_per_px', ?)", (repr(calibration.mm_per_px),))

    def set_status(self, image_id: int, status: str) -> None:
        if status not in STATUSES:
            raise StoreError(f"status must be one of {', '.join(STATUSES)}, got {status!r}")
        with self._write() as c:
            if c.execute("UPDATE images SET status = ? WHERE id = ?", (status, image_id)).rowcount != 1:
                raise StoreError(f"image id {image_id}: not in this project")

    def set_calibration(self, image_id: int, calibration: Calibration | None) -> None:
        mm, src = (calibration.mm_per_px, calibration.source) if calibration else (None, None)
        with self._write() as c:
            n = c.execute(
                "UPDATE images SET mm_per_px = ?, calibration_source = ? WHERE id = ?", (mm, src, image_id)
            ).rowcount
            if n != 1:
                raise StoreError(f"image id {image_id}: not in this project")

    # ---- annotations: reading

    def _annotation_from_row(self, a: Sequence[Any], p: Sequence[Any] | None) -> Annotation:
        prov = (
            Provenance(p[0], _loads(p[1]), p[2], p[3], p[4], p[5], p[6], p[7])
            if p is not None
            else Provenance(source="unknown", tool_version="unknown", time_utc=a[10])
        )
        return Annotation(
            id=a[0],
            image_id=a[1],
            label=a[2],
            rle=coco.Rle(a[3], a[4], a[5]),
            polygons=_loads(a[7]),
            metrics=_loads(a[8]),
            tolerance_px=a[9],
            provenance=prov,
            created_utc=a[10],
            updated_utc=a[11],
            version=a[12],
        )

    def annotations(self, image_id: int | None = None) -> list[Annotation]:
        """Annotations of one image (or all), oldest first."""
        where, params = ("WHERE a.image_id = ?", (image_id,)) if image_id is not None else ("", ())
        cols = ", ".join(f"a.{c.strip()}" for c in _ANN_COLUMNS.split(","))
        pcols = ", ".join(f"p.{c.strip()}" for c in _PROV_COLUMNS.split(","))
        rows = self._query(
            f"SELECT {cols}, p.annotation_id, {pcols} FROM annotations a "
            f"LEFT JOIN provenance p ON p.annotation_id = a.id {where} ORDER BY a.id",
            params,
        )
        n = _N_ANN
        return [
            self._annotation_from_row(r[:n], r[n + 1 :] if r[n] is not None else None)
            for r in rows
            if annotation_damage(r[:n]) is None
        ]

    def annotation(self, ann_id: int) -> Annotation:
        cols = ", ".join(f"a.{c.strip()}" for c in _ANN_COLUMNS.split(","))
        pcols = ", ".join(f"p.{c.strip()}" for c in _PROV_COLUMNS.split(","))
        rows = self._query(
            f"SELECT {cols}, p.annotation_id, {pcols} FROM annotations a "
            "LEFT JOIN provenance p ON p.annotation_id = a.id WHERE a.id = ?",
            (ann_id,),
        )
        if not rows:
            raise StoreError(f"annotation id {ann_id}: not in this project")
        r, n = rows[0], _N_ANN
        damage = annotation_damage(r[:n])
        if damage is not None:
            raise StoreError(f"annotation id {ann_id} is damaged ({damage}); run `dermaseg project check --repair`")
        return self._annotation_from_row(r[:n], r[n + 1 :] if r[n] is not None else None)

    # ---- annotations: snapshots (the unit of undo/redo)

    @staticmethod
    def _snapshot(c: sqlite3.Connection, ann_id: int) -> str | None:
        a = c.execute(f"SELECT {_ANN_COLUMNS} FROM annotations WHERE id = ?", (ann_id,)).fetchone()
        if a is None:
            return None
        p = c.execute(f"SELECT {_PROV_COLUMNS} FROM provenance WHERE annotation_id = ?", (ann_id,)).fetchone()
        return json.dumps({"a": list(a), "p": list(p) if p is not None else None}, separators=(",", ":"))

    @staticmethod
    def _restore(c: sqlite3.Connection, ann_id: int, snapshot: str | None) -> None:
        """Put the annotation back as `snapshot` says (None: delete it).

        The restored row gets a version above both the snapshot's and the stored one's, so a save made
        from any version seen before the undo/redo is refused (`update_annotation(expected_version)`).
        """
        now = c.execute("SELECT version FROM annotations WHERE id = ?", (ann_id,)).fetchone()
        c.execute("DELETE FROM annotations WHERE id = ?", (ann_id,))  # provenance goes with it (cascade)
        if snapshot is None:
            return
        s = json.loads(snapshot)
        row = list(s["a"])[:_N_ANN]
        if len(row) < _N_ANN:  # a snapshot from a schema-1 project: no version
            row.append(1)
        row[-1] = max(int(row[-1]), now[0] if now else 0) + 1
        c.execute(f"INSERT INTO annotations({_ANN_COLUMNS}) VALUES ({','.join('?' * _N_ANN)})", row)
        if s["p"] is not None:
            c.execute(
                f"INSERT INTO provenance(annotation_id, {_PROV_COLUMNS}) VALUES (?, {','.join('?' * 8)})",
                [ann_id, *s["p"]],
            )

    def _begin_action(self, c: sqlite3.Connection, image_id: int, kind: str) -> int:
        """Start an undoable action on an image: drop its redo steps and old history beyond the limit."""
        c.execute("DELETE FROM actions WHERE image_id = ? AND undone = 1", (image_id,))
        c.execute(
            "DELETE FROM actions WHERE image_id = ? AND id NOT IN "
            "(SELECT id FROM actions WHERE image_id = ? ORDER BY id DESC LIMIT ?)",
            (image_id, image_id, HISTORY_LIMIT - 1),
        )
        cur = c.execute("INSERT INTO actions(image_id, kind, time_utc) VALUES (?, ?, ?)", (image_id, kind, utc_now()))
        return int(cur.lastrowid)

    @staticmethod
    def _record(c: sqlite3.Connection, action_id: int, ann_id: int, before: str | None, after: str | None) -> None:
        c.execute(
            "INSERT INTO action_changes(action_id, annotation_id, before_json, after_json) VALUES (?, ?, ?, ?)",
            (action_id, ann_id, before, after),
        )

    # ---- annotations: writing

    def _check_mask(self, rec: ImageRecord, mask: np.ndarray) -> np.ndarray:
        m = np.asarray(mask)
        if m.shape != (rec.height, rec.width):
            raise StoreError(
                f"{rec.path}: the mask has shape {m.shape} (rows, cols), "
                f"the image is {rec.width} wide and {rec.height} high"
            )
        m = m.astype(bool, copy=False)
        if not m.any():
            raise StoreError(f"{rec.path}: the mask is empty; delete the annotation instead")
        return m

    def _check_label(self, c: sqlite3.Connection, label: str) -> None:
        if c.execute("SELECT 1 FROM labels WHERE name = ?", (label,)).fetchone() is None:
            names = [r[0] for r in c.execute("SELECT name FROM labels ORDER BY position")]
            raise StoreError(f"label {label!r} is not in the project's label list ({', '.join(names)})")

    @staticmethod
    def _insert(
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
        cur = c.execute(
            "INSERT INTO annotations(image_id, label, height, width, rle_counts, area, polygons_json, "
            "metrics_json, tolerance_px, created_utc, updated_utc) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
            (image_id, label, rle.height, rle.width, rle.counts, rle.area, polygons_json, metrics_json,
             tolerance_px, now, now),
        )  # fmt: skip
        ann_id = int(cur.lastrowid)
        Project._write_provenance(c, ann_id, prov)
        return ann_id

    @staticmethod
    def _write_provenance(c: sqlite3.Connection, ann_id: int, prov: Provenance) -> None:
        c.execute(
            f"INSERT OR REPLACE INTO provenance(annotation_id, {_PROV_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?)",
            (ann_id, prov.source, _dumps(prov.prompts) if prov.prompts is not None else None, prov.model_id,
             prov.model_variant, prov.embedding_sha256, prov.annotator, prov.tool_version, prov.time_utc),
        )  # fmt: skip

    def add_annotation(
        self,
        image_id: int,
        mask: np.ndarray,
        label: str | None = None,
        *,
        polygons: Polygons | Mapping[str, Json] | None = None,
        metrics: Any = None,
        tolerance_px: float | None = None,
        provenance: Provenance | None = None,
    ) -> Annotation:
        """Save a new annotation (committed on return) and make it undoable.

        mask: bool (H, W) of the image's size, not empty. label: default the first of the label list.
        polygons: the editable outline (`Polygons` or its JSON); default the exact outline of `mask`.
        metrics: `LesionMetrics` (anything with to_dict()) or a dict. The image becomes "in_progress"
        if it was "not_started".
        """
        rec = self.image(image_id)
        m = self._check_mask(rec, mask)
        if polygons is None:
            tolerance_px = DEFAULT_TOLERANCE_PX if tolerance_px is None else tolerance_px
            polygons = default_polygons(m, tolerance_px)
        rle = coco.Rle.from_mask(m)
        prov = provenance or Provenance(source="manual")
        with self._write() as c:
            label = label if label is not None else self._first_label(c)
            self._check_label(c, label)
            ann_id = self._insert(
                c, image_id, label, rle, _dumps(polygons), None if metrics is None else _dumps(metrics),
                tolerance_px, prov, utc_now(),
            )  # fmt: skip
            action = self._begin_action(c, image_id, "add")
            self._record(c, action, ann_id, None, self._snapshot(c, ann_id))
            c.execute(
                "UPDATE images SET status = 'in_progress' WHERE id = ? AND status = 'not_started'",
                (image_id,),
            )
        return self.annotation(ann_id)

    @staticmethod
    def _first_label(c: sqlite3.Connection) -> str:
        return c.execute("SELECT name FROM labels ORDER BY position, id LIMIT 1").fetchone()[0]

    _UNSET: Any = object()

    def update_annotation(
        self,
        ann_id: int,
        *,
        mask: np.ndarray | None = None,
        polygons: Polygons | Mapping[str, Json] | None = None,
        label: str | None = None,
        metrics: Any = _UNSET,
        tolerance_px: float | None = _UNSET,
        provenance: Provenance | None = None,
        expected_version: int | None = None,
    ) -> Annotation:
        """Change an annotation (committed on return, undoable; its version goes up by one). Unset
        arguments keep their value.

        A new mask without polygons gets its exact outline; new polygons without a mask are
        rasterised (`geometry.polygons_to_mask`) into the new mask, so the two never disagree.
        expected_version: the version the change was made from; when the stored one differs, or the
        annotation was deleted meanwhile, nothing is written and `ConflictError` says who changed it.
        The check and the write are one transaction (BEGIN IMMEDIATE): two processes cannot both pass.
        """
        try:
            old = self.annotation(ann_id)
        except StoreError:
            if expected_version is None:
                raise
            raise self._conflict(self._conn(), ann_id, expected_version) from None
        rec = self.image(old.image_id)
        if polygons is not None and not isinstance(polygons, Polygons):
            polygons = Polygons.from_json(dict(polygons))
        if mask is None and polygons is not None:
            mask = polygons_to_mask(polygons, rec.height, rec.width)
        m = self._check_mask(rec, mask) if mask is not None else None
        if m is not None and polygons is None:
            tol = DEFAULT_TOLERANCE_PX if tolerance_px is self._UNSET or tolerance_px is None else tolerance_px
            polygons, tolerance_px = default_polygons(m, tol), tol
        with self._write() as c:
            version = self._check_version(c, ann_id, expected_version)
            before = self._snapshot(c, ann_id)
            sets: dict[str, Any] = {"updated_utc": utc_now(), "version": version + 1}
            if m is not None:
                rle = coco.Rle.from_mask(m)
                sets.update(height=rle.height, width=rle.width, rle_counts=rle.counts, area=rle.area)
            if polygons is not None:
                sets["polygons_json"] = _dumps(polygons)
            if label is not None:
                self._check_label(c, label)
                sets["label"] = label
            if metrics is not self._UNSET:
                sets["metrics_json"] = None if metrics is None else _dumps(metrics)
            if tolerance_px is not self._UNSET:
                sets["tolerance_px"] = tolerance_px
            assignments = ", ".join(f"{k} = ?" for k in sets)
            c.execute(f"UPDATE annotations SET {assignments} WHERE id = ?", (*sets.values(), ann_id))
            if provenance is not None:
                self._write_provenance(c, ann_id, provenance)
            action = self._begin_action(c, old.image_id, "update")
            self._record(c, action, ann_id, before, self._snapshot(c, ann_id))
        return self.annotation(ann_id)

    def delete_annotation(self, ann_id: int, *, expected_version: int | None = None) -> None:
        """Delete an annotation (committed on return, undoable).

        expected_version: as in `update_annotation` (ConflictError when it changed or is gone).
        """
        with self._write() as c:
            self._check_version(c, ann_id, expected_version)
            row = c.execute("SELECT image_id FROM annotations WHERE id = ?", (ann_id,)).fetchone()
            before = self._snapshot(c, ann_id)
            action = self._begin_action(c, row[0], "delete")
            self._restore(c, ann_id, None)
            self._record(c, action, ann_id, before, None)

    def _check_version(self, c: sqlite3.Connection, ann_id: int, expected: int | None) -> int:
        """The stored version of `ann_id` (inside the caller's write transaction); StoreError when it is
        not in the project, ConflictError when `expected` is given and differs (or it was deleted)."""
        row = c.execute("SELECT version FROM annotations WHERE id = ?", (ann_id,)).fetchone()
        if row is None and expected is None:
            raise StoreError(f"annotation id {ann_id}: not in this project")
        if row is None or (expected is not None and row[0] != expected):
            raise self._conflict(c, ann_id, expected)
        return int(row[0])

    @staticmethod
    def _conflict(c: sqlite3.Connection, ann_id: int, expected: int | None) -> ConflictError:
        """A ConflictError naming who changed `ann_id` and when (or when it was deleted), as far as known."""
        row = c.execute(
            "SELECT a.version, a.updated_utc, p.annotator FROM annotations a "
            "LEFT JOIN provenance p ON p.annotation_id = a.id WHERE a.id = ?",
            (ann_id,),
        ).fetchone()
        if row is not None:
            return ConflictError(ann_id, expected, row[0], row[2], row[1])
        gone = c.execute(
            "SELECT a.time_utc FROM action_changes ch JOIN actions a ON a.id = ch.action_id "
            "WHERE ch.annotation_id = ? AND ch.after_json IS NULL AND a.undone = 0 ORDER BY a.id DESC LIMIT 1",
            (ann_id,),
        ).fetchone()
        return ConflictError(ann_id, expected, None, None, gone[0] if gone else None)

    # ---- undo / redo

    def last_action(self, image_id: int, *, undone: bool = False) -> int | None:
        """Id of the step `undo(image_id)` would undo (undone=True: the one `redo` would redo), or None."""
        order = "ASC" if undone else "DESC"
        rows = self._query(
            f"SELECT id FROM actions WHERE image_id = ? AND undone = ? ORDER BY id {order} LIMIT 1",
            (image_id, int(undone)),
        )
        return int(rows[0][0]) if rows else None

    @staticmethod
    def _step_or_conflict(row: tuple[Any, ...] | None, action_id: int | None) -> None:
        if action_id is not None and (row is None or row[0] != action_id):
            raise StoreError(
                "this image was changed by someone else since your last save (another tab or user); "
                "undo would undo their change, not yours. Reopen the image to see the saved state"
            )

    def undo(self, image_id: int, action_id: int | None = None) -> bool:
        """Undo the latest annotation edit on the image; False when there is nothing to undo.

        action_id: undo only if that step (`last_action`) is still the latest, else StoreError.
        """
        with self._write() as c:
            row = c.execute(
                "SELECT id FROM actions WHERE image_id = ? AND undone = 0 ORDER BY id DESC LIMIT 1",
                (image_id,),
            ).fetchone()
            self._step_or_conflict(row, action_id)
            if row is None:
                return False
            changes = c.execute(
                "SELECT annotation_id, before_json FROM action_changes WHERE action_id = ? ORDER BY id DESC",
                (row[0],),
            ).fetchall()
            for ann_id, before in changes:
                self._restore(c, ann_id, before)
            c.execute("UPDATE actions SET undone = 1 WHERE id = ?", (row[0],))
            return True

    def redo(self, image_id: int, action_id: int | None = None) -> bool:
        """Redo the earliest undone edit on the image; False when there is nothing to redo.

        action_id: redo only if that step (`last_action(undone=True)`) is still the next, else StoreError.
        """
        with self._write() as c:
            row = c.execute(
                "SELECT id FROM actions WHERE image_id = ? AND undone = 1 ORDER BY id LIMIT 1", (image_id,)
            ).fetchone()
            self._step_or_conflict(row, action_id)
            if row is None:
                return False
            changes = c.execute(
                "SELECT annotation_id, after_json FROM action_changes WHERE action_id = ? ORDER BY id",
                (row[0],),
            ).fetchall()
            for ann_id, after in changes:
                self._restore(c, ann_id, after)
            c.execute("UPDATE actions SET undone = 0 WHERE id = ?", (row[0],))
            return True

    def history_depth(self, image_id: int) -> tuple[int, int]:
        """(steps that can be undone, steps that can be redone) for the image."""
        rows = dict(self._query("SELECT undone, COUNT(*) FROM actions WHERE image_id = ? GROUP BY undone", (image_id,)))
        return int(rows.get(0, 0)), int(rows.get(1, 0))

    # ---- durability: tables, the files in use, drafts, page state

    def _open_durability(self) -> None:
        """Create the drafts, ui_state and quarantine tables if missing; remember the files in use."""
        with self._write() as c:
            for stmt in _DURABILITY_SCHEMA.split(";"):
                if stmt.strip():
                    c.execute(stmt)
        self._files = self._file_ids()

    def _file_ids(self) -> FileIds:
        return FileIds(_file_id(self.db_path), _file_id(self.db_path.with_name(self.db_path.name + "-wal")))

    def _check_files(self) -> None:
        """Refuse to go on when the database file or its WAL journal is not the one opened.

        A deleted or replaced journal would take every commit with it when the process ends, while each
        commit still reports success; so the change is refused (StoreError) instead. When only the journal
        went, the changes it already holds are first copied into the database file (a checkpoint through
        the connections that still have it open), so what was confirmed before stays saved.
        """
        if self._files is None:
            return
        now = self._file_ids()
        if now == self._files:
            return
        if now.db == self._files.db:
            with contextlib.suppress(sqlite3.Error):
                self._conn().execute("PRAGMA wal_checkpoint(FULL)")
        raise StoreError(f"{self.db_path}: {FILES_CHANGED}")

    def save_draft(
        self, image_id: int, prompts: Json, polygons: Json = None, tolerance_px: float | None = None
    ) -> None:
        """Keep the work in progress on an image (one small UPSERT, committed): see `Draft`."""
        with self._write() as c:
            c.execute(
                "INSERT INTO drafts(image_id, prompts_json, polygons_json, tolerance_px, updated_utc) "
                "VALUES (?, ?, ?, ?, ?) ON CONFLICT(image_id) DO UPDATE SET prompts_json = excluded.prompts_json, "
                "polygons_json = excluded.polygons_json, tolerance_px = excluded.tolerance_px, "
                "updated_utc = excluded.updated_utc",
                (image_id, _dumps(prompts), None if polygons is None else _dumps(polygons), tolerance_px, utc_now()),
            )

    def draft(self, image_id: int) -> Draft | None:
        """The image's draft, or None (also when its JSON does not parse: a damaged draft is no draft)."""
        rows = self._query(
            "SELECT prompts_json, polygons_json, tolerance_px, updated_utc FROM drafts WHERE image_id = ?", (image_id,)
        )
        if not rows:
            return None
        try:
            return Draft(image_id, json.loads(rows[0][0]), _loads(rows[0][1]), rows[0][2], rows[0][3])
        except (TypeError, ValueError):
            return None

    def discard_draft(self, image_id: int) -> None:
        with self._write() as c:
            c.execute("DELETE FROM drafts WHERE image_id = ?", (image_id,))

    def ui_state(self, key: str) -> str | None:
        """A value the page keeps between visits (last image, annotator name), or None."""
        rows = self._query("SELECT value FROM ui_state WHERE key = ?", (key,))
        return rows[0][0] if rows else None

    def set_ui_state(self, key: str, value: str) -> None:
        with self._write() as c:
            c.execute(
                "INSERT INTO ui_state(key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                (key, value),
            )

    # ---- durability: damaged annotations, check and repair

    def damaged_annotations(self, image_id: int | None = None) -> list[DamagedAnnotation]:
        """Stored annotations that cannot be decoded (see `annotation_damage`), oldest first."""
        where, params = ("WHERE image_id = ?", (image_id,)) if image_id is not None else ("", ())
        rows = self._query(f"SELECT {_ANN_COLUMNS} FROM annotations {where} ORDER BY id", params)
        return [
            DamagedAnnotation(r[0], r[1], r[2], damage) for r in rows if (damage := annotation_damage(r)) is not None
        ]

    def check(self, repair: bool = False) -> CheckReport:
        """Check the database (integrity, damaged annotations, missing image files); repair=True mends them.

        A damaged annotation is repaired, in this order, from: the edit history's snapshot of the same
        version (same id and update time: exact); its outline, rasterised into the mask (exact for outlines
        the store made, within the simplification tolerance for the page's); its mask, outlined anew.
        What cannot be repaired is moved to the `quarantine` table with its row as it was, never deleted.
        """
        integrity = self.integrity_check()
        damaged = tuple(self.damaged_annotations())
        missing = tuple(r.path for r in self.images() if not (self.root / r.path).is_file())
        if not repair or not damaged:
            return CheckReport(integrity, damaged, missing)
        repaired: list[tuple[int, str]] = []
        quarantined: list[int] = []
        with self._write() as c:
            for d in damaged:
                how = self._repair_annotation(c, d.id)
                if how is not None:
                    repaired.append((d.id, how))
                    continue
                row = self._snapshot(c, d.id)
                c.execute(
                    "INSERT INTO quarantine(annotation_id, image_id, reason, row_json, time_utc) VALUES (?,?,?,?,?)",
                    (d.id, d.image_id, d.reason, row, utc_now()),
                )
                c.execute("DELETE FROM annotations WHERE id = ?", (d.id,))
                quarantined.append(d.id)
        return CheckReport(integrity, damaged, missing, tuple(repaired), tuple(quarantined))

    def _repair_annotation(self, c: sqlite3.Connection, ann_id: int) -> str | None:
        """Mend one damaged annotation row in the open transaction; returns how, or None when it cannot."""
        row = list(c.execute(f"SELECT {_ANN_COLUMNS} FROM annotations WHERE id = ?", (ann_id,)).fetchone())
        cols = [x.strip() for x in _ANN_COLUMNS.split(",")]
        fields = ("rle_counts", "area", "polygons_json", "metrics_json", "tolerance_px")
        # 1. the history's snapshot of this version: identity and update time equal, sound, closest in content
        best: tuple[int, int, list[Any]] | None = None
        snapshots = c.execute(
            "SELECT id, before_json, after_json FROM action_changes WHERE annotation_id = ? ORDER BY id", (ann_id,)
        ).fetchall()
        for change_id, *snaps in snapshots:
            for snap in snaps:
                try:
                    a = json.loads(snap)["a"] if snap else None
                except (TypeError, ValueError, KeyError):
                    continue
                if not a or len(a) != len(row) or annotation_damage(a) is not None:
                    continue
                same = [a[i] == row[i] for i in range(len(cols)) if cols[i] not in fields]
                if not all(same):
                    continue
                score = sum(a[cols.index(f)] == row[cols.index(f)] for f in fields)
                if best is None or (score, change_id) >= best[:2]:
                    best = (score, change_id, a)
        if best is not None:
            sets = {f: best[2][cols.index(f)] for f in fields}
            how = "restored from the edit history (the same version)"
        else:
            h, w = row[cols.index("height")], row[cols.index("width")]
            sets = {}
            try:
                polys = Polygons.from_json(json.loads(row[cols.index("polygons_json")]))
                polys_ok = (polys.width, polys.height) == (w, h)
            except (TypeError, ValueError, GeometryError):
                polys_ok = False
            rle_ok = rle_damage(h, w, row[cols.index("rle_counts")], row[cols.index("area")]) is None
            if polys_ok and not rle_ok:
                mask = polygons_to_mask(polys, h, w)
                if not mask.any():
                    return None
                rle = coco.Rle.from_mask(mask)
                sets.update(rle_counts=rle.counts, area=rle.area)
                how = "mask re-derived from its outline"
            elif rle_ok and not polys_ok:
                tol = DEFAULT_TOLERANCE_PX
                mask = coco.Rle(h, w, row[cols.index("rle_counts")]).decode()
                sets.update(polygons_json=_dumps(default_polygons(mask, tol)), tolerance_px=tol)
                how = "outline re-derived from its mask"
            else:
                return None
            mj = row[cols.index("metrics_json")]
            try:
                _loads(mj)
            except (TypeError, ValueError):
                sets["metrics_json"] = None
                how += ", measurements dropped"
        assignments = ", ".join(f"{k} = ?" for k in sets)
        c.execute(f"UPDATE annotations SET {assignments} WHERE id = ?", (*sets.values(), ann_id))
        check = c.execute(f"SELECT {_ANN_COLUMNS} FROM annotations WHERE id = ?", (ann_id,)).fetchone()
        return how if annotation_damage(check) is None else None

    # ---- summary

    def summary(self) -> dict[str, Any]:
        """Counts for `dermaseg project status`: images by status, annotations by label, labels."""
        by_status = dict.fromkeys(STATUSES, 0)
        by_status.update(dict(self._query(f"SELECT {_SHOWN_STATUS} AS s, COUNT(*) FROM images GROUP BY s")))
        by_label = dict(self._query("SELECT label, COUNT(*) FROM annotations GROUP BY label"))
        return {
            "folder": str(self.root),
            "images": sum(by_status.values()),
            "by_status": by_status,
            "annotations": sum(by_label.values()),
            "by_label": by_label,
            "labels": list(self.labels()),
        }

    # ---- COCO bridge

    def export_coco(
        self,
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
        progress = progress or _no_progress
        masks = Path(masks_dir).resolve() if masks_dir is not None else None
        if masks is not None and masks.is_relative_to(self.root) and not masks.is_relative_to(self.root / DB_DIR):
            raise StoreError(
                f"{masks}: the masks folder is inside the project folder, where its PNGs would be taken "
                "for images to annotate; choose a folder outside it"
            )
        cats = self._category_ids()
        images = self.images(statuses)
        if image_ids is not None:
            wanted = set(image_ids)
            images = [r for r in images if r.id in wanted]
        by_image: dict[int, list[Annotation]] = {}
        for a in self.annotations() if image_ids is None else [a for r in images for a in self.annotations(r.id)]:
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
            "description": f"dermaseg project {self.root.name}",
            "version": tool_version(),
            "date_created": utc_now(),
        }
        data = coco.dataset_dict(coco_images, coco_anns, [(i, n) for n, i in cats.items()], info)
        out = Path(coco_path)
        try:
            coco.write_json_atomic(data, out)
        except OSError as e:
            raise StoreError(
                f"{out}: cannot write the COCO file ({e.strerror or e}); is the disk full or the folder read-only?"
            ) from None
        exported = {rec.id for rec in images}
        damaged = tuple(d for d in self.damaged_annotations() if d.image_id in exported)
        return ExportReport(out, masks, len(coco_images), len(coco_anns), n_poly, len(coco_anns) - n_poly, damaged)

    def import_coco(
        self,
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
        replace=False: annotations are added, skipping exact duplicates (same image, label and
        mask), so importing a file twice adds nothing. replace=True: the images' annotations are
        replaced. Each image's import is one undoable step. Raises CocoError naming the entry.
        """
        progress = progress or _no_progress
        ds = coco.read_coco(source)
        by_path = {r.path: r for r in self.images()}
        by_sha: dict[str, ImageRecord] = {}
        for r in by_path.values():
            by_sha.setdefault(r.file_sha256, r)
        targets: dict[int, ImageRecord] = {}
        for ci in ds.images:
            try:
                rec = by_path.get(_relative_posix(ci.file_name))
            except StoreError as e:
                raise CocoError(f"image id {ci.id}: {e}") from None
            sha = ci.extra.get("file_sha256")
            if rec is None and isinstance(sha, str):
                rec = by_sha.get(sha)
            if rec is None:
                raise CocoError(
                    f"image id {ci.id} ({ci.file_name!r}): not in this project; put the image in {self.root} "
                    "(at that relative path) and reopen the project"
                )
            if (rec.width, rec.height) != (ci.width, ci.height):
                raise CocoError(
                    f"image id {ci.id} ({ci.file_name!r}): the file says {ci.width}x{ci.height}, "
                    f"the project's image {rec.path} is {rec.width}x{rec.height}"
                )
            targets[ci.id] = rec
        labels = list(self.labels())
        cat_names = {c.id: c.name for c in ds.categories}
        new_labels = tuple(dict.fromkeys(n for n in cat_names.values() if n not in labels))
        prepared: dict[int, list[tuple[str, coco.Rle, str, str | None, float | None, Provenance]]] = {}
        for a in progress(ds.annotations, len(ds.annotations), "checking annotations"):
            label = cat_names[a.category_id]
            pj, tol = self._imported_polygons(a)
            metrics = a.extra.get("metrics")
            prov_d = a.extra.get("provenance")
            prov = (
                Provenance.from_json(prov_d)
                if isinstance(prov_d, dict)
                else Provenance(source="import", annotator=annotator)
            )
            prepared.setdefault(targets[a.image_id].id, []).append(
                (label, a.rle, pj, _dumps(metrics) if isinstance(metrics, dict) else None, tol, prov)
            )
        statuses = {targets[ci.id].id: ci.extra["status"] for ci in ds.images if ci.extra.get("status") in STATUSES}
        added = replaced = skipped = 0
        now = utc_now()
        with self._write() as c:
            pos = c.execute("SELECT COALESCE(MAX(position), -1) FROM labels").fetchone()[0]
            for i, name in enumerate(new_labels):
                c.execute("INSERT INTO labels(name, position) VALUES (?, ?)", (name, pos + 1 + i))
            for image_id, items in prepared.items():
                action = self._begin_action(c, image_id, "import")
                existing = c.execute(
                    "SELECT id, label, rle_counts FROM annotations WHERE image_id = ?", (image_id,)
                ).fetchall()
                if replace:
                    for ann_id, _, _ in existing:
                        self._record(c, action, ann_id, self._snapshot(c, ann_id), None)
                        self._restore(c, ann_id, None)
                        replaced += 1
                    existing = []
                seen = {(lbl, counts) for _, lbl, counts in existing}
                for label, rle, pj, mj, tol, prov in items:
                    if (label, rle.counts) in seen:
                        skipped += 1
                        continue
                    seen.add((label, rle.counts))
                    ann_id = self._insert(c, image_id, label, rle, pj, mj, tol, prov, now)
                    self._record(c, action, ann_id, None, self._snapshot(c, ann_id))
                    added += 1
                c.execute(
                    "UPDATE images SET status = 'in_progress' WHERE id = ? AND status = 'not_started'",
                    (image_id,),
                )
            for image_id, status in statuses.items():
                c.execute("UPDATE images SET status = ? WHERE id = ?", (status, image_id))
            for ci in ds.images:
                mm, src = ci.extra.get("mm_per_px"), ci.extra.get("calibration_source")
                try:
                    cal = Calibration(float(mm), src if src in ("user", "metadata", "ruler") else "user")
                except (TypeError, ValueError, OverflowError, CalibrationError):
                    continue
                c.execute(
                    "UPDATE images SET mm_per_px = ?, calibration_source = ? WHERE id = ? AND mm_per_px IS NULL",
                    (cal.mm_per_px, cal.source, targets[ci.id].id),
                )
        return ImportReport(len(prepared), added, replaced, skipped, new_labels)

    @staticmethod
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
            return _dumps(polys), _finite_or_none(tol)
        return _dumps(default_polygons(a.rle.decode(), DEFAULT_TOLERANCE_PX)), DEFAULT_TOLERANCE_PX

"""The project database: one SQLite file per folder, its schema and upgrades, connections and transactions.

`<folder>/.dermaseg/project.sqlite` in WAL mode with `synchronous=FULL`: a commit that returned is on disk
and survives a crash or SIGKILL. One connection per thread (thread-local, created on first use) and one
in-process lock around write transactions; readers never wait for writers (WAL). Other processes writing
the same database wait up to `BUSY_TIMEOUT_S`. Before and after each write transaction the database and its
WAL file must be the ones opened (same inode): a deleted or replaced file makes saves fail with a StoreError
instead of vanishing at exit.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dermaseg.core.annotation.project.records import utc_now
from dermaseg.core.errors import StoreError

DB_DIR = ".dermaseg"
DB_NAME = "project.sqlite"
SCHEMA_VERSION = 2  # 2: annotations.version (optimistic concurrency); 1 -> 2 in `Database.migrate`
BUSY_TIMEOUT_S = 10.0
FILES_CHANGED = (
    "the project database was moved, replaced or its journal deleted while dermaseg was running; "
    "restart dermaseg: your last change was NOT saved"
)

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


def sqlite_error(e: sqlite3.Error, db: Path) -> StoreError:
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


def check_folder(folder: str | Path) -> Path:
    """The project folder, resolved; StoreError when it does not exist or is not a folder."""
    root = Path(folder).expanduser()
    if not root.exists():
        raise StoreError(f"{root}: no such folder")
    if not root.is_dir():
        raise StoreError(f"{root}: not a folder")
    return root.resolve()


def make_database_folder(root: Path) -> Path:
    """Create `<root>/.dermaseg/` (a writable folder) for a new project; returns the database's path."""
    db_dir = root / DB_DIR
    try:
        db_dir.mkdir(exist_ok=True)
    except OSError as e:
        raise StoreError(
            f"{root}: cannot create {DB_DIR}/ in the folder ({e.strerror or e}); is it read-only?"
        ) from None
    if not os.access(db_dir, os.W_OK):
        raise StoreError(f"{db_dir}: the folder is read-only; a project needs to write its database")
    return db_dir / DB_NAME


def existing_database(root: Path) -> Path:
    """The path of the project database in `root`; StoreError when there is none or it is read-only."""
    db_path = root / DB_DIR / DB_NAME
    if not db_path.is_file():
        raise StoreError(f"{root}: not a dermaseg project (no {DB_DIR}/{DB_NAME}); run `dermaseg project init`")
    if not (os.access(db_path.parent, os.W_OK) and os.access(db_path, os.W_OK)):
        raise StoreError(f"{root}: the project folder is read-only; dermaseg saves every edit as you go")
    return db_path


class Database:
    """The project's SQLite database: a connection per thread, write transactions, the files in use."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._local = threading.local()
        self._conns: list[sqlite3.Connection] = []
        self._conns_lock = threading.Lock()
        self._write_lock = threading.RLock()
        self._files: FileIds | None = None  # the database and journal files this project writes to

    # ---- creating, checking and upgrading

    def create_schema(self, labels: Sequence[str]) -> None:
        """Create the tables in one transaction; a database left empty by a crash here is recreated."""
        try:
            self.conn().execute("PRAGMA journal_mode=WAL")  # persistent: stored in the database file
        except sqlite3.Error as e:
            raise sqlite_error(e, self.path) from None
        with self.write() as c:
            if c.execute("SELECT 1 FROM sqlite_master WHERE name = 'meta'").fetchone() is not None:
                return
            for stmt in _SCHEMA.split(";"):
                if stmt.strip():
                    c.execute(stmt)
            c.execute("INSERT INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
            c.execute("INSERT INTO meta VALUES ('created_utc', ?)", (utc_now(),))
            c.executemany("INSERT INTO labels(name, position) VALUES (?, ?)", [(n, i) for i, n in enumerate(labels)])

    def open_checked(self) -> None:
        """Check an existing database (quick check, schema version), upgrade an older one, add the
        durability tables; on any error every connection is closed and a StoreError raised."""
        try:
            c = self.conn()
            ok = c.execute("PRAGMA quick_check").fetchone()[0]
            if ok != "ok":
                raise StoreError(f"{self.path}: the project database is corrupt ({ok}); restore it from a backup")
            version = c.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
            if version is not None and version[0].isdigit() and 1 <= int(version[0]) < SCHEMA_VERSION:
                self.migrate(int(version[0]))
            elif version is not None and version[0].isdigit() and int(version[0]) > SCHEMA_VERSION:
                raise StoreError(
                    f"{self.path}: made by a newer dermaseg (database version {version[0]}, this one knows "
                    f"{SCHEMA_VERSION}); update dermaseg to open it"
                )
            elif version is None or version[0] != str(SCHEMA_VERSION):
                raise StoreError(f"{self.path}: unknown project database version {version and version[0]}")
            self._open_durability()
        except sqlite3.Error as e:
            self.close()
            raise sqlite_error(e, self.path) from None
        except BaseException:
            self.close()
            raise

    def migrate(self, version: int) -> None:
        """Upgrade a database of schema `version` to SCHEMA_VERSION, after a consistent copy of it
        (SQLite's backup API: the WAL's content included) at `project.sqlite.v<version>.bak` beside it.

        The upgrade is one write transaction that checks the version again inside it, so two processes
        opening the same old project at once upgrade it once.
        """
        backup = self.path.with_name(f"{DB_NAME}.v{version}.bak")
        if not backup.exists():
            tmp = backup.with_name(f"{backup.name}.{os.getpid()}.tmp")  # two processes may upgrade at once
            tmp.unlink(missing_ok=True)
            dest = sqlite3.connect(tmp)
            try:
                self.conn().backup(dest)
            finally:
                dest.close()
            tmp.replace(backup)
        with self.write() as c:
            current = int(c.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()[0])
            if current < 2:
                c.execute("ALTER TABLE annotations ADD COLUMN version INTEGER NOT NULL DEFAULT 1 CHECK (version > 0)")
            c.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", (str(SCHEMA_VERSION),))

    def _open_durability(self) -> None:
        """Create the drafts, ui_state and quarantine tables if missing; remember the files in use."""
        with self.write() as c:
            for stmt in _DURABILITY_SCHEMA.split(";"):
                if stmt.strip():
                    c.execute(stmt)
        self._files = self._file_ids()

    def integrity_check(self) -> str:
        """`PRAGMA integrity_check`: "ok" when the database is sound."""
        return "\n".join(str(r[0]) for r in self.query("PRAGMA integrity_check"))

    def close(self) -> None:
        """Close every connection opened (in any thread)."""
        with self._conns_lock:
            for c in self._conns:
                c.close()
            self._conns.clear()
        self._local = threading.local()
        self._files = None  # SQLite may delete the journal with the last connection

    # ---- connections and transactions

    def conn(self) -> sqlite3.Connection:
        """This thread's connection (opened on first use)."""
        c = getattr(self._local, "conn", None)
        if c is None:
            try:
                # isolation_level=None: no implicit transactions; we BEGIN/COMMIT ourselves.
                # check_same_thread=False only so that close() may close it from another thread;
                # each thread still uses its own connection.
                c = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False)
                c.execute("PRAGMA synchronous=FULL")
                c.execute("PRAGMA foreign_keys=ON")
                c.execute(f"PRAGMA busy_timeout={int(BUSY_TIMEOUT_S * 1000)}")
            except sqlite3.Error as e:
                raise sqlite_error(e, self.path) from None
            self._local.conn = c
            with self._conns_lock:
                self._conns.append(c)
        return c

    @contextmanager
    def write(self) -> Iterator[sqlite3.Connection]:
        """One write transaction (BEGIN IMMEDIATE ... COMMIT), rolled back on any error."""
        with self._write_lock:
            c = self.conn()
            self._check_files()
            try:
                c.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as e:
                raise sqlite_error(e, self.path) from None
            try:
                yield c
                c.execute("COMMIT")
                self._check_files()  # a commit into a journal deleted meanwhile is not kept
            except BaseException as e:
                if c.in_transaction:
                    c.execute("ROLLBACK")
                if isinstance(e, sqlite3.Error):
                    raise sqlite_error(e, self.path) from None
                raise

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """All rows of one read statement."""
        try:
            return self.conn().execute(sql, params).fetchall()
        except sqlite3.Error as e:
            raise sqlite_error(e, self.path) from None

    # ---- the files in use

    def _file_ids(self) -> FileIds:
        return FileIds(_file_id(self.path), _file_id(self.path.with_name(self.path.name + "-wal")))

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
                self.conn().execute("PRAGMA wal_checkpoint(FULL)")
        raise StoreError(f"{self.path}: {FILES_CHANGED}")

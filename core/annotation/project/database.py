"""The project database: SQLite in the project folder or a PostgreSQL server, connections and transactions.

One schema for both engines (`schema`, SQLAlchemy Core), upgraded by `schema_versions`. The embedded
default is `<folder>/.dermaseg/project.sqlite` in WAL mode with `synchronous=FULL`: a commit that returned
is on disk and survives a crash or SIGKILL; readers never wait for writers; one in-process lock around
write transactions (BEGIN IMMEDIATE), other processes wait up to `BUSY_TIMEOUT_S`. Before and after each
write the database and its WAL file must be the ones opened (same inode): a deleted or replaced file makes
saves fail with a StoreError instead of vanishing at exit.

On PostgreSQL (`Database.server(url)`) several people's processes share one database; writes are READ
COMMITTED transactions that lock the rows they check (`FOR UPDATE`), a dropped connection is replaced on
the next use (`pool_pre_ping`), and every message names the server without the password.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, Executable, Row, Table, create_engine, event, exc, func, select, text
from sqlalchemy.dialects import postgresql
from sqlalchemy.dialects import sqlite as sqlite_dialect
from sqlalchemy.engine import make_url
from sqlalchemy.pool import QueuePool

from dermaseg.core.annotation.project import schema, schema_versions
from dermaseg.core.errors import StoreError

DB_DIR = ".dermaseg"
DB_NAME = "project.sqlite"
BUSY_TIMEOUT_S = 10.0
CONNECT_TIMEOUT_S = 10  # a PostgreSQL server that does not answer
DB_ENV = "DERMASEG_DB"  # a PostgreSQL URL: the default for `--db`
FILES_CHANGED = (
    "the project database was moved, replaced or its journal deleted while dermaseg was running; "
    "restart dermaseg: your last change was NOT saved"
)


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


def redacted(url: str) -> str:
    """The URL as it may be shown or logged: the password replaced by ***."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except (exc.ArgumentError, ValueError):  # ValueError: a port that is not a number
        return "<a database URL that does not parse>"


def server_url(url: str) -> str:
    """A PostgreSQL URL for SQLAlchemy with psycopg 3; StoreError for anything else."""
    try:
        u = make_url(url)
    except (exc.ArgumentError, ValueError):  # ValueError: a port that is not a number
        raise StoreError(
            f"{redacted(url)}: not a database URL; use postgresql://USER:PASSWORD@HOST:PORT/DATABASE"
        ) from None
    if u.get_backend_name() != "postgresql":
        raise StoreError(f"{redacted(url)}: dermaseg shares projects on PostgreSQL only (postgresql://...)")
    if not u.database:
        raise StoreError(f"{redacted(url)}: the URL names no database (postgresql://USER@HOST:PORT/DATABASE)")
    return u.set(drivername="postgresql+psycopg").render_as_string(hide_password=False)


# What libpq says (psycopg passes it on) when a login is refused, or the server cannot be reached.
_REFUSED_LOGIN = ("password authentication failed", "no password supplied")
_UNREACHABLE = ("connection refused", "could not translate host", "failed to resolve", "timeout")


def server_error(e: exc.DBAPIError, where: str) -> StoreError:
    """A StoreError for a PostgreSQL failure that says what to do; never the password nor the SQL."""
    msg = str(e.orig).strip().splitlines()[0] if e.orig is not None else type(e).__name__
    low = str(e.orig).lower()
    if any(k in low for k in _REFUSED_LOGIN) or ("role" in low and "does not exist" in low):
        return StoreError(f"{where}: the database server refused the login ({msg}); check the user and password")
    if "database" in low and "does not exist" in low:
        return StoreError(f"{where}: no such database on the server ({msg}); create it first (createdb NAME)")
    if any(k in low for k in _UNREACHABLE):
        return StoreError(f"{where}: cannot reach the database server ({msg}); is it running, and the address right?")
    if isinstance(e, exc.OperationalError) or e.connection_invalidated:
        return StoreError(
            f"{where}: lost the connection to the database server ({msg}); your last change was NOT saved, "
            "try again when the server is back"
        )
    if isinstance(e, exc.IntegrityError):
        return StoreError(f"{where}: the change breaks a rule of the database ({msg})")
    return StoreError(f"{where}: database error ({msg})")


class Database:
    """The project's database (`Database.sqlite(path)` or `Database.server(url)`): reads, write
    transactions, the schema's version.

    `where` names it in messages (the file, or the URL without its password).
    """

    def __init__(self, engine: Engine, where: str, path: Path | None = None) -> None:
        self.engine = engine
        self.where = where
        self.path = path  # the SQLite file; None on a server
        self.dialect = engine.dialect.name  # "sqlite" or "postgresql"
        self._write_lock = threading.RLock()
        self._files: FileIds | None = None  # the database and journal files this project writes to

    @classmethod
    def sqlite(cls, path: Path) -> Database:
        """The SQLite file at `path` (created on first write)."""
        engine = create_engine(
            f"sqlite:///{path}",
            # AUTOCOMMIT: no implicit transactions; `write` issues BEGIN IMMEDIATE / COMMIT itself.
            isolation_level="AUTOCOMMIT",
            # check_same_thread=False: pooled connections serve one thread at a time, any thread.
            connect_args={"timeout": BUSY_TIMEOUT_S, "check_same_thread": False},
            poolclass=QueuePool,
            pool_size=4,
            max_overflow=60,
        )

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn: sqlite3.Connection, _record: object) -> None:
            dbapi_conn.execute("PRAGMA synchronous=FULL")
            dbapi_conn.execute("PRAGMA foreign_keys=ON")
            dbapi_conn.execute(f"PRAGMA busy_timeout={int(BUSY_TIMEOUT_S * 1000)}")

        return cls(engine, str(path), path)

    @classmethod
    def server(cls, url: str) -> Database:
        """The PostgreSQL database at `url` (postgresql://USER:PASSWORD@HOST:PORT/DATABASE)."""
        engine = create_engine(
            server_url(url),
            pool_pre_ping=True,  # a connection the server dropped is replaced before use
            pool_size=2,  # at most 10 connections per process: 8 laptops stay under PostgreSQL's default 100
            max_overflow=8,
            connect_args={"connect_timeout": CONNECT_TIMEOUT_S, "application_name": "dermaseg"},
            hide_parameters=True,  # values never reach a log or an error message
        )
        return cls(engine, redacted(url))

    # ---- creating, checking and upgrading

    def create_schema(self, labels: Sequence[str]) -> None:
        """Create the tables in one transaction (an existing project is left as it is)."""
        if self.dialect == "sqlite":
            with self._errors(), self.engine.connect() as c:
                c.exec_driver_sql("PRAGMA journal_mode=WAL")  # persistent: stored in the database file
        with self.write() as c:
            schema_versions.create(c, labels)

    def open_checked(self) -> None:
        """Check an existing database (SQLite's quick check, the schema's revision) and upgrade an older
        one after a backup; on any error every connection is closed and a StoreError raised."""
        try:
            with self._errors():
                if self.dialect == "sqlite":
                    ok = self.query_text("PRAGMA quick_check")[0][0]
                    if ok != "ok":
                        raise StoreError(
                            f"{self.where}: the project database is corrupt ({ok}); restore it from a backup"
                        )
                with self.engine.connect() as c:
                    rev = schema_versions.revision(c)
                    newer = rev is not None and schema_versions.is_newer(c, rev)
            if rev is None:
                raise StoreError(
                    f"{self.where}: not a dermaseg project (the database is empty); create it with "
                    "`dermaseg project init FOLDER --db URL`"
                )
            if newer:
                raise StoreError(
                    f"{self.where}: made by a newer dermaseg (database revision {rev}, this one knows up to "
                    f"{schema_versions.head()}); update dermaseg to open it"
                )
            if schema_versions.pending(rev):
                self.migrate()
            if self.dialect == "sqlite":
                self._files = self._file_ids()
        except BaseException:
            self.close()
            raise

    def migrate(self) -> None:
        """Upgrade the database to this dermaseg's schema, after a backup of an SQLite file.

        The backup is a consistent copy (SQLite's backup API: the WAL's content included) at
        `project.sqlite.v<schema version>.bak` beside it. The upgrade is one write transaction that reads the
        revision again inside it, so two processes opening the same old project at once upgrade it once.
        """
        if self.path is not None:
            with self.engine.connect() as c:
                version = schema_versions.schema_version(c)
            backup = self.path.with_name(f"{self.path.name}.v{version}.bak")
            if not backup.exists():
                tmp = backup.with_name(f"{backup.name}.{os.getpid()}.tmp")  # two processes may upgrade at once
                tmp.unlink(missing_ok=True)
                src, dest = sqlite3.connect(self.path), sqlite3.connect(tmp)
                try:
                    src.backup(dest)
                finally:
                    src.close()
                    dest.close()
                tmp.replace(backup)
        with self.write() as c:
            schema_versions.upgrade(c, schema_versions.revision(c))

    def integrity_check(self) -> str:
        """ "ok" when the database is sound (SQLite's `PRAGMA integrity_check`; a server checks itself)."""
        if self.dialect != "sqlite":
            return "ok"
        return "\n".join(str(r[0]) for r in self.query_text("PRAGMA integrity_check"))

    def close(self) -> None:
        """Close every connection opened (in any thread)."""
        self.engine.dispose()
        self._files = None  # SQLite may delete the journal with the last connection

    # ---- reads and transactions

    def query(self, stmt: Executable) -> list[Row[Any]]:
        """All rows of one read statement."""
        with self.read() as c:
            return list(c.execute(stmt).all())

    def query_scalars(self, stmt: Executable) -> list[Any]:
        """The first column of every row of one read statement."""
        with self.read() as c:
            return list(c.execute(stmt).scalars())

    def query_text(self, sql: str) -> list[tuple[Any, ...]]:
        """All rows of one statement in the engine's own SQL (PRAGMAs)."""
        with self.read() as c:
            return [tuple(r) for r in c.exec_driver_sql(sql).all()]

    @contextmanager
    def read(self) -> Iterator[Connection]:
        """A connection for a few reads (each sees what was committed when it ran)."""
        with self._errors(), self.engine.connect() as c:
            yield c

    @contextmanager
    def write(self) -> Iterator[Connection]:
        """One write transaction, committed on success and rolled back on any error.

        SQLite: BEGIN IMMEDIATE (the database's write lock from the start), the files checked before and
        after. PostgreSQL: a READ COMMITTED transaction; rows checked before a change are read `FOR
        UPDATE` by the callers, so two processes cannot both pass a check.
        """
        if self.dialect != "sqlite":
            with self._errors(), self.engine.begin() as c:
                yield c
            return
        with self._write_lock, self._errors(), self.engine.connect() as c:
            self._check_files(c)
            c.exec_driver_sql("BEGIN IMMEDIATE")
            try:
                yield c
                c.exec_driver_sql("COMMIT")
                self._check_files(c)  # a commit into a journal deleted meanwhile is not kept
            except BaseException:
                raw = c.connection.dbapi_connection
                if raw is not None and raw.in_transaction:
                    raw.rollback()
                raise

    # ---- id counters (`transfer`): the next id of each table, as the engine keeps it

    def id_counters(self, c: Connection) -> dict[str, int]:
        """{table: the highest id it ever gave} for the tables with generated ids (0: none given yet)."""
        tables = [t.name for t in schema.metadata.sorted_tables if _generated_id(t)]
        if self.dialect == "sqlite":
            given = dict(c.exec_driver_sql("SELECT name, seq FROM sqlite_sequence").all())
            return {t: int(given.get(t, 0)) for t in tables}
        stmt = text("SELECT COALESCE(pg_sequence_last_value(pg_get_serial_sequence(:t, 'id')), 0)")
        return {t: int(c.execute(stmt, {"t": t}).scalar_one()) for t in tables}

    def set_id_counters(self, c: Connection, counters: Mapping[str, int]) -> None:
        """Make each table's next generated id follow `counters` (or the table's highest id, if higher)."""
        for table, n in counters.items():
            n = max(n, c.execute(select(func.coalesce(func.max(schema.metadata.tables[table].c.id), 0))).scalar_one())
            if n <= 0:
                continue
            if self.dialect == "sqlite":
                c.execute(text("DELETE FROM sqlite_sequence WHERE name = :t"), {"t": table})
                c.execute(text("INSERT INTO sqlite_sequence(name, seq) VALUES (:t, :n)"), {"t": table, "n": n})
            else:
                c.execute(text("SELECT setval(pg_get_serial_sequence(:t, 'id'), :n)"), {"t": table, "n": n})

    @contextmanager
    def _errors(self) -> Iterator[None]:
        """Turn a driver's error into a StoreError that says what happened and what to do."""
        try:
            yield
        except exc.DBAPIError as e:
            if isinstance(e.orig, sqlite3.Error):
                raise sqlite_error(e.orig, Path(self.where)) from None
            raise server_error(e, self.where) from None
        except sqlite3.Error as e:
            raise sqlite_error(e, Path(self.where)) from None

    # ---- the files in use (SQLite)

    def _file_ids(self) -> FileIds:
        assert self.path is not None
        return FileIds(_file_id(self.path), _file_id(self.path.with_name(self.path.name + "-wal")))

    def _check_files(self, c: Connection) -> None:
        """Refuse to go on when the database file or its WAL journal is not the one opened.

        A deleted or replaced journal would take every commit with it when the process ends, while each
        commit still reports success; so the change is refused (StoreError) instead. When only the journal
        went, the changes it already holds are first copied into the database file (a checkpoint through
        `c`, a connection that still has it open), so what was confirmed before stays saved.
        """
        if self._files is None:
            return
        now = self._file_ids()
        if now == self._files:
            return
        if now.db == self._files.db:
            with contextlib.suppress(exc.DBAPIError, sqlite3.Error):
                c.exec_driver_sql("PRAGMA wal_checkpoint(FULL)")
        raise StoreError(f"{self.where}: {FILES_CHANGED}")


def _generated_id(table: Table) -> bool:
    return "id" in table.c and table.c.id.primary_key and table.c.id.autoincrement is True


def upsert(c: Connection, table: Table, values: Mapping[str, Any], keys: Sequence[str]) -> None:
    """INSERT `values` into `table`, or UPDATE the row with the same `keys` columns (both engines)."""
    insert = (postgresql.insert if c.dialect.name == "postgresql" else sqlite_dialect.insert)(table).values(**values)
    c.execute(
        insert.on_conflict_do_update(index_elements=list(keys), set_={k: v for k, v in values.items() if k not in keys})
    )

"""Which schema a project database has, and upgrading it to this dermaseg's (Alembic revisions).

A database knows its revision from Alembic's `alembic_version` table; one made before migrations were
versioned this way has only `meta.schema_version` (1 or 2) and is stamped at the matching revision
first. `meta.schema_version` is kept too: it is what older dermaseg versions check before they open a
project, so they refuse a newer one instead of misreading it.

Alembic is imported only to create or upgrade a database (~11 MiB that a server opening an up-to-date
project does not need to hold): the newest revision is `HEAD`, checked against the migrations by a test.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import Column, Connection, MetaData, String, Table, insert, inspect, select

from dermaseg.core.annotation.project import schema
from dermaseg.core.annotation.project.records import utc_now
from dermaseg.core.errors import StoreError

if TYPE_CHECKING:
    from alembic.script import ScriptDirectory

SCHEMA_VERSION = 3  # meta.schema_version at the newest revision
HEAD = "0005"  # the newest revision in migrations/versions
_LEGACY = {"1": "0001", "2": "0002"}  # meta.schema_version of a project without alembic_version
_ALEMBIC_VERSION = Table("alembic_version", MetaData(), Column("version_num", String(32), primary_key=True))


@cache
def scripts() -> ScriptDirectory:
    from alembic.script import ScriptDirectory

    return ScriptDirectory(str(Path(__file__).with_name("migrations")))


def head() -> str:
    """The newest revision this dermaseg knows."""
    return HEAD


def revision(c: Connection) -> str | None:
    """The database's revision; None for an empty database. StoreError when it is not a dermaseg project."""
    tables = set(inspect(c).get_table_names())
    if "alembic_version" in tables:
        current = c.execute(select(_ALEMBIC_VERSION.c.version_num)).scalar()
        if current is not None:
            return str(current)
    if not tables:
        return None
    if "meta" not in tables:
        raise StoreError("this database is not a dermaseg project (no meta table)")
    version = schema_version(c)
    if version not in _LEGACY:
        raise StoreError(f"unknown project database version {version!r}")
    return _LEGACY[version]


def schema_version(c: Connection) -> str:
    """`meta.schema_version` ("1", "2", "3"...): how older dermaseg versions and backups name the schema."""
    return str(c.execute(select(schema.meta.c.value).where(schema.meta.c.key == "schema_version")).scalar())


def is_newer(c: Connection, rev: str) -> bool:
    """True when a newer dermaseg made the database: `rev` is not one of this dermaseg's revisions, or
    `meta.schema_version` is above `SCHEMA_VERSION`."""
    version = schema_version(c)
    if version.isdigit() and int(version) > SCHEMA_VERSION:
        return True
    if rev == HEAD:
        return False
    try:
        return scripts().get_revision(rev) is None
    except Exception:  # alembic raises its own errors for an unknown id
        return True


def pending(rev: str | None) -> list[str]:
    """The revisions to apply to a database at `rev` (None: empty), oldest first."""
    if rev == head():
        return []
    return [s.revision for s in reversed(list(scripts().iterate_revisions(head(), rev)))]


def upgrade(c: Connection, rev: str | None) -> None:
    """Apply every revision after `rev` (None: from an empty database) on `c`, inside the caller's
    transaction, recording each in `alembic_version`."""
    from alembic.operations import Operations
    from alembic.runtime.migration import MigrationContext

    ctx = MigrationContext.configure(c)
    if rev is not None and ctx.get_current_revision() is None:
        ctx.stamp(scripts(), rev)  # a legacy project: record where it stands
    with Operations.context(ctx):
        for name in pending(rev):
            scripts().get_revision(name).module.upgrade()
            ctx.stamp(scripts(), name)


def create(c: Connection, labels: Sequence[str]) -> bool:
    """Create the schema in an empty database, with the label list; False when it already has one."""
    if revision(c) is not None:
        return False
    upgrade(c, None)
    c.execute(insert(schema.meta).values(key="created_utc", value=utc_now()))
    c.execute(insert(schema.labels), [{"name": n, "position": i} for i, n in enumerate(labels)])
    return True

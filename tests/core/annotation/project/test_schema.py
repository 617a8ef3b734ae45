"""One schema for both engines: the migrations give exactly `schema.py`'s tables on SQLite and PostgreSQL;
a database from a newer dermaseg is refused with a message; the engine's own SQL stays in `database.py`."""

from __future__ import annotations

import ast
import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Column, Integer, MetaData, Table, text

from dermaseg.core.annotation.project import SCHEMA_VERSION, Project
from dermaseg.core.annotation.project import schema as schema_mod
from dermaseg.core.annotation.project.database import Database
from dermaseg.core.annotation.project.schema_versions import head
from dermaseg.core.errors import StoreError

PACKAGE = Path(schema_mod.__file__).parent


@pytest.fixture(params=["sqlite", "postgresql"])
def database(request: pytest.FixtureRequest, tmp_path: Path):
    if request.param == "sqlite":
        db = Database.sqlite(tmp_path / "project.sqlite")
    else:
        db = Database.server(request.getfixturevalue("postgres_url"))
    yield db
    db.close()


def _differences(db: Database, metadata: MetaData) -> list:
    with db.engine.connect() as c:
        ctx = MigrationContext.configure(c, opts={"compare_type": True, "compare_server_default": True})
        return compare_metadata(ctx, metadata)


def test_the_migrations_make_exactly_the_schema_on_both_engines(database: Database) -> None:
    database.create_schema(["naevus", "melanoma"])
    assert _differences(database, schema_mod.metadata) == []
    # control: the comparison sees a table the migrations did not make
    extra = MetaData()
    for table in schema_mod.metadata.tables.values():
        table.to_metadata(extra)
    Table("not_migrated", extra, Column("id", Integer, primary_key=True))
    assert [d[0] for d in _differences(database, extra)] == ["add_table"]
    rows = database.query_text("SELECT key, value FROM meta WHERE key = 'schema_version'")
    assert rows == [("schema_version", str(SCHEMA_VERSION))]
    assert database.query_text("SELECT version_num FROM alembic_version") == [(head(),)]


def test_a_database_of_a_newer_dermaseg_is_refused(database: Database, tmp_path: Path) -> None:
    database.create_schema(["lesion"])
    with database.write() as c:
        c.execute(text("UPDATE alembic_version SET version_num = '9999'"))
    database.close()
    with pytest.raises(StoreError, match="made by a newer dermaseg .*update dermaseg"):
        database.open_checked()
    if database.path is None:  # the same through the Project, with the URL named without its password
        url = database.engine.url.render_as_string(hide_password=False)
        with pytest.raises(StoreError, match="newer dermaseg") as e:
            Project.open(tmp_path, db=url)
        assert database.engine.url.password not in str(e.value) and "***" in str(e.value)


def test_only_the_database_module_speaks_an_engines_own_language() -> None:
    """sqlite3, PRAGMAs and dialect imports stay in database.py; the rest is SQLAlchemy Core, not its ORM."""
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.name == "database.py":
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        imported = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        imported |= {n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
        assert "sqlite3" not in imported and not any(m.startswith("sqlalchemy.dialects") for m in imported), path
        assert not any(m.startswith("sqlalchemy.orm") for m in imported), f"{path}: Core only (the ORM costs ~5 MiB)"
        assert "PRAGMA" not in path.read_text(encoding="utf-8"), path


def test_a_project_of_the_last_version_is_upgraded_after_a_backup(tmp_path: Path) -> None:
    """The last version's project (schema 2, drafts tables, no alembic_version, no team tables) opens: a
    backup first, then the team tables; its annotations untouched."""
    folder = tmp_path / "p"
    folder.mkdir()
    (folder / "a.png").write_bytes((Path(__file__).parent / "data" / "project-v1" / "a.png").read_bytes())
    with Project.init(folder) as p:
        rec = p.images()[0]
        ann = p.add_annotation(rec.id, np.ones((rec.height, rec.width), bool))
        db_file = p.db_path
    con = sqlite3.connect(db_file)  # back to what dermaseg 0.x wrote
    for table in ("assignments", "users", "image_files", "alembic_version"):
        con.execute(f"DROP TABLE {table}")
    con.execute("UPDATE meta SET value = '2' WHERE key = 'schema_version'")
    con.commit()
    old = con.execute("SELECT * FROM annotations").fetchall()
    con.close()
    with Project.open(folder) as p:
        assert p.annotation(ann.id).area_px == rec.height * rec.width and p.users() == []
    backup = sqlite3.connect(db_file.with_name("project.sqlite.v2.bak"))
    assert backup.execute("SELECT * FROM annotations").fetchall() == old
    assert "users" not in {r[0] for r in backup.execute("SELECT name FROM sqlite_master")}
    backup.close()
    con = sqlite3.connect(db_file)
    assert con.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone() == (str(SCHEMA_VERSION),)
    assert con.execute("SELECT version_num FROM alembic_version").fetchone() == (head(),)
    con.close()


def test_head_names_the_newest_migration_and_an_up_to_date_project_opens_without_alembic(tmp_path: Path) -> None:
    from dermaseg.core.annotation.project.schema_versions import HEAD, scripts

    assert scripts().get_current_head() == HEAD
    Project.init(tmp_path).close()
    code = (
        "import sys; from dermaseg.core.annotation.project import Project; "
        f"Project.open({str(tmp_path)!r}).close(); print('alembic' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"

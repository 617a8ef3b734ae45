"""The store's tests run on both engines: each test of `STORE_TESTS` runs once on SQLite and once on a real PostgreSQL
server (`postgres_cluster`), unless marked `sqlite_only` (it works on the SQLite file itself, or runs other
processes that open the project by its folder).

On PostgreSQL, `Project.init` / `Project.open` without `db=` get a fresh database of the test's server per
project folder, so a test written for folders (two projects, a copy of one) keeps its meaning.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from dermaseg.core.annotation.project import Project

ENGINES = ("sqlite", "postgresql")
STORE_TESTS = ("test_project.py", "test_project_durability.py", "test_raters.py", "test_shared.py")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "store_engine" in metafunc.fixturenames and metafunc.definition.path.name in STORE_TESTS:
        sqlite_only = metafunc.definition.get_closest_marker("sqlite_only") is not None
        metafunc.parametrize("store_engine", ENGINES[:1] if sqlite_only else ENGINES, indirect=True)


@dataclass(frozen=True)
class StoreEngine:
    """The engine a store test runs on; `url_for(folder)`: the `db=` URL of that folder's project (None on
    SQLite), for other processes; `sql(folder, statement, **params)`: run SQL on the project's database
    (to damage rows as a disk or a bug would), returning the rows of a SELECT."""

    name: str
    url_for: Callable[[str | Path], str | None]

    def sql(self, folder: str | Path, statement: str, **params: Any) -> list[tuple[Any, ...]]:
        with Project.open(folder, scan=False) as p, p._db.write() as c:
            result = c.execute(text(statement), params)
            return [tuple(r) for r in result] if result.returns_rows else []


@pytest.fixture(autouse=True)
def store_engine(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[StoreEngine]:
    engine = getattr(request, "param", "sqlite")
    if engine == "postgresql":
        cluster = request.getfixturevalue("postgres_cluster")
        urls: dict[Path, str] = {}
        made: list[str] = []

        def url_for(folder: str | Path) -> str:
            key = Path(folder).expanduser().resolve()
            if key not in urls:
                made.append(f"t_store_{secrets.token_hex(6)}")
                urls[key] = cluster.create_database(made[-1])
            return urls[key]

        init, open_ = Project.init.__func__, Project.open.__func__  # type: ignore[attr-defined]

        def on_server_init(cls, folder, *args, db=None, **kwargs):  # noqa: ANN001, ANN202
            return init(cls, folder, *args, db=db or url_for(folder), **kwargs)

        def on_server_open(cls, folder, *args, db=None, **kwargs):  # noqa: ANN001, ANN202
            return open_(cls, folder, *args, db=db or url_for(folder), **kwargs)

        monkeypatch.setattr(Project, "init", classmethod(on_server_init))
        monkeypatch.setattr(Project, "open", classmethod(on_server_open))
        yield StoreEngine(engine, url_for)
        monkeypatch.undo()
        for name in made:
            cluster.drop_database(name)
        return
    yield StoreEngine(engine, lambda folder: None)

"""The project's label list: reading it, replacing it, and the checks an annotation's label must pass."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Sequence

from dermaseg.core.annotation.project.database import Database
from dermaseg.core.errors import StoreError

DEFAULT_LABELS = ("lesion",)


def check_labels(labels: Iterable[str]) -> list[str]:
    """The names stripped; StoreError when the list is empty, has an empty name or duplicates."""
    names = [str(n).strip() for n in labels]
    if not names or any(not n for n in names):
        raise StoreError("the label list needs at least one non-empty label")
    if len(set(names)) != len(names):
        raise StoreError(f"the label list has duplicates: {names}")
    return names


def labels(db: Database) -> tuple[str, ...]:
    """The label list, in display order."""
    return tuple(r[0] for r in db.query("SELECT name FROM labels ORDER BY position, id"))


def set_labels(db: Database, names: Sequence[str]) -> None:
    """Replace the label list; a label still used by an annotation cannot be removed."""
    names = check_labels(names)
    with db.write() as c:
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


def append_labels(c: sqlite3.Connection, names: Sequence[str]) -> None:
    """Add new names at the end of the label list (inside the caller's write transaction)."""
    pos = c.execute("SELECT COALESCE(MAX(position), -1) FROM labels").fetchone()[0]
    for i, name in enumerate(names):
        c.execute("INSERT INTO labels(name, position) VALUES (?, ?)", (name, pos + 1 + i))


def category_ids(db: Database) -> dict[str, int]:
    """{label: its id}, the COCO category ids of an export."""
    return {r[1]: r[0] for r in db.query("SELECT id, name FROM labels ORDER BY position, id")}


def first_label(c: sqlite3.Connection) -> str:
    """The first label of the list: an annotation's label when none is given."""
    return c.execute("SELECT name FROM labels ORDER BY position, id LIMIT 1").fetchone()[0]


def check_label(c: sqlite3.Connection, label: str) -> None:
    """StoreError unless `label` is in the project's label list."""
    if c.execute("SELECT 1 FROM labels WHERE name = ?", (label,)).fetchone() is None:
        names = [r[0] for r in c.execute("SELECT name FROM labels ORDER BY position")]
        raise StoreError(f"label {label!r} is not in the project's label list ({', '.join(names)})")

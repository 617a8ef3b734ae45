"""The project's label list: reading it, replacing it, and the checks an annotation's label must pass."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from sqlalchemy import Connection, delete, func, insert, select

from dermaseg.core.annotation.project.database import Database, upsert
from dermaseg.core.annotation.project.schema import annotations
from dermaseg.core.annotation.project.schema import labels as L
from dermaseg.core.errors import StoreError

DEFAULT_LABELS = ("lesion",)
_IN_ORDER = select(L.c.name).order_by(L.c.position, L.c.id)


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
    return tuple(r[0] for r in db.query(_IN_ORDER))


def set_labels(db: Database, names: Sequence[str]) -> None:
    """Replace the label list; a label still used by an annotation cannot be removed."""
    names = check_labels(names)
    with db.write() as c:
        used = set(c.execute(select(annotations.c.label).distinct()).scalars())
        dropped = sorted(used - set(names))
        if dropped:
            raise StoreError(f"labels still used by annotations cannot be removed: {', '.join(dropped)}")
        c.execute(delete(L).where(L.c.name.not_in(names)))
        for i, n in enumerate(names):
            upsert(c, L, {"name": n, "position": i}, ["name"])


def append_labels(c: Connection, names: Sequence[str]) -> None:
    """Add new names at the end of the label list (inside the caller's write transaction)."""
    pos = c.execute(select(func.coalesce(func.max(L.c.position), -1))).scalar_one()
    for i, name in enumerate(names):
        c.execute(insert(L).values(name=name, position=pos + 1 + i))


def category_ids(db: Database) -> dict[str, int]:
    """{label: its id}, the COCO category ids of an export."""
    return {name: i for i, name in db.query(_IN_ORDER.add_columns(L.c.id).with_only_columns(L.c.id, L.c.name))}


def first_label(c: Connection) -> str:
    """The first label of the list: an annotation's label when none is given."""
    return c.execute(_IN_ORDER.limit(1)).scalar_one()


def check_label(c: Connection, label: str) -> None:
    """StoreError unless `label` is in the project's label list."""
    if c.execute(select(L.c.id).where(L.c.name == label)).first() is None:
        names = list(c.execute(_IN_ORDER).scalars())
        raise StoreError(f"label {label!r} is not in the project's label list ({', '.join(names)})")

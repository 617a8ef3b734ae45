"""The saved edit history: every annotation edit is an undoable step per image, kept across restarts.

A step (`actions` row) holds the before/after snapshots of the annotations it changed (`action_changes`).
`undo(image_id)` puts the befores back, `redo(image_id)` the afters; a new edit after an undo drops the
redo steps, and at most `HISTORY_LIMIT` steps are kept per image.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, Select, delete, func, insert, select, update

from dermaseg.core.annotation.project.annotation_rows import restore
from dermaseg.core.annotation.project.database import Database
from dermaseg.core.annotation.project.records import utc_now
from dermaseg.core.annotation.project.schema import action_changes as CH
from dermaseg.core.annotation.project.schema import actions
from dermaseg.core.annotation.project.schema import images as I
from dermaseg.core.errors import StoreError

HISTORY_LIMIT = 200  # undo steps kept per image


def _next_step(image_id: int, undone: bool) -> Select[Any]:
    """The step undo would undo (latest not undone), or (undone=True) the one redo would redo (earliest undone)."""
    order = actions.c.id.asc() if undone else actions.c.id.desc()
    return (
        select(actions.c.id)
        .where(actions.c.image_id == image_id, actions.c.undone == int(undone))
        .order_by(order)
        .limit(1)
    )


def lock_image(c: Connection, image_id: int) -> None:
    """Hold the image's row until the transaction ends (PostgreSQL; SQLite's write lock covers it), so
    that two processes editing one image make their steps one after the other."""
    # FOR NO KEY UPDATE: does not wait for the key-share lock an insert referencing the image holds
    c.execute(select(I.c.id).where(I.c.id == image_id).with_for_update(key_share=True))


def begin_action(c: Connection, image_id: int, kind: str) -> int:
    """Start an undoable action on an image: drop its redo steps and old history beyond the limit."""
    lock_image(c, image_id)
    c.execute(delete(actions).where(actions.c.image_id == image_id, actions.c.undone == 1))
    keep = select(actions.c.id).where(actions.c.image_id == image_id).order_by(actions.c.id.desc())
    keep = keep.limit(HISTORY_LIMIT - 1).scalar_subquery()
    c.execute(delete(actions).where(actions.c.image_id == image_id, actions.c.id.not_in(keep)))
    new = insert(actions).values(image_id=image_id, kind=kind, time_utc=utc_now())
    return int(c.execute(new).inserted_primary_key[0])


def record(c: Connection, action_id: int, ann_id: int, before: str | None, after: str | None) -> None:
    """Add one annotation's change (snapshots before and after, None: absent) to an action."""
    c.execute(insert(CH).values(action_id=action_id, annotation_id=ann_id, before_json=before, after_json=after))


def last_action(db: Database, image_id: int, *, undone: bool = False) -> int | None:
    """Id of the step `undo(image_id)` would undo (undone=True: the one `redo` would redo), or None."""
    rows = db.query(_next_step(image_id, undone))
    return int(rows[0][0]) if rows else None


def step(db: Database, image_id: int, action_id: int | None, *, undo: bool) -> bool:
    """Undo the latest edit on the image (undo=True) or redo the earliest undone one; False when there
    is none. action_id: only if that step (`last_action`) is still the one, else StoreError."""
    # undo puts the befores back, last change first; redo the afters, first change first
    order, snapshot = (CH.c.id.desc(), CH.c.before_json) if undo else (CH.c.id.asc(), CH.c.after_json)
    with db.write() as c:
        lock_image(c, image_id)
        row = c.execute(_next_step(image_id, not undo)).first()
        _step_or_conflict(row, action_id)
        if row is None:
            return False
        changes = c.execute(select(CH.c.annotation_id, snapshot).where(CH.c.action_id == row[0]).order_by(order))
        for ann_id, snap in changes.all():
            restore(c, ann_id, snap)
        c.execute(update(actions).where(actions.c.id == row[0]).values(undone=int(undo)))
        return True


def _step_or_conflict(row: tuple[Any, ...] | None, action_id: int | None) -> None:
    if action_id is not None and (row is None or row[0] != action_id):
        raise StoreError(
            "this image was changed by someone else since your last save (another tab or user); "
            "undo would undo their change, not yours. Reopen the image to see the saved state"
        )


def history_depth(db: Database, image_id: int) -> tuple[int, int]:
    """(steps that can be undone, steps that can be redone) for the image."""
    stmt = select(actions.c.undone, func.count()).where(actions.c.image_id == image_id).group_by(actions.c.undone)
    rows = {int(u): int(n) for u, n in db.query(stmt)}
    return int(rows.get(0, 0)), int(rows.get(1, 0))


def deleted_utc(c: Connection, ann_id: int) -> str | None:
    """When the annotation was deleted (by a step not undone), as far as the history knows."""
    return c.execute(
        select(actions.c.time_utc)
        .select_from(CH.join(actions, actions.c.id == CH.c.action_id))
        .where(CH.c.annotation_id == ann_id, CH.c.after_json.is_(None), actions.c.undone == 0)
        .order_by(actions.c.id.desc())
        .limit(1)
    ).scalar()


def snapshots_of(c: Connection, ann_id: int) -> list[tuple[int, str | None, str | None]]:
    """(change id, before, after) of every recorded change of the annotation, oldest first."""
    stmt = select(CH.c.id, CH.c.before_json, CH.c.after_json).where(CH.c.annotation_id == ann_id).order_by(CH.c.id)
    return [tuple(r) for r in c.execute(stmt)]

"""The saved edit history: every annotation edit is an undoable step per image, kept across restarts.

A step (`actions` row) holds the before/after snapshots of the annotations it changed (`action_changes`).
`undo(image_id)` puts the befores back, `redo(image_id)` the afters; a new edit after an undo drops the
redo steps, and at most `HISTORY_LIMIT` steps are kept per image.
"""

from __future__ import annotations

import sqlite3
from typing import Any

from dermaseg.core.annotation.project.annotation_rows import restore
from dermaseg.core.annotation.project.database import Database
from dermaseg.core.annotation.project.records import utc_now
from dermaseg.core.errors import StoreError

HISTORY_LIMIT = 200  # undo steps kept per image
# The step undo would undo (latest not undone), and the one redo would redo (earliest undone).
_NEXT_STEP = {
    False: "SELECT id FROM actions WHERE image_id = ? AND undone = 0 ORDER BY id DESC LIMIT 1",
    True: "SELECT id FROM actions WHERE image_id = ? AND undone = 1 ORDER BY id ASC LIMIT 1",
}


def begin_action(c: sqlite3.Connection, image_id: int, kind: str) -> int:
    """Start an undoable action on an image: drop its redo steps and old history beyond the limit."""
    c.execute("DELETE FROM actions WHERE image_id = ? AND undone = 1", (image_id,))
    c.execute(
        "DELETE FROM actions WHERE image_id = ? AND id NOT IN "
        "(SELECT id FROM actions WHERE image_id = ? ORDER BY id DESC LIMIT ?)",
        (image_id, image_id, HISTORY_LIMIT - 1),
    )
    cur = c.execute("INSERT INTO actions(image_id, kind, time_utc) VALUES (?, ?, ?)", (image_id, kind, utc_now()))
    return int(cur.lastrowid)


def record(c: sqlite3.Connection, action_id: int, ann_id: int, before: str | None, after: str | None) -> None:
    """Add one annotation's change (snapshots before and after, None: absent) to an action."""
    c.execute(
        "INSERT INTO action_changes(action_id, annotation_id, before_json, after_json) VALUES (?, ?, ?, ?)",
        (action_id, ann_id, before, after),
    )


def last_action(db: Database, image_id: int, *, undone: bool = False) -> int | None:
    """Id of the step `undo(image_id)` would undo (undone=True: the one `redo` would redo), or None."""
    rows = db.query(_NEXT_STEP[undone], (image_id,))
    return int(rows[0][0]) if rows else None


def step(db: Database, image_id: int, action_id: int | None, *, undo: bool) -> bool:
    """Undo the latest edit on the image (undo=True) or redo the earliest undone one; False when there
    is none. action_id: only if that step (`last_action`) is still the one, else StoreError."""
    order, snapshot = ("DESC", "before_json") if undo else ("ASC", "after_json")  # undo goes back, redo forth
    with db.write() as c:
        row = c.execute(_NEXT_STEP[not undo], (image_id,)).fetchone()
        _step_or_conflict(row, action_id)
        if row is None:
            return False
        changes = c.execute(
            f"SELECT annotation_id, {snapshot} FROM action_changes WHERE action_id = ? ORDER BY id {order}",
            (row[0],),
        ).fetchall()
        for ann_id, snap in changes:
            restore(c, ann_id, snap)
        c.execute("UPDATE actions SET undone = ? WHERE id = ?", (int(undo), row[0]))
        return True


def _step_or_conflict(row: tuple[Any, ...] | None, action_id: int | None) -> None:
    if action_id is not None and (row is None or row[0] != action_id):
        raise StoreError(
            "this image was changed by someone else since your last save (another tab or user); "
            "undo would undo their change, not yours. Reopen the image to see the saved state"
        )


def history_depth(db: Database, image_id: int) -> tuple[int, int]:
    """(steps that can be undone, steps that can be redone) for the image."""
    rows = dict(db.query("SELECT undone, COUNT(*) FROM actions WHERE image_id = ? GROUP BY undone", (image_id,)))
    return int(rows.get(0, 0)), int(rows.get(1, 0))


def deleted_utc(c: sqlite3.Connection, ann_id: int) -> str | None:
    """When the annotation was deleted (by a step not undone), as far as the history knows."""
    gone = c.execute(
        "SELECT a.time_utc FROM action_changes ch JOIN actions a ON a.id = ch.action_id "
        "WHERE ch.annotation_id = ? AND ch.after_json IS NULL AND a.undone = 0 ORDER BY a.id DESC LIMIT 1",
        (ann_id,),
    ).fetchone()
    return gone[0] if gone else None


def snapshots_of(c: sqlite3.Connection, ann_id: int) -> list[tuple[int, str | None, str | None]]:
    """(change id, before, after) of every recorded change of the annotation, oldest first."""
    return c.execute(
        "SELECT id, before_json, after_json FROM action_changes WHERE annotation_id = ? ORDER BY id", (ann_id,)
    ).fetchall()

"""Work in progress that survives a reload or crash: per-image drafts (prompts, hand-edited outline) not
yet accepted, and small page state (last image, annotator) kept between visits."""

from __future__ import annotations

import json

from dermaseg.core.annotation.project.database import Database
from dermaseg.core.annotation.project.records import Draft, Json, dumps, loads, utc_now


def save_draft(
    db: Database, image_id: int, prompts: Json, polygons: Json = None, tolerance_px: float | None = None
) -> None:
    """Keep the work in progress on an image (one small UPSERT, committed): see `Draft`."""
    with db.write() as c:
        c.execute(
            "INSERT INTO drafts(image_id, prompts_json, polygons_json, tolerance_px, updated_utc) "
            "VALUES (?, ?, ?, ?, ?) ON CONFLICT(image_id) DO UPDATE SET prompts_json = excluded.prompts_json, "
            "polygons_json = excluded.polygons_json, tolerance_px = excluded.tolerance_px, "
            "updated_utc = excluded.updated_utc",
            (image_id, dumps(prompts), None if polygons is None else dumps(polygons), tolerance_px, utc_now()),
        )


def draft(db: Database, image_id: int) -> Draft | None:
    """The image's draft, or None (also when its JSON does not parse: a damaged draft is no draft)."""
    rows = db.query(
        "SELECT prompts_json, polygons_json, tolerance_px, updated_utc FROM drafts WHERE image_id = ?", (image_id,)
    )
    if not rows:
        return None
    try:
        return Draft(image_id, json.loads(rows[0][0]), loads(rows[0][1]), rows[0][2], rows[0][3])
    except (TypeError, ValueError):
        return None


def discard_draft(db: Database, image_id: int) -> None:
    with db.write() as c:
        c.execute("DELETE FROM drafts WHERE image_id = ?", (image_id,))


def ui_state(db: Database, key: str) -> str | None:
    """A value the page keeps between visits (last image, annotator name), or None."""
    rows = db.query("SELECT value FROM ui_state WHERE key = ?", (key,))
    return rows[0][0] if rows else None


def set_ui_state(db: Database, key: str, value: str) -> None:
    with db.write() as c:
        c.execute(
            "INSERT INTO ui_state(key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            (key, value),
        )

"""Work in progress that survives a reload or crash: drafts (prompts, hand-edited outline) not yet accepted,
one per image and user (`user` "" in a one-person project), and small page state kept between visits."""

from __future__ import annotations

import json

from sqlalchemy import delete, select

from dermaseg.core.annotation.project.database import Database, upsert
from dermaseg.core.annotation.project.records import Draft, Json, dumps, loads, utc_now
from dermaseg.core.annotation.project.schema import drafts as D
from dermaseg.core.annotation.project.schema import ui_state as U


def save_draft(
    db: Database,
    image_id: int,
    prompts: Json,
    polygons: Json = None,
    tolerance_px: float | None = None,
    user: str = "",
) -> None:
    """Keep `user`'s work in progress on an image (one small UPSERT, committed): see `Draft`."""
    with db.write() as c:
        values = dict(
            image_id=image_id, user_name=user, prompts_json=dumps(prompts),
            polygons_json=None if polygons is None else dumps(polygons), tolerance_px=tolerance_px,
            updated_utc=utc_now(),
        )  # fmt: skip
        upsert(c, D, values, ["image_id", "user_name"])


def draft(db: Database, image_id: int, user: str = "") -> Draft | None:
    """`user`'s draft on the image, or None (also when its JSON does not parse: a damaged draft is no draft)."""
    stmt = select(D.c.prompts_json, D.c.polygons_json, D.c.tolerance_px, D.c.updated_utc)
    rows = db.query(stmt.where(D.c.image_id == image_id, D.c.user_name == user))
    if not rows:
        return None
    try:
        return Draft(image_id, json.loads(rows[0][0]), loads(rows[0][1]), rows[0][2], rows[0][3])
    except (TypeError, ValueError):
        return None


def discard_draft(db: Database, image_id: int, user: str = "") -> None:
    with db.write() as c:
        c.execute(delete(D).where(D.c.image_id == image_id, D.c.user_name == user))


def ui_state(db: Database, key: str) -> str | None:
    """A value the page keeps between visits (last image, annotator name), or None."""
    rows = db.query(select(U.c.value).where(U.c.key == key))
    return rows[0][0] if rows else None


def set_ui_state(db: Database, key: str, value: str) -> None:
    with db.write() as c:
        upsert(c, U, {"key": key, "value": value}, ["key"])

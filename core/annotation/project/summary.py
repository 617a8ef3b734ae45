"""The counts `dermaseg project status` prints: images by status, annotations by label, the labels."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import func, select

from dermaseg.core.annotation.project import labels
from dermaseg.core.annotation.project.database import Database
from dermaseg.core.annotation.project.images import SHOWN_STATUS
from dermaseg.core.annotation.project.records import STATUSES
from dermaseg.core.annotation.project.schema import annotations, images


def summary(db: Database, root: Path) -> dict[str, Any]:
    """Counts for `dermaseg project status`: images by status, annotations by label, labels."""
    by_status = dict.fromkeys(STATUSES, 0)
    shown = SHOWN_STATUS.label("s")
    by_status.update({s: n for s, n in db.query(select(shown, func.count()).select_from(images).group_by(shown))})
    by_label = {k: n for k, n in db.query(select(annotations.c.label, func.count()).group_by(annotations.c.label))}
    return {
        "folder": str(root),
        "images": sum(by_status.values()),
        "by_status": by_status,
        "annotations": sum(by_label.values()),
        "by_label": by_label,
        "labels": list(labels.labels(db)),
    }

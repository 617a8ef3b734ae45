"""The counts `dermaseg project status` prints: images by status, annotations by label, the labels."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from dermaseg.core.annotation.project import labels
from dermaseg.core.annotation.project.database import Database
from dermaseg.core.annotation.project.images import SHOWN_STATUS
from dermaseg.core.annotation.project.records import STATUSES


def summary(db: Database, root: Path) -> dict[str, Any]:
    """Counts for `dermaseg project status`: images by status, annotations by label, labels."""
    by_status = dict.fromkeys(STATUSES, 0)
    by_status.update(dict(db.query(f"SELECT {SHOWN_STATUS} AS s, COUNT(*) FROM images GROUP BY s")))
    by_label = dict(db.query("SELECT label, COUNT(*) FROM annotations GROUP BY label"))
    return {
        "folder": str(root),
        "images": sum(by_status.values()),
        "by_status": by_status,
        "annotations": sum(by_label.values()),
        "by_label": by_label,
        "labels": list(labels.labels(db)),
    }

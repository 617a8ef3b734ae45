"""The project: a folder of images and one database of their annotations, behind the `Project` facade."""

from dermaseg.core.annotation.project.annotation_rows import annotation_damage, default_polygons, rle_damage
from dermaseg.core.annotation.project.database import (
    BUSY_TIMEOUT_S,
    DB_DIR,
    DB_NAME,
    FILES_CHANGED,
    FileIds,
)
from dermaseg.core.annotation.project.history import HISTORY_LIMIT
from dermaseg.core.annotation.project.labels import DEFAULT_LABELS
from dermaseg.core.annotation.project.lock import LOCK_NAME, FolderLock, LockHolder
from dermaseg.core.annotation.project.project import Project
from dermaseg.core.annotation.project.records import (
    EXACT_OUTLINE_TOLERANCE_PX,
    STATUSES,
    Annotation,
    CheckReport,
    DamagedAnnotation,
    Draft,
    ExportReport,
    ImageRecord,
    ImportReport,
    Progress,
    Provenance,
    ScanReport,
    tool_version,
    utc_now,
)
from dermaseg.core.annotation.project.schema_versions import SCHEMA_VERSION

__all__ = [
    "BUSY_TIMEOUT_S",
    "DB_DIR",
    "DB_NAME",
    "DEFAULT_LABELS",
    "EXACT_OUTLINE_TOLERANCE_PX",
    "FILES_CHANGED",
    "HISTORY_LIMIT",
    "LOCK_NAME",
    "SCHEMA_VERSION",
    "STATUSES",
    "Annotation",
    "CheckReport",
    "DamagedAnnotation",
    "Draft",
    "ExportReport",
    "FileIds",
    "FolderLock",
    "ImageRecord",
    "ImportReport",
    "LockHolder",
    "Progress",
    "Project",
    "Provenance",
    "ScanReport",
    "annotation_damage",
    "default_polygons",
    "rle_damage",
    "tool_version",
    "utc_now",
]

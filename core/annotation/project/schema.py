"""The project database's tables, one schema for SQLite and PostgreSQL (SQLAlchemy Core).

This is the schema at the newest migration (`migrations/versions/`); a test compares the two. Times are
ISO 8601 UTC text (`records.utc_now`), JSON values are text (`records.dumps`), so a row reads the same on
both engines and a project copies between them unchanged (`transfer`). Ids are never reused
(`sqlite_autoincrement`; PostgreSQL identities): the edit history refers to deleted annotations by id.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Column,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    Table,
    Text,
    UniqueConstraint,
    text,
)

metadata = MetaData()


def _id() -> Column:
    return Column("id", Integer, primary_key=True, autoincrement=True)


meta = Table(
    "meta",
    metadata,
    Column("key", Text, primary_key=True),
    Column("value", Text, nullable=False),
)

labels = Table(
    "labels",
    metadata,
    _id(),
    Column("name", Text, nullable=False, unique=True),
    Column("position", Integer, nullable=False),
    sqlite_autoincrement=True,
)

images = Table(
    "images",
    metadata,
    _id(),
    Column("path", Text, nullable=False, unique=True),
    Column("file_sha256", Text, nullable=False),
    Column("file_size", BigInteger, nullable=False),
    Column("file_mtime_ns", BigInteger, nullable=False),  # ns since the epoch: beyond 32 bits
    Column("pixel_sha256", Text),
    Column("width", Integer, CheckConstraint("width > 0"), nullable=False),
    Column("height", Integer, CheckConstraint("height > 0"), nullable=False),
    Column("mm_per_px", Float, CheckConstraint("mm_per_px IS NULL OR mm_per_px > 0")),
    Column("calibration_source", Text),
    Column(
        "status",
        Text,
        CheckConstraint("status IN ('not_started', 'in_progress', 'done')"),
        nullable=False,
        server_default="not_started",
    ),
    Column("added_utc", Text, nullable=False),
    Index("images_sha", "file_sha256"),
    sqlite_autoincrement=True,
)

annotations = Table(
    "annotations",
    metadata,
    _id(),
    Column("image_id", Integer, ForeignKey("images.id", ondelete="CASCADE"), nullable=False),
    Column("label", Text, nullable=False),
    Column("height", Integer, nullable=False),
    Column("width", Integer, nullable=False),
    Column("rle_counts", Text, nullable=False),
    Column("area", Integer, CheckConstraint("area > 0"), nullable=False),
    Column("polygons_json", Text, nullable=False),
    Column("metrics_json", Text),
    Column("tolerance_px", Float),
    Column("created_utc", Text, nullable=False),
    Column("updated_utc", Text, nullable=False),
    Column("version", Integer, CheckConstraint("version > 0"), nullable=False, server_default=text("1")),
    Index("annotations_image", "image_id"),
    sqlite_autoincrement=True,
)

provenance = Table(
    "provenance",
    metadata,
    Column("annotation_id", Integer, ForeignKey("annotations.id", ondelete="CASCADE"), primary_key=True),
    Column("source", Text, nullable=False),
    Column("prompts_json", Text),
    Column("model_id", Text),
    Column("model_variant", Text),
    Column("embedding_sha256", Text),
    Column("annotator", Text),
    Column("tool_version", Text, nullable=False),
    Column("time_utc", Text, nullable=False),
)

actions = Table(
    "actions",
    metadata,
    _id(),
    Column("image_id", Integer, ForeignKey("images.id", ondelete="CASCADE"), nullable=False),
    Column("kind", Text, nullable=False),
    Column("time_utc", Text, nullable=False),
    Column("undone", Integer, nullable=False, server_default=text("0")),
    Index("actions_image", "image_id", "id"),
    sqlite_autoincrement=True,
)

action_changes = Table(
    "action_changes",
    metadata,
    _id(),
    Column("action_id", Integer, ForeignKey("actions.id", ondelete="CASCADE"), nullable=False),
    Column("annotation_id", Integer, nullable=False),
    Column("before_json", Text),
    Column("after_json", Text),
    Index("action_changes_action", "action_id"),
    sqlite_autoincrement=True,
)

drafts = Table(
    "drafts",
    metadata,
    Column("image_id", Integer, ForeignKey("images.id", ondelete="CASCADE"), primary_key=True),
    Column("user_name", Text, primary_key=True, server_default=text("''")),  # '': a one-person project
    Column("prompts_json", Text, nullable=False),
    Column("polygons_json", Text),
    Column("tolerance_px", Float),
    Column("updated_utc", Text, nullable=False),
)

ui_state = Table(
    "ui_state",
    metadata,
    Column("key", Text, primary_key=True),
    Column("value", Text, nullable=False),
)

quarantine = Table(
    "quarantine",
    metadata,
    _id(),
    Column("annotation_id", Integer, nullable=False),
    Column("image_id", Integer),
    Column("reason", Text, nullable=False),
    Column("row_json", Text, nullable=False),
    Column("time_utc", Text, nullable=False),
    sqlite_autoincrement=True,
)

# ---- a shared project: image files by content, people, who works on which image

image_files = Table(
    "image_files",
    metadata,
    Column("sha256", Text, primary_key=True),  # of the file's bytes (images.file_sha256)
    Column("suffix", Text, nullable=False),  # ".jpg", ...: how to decode the bytes
    Column("data", LargeBinary, nullable=False),
)

users = Table(
    "users",
    metadata,
    _id(),
    Column("name", Text, nullable=False, unique=True),
    Column("password_hash", Text, nullable=False),
    Column("role", Text, CheckConstraint("role IN ('annotator', 'reviewer')"), nullable=False),
    Column("created_utc", Text, nullable=False),
    Column("disabled", Integer, nullable=False, server_default=text("0")),
    sqlite_autoincrement=True,
)

assignments = Table(
    "assignments",
    metadata,
    _id(),
    Column("image_id", Integer, ForeignKey("images.id", ondelete="CASCADE"), nullable=False),
    Column("user_id", Integer, ForeignKey("users.id"), nullable=False),
    Column(
        "state",
        Text,
        CheckConstraint("state IN ('claimed', 'submitted', 'accepted', 'returned')"),
        nullable=False,
    ),
    Column("claimed_utc", Text, nullable=False),
    Column("submitted_utc", Text),
    Column("reviewer_id", Integer, ForeignKey("users.id")),
    Column("reviewed_utc", Text),
    Column("comment", Text),
    UniqueConstraint("image_id", "user_id", name="assignments_image_user"),
    Index("assignments_state", "state", "image_id"),
    sqlite_autoincrement=True,
)

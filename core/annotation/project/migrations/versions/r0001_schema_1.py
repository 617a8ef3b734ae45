"""Schema 1: images, labels, annotations with their provenance, the edit history.

The tables of the first dermaseg version, as they were (a project of that version is stamped at this
revision when it opens, then upgraded).
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None


def _id() -> sa.Column:
    return sa.Column("id", sa.Integer, primary_key=True, autoincrement=True)


def upgrade() -> None:
    op.create_table("meta", sa.Column("key", sa.Text, primary_key=True), sa.Column("value", sa.Text, nullable=False))
    op.create_table(
        "labels",
        _id(),
        sa.Column("name", sa.Text, nullable=False, unique=True),
        sa.Column("position", sa.Integer, nullable=False),
        sqlite_autoincrement=True,
    )
    op.create_table(
        "images",
        _id(),
        sa.Column("path", sa.Text, nullable=False, unique=True),
        sa.Column("file_sha256", sa.Text, nullable=False),
        sa.Column("file_size", sa.BigInteger, nullable=False),
        sa.Column("file_mtime_ns", sa.BigInteger, nullable=False),
        sa.Column("pixel_sha256", sa.Text),
        sa.Column("width", sa.Integer, sa.CheckConstraint("width > 0"), nullable=False),
        sa.Column("height", sa.Integer, sa.CheckConstraint("height > 0"), nullable=False),
        sa.Column("mm_per_px", sa.Float, sa.CheckConstraint("mm_per_px IS NULL OR mm_per_px > 0")),
        sa.Column("calibration_source", sa.Text),
        sa.Column(
            "status",
            sa.Text,
            sa.CheckConstraint("status IN ('not_started', 'in_progress', 'done')"),
            nullable=False,
            server_default="not_started",
        ),
        sa.Column("added_utc", sa.Text, nullable=False),
        sqlite_autoincrement=True,
    )
    op.create_index("images_sha", "images", ["file_sha256"])
    op.create_table(
        "annotations",
        _id(),
        sa.Column("image_id", sa.Integer, sa.ForeignKey("images.id", ondelete="CASCADE"), nullable=False),
        sa.Column("label", sa.Text, nullable=False),
        sa.Column("height", sa.Integer, nullable=False),
        sa.Column("width", sa.Integer, nullable=False),
        sa.Column("rle_counts", sa.Text, nullable=False),
        sa.Column("area", sa.Integer, sa.CheckConstraint("area > 0"), nullable=False),
        sa.Column("polygons_json", sa.Text, nullable=False),
        sa.Column("metrics_json", sa.Text),
        sa.Column("tolerance_px", sa.Float),
        sa.Column("created_utc", sa.Text, nullable=False),
        sa.Column("updated_utc", sa.Text, nullable=False),
        sqlite_autoincrement=True,
    )
    op.create_index("annotations_image", "annotations", ["image_id"])
    op.create_table(
        "provenance",
        sa.Column("annotation_id", sa.Integer, sa.ForeignKey("annotations.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("source", sa.Text, nullable=False),
        sa.Column("prompts_json", sa.Text),
        sa.Column("model_id", sa.Text),
        sa.Column("model_variant", sa.Text),
        sa.Column("embedding_sha256", sa.Text),
        sa.Column("annotator", sa.Text),
        sa.Column("tool_version", sa.Text, nullable=False),
        sa.Column("time_utc", sa.Text, nullable=False),
    )
    op.create_table(
        "actions",
        _id(),
        sa.Column("image_id", sa.Integer, sa.ForeignKey("images.id", ondelete="CASCADE"), nullable=False),
        sa.Column("kind", sa.Text, nullable=False),
        sa.Column("time_utc", sa.Text, nullable=False),
        sa.Column("undone", sa.Integer, nullable=False, server_default=sa.text("0")),
        sqlite_autoincrement=True,
    )
    op.create_index("actions_image", "actions", ["image_id", "id"])
    op.create_table(
        "action_changes",
        _id(),
        sa.Column("action_id", sa.Integer, sa.ForeignKey("actions.id", ondelete="CASCADE"), nullable=False),
        sa.Column("annotation_id", sa.Integer, nullable=False),
        sa.Column("before_json", sa.Text),
        sa.Column("after_json", sa.Text),
        sqlite_autoincrement=True,
    )
    op.create_index("action_changes_action", "action_changes", ["action_id"])
    op.execute("INSERT INTO meta(key, value) VALUES ('schema_version', '1')")

"""Schema 3, a shared project: image files by content hash, users with roles, assignments and review.

The schema version goes to 3, so that an older dermaseg refuses the project ("made by a newer
dermaseg") instead of ignoring who holds which image.
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"


def upgrade() -> None:
    op.create_table(
        "image_files",
        sa.Column("sha256", sa.Text, primary_key=True),
        sa.Column("suffix", sa.Text, nullable=False),
        sa.Column("data", sa.LargeBinary, nullable=False),
    )
    op.create_table(
        "users",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("name", sa.Text, nullable=False, unique=True),
        sa.Column("password_hash", sa.Text, nullable=False),
        sa.Column("role", sa.Text, sa.CheckConstraint("role IN ('annotator', 'reviewer')"), nullable=False),
        sa.Column("created_utc", sa.Text, nullable=False),
        sa.Column("disabled", sa.Integer, nullable=False, server_default=sa.text("0")),
        sqlite_autoincrement=True,
    )
    op.create_table(
        "assignments",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("image_id", sa.Integer, sa.ForeignKey("images.id", ondelete="CASCADE"), nullable=False),
        sa.Column("user_id", sa.Integer, sa.ForeignKey("users.id"), nullable=False),
        sa.Column(
            "state",
            sa.Text,
            sa.CheckConstraint("state IN ('claimed', 'submitted', 'accepted', 'returned')"),
            nullable=False,
        ),
        sa.Column("claimed_utc", sa.Text, nullable=False),
        sa.Column("submitted_utc", sa.Text),
        sa.Column("reviewer_id", sa.Integer, sa.ForeignKey("users.id")),
        sa.Column("reviewed_utc", sa.Text),
        sa.Column("comment", sa.Text),
        sa.UniqueConstraint("image_id", "user_id", name="assignments_image_user"),
        sqlite_autoincrement=True,
    )
    op.create_index("assignments_state", "assignments", ["state", "image_id"])
    op.execute("UPDATE meta SET value = '3' WHERE key = 'schema_version'")

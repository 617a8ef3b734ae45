"""Drafts (work not yet accepted), page state and the quarantine of damaged rows.

dermaseg 0.x created these on opening a schema-2 project without changing its version, so a project may
already have them: each is created only where missing.
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"


def upgrade() -> None:
    have = set(sa.inspect(op.get_bind()).get_table_names())
    if "drafts" not in have:
        op.create_table(
            "drafts",
            sa.Column("image_id", sa.Integer, sa.ForeignKey("images.id", ondelete="CASCADE"), primary_key=True),
            sa.Column("prompts_json", sa.Text, nullable=False),
            sa.Column("polygons_json", sa.Text),
            sa.Column("tolerance_px", sa.Float),
            sa.Column("updated_utc", sa.Text, nullable=False),
        )
    if "ui_state" not in have:
        op.create_table(
            "ui_state", sa.Column("key", sa.Text, primary_key=True), sa.Column("value", sa.Text, nullable=False)
        )
    if "quarantine" not in have:
        op.create_table(
            "quarantine",
            sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
            sa.Column("annotation_id", sa.Integer, nullable=False),
            sa.Column("image_id", sa.Integer),
            sa.Column("reason", sa.Text, nullable=False),
            sa.Column("row_json", sa.Text, nullable=False),
            sa.Column("time_utc", sa.Text, nullable=False),
            sqlite_autoincrement=True,
        )

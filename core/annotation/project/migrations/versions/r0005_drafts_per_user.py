"""Drafts per image and user: in a team project each rater's work in progress on an image is kept apart.

The drafts table is rebuilt with `user_name` in its key ("" in a one-person project); existing drafts
become the one-person drafts they were.
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"


def upgrade() -> None:
    op.create_table(
        "drafts_by_user",
        sa.Column("image_id", sa.Integer, sa.ForeignKey("images.id", ondelete="CASCADE"), nullable=False),
        sa.Column("user_name", sa.Text, nullable=False, server_default=sa.text("''")),
        sa.Column("prompts_json", sa.Text, nullable=False),
        sa.Column("polygons_json", sa.Text),
        sa.Column("tolerance_px", sa.Float),
        sa.Column("updated_utc", sa.Text, nullable=False),
        sa.PrimaryKeyConstraint("image_id", "user_name", name="drafts_image_user"),
    )
    op.execute(
        "INSERT INTO drafts_by_user(image_id, user_name, prompts_json, polygons_json, tolerance_px, updated_utc) "
        "SELECT image_id, '', prompts_json, polygons_json, tolerance_px, updated_utc FROM drafts"
    )
    op.drop_table("drafts")
    op.rename_table("drafts_by_user", "drafts")

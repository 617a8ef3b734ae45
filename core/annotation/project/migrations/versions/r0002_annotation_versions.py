"""Schema 2: annotations carry a version, so a save made from an outdated one is refused."""

from alembic import op

revision = "0002"
down_revision = "0001"


def upgrade() -> None:
    # Plain SQL: both engines add a column with its default and check in place.
    op.execute("ALTER TABLE annotations ADD COLUMN version INTEGER DEFAULT 1 NOT NULL CHECK (version > 0)")
    op.execute("UPDATE meta SET value = '2' WHERE key = 'schema_version'")

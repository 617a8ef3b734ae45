"""The project database's versioned migrations (Alembic revisions, run by `schema_versions.upgrade`).

A schema change is a new module in `versions/` with `revision`, `down_revision` (the previous one) and
`upgrade()` using `alembic.op`; then change `schema.py` to match (a test compares the two).
"""

"""One module per schema change, applied in order by `schema_versions.upgrade`."""

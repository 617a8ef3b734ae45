"""Several annotator processes on one PostgreSQL project at once (`devtools.team_load`, shortened): each in
its own empty folder, images read from the server, claiming and submitting; every save a process confirmed
is in the database and no image has more raters than it needs."""

from __future__ import annotations

from pathlib import Path

from devtools.team_load import run


def test_three_annotator_processes_save_at_once_and_nothing_confirmed_is_lost(dev_data, tmp_path, postgres_url):
    images = [case.image for case in dev_data[:4]]
    result = run(postgres_url, images, annotators=3, seconds=4.0, work=Path(tmp_path))
    assert result["lost"] == [] and result["over_assigned_images"] == 0
    assert result["confirmed_annotations"] >= 3  # every process saved
    assert result["latency_ms"]["add"]["n"] == result["confirmed_annotations"]

"""`dermaseg project migrate`: a folder's SQLite project to a real PostgreSQL server and back, nothing lost.

The round trip is checked table by table, row for row (ids, history, drafts, users, the id counters), and
by using the result: undo on the copy does what undo on the original does, a client without the images
reads them from the server, and the image files come back byte for byte.
"""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path

import numpy as np
import pytest

from dermaseg.core.annotation.project import Project, Provenance
from dermaseg.core.annotation.project.paths import file_sha256
from dermaseg.core.annotation.project.schema import metadata
from dermaseg.core.annotation.project.transfer import migrate_to_folder, migrate_to_server
from dermaseg.core.calibration import Calibration
from dermaseg.core.errors import StoreError


def _disc(h: int, w: int, cy: int, cx: int, r: int) -> np.ndarray:
    yy, xx = np.mgrid[:h, :w]
    return (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r


def _rich_project(folder: Path) -> None:
    """Every kind of record: labels, calibrations, statuses, annotations with metrics and provenance, an edit
    history with an undone step and a deleted annotation, a draft, page state, users."""
    with Project.init(folder, labels=["naevus", "melanoma"]) as p:
        a, b, c = p.images()[:3]
        p.set_project_calibration(Calibration(0.0125, "project"))
        p.set_calibration(b.id, Calibration(0.02, "user"))
        x = p.add_annotation(a.id, _disc(a.height, a.width, 300, 380, 120), "melanoma", metrics={"area_mm2": 7.5},
                             provenance=Provenance(prompts={"box": [1, 2, 3, 4]}, annotator="ana"))  # fmt: skip
        p.update_annotation(x.id, mask=_disc(a.height, a.width, 300, 380, 140), expected_version=1)
        z = p.add_annotation(c.id, _disc(c.height, c.width, 250, 350, 90), provenance=Provenance(annotator="ben"))
        p.update_annotation(z.id, label="naevus", expected_version=1)
        p.undo(c.id)  # a redo step to keep
        y = p.add_annotation(b.id, _disc(b.height, b.width, 280, 400, 100))
        p.delete_annotation(y.id)  # the last id given: it stays taken, undo can bring it back
        p.save_draft(c.id, {"points": [[10, 20]], "labels": [1]}, None, 1.0)
        p.set_status(a.id, "done")
        p.set_ui_state("last_image_id", str(b.id))
        p.add_user("ana", "password-ana", "reviewer")
        p.add_user("ben", "password-ben")


def _tables(db_file: Path, skip: tuple[str, ...] = ("image_files",)) -> dict[str, list]:
    con = sqlite3.connect(db_file)
    try:
        out = {t: con.execute(f"SELECT * FROM {t} ORDER BY 1").fetchall() for t in metadata.tables if t not in skip}
        out["sqlite_sequence"] = sorted(con.execute("SELECT name, seq FROM sqlite_sequence").fetchall())
        out["alembic_version"] = con.execute("SELECT * FROM alembic_version").fetchall()
        return out
    finally:
        con.close()


def test_a_project_goes_to_postgresql_and_back_with_nothing_lost(dev_folder, tmp_path, postgres_url) -> None:
    original = tmp_path / "original"
    dev_folder(original, 3)
    _rich_project(original)
    before = _tables(original / ".dermaseg" / "project.sqlite")

    report = migrate_to_server(original, postgres_url)
    assert report.rows["annotations"] == len(before["annotations"]) == 2 and report.files_shared == 3
    with pytest.raises(StoreError, match="already holds a project"):  # never over another project
        migrate_to_server(original, postgres_url)

    back = tmp_path / "back"
    back.mkdir()
    report = migrate_to_folder(postgres_url, back)
    assert sorted(report.files_written) == sorted(p.name for p in original.glob("*.png"))
    for f in original.glob("*.png"):
        assert file_sha256(back / f.name) == file_sha256(f)
    after = _tables(back / ".dermaseg" / "project.sqlite")
    for table in before:
        if table == "images":  # the files were written anew: same content, new modification time
            strip = [r[:4] + r[5:] for r in before[table]], [r[:4] + r[5:] for r in after[table]]
            assert strip[0] == strip[1], table
        else:
            assert after[table] == before[table], table

    # meanwhile someone without the images works on the shared project: pixels come from the server
    client = tmp_path / "client"
    client.mkdir()
    with Project.open(client, db=postgres_url, image_cache=tmp_path / "cache") as shared:
        assert len(shared.scan_report.remote) == 3
        img = shared.load_image(shared.images()[0].id)
        assert img.sha256 == shared.images()[0].pixel_sha256
        assert [u.name for u in shared.users()] == ["ana", "ben"] and shared.authenticate("ana", "password-ana")

    # the copy behaves as the original: redo, undo of a delete, a new id after the last ever given
    for folder in (original, back):
        with Project.open(folder) as p:
            a, b, c = p.images()[:3]
            assert p.redo(c.id) and p.annotations(c.id)[0].label == "naevus"
            new = p.add_annotation(a.id, _disc(a.height, a.width, 100, 100, 30))
            assert new.id == 4  # 1..3 were given; 3 was deleted, and can come back:
            assert p.undo(b.id) and [x.id for x in p.annotations(b.id)] == [3]
            assert p.check().healthy


def test_migrating_from_a_server_refuses_an_existing_project_and_a_wrong_url(dev_folder, tmp_path, postgres_url):
    folder = tmp_path / "p"
    dev_folder(folder, 1)
    Project.init(folder).close()
    with pytest.raises(StoreError, match="no such database|does not exist"):
        migrate_to_server(folder, postgres_url.rsplit("/", 1)[0] + "/no_such_db")
    migrate_to_server(folder, postgres_url)
    with pytest.raises(StoreError, match="already holds a project"):
        migrate_to_folder(postgres_url, folder)
    with pytest.raises(StoreError, match="PostgreSQL only"):
        migrate_to_server(folder, "mysql://u:secret@host/db")
    shutil.rmtree(folder / ".dermaseg")

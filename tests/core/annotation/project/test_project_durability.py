"""Nothing saved or in progress is lost: drafts across kill -9, damaged rows quarantined not fatal,
a deleted or replaced database/WAL refused, one process per project folder (real processes, real SQLite)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dermaseg.core.annotation.project import FILES_CHANGED, FolderLock, Project
from dermaseg.core.errors import StoreError


def _png(path: Path, seed: int, size: tuple[int, int] = (80, 60)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    rgb = np.random.default_rng(seed).integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
    Image.fromarray(rgb).save(path)


def _blob(h: int = 60, w: int = 80, shift: int = 0) -> np.ndarray:
    m = np.zeros((h, w), dtype=bool)
    m[10 + shift : 40, 15 : 55 - shift] = True
    m[20:25, 60:70] = True
    return m


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    root = tmp_path / "proj"
    for i in range(3):
        _png(root / f"i{i}.png", i)
    Project.init(root).close()
    return root


def _python(code: str) -> subprocess.Popen:
    """A Python process running `code`; it talks on stdout, one line per step, and reads steps from stdin."""
    return subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(code)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"},
    )


def _line(proc: subprocess.Popen) -> str:
    line = proc.stdout.readline()
    assert line, proc.stderr.read()[-3000:]
    return line.strip()


def _kill9(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    assert proc.returncode == -signal.SIGKILL


def _corrupt_rle(store, folder: Path, ann_id: int, replacement: str, at: int = 3) -> None:
    """Overwrite len(replacement) characters of one annotation's stored RLE, as a disk fault or a bad tool would."""
    [(counts,)] = store.sql(folder, "SELECT rle_counts FROM annotations WHERE id = :id", id=ann_id)
    damaged = counts[:at] + replacement + counts[at + len(replacement) :]
    store.sql(folder, "UPDATE annotations SET rle_counts = :v WHERE id = :id", v=damaged, id=ann_id)
    with Project.open(folder, scan=False) as p:
        assert p.integrity_check() == "ok"  # the database sees nothing wrong


# ------------------------------------------------------------------------------- drafts


def test_draft_survives_kill_9_and_marks_the_image_in_progress(folder: Path, store_engine) -> None:
    proc = _python(f"""
        from dermaseg.core.annotation.project import Project
        p = Project.open({str(folder)!r}, db={store_engine.url_for(folder)!r}, scan=False)
        rec = p.images()[1]
        outline = {{"width": 80, "height": 60, "parts": [{{"exterior": [[10, 10], [50, 10], [50, 40]]}}]}}
        p.save_draft(rec.id, {{"box": [5, 6, 50, 40], "points": [[20, 20]], "labels": [1], "head": 0}}, outline, 1.5)
        p.set_ui_state("last_image_id", str(rec.id))
        print("DRAFT", rec.id, flush=True)
        input()
    """)
    image_id = int(_line(proc).split()[1])
    _kill9(proc)
    with Project.open(folder) as p:
        d = p.draft(image_id)
        assert d is not None and d.prompts["box"] == [5, 6, 50, 40] and d.prompts["points"] == [[20, 20]]
        assert d.polygons["parts"][0]["exterior"] == [[10, 10], [50, 10], [50, 40]] and d.tolerance_px == 1.5
        assert p.ui_state("last_image_id") == str(image_id)
        assert p.image(image_id).status == "in_progress"
        assert p.summary()["by_status"] == {"not_started": 2, "in_progress": 1, "done": 0}
        # accepted: the draft goes, the image shows its saved status again
        p.add_annotation(image_id, _blob())
        p.set_status(image_id, "done")
        p.discard_draft(image_id)
        assert p.draft(image_id) is None and p.image(image_id).status == "done"


# ------------------------------------------------------------------------------- damaged rows


@pytest.mark.parametrize("replacement", ["zzzzzz", "000000", "OOOOOO", "9a9a9a"])
def test_a_damaged_rle_is_listed_not_raised_and_export_keeps_the_rest(
    folder, tmp_path, replacement: str, store_engine
) -> None:
    with Project.open(folder) as p:
        recs = p.images()
        bad = p.add_annotation(recs[0].id, _blob())
        good = [p.add_annotation(recs[1].id, _blob(shift=2)), p.add_annotation(recs[2].id, _blob(shift=4))]
    _corrupt_rle(store_engine, folder, bad.id, replacement)
    with Project.open(folder) as p:
        assert [a.id for a in p.annotations()] == [a.id for a in good]
        assert p.annotations(recs[0].id) == []
        [d] = p.damaged_annotations()
        assert d.id == bad.id and d.image_id == recs[0].id and "RLE" in d.reason
        with pytest.raises(StoreError, match=f"annotation id {bad.id} is damaged"):
            p.annotation(bad.id)
        rep = p.export_coco(tmp_path / "out.json", masks_dir=tmp_path / "masks")
        assert [x.id for x in rep.damaged] == [bad.id] and rep.annotations == 2
        coco = json.loads((tmp_path / "out.json").read_text())
        assert sorted(a["id"] for a in coco["annotations"]) == sorted(a.id for a in good)


def test_check_repairs_from_history_then_outline_then_quarantines(folder: Path, store_engine) -> None:
    with Project.open(folder) as p:
        recs = p.images()
        a = p.add_annotation(recs[0].id, _blob())  # repaired exactly from the edit history
        b = p.add_annotation(recs[1].id, _blob(shift=2))  # history gone: mask re-derived from its exact outline
        c = p.add_annotation(recs[2].id, _blob(shift=4))  # history gone and outline damaged: quarantined
        masks = {x.id: x.mask() for x in (a, b, c)}
    for ann_id in (a.id, b.id, c.id):
        _corrupt_rle(store_engine, folder, ann_id, "zzzzzz")
    store_engine.sql(folder, "DELETE FROM action_changes WHERE annotation_id IN (:b, :c)", b=b.id, c=c.id)
    store_engine.sql(folder, 'UPDATE annotations SET polygons_json = \'{"width": 80, "hei\' WHERE id = :c', c=c.id)
    (folder / "i2.png").unlink()  # and one image file went missing (a shared project has its bytes)
    missing = ("i2.png",) if store_engine.name == "sqlite" else ()
    with Project.open(folder, scan=False) as p:
        rep = p.check()
        assert rep.integrity == "ok" and not rep.healthy
        assert [d.id for d in rep.damaged] == [a.id, b.id, c.id] and rep.missing_files == missing
        assert rep.repaired == () and rep.quarantined == ()  # a check alone changes nothing
        rep = p.check(repair=True)
        assert dict(rep.repaired) == {
            a.id: "restored from the edit history (the same version)",
            b.id: "mask re-derived from its outline",
        }
        assert rep.quarantined == (c.id,)
        assert np.array_equal(p.annotation(a.id).mask(), masks[a.id])
        assert np.array_equal(p.annotation(b.id).mask(), masks[b.id])
        assert p.damaged_annotations() == [] and [x.id for x in p.annotations()] == [a.id, b.id]
    row = store_engine.sql(folder, "SELECT annotation_id, image_id, reason, row_json FROM quarantine")
    assert len(row) == 1 and row[0][:2] == (c.id, c.image_id) and "RLE" in row[0][2]
    assert json.loads(row[0][3])["a"][0] == c.id  # the row as it was, kept


# ------------------------------------------------------------------------------- the files in use


WRITER = """
    import numpy as np
    from dermaseg.core.errors import StoreError
    from dermaseg.core.annotation.project import Project
    p = Project.open({folder!r}, scan=False)
    recs = p.images()
    m = np.zeros((60, 80), dtype=bool); m[10:40, 15:55] = True
    print("SAVED", p.add_annotation(recs[0].id, m).id, flush=True)
    input()  # the test removes or replaces a file now
    try:
        print("SAVED", p.add_annotation(recs[1].id, m).id, flush=True)
    except StoreError as e:
        print("REFUSED", e, flush=True)
    input()
"""


@pytest.mark.sqlite_only
@pytest.mark.parametrize("fault", ["wal deleted", "database replaced"])
def test_a_deleted_wal_or_replaced_database_refuses_the_save(folder: Path, fault: str) -> None:
    db = folder / ".dermaseg" / "project.sqlite"
    wal = db.with_name(db.name + "-wal")
    proc = _python(WRITER.format(folder=str(folder)))
    first = int(_line(proc).split()[1])
    assert wal.exists()
    if fault == "wal deleted":
        wal.unlink()
    else:  # a copy put in its place (a sync tool, a restore from backup)
        shutil.copy(db, db.with_name("copy.sqlite"))
        os.replace(db.with_name("copy.sqlite"), db)
    proc.stdin.write("\n")
    proc.stdin.flush()
    answer = _line(proc)
    _kill9(proc)  # the hardest way to stop
    assert answer.startswith("REFUSED") and FILES_CHANGED in answer, answer
    if fault == "wal deleted":  # what was confirmed before the journal went is still there
        with Project.open(folder, scan=False) as p:
            assert [a.id for a in p.annotations()] == [first]


# ------------------------------------------------------------------------------- one process per folder


def test_the_folder_lock_names_its_holder_and_goes_with_a_kill_9(folder: Path) -> None:
    proc = _python(f"""
        from dermaseg.core.annotation.project import FolderLock
        FolderLock({str(folder)!r}, "dermaseg serve").acquire()
        print("LOCKED", flush=True)
        input()
    """)
    assert _line(proc) == "LOCKED"
    with pytest.raises(StoreError) as e:
        FolderLock(folder, "dermaseg project import-coco").acquire()
    assert f"pid {proc.pid} on " in str(e.value) and "'dermaseg serve'" in str(e.value) and "since 20" in str(e.value)
    _kill9(proc)
    with FolderLock(folder, "dermaseg serve"):  # no stale lock after kill -9
        pass

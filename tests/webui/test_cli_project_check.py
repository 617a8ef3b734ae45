"""`dermaseg project check|export-coco|import-coco` with a damaged row and a held folder, through the real CLI."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dermaseg.core.annotation.project import Project
from dermaseg.webui.cli.main import main
from dermaseg.webui.cli.project import EXIT_DAMAGED


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """A project of 3 images, each with one annotation; annotation 1's RLE has 6 characters overwritten."""
    root = tmp_path / "proj"
    root.mkdir()
    for i in range(3):
        rgb = np.random.default_rng(i).integers(0, 255, (60, 80, 3), dtype=np.uint8)
        Image.fromarray(rgb).save(root / f"i{i}.png")
    with Project.init(root) as p:
        for k, rec in enumerate(p.images()):
            m = np.zeros((rec.height, rec.width), dtype=bool)
            m[5 + k : 40, 10 : 60 - k] = True
            p.add_annotation(rec.id, m)
        db = p.db_path
    con = sqlite3.connect(db)
    counts = con.execute("SELECT rle_counts FROM annotations WHERE id = 1").fetchone()[0]
    con.execute("UPDATE annotations SET rle_counts = ? WHERE id = 1", (counts[:2] + "zzzzzz" + counts[8:],))
    con.commit()
    con.close()
    return root


def test_export_writes_the_healthy_annotations_and_names_the_damaged_one(folder, tmp_path, capsys):
    out = tmp_path / "out.json"
    assert main(["project", "export-coco", str(folder), "--out", str(out), "--masks", str(tmp_path / "m")]) == 3
    cap = capsys.readouterr()
    assert "Traceback" not in cap.err and "2 annotations" in cap.out
    assert "1 damaged annotation(s) left out" in cap.err and "annotation 1 (image id 1" in cap.err
    assert "dermaseg project check" in cap.err
    assert sorted(a["id"] for a in json.loads(out.read_text())["annotations"]) == [2, 3]


def test_check_reports_then_repairs(folder, capsys):
    assert main(["project", "check", str(folder)]) == EXIT_DAMAGED
    out = capsys.readouterr().out
    assert "database integrity: ok" in out and "damaged annotations: 1" in out and "annotation 1 (image id 1" in out
    assert "run again with --repair" in out
    assert main(["project", "check", str(folder), "--repair"]) == 0
    out = capsys.readouterr().out
    assert "repaired annotation 1: restored from the edit history" in out
    assert main(["project", "check", str(folder)]) == 0
    assert "damaged annotations: 0" in capsys.readouterr().out
    with Project.open(folder) as p:
        assert len(p.annotations()) == 3


def test_writers_are_refused_while_another_process_holds_the_folder(folder, tmp_path, capsys):
    holder = subprocess.Popen(
        [sys.executable, "-c", "from dermaseg.core.annotation.project import FolderLock; "
         f"FolderLock({str(folder)!r}, "
         "'dermaseg serve').acquire(); print('LOCKED', flush=True); input()"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "LOCKED"
        coco = tmp_path / "in.json"
        assert main(["project", "export-coco", str(folder), "--out", str(coco)]) == 3  # readers are welcome
        capsys.readouterr()
        assert main(["project", "import-coco", str(folder), str(coco)]) == 2
        err = capsys.readouterr().err
        assert f"already open in 'dermaseg serve' (pid {holder.pid}" in err
        assert main(["project", "check", str(folder), "--repair"]) == 2
        assert main(["project", "check", str(folder)]) == EXIT_DAMAGED  # a check alone only reads
    finally:
        holder.kill()
        holder.wait()
    assert main(["project", "check", str(folder), "--repair"]) == 0  # the lock went with the process

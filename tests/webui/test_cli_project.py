"""`dermaseg project init|status|export-coco|import-coco` through the real CLI entry point."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dermaseg.core.annotation.project import Project
from dermaseg.webui.cli.main import main


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    root = tmp_path / "proj"
    for i, name in enumerate(("a.png", "sub/b.png")):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        rgb = np.random.default_rng(i).integers(0, 255, (60, 80, 3), dtype=np.uint8)
        Image.fromarray(rgb).save(root / name)
    return root


def _annotate(folder: Path) -> dict[str, np.ndarray]:
    masks = {}
    with Project.open(folder) as p:
        for k, rec in enumerate(p.images()):
            m = np.zeros((rec.height, rec.width), dtype=bool)
            m[5 + k : 30, 10 : 50 - k] = True
            if k == 1:
                m[10:15, 20:25] = False  # a hole: exported as RLE
            p.add_annotation(rec.id, m, "melanoma")
            masks[rec.path] = m
    return masks


def test_init_status_export_import(folder, tmp_path, capsys):
    assert main(["project", "init", str(folder), "--label", "naevus", "--label", "melanoma"]) == 0
    out = capsys.readouterr().out
    assert "2 images" in out and "naevus, melanoma" in out and "2 added" in out

    masks = _annotate(folder)
    (folder / "a.png").rename(folder / "renamed.png")
    assert main(["project", "status", str(folder), "--json"]) == 0
    status = json.loads(capsys.readouterr().out)
    assert status["images"] == 2 and status["annotations"] == 2
    assert status["by_status"]["in_progress"] == 2 and status["by_label"] == {"melanoma": 2}
    assert status["scan"]["moved"] == [["a.png", "renamed.png"]]
    assert main(["project", "status", str(folder)]) == 0
    assert "annotations: 2 (melanoma 2)" in capsys.readouterr().out

    out_json, masks_dir = tmp_path / "out" / "coco.json", tmp_path / "out" / "masks"
    assert main(["project", "export-coco", str(folder), "--out", str(out_json), "--masks", str(masks_dir)]) == 0
    assert "2 annotations (1 polygons, 1 RLE)" in capsys.readouterr().out
    data = json.loads(out_json.read_text())
    assert {i["file_name"] for i in data["images"]} == {"renamed.png", "sub/b.png"}
    png = np.asarray(Image.open(masks_dir / "sub" / "b.png"))
    assert np.array_equal(png == 255, masks["sub/b.png"])

    assert main(["project", "export-coco", str(folder), "--out", str(tmp_path / "rle.json"), "--rle"]) == 0
    assert "(0 polygons, 2 RLE)" in capsys.readouterr().out
    assert main(["project", "export-coco", str(folder), "--out", str(tmp_path / "d.json"), "--status", "done"]) == 0
    assert json.loads((tmp_path / "d.json").read_text())["images"] == []
    capsys.readouterr()

    fresh = tmp_path / "fresh"
    shutil.copytree(folder, fresh, ignore=shutil.ignore_patterns(".dermaseg"))
    assert main(["project", "init", str(fresh)]) == 0
    assert main(["project", "import-coco", str(fresh), str(out_json)]) == 0
    out = capsys.readouterr().out
    assert "imported 2 annotations on 2 images" in out and "new labels: naevus, melanoma" in out
    assert main(["project", "import-coco", str(fresh), str(out_json)]) == 0
    again = capsys.readouterr().out
    assert "imported 0 annotations" in again and "skipped 2 already present" in again
    with Project.open(fresh) as q:
        got = {q.image(a.image_id).path: a.mask() for a in q.annotations()}
    assert np.array_equal(got["sub/b.png"], masks["sub/b.png"])
    assert np.array_equal(got["renamed.png"], masks["a.png"])


def test_errors_are_reported_not_raised(folder, tmp_path, capsys):
    assert main(["project", "status", str(folder)]) == 2
    assert "not a dermaseg project" in capsys.readouterr().err
    assert main(["project", "init", str(folder)]) == 0
    bad = tmp_path / "bad.json"
    bad.write_text(
        json.dumps(
            {
                "images": [{"id": 1, "file_name": "a.png", "width": 80, "height": 60}],
                "categories": [{"id": 1, "name": "lesion"}],
                "annotations": [{"id": 17, "image_id": 1, "category_id": 1, "segmentation": [[0, 0, 99, 0, 9, 9]]}],
            }
        )
    )
    assert main(["project", "import-coco", str(folder), str(bad)]) == 2
    err = capsys.readouterr().err
    assert "annotation id 17" in err and "outside" in err
    out_inside = folder / "masks"
    assert (
        main(["project", "export-coco", str(folder), "--out", str(tmp_path / "x.json"), "--masks", str(out_inside)])
        == 2
    )
    assert "inside the project folder" in capsys.readouterr().err
    assert main(["project"]) == 2  # no action: help


def test_python_dash_m_entry_point(folder):
    r = subprocess.run(
        [sys.executable, "-m", "dermaseg.webui.cli", "project", "init", str(folder)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 0, r.stderr
    assert "2 images" in r.stdout

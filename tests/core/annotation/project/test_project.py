"""The project: scanning, path safety, autosave, undo/redo across restarts, threads, SIGKILL, COCO."""

from __future__ import annotations

import contextlib
import io
import json
import os
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pycocotools.coco import COCO

from dermaseg.core.annotation.geometry import Polygons, mask_to_polygons
from dermaseg.core.annotation.project import SCHEMA_VERSION, Project, Provenance
from dermaseg.core.annotation.project import database as database_mod
from dermaseg.core.calibration import Calibration
from dermaseg.core.errors import CocoError, ConflictError, ImageLoadError, StoreError

HERE = Path(__file__).resolve().parent


def _png(path: Path, seed: int, size: tuple[int, int] = (80, 60)) -> Path:
    """A small random RGB PNG of `size` (width, height)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    rgb = np.random.default_rng(seed).integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
    Image.fromarray(rgb).save(path)
    return path


def _box(h: int, w: int, y0: int, x0: int, y1: int, x1: int) -> np.ndarray:
    m = np.zeros((h, w), dtype=bool)
    m[y0:y1, x0:x1] = True
    return m


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    root = tmp_path / "proj"
    _png(root / "a.png", 1)
    _png(root / "sub" / "b.png", 2)
    _png(root / "c.jpg", 3, (64, 48))
    (root / "notes.txt").write_text("not an image")
    return root


@pytest.fixture
def project(folder: Path):
    p = Project.init(folder, labels=["naevus", "melanoma"])
    yield p
    p.close()


# ------------------------------------------------------------------------------- open and scan


@pytest.mark.sqlite_only  # the folder's own database and files
def test_init_scans_and_open_reports_moves_changes_and_new_files(folder):
    with Project.init(folder) as p:
        assert sorted(p.scan_report.added) == ["a.png", "c.jpg", "sub/b.png"]
        assert p.labels() == ("lesion",)
        a = p.image_by_path("a.png")
        assert (a.width, a.height, a.status) == (80, 60, "not_started")
        p.add_annotation(a.id, _box(60, 80, 5, 5, 20, 30))
    (folder / "moved").mkdir()
    (folder / "a.png").rename(folder / "moved" / "a.png")
    _png(folder / "c.jpg", 99, (64, 48))  # same path, new content
    _png(folder / "d.png", 4)
    (folder / "sub" / "b.png").unlink()
    (folder / "broken.png").write_bytes(b"not a png")
    with Project.open(folder) as p:
        r = p.scan_report
        assert r.moved == (("a.png", "moved/a.png"),)
        assert r.changed == ("c.jpg",)
        assert r.added == ("d.png",)
        assert r.missing == ("sub/b.png",)
        assert r.unreadable == ("broken.png",)
        assert "1 moved" in r.summary()
        moved = p.image_by_path("moved/a.png")
        assert moved.id == a.id and len(p.annotations(moved.id)) == 1  # annotations follow the move
    with Project.open(folder) as p:  # nothing new since; missing and unreadable files are still reported
        assert p.scan_report.summary() == "1 missing, 1 unreadable"
    (folder / "broken.png").unlink()
    with Project.open(folder) as p:
        p.scan()
        assert p.scan_report.summary() == "1 missing"


def test_the_pixel_limit_reaches_every_image_a_project_opens(folder):
    """`Settings.max_pixels` (serve passes it to the project) holds for the folder's images too, not only uploads."""
    with Project.init(folder, max_pixels=80 * 60 - 1) as small:
        ids = {r.path: r.id for r in small.images()}
        with pytest.raises(ImageLoadError, match="a.png"):
            small.load_image(ids["a.png"])  # 80 x 60
        assert small.load_image(ids["c.jpg"]).width == 64  # 64 x 48 fits
    with Project.open(folder) as default:
        assert default.load_image(ids["a.png"]).width == 80


@pytest.mark.sqlite_only  # the folder's own database and files
def test_paths_stay_inside_the_folder(project, folder, tmp_path):
    outside = _png(tmp_path / "outside.png", 5)
    (folder / "link.png").symlink_to(outside)
    (folder / "inside_link.png").symlink_to(folder / "a.png")
    report = project.scan()
    assert report.refused == ("link.png",)
    assert "inside_link.png" in report.added
    for bad in ("../outside.png", "/etc/passwd", "sub/../../outside.png", "link.png", "C:\\x.png", ""):
        with pytest.raises(StoreError):
            project.safe_path(bad)
    assert project.safe_path("sub/./b.png") == folder / "sub" / "b.png"


@pytest.mark.sqlite_only  # the folder's own database and files
def test_not_a_project_corrupt_and_read_only(tmp_path, folder, monkeypatch):
    with pytest.raises(StoreError, match="not a dermaseg project"):
        Project.open(folder)
    with pytest.raises(StoreError, match="no such folder"):
        Project.open(tmp_path / "nope")
    Project.init(folder).close()
    db = folder / ".dermaseg" / "project.sqlite"
    monkeypatch.setattr(database_mod.os, "access", lambda *a, **k: False)
    with pytest.raises(StoreError, match="read-only"):
        Project.open(folder)
    monkeypatch.undo()
    db.write_bytes(b"garbage" * 1000)
    for f in db.parent.glob("project.sqlite-*"):
        f.unlink()
    with pytest.raises(StoreError, match="corrupt"):
        Project.open(folder)


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root ignores file permissions")
@pytest.mark.sqlite_only  # the folder's own database and files
def test_read_only_folder_for_real(folder):
    folder.chmod(0o555)
    try:
        with pytest.raises(StoreError, match="read-only"):
            Project.init(folder)
    finally:
        folder.chmod(0o755)


# ------------------------------------------------------------------------------- annotations


def test_add_stores_mask_polygons_metrics_and_provenance(project):
    img = project.image_by_path("a.png")
    m = _box(60, 80, 10, 10, 30, 40)
    m[15:20, 15:20] = False  # a hole
    prov = Provenance(
        source="model", prompts={"box": [10, 10, 40, 30]}, model_id="litemedsam", model_variant="int8",
        embedding_sha256="e" * 64, annotator="Dr A",
    )  # fmt: skip
    ann = project.add_annotation(
        img.id, m, "melanoma", metrics={"area_mm2": 1.25, "nan": float("nan")}, provenance=prov
    )
    again = project.annotation(ann.id)
    assert np.array_equal(again.mask(), m)
    assert again.label == "melanoma" and again.metrics == {"area_mm2": 1.25, "nan": None}
    assert again.provenance == prov and prov.tool_version != "" and prov.time_utc.endswith("+00:00")
    polys = Polygons.from_json(again.polygons)
    assert len(polys.parts) == 1 and len(polys.parts[0].holes) == 1  # exact outline by default
    assert project.image(img.id).status == "in_progress"
    with pytest.raises(StoreError, match="not in the project's label list"):
        project.add_annotation(img.id, m, "cat")
    with pytest.raises(StoreError, match="empty"):
        project.add_annotation(img.id, np.zeros((60, 80), bool))
    with pytest.raises(StoreError, match="shape"):
        project.add_annotation(img.id, np.ones((61, 80), bool))
    with pytest.raises(StoreError, match="image id 999"):
        project.add_annotation(999, m)
    assert len(project.annotations(img.id)) == 1  # refused calls wrote nothing


def test_undo_redo_survive_a_restart_and_new_edits_drop_redo(project, folder):
    img = project.image_by_path("a.png")
    m1, m2 = _box(60, 80, 5, 5, 20, 20), _box(60, 80, 30, 30, 50, 70)
    a = project.add_annotation(img.id, m1)
    project.update_annotation(a.id, mask=m2, label="melanoma")
    project.close()
    p = Project.open(folder)
    assert p.history_depth(img.id) == (2, 0)
    assert p.undo(img.id)
    back = p.annotation(a.id)
    assert np.array_equal(back.mask(), m1) and back.label == "naevus"
    p.close()
    p = Project.open(folder)
    assert p.redo(img.id)
    assert np.array_equal(p.annotation(a.id).mask(), m2)
    assert p.undo(img.id) and p.undo(img.id)
    assert p.annotations(img.id) == [] and not p.undo(img.id)
    assert p.redo(img.id) and len(p.annotations(img.id)) == 1
    p.delete_annotation(a.id)  # a new edit: the remaining redo step is gone
    assert p.history_depth(img.id) == (2, 0) and not p.redo(img.id)
    assert p.undo(img.id) and p.annotation(a.id).label == "naevus"
    other = p.image_by_path("sub/b.png")
    assert p.history_depth(other.id) == (0, 0)  # history is per image
    p.close()


def test_polygon_edit_updates_the_mask(project):
    img = project.image_by_path("a.png")
    a = project.add_annotation(img.id, _box(60, 80, 5, 5, 20, 20))
    new = mask_to_polygons(_box(60, 80, 10, 10, 40, 50), 0.0)
    b = project.update_annotation(a.id, polygons=new, tolerance_px=0.0)
    assert b.area_px == 30 * 40 and np.array_equal(b.mask(), _box(60, 80, 10, 10, 40, 50))


def test_labels_status_calibration(project):
    img = project.image_by_path("a.png")
    project.add_annotation(img.id, _box(60, 80, 5, 5, 20, 20), "melanoma")
    with pytest.raises(StoreError, match="still used"):
        project.set_labels(["naevus"])
    project.set_labels(["melanoma", "naevus", "seborrhoeic keratosis"])
    assert project.labels() == ("melanoma", "naevus", "seborrhoeic keratosis")
    project.set_status(img.id, "done")
    with pytest.raises(StoreError):
        project.set_status(img.id, "finished")
    project.set_calibration(img.id, Calibration(0.02, "ruler"))
    rec = project.image(img.id)
    assert rec.status == "done" and rec.calibration == Calibration(0.02, "ruler")
    loaded = project.load_image(img.id)
    assert loaded.calibration == Calibration(0.02, "ruler")
    assert project.image(img.id).pixel_sha256 == loaded.sha256


def test_threads_share_one_project(project):
    images = project.images()
    errors: list[BaseException] = []

    def work(k: int) -> None:
        try:
            for j in range(10):
                rec = images[(k + j) % len(images)]
                m = _box(rec.height, rec.width, j, k, j + 5, k + 5)
                project.add_annotation(rec.id, m)
                project.annotations(rec.id)
        except BaseException as e:  # noqa: BLE001 - reported by the assertion below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    anns = project.annotations()
    assert len(anns) == 40 and len({a.id for a in anns}) == 40
    assert project.integrity_check() == "ok"


# ------------------------------------------------------------------------------- crash safety


def test_sigkill_never_loses_a_saved_annotation(tmp_path, store_engine):
    root = tmp_path / "kill"
    for i in range(3):
        _png(root / f"i{i}.png", i)
    Project.init(root).close()
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    rng = random.Random(1234)
    printed: list[int] = []
    kills = 0
    deadline = time.monotonic() + 45  # bounded even on a loaded machine
    while kills < 30 and time.monotonic() < deadline:
        proc = subprocess.Popen(
            [sys.executable, str(HERE / "project_writer.py"), str(root), str(kills)]
            + [u for u in [store_engine.url_for(root)] if u],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
        )
        # Wait until it writes (start-up time varies with machine load), then kill at a random moment.
        first = proc.stdout.readline()
        assert first == b"READY\n", proc.communicate()[1].decode()[-2000:]
        time.sleep(rng.uniform(0.0, 0.25))
        proc.send_signal(signal.SIGKILL)
        out, err = proc.communicate(timeout=10)
        assert proc.returncode == -signal.SIGKILL, err.decode()[-2000:]
        printed += [int(line.split()[1]) for line in out.decode().splitlines() if line.startswith("SAVED ")]
        kills += 1
    assert kills >= 15, f"only {kills} kills in the time box"
    assert len(printed) >= 2 * kills, "the writer barely ran; the test proves little"
    with Project.open(root) as p:
        assert p.integrity_check() == "ok"
        stored = {a.id for a in p.annotations()}
    missing = sorted(set(printed) - stored)
    assert missing == []
    print(f"\n{kills} SIGKILLs, {len(printed)} confirmed saves, all present; integrity ok")
    if store_engine.name != "sqlite":
        return
    con = sqlite3.connect(root / ".dermaseg" / "project.sqlite")
    assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    con.close()


# ------------------------------------------------------------------------------- COCO bridge


def _quiet_coco(path: Path) -> COCO:
    with contextlib.redirect_stdout(io.StringIO()):
        return COCO(str(path))


@pytest.fixture
def dev_project(dev_data, tmp_path):
    """A project over copies of all dev images (in tmp_path, never in the repository), with the
    expert masks as annotations; every 7th gets a hole so that RLE export is exercised too."""
    root = tmp_path / "dev"
    (root / "ph2").mkdir(parents=True)
    (root / "ham").mkdir()
    for case in dev_data:
        shutil.copyfile(case.image, root / ("ph2" if case.dataset == "PH2" else "ham") / case.image.name)
    t0 = time.perf_counter()
    p = Project.init(root, labels=["common_naevus", "atypical_naevus", "melanoma", "lesion"])
    t_init = time.perf_counter() - t0
    names = ["common_naevus", "atypical_naevus", "melanoma"]
    masks = {}
    for i, case in enumerate(dev_data):
        rec = p.image_by_path(f"{'ph2' if case.dataset == 'PH2' else 'ham'}/{case.image.name}")
        m = case.load_mask()
        if i % 7 == 0:
            r, c = (int(np.median(v)) for v in np.nonzero(m))
            m[r - 5 : r + 5, c - 5 : c + 5] = False
        label = names[case.diagnosis] if case.diagnosis is not None else "lesion"
        a = p.add_annotation(rec.id, m, label, provenance=Provenance(model_id="expert", annotator="PH2/HAM"))
        masks[a.id] = m
    yield p, masks, t_init
    p.close()


def test_export_import_dev_set(dev_project, tmp_path, record_property):
    p, masks, t_init = dev_project
    out = tmp_path / "export"
    t0 = time.perf_counter()
    rep = p.export_coco(out / "coco.json", masks_dir=out / "masks")
    t_export = time.perf_counter() - t0
    assert rep.annotations == len(masks) and rep.rle_annotations == len(range(0, len(masks), 7))
    gt = _quiet_coco(out / "coco.json")
    for ann_id, m in masks.items():
        assert np.array_equal(gt.annToMask(gt.anns[ann_id]).astype(bool), m)
        extra = gt.anns[ann_id]["dermaseg"]
        assert extra["provenance"]["model_id"] == "expert" and extra["polygons"]["width"] == m.shape[1]
    for img in gt.dataset["images"]:
        assert (p.root / img["file_name"]).is_file()
        png = np.asarray(Image.open((out / "masks" / img["file_name"]).with_suffix(".png")))
        assert png.shape == (img["height"], img["width"]) and set(np.unique(png)) <= {0, 255}
        union = np.zeros_like(png, dtype=bool)
        for a in gt.imgToAnns[img["id"]]:
            union |= gt.annToMask(a).astype(bool)
        assert np.array_equal(png == 255, union)

    # import into a fresh project over the same images: same masks, labels, provenance
    fresh_root = tmp_path / "fresh"
    shutil.copytree(p.root, fresh_root, ignore=shutil.ignore_patterns(".dermaseg"))
    with Project.init(fresh_root) as q:
        t0 = time.perf_counter()
        rep_in = q.import_coco(out / "coco.json", annotator="importer")
        t_import = time.perf_counter() - t0
        assert rep_in.added == len(masks) and set(rep_in.new_labels) <= set(p.labels())
        got = {(a.label, q.image(a.image_id).path): a for a in q.annotations()}
        for a in p.annotations():
            b = got[(a.label, p.image(a.image_id).path)]
            assert np.array_equal(b.mask(), a.mask()) and b.provenance == a.provenance
        assert q.import_coco(out / "coco.json").skipped_duplicates == len(masks)  # idempotent
        assert len(q.annotations()) == len(masks)
        rep_rep = q.import_coco(out / "coco.json", replace=True)
        assert (rep_rep.replaced, rep_rep.added) == (len(masks), len(masks))
        first = q.annotations()[0]
        assert q.undo(first.image_id)  # the import of an image is one undoable step
    record_property("timings_s", {"init_scan": t_init, "export": t_export, "import": t_import})
    print(
        f"\ndev set ({len(masks)} images): init+scan {t_init:.2f} s, export {t_export:.2f} s, import {t_import:.2f} s"
    )


def test_import_is_all_or_nothing(project, tmp_path):
    a = project.image_by_path("a.png")
    b = project.image_by_path("sub/b.png")
    project.add_annotation(a.id, _box(60, 80, 1, 1, 9, 9))
    before = [(x.id, x.rle) for x in project.annotations()]
    labels = project.labels()
    good = {"id": 1, "image_id": 1, "category_id": 5, "segmentation": [[2, 2, 30, 2, 30, 20, 2, 20]]}
    bad = {"id": 17, "image_id": 2, "category_id": 5, "segmentation": [[2, 2, 300, 2, 30, 20]]}
    doc = {
        "images": [
            {"id": 1, "file_name": "a.png", "width": 80, "height": 60},
            {"id": 2, "file_name": "sub/b.png", "width": 80, "height": 60},
        ],
        "categories": [{"id": 5, "name": "new label"}],
        "annotations": [good, bad],
    }
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(doc))
    with pytest.raises(CocoError, match="annotation id 17: polygon 0 has point"):
        project.import_coco(path)
    bad["segmentation"] = {"size": [60, 80], "counts": [100, 50, 4650]}  # now valid: 50 px
    doc["images"][1]["file_name"] = "../outside.png"
    with pytest.raises(CocoError, match="image id 2: .*leave the project folder"):
        project.import_coco(json.dumps(doc).encode())
    doc["images"][1]["file_name"] = "nope.png"
    with pytest.raises(CocoError, match=r"image id 2 \('nope.png'\): not in this project"):
        project.import_coco(json.dumps(doc).encode())
    doc["images"][1]["file_name"] = "sub/b.png"
    wider = {**doc, "images": [{"id": 1, "file_name": "a.png", "width": 81, "height": 60}], "annotations": [good]}
    with pytest.raises(CocoError, match="image id 1 .* 81x60"):
        project.import_coco(json.dumps(wider).encode())
    assert [(x.id, x.rle) for x in project.annotations()] == before and project.labels() == labels
    assert project.history_depth(b.id) == (0, 0)
    rep = project.import_coco(json.dumps(doc).encode(), annotator="someone")
    assert rep.added == 2 and rep.new_labels == ("new label",)
    imported = project.annotations(b.id)[0]
    assert imported.area_px == 50 and imported.provenance.source == "import"
    assert imported.provenance.annotator == "someone"


# ------------------------------------------------------------------------------- versions and conflicts


def test_every_change_raises_the_version_and_a_stale_save_is_refused(project):
    img = project.image_by_path("a.png")
    m1, m2, m3 = _box(60, 80, 5, 5, 20, 20), _box(60, 80, 30, 30, 50, 70), _box(60, 80, 2, 40, 12, 60)
    a = project.add_annotation(img.id, m1, provenance=Provenance(source="manual", annotator="Dr A"))
    assert a.version == 1
    b = project.update_annotation(
        a.id, mask=m2, expected_version=1, provenance=Provenance(source="manual", annotator="Dr B")
    )
    assert b.version == 2
    with pytest.raises(ConflictError) as e:  # made from version 1: refused, nothing written
        project.update_annotation(a.id, mask=m3, expected_version=1)
    assert isinstance(e.value, StoreError) and e.value.current_version == 2 and e.value.changed_by == "Dr B"
    msg = str(e.value)
    assert "Dr B" in msg and b.updated_utc in msg and "Reload" in msg and "Keep both" in msg
    assert np.array_equal(project.annotation(a.id).mask(), m2) and project.annotation(a.id).version == 2
    assert project.history_depth(img.id) == (2, 0)  # the refused save left no history step
    # undo and redo give new versions: a save made from any version seen before is refused
    assert project.undo(img.id) and project.annotation(a.id).version == 3
    assert np.array_equal(project.annotation(a.id).mask(), m1)
    with pytest.raises(ConflictError):
        project.update_annotation(a.id, mask=m3, expected_version=2)
    assert project.redo(img.id) and project.annotation(a.id).version == 4
    with pytest.raises(ConflictError):
        project.delete_annotation(a.id, expected_version=3)
    project.delete_annotation(a.id, expected_version=4)
    with pytest.raises(ConflictError, match="deleted since you opened it") as e:
        project.update_annotation(a.id, mask=m3, expected_version=4)
    assert e.value.current_version is None and e.value.changed_utc
    with pytest.raises(StoreError, match="not in this project"):  # without a version: the old message
        project.update_annotation(a.id, mask=m3)
    assert project.undo(img.id)  # the delete undone: back, with a version above all earlier ones
    back = project.annotation(a.id)
    assert back.version == 5 and np.array_equal(back.mask(), m2)
    assert [x.version for x in project.annotations(img.id)] == [5]


def test_undo_only_the_step_one_made(project):
    img = project.image_by_path("a.png")
    a = project.add_annotation(img.id, _box(60, 80, 5, 5, 20, 20))
    mine = project.last_action(img.id)
    project.add_annotation(img.id, _box(60, 80, 30, 30, 50, 70))  # someone else's step, later
    with pytest.raises(StoreError, match="someone else"):
        project.undo(img.id, mine)
    assert len(project.annotations(img.id)) == 2
    assert project.undo(img.id, project.last_action(img.id))
    assert project.last_action(img.id) == mine and project.undo(img.id, mine)
    assert project.annotations(img.id) == [] and project.last_action(img.id, undone=True) == mine
    assert project.redo(img.id, mine) and project.annotation(a.id).version == 2


_RACER = """
import sys, time
from pathlib import Path
import numpy as np
from dermaseg.core.errors import ConflictError
from dermaseg.core.annotation.project import Project
p = Project.open(sys.argv[1], db=sys.argv[4] or None, scan=False)
ann = p.annotations()[0]
m = np.zeros((ann.rle.height, ann.rle.width), bool); m[: int(sys.argv[2]) + 1, :] = True
print("READY", flush=True)
while not Path(sys.argv[3]).exists():
    time.sleep(0.001)
try:
    p.update_annotation(ann.id, mask=m, expected_version=1)
    print("SAVED", flush=True)
except ConflictError:
    print("CONFLICT", flush=True)
"""


def test_two_processes_saving_the_same_version_one_wins(project, folder, tmp_path, store_engine):
    """Four processes save over version 1 of one annotation at the same moment: exactly one is written,
    the others are refused (check and write are one transaction: BEGIN IMMEDIATE on SQLite, the row read
    FOR UPDATE on PostgreSQL)."""
    img = project.image_by_path("a.png")
    a = project.add_annotation(img.id, _box(60, 80, 5, 5, 20, 20))
    go = tmp_path / "go"
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _RACER, str(folder), str(i), str(go), store_engine.url_for(folder) or ""],
            stdout=subprocess.PIPE,
        )
        for i in range(4)
    ]
    for proc in procs:
        assert proc.stdout.readline() == b"READY\n"
    go.touch()
    answers = [proc.communicate(timeout=60)[0].decode().strip() for proc in procs]
    assert sorted(answers) == ["CONFLICT"] * 3 + ["SAVED"], answers
    winner = answers.index("SAVED")
    stored = project.annotation(a.id)
    assert stored.version == 2 and stored.area_px == (winner + 1) * 80


@pytest.mark.sqlite_only  # the folder's own database and files
def test_a_schema_1_project_is_upgraded_after_a_backup(tmp_path):
    """tests/core/annotation/project/data/project-v1 was made by the code of schema 1 (before versions): one image, an
    annotation added then updated, a second added, a third added then deleted."""
    root = tmp_path / "old"
    shutil.copytree(HERE / "data" / "project-v1", root)
    db = root / ".dermaseg" / "project.sqlite"
    con = sqlite3.connect(db)
    old_rows = con.execute("SELECT * FROM annotations ORDER BY id").fetchall()
    con.close()
    with Project.open(root) as p:
        backup = root / ".dermaseg" / "project.sqlite.v1.bak"
        con = sqlite3.connect(backup)  # the backup is the schema-1 database, untouched
        assert con.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone() == ("1",)
        assert [r[1] for r in con.execute("PRAGMA table_info(annotations)")][-1] == "updated_utc"
        assert con.execute("SELECT * FROM annotations ORDER BY id").fetchall() == old_rows
        con.close()
        anns = p.annotations()
        assert [(a.id, a.label, a.version) for a in anns] == [(1, "naevus", 1), (2, "melanoma", 1)]
        assert anns[0].provenance.annotator == "Dr V1" and anns[0].area_px == 132
        # the history written before the upgrade still undoes and redoes
        assert p.history_depth(anns[0].image_id) == (5, 0)
        assert p.undo(anns[0].image_id) and p.annotation(3).version == 2  # the deleted one is back
        assert p.redo(anns[0].image_id) and len(p.annotations()) == 2
        updated = p.update_annotation(1, label="melanoma", expected_version=1)
        assert updated.version == 2
        with pytest.raises(ConflictError):
            p.update_annotation(1, label="naevus", expected_version=1)
    with Project.open(root) as p:  # opened again: already upgraded, nothing to redo
        assert p.annotation(1).version == 2
    con = sqlite3.connect(db)
    assert con.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone() == (str(SCHEMA_VERSION),)
    con.execute("UPDATE meta SET value = '99' WHERE key = 'schema_version'")
    con.commit()
    con.close()
    with pytest.raises(StoreError, match="newer dermaseg"):
        Project.open(root)

"""Every item of the bad-input corpus (`corpus.py`) gets its specific message through the Python API
and the CLI (exit code 2, one `error:` line, no traceback), and a rejected input leaves the project
database exactly as it was (logical dump compared before and after).
"""

from __future__ import annotations

import hashlib
import re
import sqlite3
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
from corpus import (
    IMAGE_H,
    IMAGE_W,
    Case,
    bad_coco,
    bad_images,
    bad_polygons,
    bad_prompts,
    base_image,
    odd_but_valid_images,
    repairable_polygons,
    tolerated_coco,
)

from dermaseg.core.annotation.geometry import Polygons, repair_polygons
from dermaseg.core.annotation.project import DB_DIR, DB_NAME, Project
from dermaseg.core.errors import CocoError, GeometryError, ImageLoadError, PromptError
from dermaseg.core.image import LesionImage, load_image
from dermaseg.core.segment.prompts import Prompts
from dermaseg.webui.cli.main import main


def _ids(cases: list[Case]) -> list[str]:
    return [c.id for c in cases]


def db_digest(folder: Path) -> str:
    """SHA-256 of the logical SQL dump of a project's database (independent of WAL checkpoints)."""
    with sqlite3.connect(folder / DB_DIR / DB_NAME) as c:
        return hashlib.sha256("\n".join(c.iterdump()).encode()).hexdigest()


def run_cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    """`dermaseg ARGS` in this process: (exit code, stderr)."""
    code = main(args)
    return code, capsys.readouterr().err


def assert_cli_error(code: int, err: str, expect: str) -> None:
    assert code == 2, err
    assert "Traceback" not in err, err
    lines = [ln for ln in err.splitlines() if ln.startswith("error: ")]
    assert len(lines) == 1, err
    assert re.search(expect, lines[0]), lines[0]


@pytest.fixture
def project_dir(tmp_path: Path) -> Path:
    """A project folder with one IMAGE_W x IMAGE_H image "a.png" and one annotation."""
    folder = tmp_path / "proj"
    folder.mkdir()
    (folder / "a.png").write_bytes(base_image("PNG"))
    with Project.init(folder) as p:
        mask = np.zeros((IMAGE_H, IMAGE_W), bool)
        mask[5:20, 5:25] = True
        p.add_annotation(p.image_by_path("a.png").id, mask)
    return folder


# ------------------------------------------------------------------------------------------ images


@pytest.mark.parametrize("case", bad_images(), ids=_ids(bad_images()))
def test_bad_image_api(case: Case) -> None:
    with pytest.raises(ImageLoadError, match=case.expect) as info:
        load_image(case.payload, name=case.id)
    assert str(info.value).startswith(case.id), "the message names the file"


@pytest.mark.parametrize("case", odd_but_valid_images(), ids=_ids(odd_but_valid_images()))
def test_odd_but_valid_image_loads_as_rgb8(case: Case, tmp_path: Path) -> None:
    data, shape = case.payload
    path = tmp_path / case.id
    path.write_bytes(data)
    img = load_image(path)
    assert img.rgb.shape == (*shape, 3) and img.rgb.dtype == np.uint8 and not img.rgb.flags.writeable
    assert img.name == case.id and len(img.sha256) == 64


@pytest.mark.parametrize("case", bad_images(), ids=_ids(bad_images()))
def test_bad_image_cli(case: Case, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / case.id
    path.write_bytes(case.payload)
    out = tmp_path / "mask.png"
    code, err = run_cli(["segment", str(path), "--box", "1", "1", "10", "10", "--out", str(out)], capsys)
    assert_cli_error(code, err, case.expect)
    assert not out.exists()


def test_image_as_folder_or_missing_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = str(tmp_path / "m.png")
    assert_cli_error(*run_cli(["segment", str(tmp_path), "--box", "1", "1", "9", "9", "--out", out], capsys), "folder")
    missing = str(tmp_path / "nope.jpg")
    assert_cli_error(*run_cli(["segment", missing, "--box", "1", "1", "9", "9", "--out", out], capsys), "not found")


# ----------------------------------------------------------------------------------------- prompts


@pytest.mark.parametrize("case", bad_prompts(), ids=_ids(bad_prompts()))
def test_bad_prompt_api(case: Case) -> None:
    with pytest.raises(PromptError, match=case.expect):
        Prompts(**case.payload).validated(IMAGE_W, IMAGE_H)


@pytest.fixture(scope="module")
def segmenter(engine):
    """A segmenter on the corpus' base image (one encoder run)."""
    seg = engine.segmenter()
    seg.set_image(LesionImage.from_array(np.asarray(load_image(base_image("PNG")).rgb)))
    return seg


def test_bad_prompts_through_the_segmenter(segmenter) -> None:
    for case in bad_prompts():
        try:
            prompts = Prompts(**case.payload)
        except PromptError as e:  # refused on construction already
            assert re.search(case.expect, str(e)), (case.id, str(e))
            continue
        with pytest.raises(PromptError, match=case.expect):
            segmenter.predict(prompts)
        with pytest.raises(PromptError, match=case.expect):
            segmenter.candidates(prompts)
    # ... and the segmenter still answers a good prompt afterwards
    assert segmenter.predict(Prompts(box=(5.0, 5.0, 40.0, 30.0))).mask.shape == (IMAGE_H, IMAGE_W)


@pytest.mark.parametrize(
    ("flags", "expect"),
    [
        (["--point", "nan", "3"], "non-finite"),
        (["--point", "inf", "3"], "non-finite"),
        (["--point", "64.5", "3"], "outside the 64x48 image"),
        (["--negative", "-1", "3"], "outside the 64x48 image"),
        (["--box", "10", "10", "10", "40"], "no area"),
        (["--box", "-500", "-500", "-100", "-100"], "no area"),
        (["--box", "0", "0", "nan", "10"], "four finite numbers"),
        (["--box", "0", "0", "1e999", "10"], "four finite numbers"),
        ([], "draw a box or click"),
        (["--box", "1", "1", "9", "9", "--head", "7"], "--head must be 0, 1, 2, 3 or best"),
        (["--box", "1", "1", "9", "9", "--head", "x"], "--head must be 0, 1, 2, 3 or best"),
        ([a for _ in range(5000) for a in ("--point", "5", "5")], "5000 clicks is too many"),
    ],
    ids=[
        "nan",
        "inf",
        "outside",
        "negative",
        "zero-area",
        "box-outside",
        "box-nan",
        "box-1e999",
        "none",
        "head-7",
        "head-x",
        "5000-clicks",
    ],  # fmt: skip
)
def test_bad_prompt_cli(flags: list[str], expect: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    image = tmp_path / "a.png"
    image.write_bytes(base_image("PNG"))
    out = tmp_path / "mask.png"
    assert_cli_error(*run_cli(["segment", str(image), *flags, "--out", str(out)], capsys), expect)
    assert not out.exists()


# ---------------------------------------------------------------------------------------- polygons


@pytest.mark.parametrize("case", bad_polygons(), ids=_ids(bad_polygons()))
def test_bad_polygons_api(case: Case) -> None:
    with pytest.raises(GeometryError, match=case.expect), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        repair_polygons(Polygons.from_json(case.payload))


@pytest.mark.parametrize("case", repairable_polygons(), ids=_ids(repairable_polygons()))
def test_repairable_polygons_say_what_changed(case: Case) -> None:
    result = repair_polygons(Polygons.from_json(case.payload))
    assert any(re.search(case.expect, w) for w in result.warnings), result.warnings
    assert all(p.to_shapely().is_valid for p in result.polygons.parts)
    xs = [x for p in result.polygons.parts for x, _ in p.exterior]
    ys = [y for p in result.polygons.parts for _, y in p.exterior]
    assert min(xs) >= 0 and max(xs) <= IMAGE_W and min(ys) >= 0 and max(ys) <= IMAGE_H


def test_bad_polygon_edit_leaves_the_project_unchanged(project_dir: Path) -> None:
    """A polygon edit the store cannot use is refused before anything is written."""
    with Project.open(project_dir) as p:
        ann = p.annotations()[0]
        before = db_digest(project_dir)
        for case in bad_polygons()[:6]:
            with pytest.raises(GeometryError), warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                p.update_annotation(ann.id, polygons=repair_polygons(Polygons.from_json(case.payload)).polygons)
        with pytest.raises(GeometryError, match="malformed"):
            p.update_annotation(ann.id, polygons={"width": 64, "height": 48, "parts": 7})
        assert db_digest(project_dir) == before


# -------------------------------------------------------------------------------------------- COCO


@pytest.mark.parametrize("case", bad_coco(), ids=_ids(bad_coco()))
def test_bad_coco_api_leaves_the_database_unchanged(case: Case, project_dir: Path) -> None:
    before = db_digest(project_dir)
    with Project.open(project_dir) as p, pytest.raises(CocoError, match=case.expect) as info:
        p.import_coco(case.payload)
    assert len(str(info.value)) < 600, "messages stay readable even for enormous inputs"
    assert db_digest(project_dir) == before
    with Project.open(project_dir) as p:
        assert p.integrity_check() == "ok"


@pytest.mark.parametrize("case", bad_coco(), ids=_ids(bad_coco()))
def test_bad_coco_cli(case: Case, project_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "in.json"
    path.write_bytes(case.payload)
    before = db_digest(project_dir)
    code, err = run_cli(["project", "import-coco", str(project_dir), str(path)], capsys)
    assert_cli_error(code, err, case.expect)
    assert db_digest(project_dir) == before


@pytest.mark.parametrize("case", tolerated_coco(), ids=_ids(tolerated_coco()))
def test_hostile_extras_are_ignored_not_crashed_on(case: Case, project_dir: Path) -> None:
    with Project.open(project_dir) as p:
        report = p.import_coco(case.payload)
        assert report.added == 1
        rec = p.image_by_path("a.png")
        assert rec.calibration is None or np.isfinite(rec.calibration.mm_per_px)
        assert rec.status in ("in_progress", "not_started", "done")
        new = p.annotations()[-1]
        assert new.tolerance_px is None or np.isfinite(new.tolerance_px)
        assert new.provenance.time_utc and isinstance(new.provenance.source, str)
        assert p.integrity_check() == "ok"


def test_cli_as_a_process_prints_one_error_line(project_dir: Path, tmp_path: Path) -> None:
    """The installed entry point: exit 2, `error:` on stderr, no traceback (one image, one COCO file)."""
    text_png = tmp_path / "text.png"
    text_png.write_bytes(b"not an image")
    nested = tmp_path / "nested.json"
    nested.write_bytes(b"[" * 100_000 + b"]" * 100_000)
    before = db_digest(project_dir)
    for args, expect in (
        (["segment", str(text_png), "--box", "1", "1", "9", "9", "--out", str(tmp_path / "m.png")], "not a recognised"),
        (["project", "import-coco", str(project_dir), str(nested)], "nested too deeply"),
    ):
        proc = subprocess.run(
            [sys.executable, "-m", "dermaseg.webui.cli", *args], capture_output=True, text=True, timeout=60
        )
        assert proc.returncode == 2, proc.stderr
        assert "Traceback" not in proc.stderr
        assert proc.stderr.startswith("error: ") and expect in proc.stderr, proc.stderr
    assert db_digest(project_dir) == before

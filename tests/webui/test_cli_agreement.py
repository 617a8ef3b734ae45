"""`dermaseg project import-coco --annotator` and `dermaseg project agreement` through the real CLI entry point,
on dev-set images: the experts' masks under rater "expert", copies grown 3 px under rater "b", and on one
image copies shrunk 2 px under rater "c"; the figures are checked against `agreement()` run directly."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage

from dermaseg.core.annotation import coco
from dermaseg.core.annotation.agreement import agreement, staple
from dermaseg.core.annotation.project import Project
from dermaseg.core.calibration import Calibration
from dermaseg.webui.cli.main import main

N_IMAGES = 4
MM_PER_PX = 0.02


def _coco(masks: dict[str, np.ndarray], path: Path) -> Path:
    """A plain COCO file (no dermaseg provenance, as from another tool): one annotation per image."""
    images = [coco.image_dict(i, name, m.shape[1], m.shape[0]) for i, (name, m) in enumerate(masks.items(), 1)]
    anns = [coco.annotation_dict(i, i, 1, m) for i, m in enumerate(masks.values(), 1)]
    path.write_text(json.dumps(coco.dataset_dict(images, anns, [(1, "lesion")])))
    return path


@pytest.fixture
def raters(dev_data, tmp_path) -> tuple[Path, dict[str, dict[str, np.ndarray]]]:
    """A project of 4 dev images with 3 raters imported through the CLI; returns (folder, masks by image)."""
    folder = tmp_path / "proj"
    folder.mkdir()
    cases = dev_data[:N_IMAGES]
    expert = {}
    for case in cases:
        shutil.copy(case.image, folder / case.image.name)
        expert[case.image.name] = case.load_mask()
    names = list(expert)
    b = {n: ndimage.binary_dilation(expert[n], iterations=3) for n in names[:3]}  # the last image: expert only
    c = {names[0]: ndimage.binary_erosion(expert[names[0]], iterations=2)}
    assert main(["project", "init", str(folder)]) == 0
    for rater, masks in (("expert", expert), ("b", b), ("c", c)):
        f = _coco(masks, tmp_path / f"{rater}.json")
        assert main(["project", "import-coco", str(folder), str(f), "--annotator", rater]) == 0
    with Project.open(folder) as p:
        p.set_calibration(p.image_by_path(names[0]).id, Calibration(MM_PER_PX))
    by_image = {n: {"expert": expert[n], "b": b[n], **({"c": c[n]} if n in c else {})} for n in names[:3]}
    return folder, by_image


def test_agreement_matches_a_direct_computation(raters, tmp_path, capsys):
    folder, by_image = raters
    names = list(by_image)
    capsys.readouterr()
    out, cons = tmp_path / "out" / "agreement.json", tmp_path / "out" / "staple.json"
    args = ["project", "agreement", str(folder), "--json", str(out), "--consensus", "staple", "--coco", str(cons)]
    assert main(args) == 0
    printed = capsys.readouterr().out
    direct = agreement(by_image, {names[0]: Calibration(MM_PER_PX)})
    got = json.loads(out.read_text())

    assert got["mean_dice"] == pytest.approx(direct.mean_dice, abs=1e-12) and 0.8 < got["mean_dice"] < 0.999
    assert [im["file_name"] for im in got["images"]] == names
    assert got["raters"] == ["b", "c", "expert"]
    lone = [n.name for n in folder.iterdir() if n.suffix == ".png" and n.name not in by_image]
    assert got["skipped_single_rater"] == lone and len(lone) == 1
    for im, want in zip(got["images"], direct.images, strict=True):
        assert im["raters"] == list(want.raters) == list(by_image[im["file_name"]])
        assert len(im["pairs"]) == len(want.pairs) == (3 if im["file_name"] == names[0] else 1)
        for pair, w in zip(im["pairs"], want.pairs, strict=True):
            assert (pair["a"], pair["b"]) == (w.a, w.b)
            for key in ("dice", "iou", "hd95_px", "hd_px", "area_diff_px2", "diameter_diff_px"):
                assert pair[key] == pytest.approx(getattr(w, key), abs=1e-9), key
            # grown by 3 px all round: HD95 close to 3, b larger than the expert
            if (pair["a"], pair["b"]) == ("expert", "b"):
                assert 2.0 <= pair["hd95_px"] <= 3.0 and pair["area_diff_px2"] > 0
        assert (im["pairs"][0]["hd95_mm"] is not None) == (im["file_name"] == names[0])
    assert got["images"][0]["pairs"][0]["hd95_mm"] == pytest.approx(direct.images[0].pairs[0].hd95_px * MM_PER_PX)
    assert "not a diagnosis" in got["notice"]

    assert f"images: {len(names)} with 2+ raters" in printed and "raters: b, c, expert" in printed
    assert f"mean Dice: {direct.mean_dice:.3f}" in printed and f"{direct.hd95_px.mean:.1f} px" in printed
    assert "skipped: 1 image(s) with one rater only" in printed
    table = printed.split("most disagreement")[1].splitlines()[2:5]
    assert [row.split()[0] for row in table] == [im.file_name for im in direct.ranked]

    # the consensus is a COCO file beside the project: the project is unchanged, and the file imports back
    with Project.open(folder) as p:
        n_before = len(p.annotations())
    fresh = tmp_path / "fresh"
    shutil.copytree(folder, fresh, ignore=shutil.ignore_patterns(".dermaseg"))
    assert main(["project", "init", str(fresh)]) == 0
    assert main(["project", "import-coco", str(fresh), str(cons)]) == 0
    with Project.open(fresh) as q:
        anns = q.annotations()
        assert len(anns) == len(names)
        for a in anns:
            name = q.image(a.image_id).path
            assert a.provenance.annotator == "consensus (STAPLE)" and a.label == "lesion"
            assert np.array_equal(a.mask(), staple(list(by_image[name].values())).mask)
    with Project.open(folder) as p:
        assert len(p.annotations()) == n_before


def test_second_rater_does_not_replace_the_first(raters, tmp_path, capsys):
    folder, by_image = raters
    out = tmp_path / "all.json"
    assert main(["project", "export-coco", str(folder), "--out", str(out)]) == 0
    data = json.loads(out.read_text())
    files = {i["id"]: i["file_name"] for i in data["images"]}
    filed: dict[str, set[str]] = {}
    for a in data["annotations"]:
        filed.setdefault(files[a["image_id"]], set()).add(a["dermaseg"]["provenance"]["annotator"])
        assert a["dermaseg"]["provenance"]["time_utc"]  # who and when, on every imported record
    assert {n: filed[n] for n in by_image} == {n: set(r) for n, r in by_image.items()}
    assert len(data["annotations"]) == N_IMAGES + len(by_image) + 1

    # importing rater b's file again adds nothing; --replace swaps b's annotations only
    b_file = tmp_path / "b.json"
    capsys.readouterr()
    assert main(["project", "import-coco", str(folder), str(b_file), "--annotator", "b"]) == 0
    assert "skipped 3 already present" in capsys.readouterr().out
    assert main(["project", "import-coco", str(folder), str(b_file), "--annotator", "b", "--replace"]) == 0
    assert "imported 3 annotations on 3 images, replaced 3" in capsys.readouterr().out
    with Project.open(folder) as p:
        who = sorted(a.provenance.annotator for a in p.annotations())
    assert who == sorted(["expert"] * N_IMAGES + ["b"] * 3 + ["c"])


def test_errors_are_one_line(dev_data, tmp_path, capsys):
    assert main(["project", "agreement", str(tmp_path / "nowhere")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err

    folder = tmp_path / "one"
    folder.mkdir()
    shutil.copy(dev_data[0].image, folder / dev_data[0].image.name)
    assert main(["project", "init", str(folder)]) == 0
    f = _coco({dev_data[0].image.name: dev_data[0].load_mask()}, tmp_path / "one.json")
    assert main(["project", "import-coco", str(folder), str(f), "--annotator", "expert"]) == 0
    capsys.readouterr()
    assert main(["project", "agreement", str(folder), "--json", str(tmp_path / "x.json")]) == 2
    err = capsys.readouterr().err
    assert "no image has annotations by two or more raters (1 annotated by one rater)" in err
    assert err.count("\n") == 1 and not (tmp_path / "x.json").exists()
    assert main(["project", "agreement", str(folder), "--consensus", "staple"]) == 2
    assert "--consensus and --coco go together" in capsys.readouterr().err
    assert main(["project", "import-coco", str(folder), str(f), "--annotator", " "]) == 2
    assert "annotator's name is empty" in capsys.readouterr().err

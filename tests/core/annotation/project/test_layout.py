"""The project package stays small rooms: each module says what it is for, none over ~500 lines, no class
over ~300, and SQL only in the modules that face the database (so a second engine can come in there)."""

from __future__ import annotations

import ast
from pathlib import Path

import dermaseg.core.annotation.project as project_pkg
from dermaseg.core import image
from dermaseg.core.annotation.project import scanning
from dermaseg.core.evaluation import dataset

PACKAGE = Path(project_pkg.__file__).parent
SQL_FREE = (
    "project.py", "annotations.py", "coco_io.py", "scanning.py", "paths.py", "records.py", "lock.py", "raters.py",
)  # fmt: skip


def _modules() -> dict[str, ast.Module]:
    return {p.name: ast.parse(p.read_text(encoding="utf-8")) for p in sorted(PACKAGE.glob("*.py"))}


def test_modules_say_what_they_are_for_and_stay_small():
    modules = _modules()
    assert "store.py" not in modules and len(modules) >= 10
    for name, tree in modules.items():
        doc = ast.get_docstring(tree)
        assert doc and len(doc.splitlines()[0]) > 20, f"{name}: no first docstring line saying what it is for"
        lines = (PACKAGE / name).read_text(encoding="utf-8").count("\n")
        assert lines <= 500, f"{name}: {lines} lines"
        for node in ast.walk(tree):
            if isinstance(node, ast.ClassDef):
                size = node.end_lineno - node.lineno + 1
                assert size <= 300, f"{name}: class {node.name} is {size} lines"


def test_sql_only_in_the_database_facing_modules():
    for name in SQL_FREE:
        text = (PACKAGE / name).read_text(encoding="utf-8")
        for word in (".execute(", ".query(", "SELECT ", "INSERT ", "UPDATE ", "DELETE "):
            assert word not in text, f"{name} has SQL ({word.strip()!r})"


def test_one_image_suffix_list():
    """The folder scan, the evaluation dataset and the page's file picker use core.image's one list."""
    assert dataset.IMAGE_SUFFIXES is image.IMAGE_SUFFIXES
    assert set(image.IMAGE_SUFFIXES) == {".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp"}
    assert scanning.IMAGE_SUFFIXES is image.IMAGE_SUFFIXES

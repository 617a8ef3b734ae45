"""Exports: the project's COCO JSON and PNG masks, or one image's, both through `Project.export_coco`.

The per-image export is the project export restricted to the open image (`image_ids=`), so both give the
same category ids, polygons and tolerance for the same annotation; nothing of the COCO is written here.
"""

from __future__ import annotations

import shutil
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING

from dermaseg.core.annotation.project import Project
from dermaseg.core.errors import DermasegError

if TYPE_CHECKING:
    from dermaseg.webui.page.session import Session


def export_project(project: Project, out_dir: Path) -> list[Path]:
    """COCO JSON of the whole project and a zip of its PNG masks; raises when nothing is annotated."""
    if not project.annotations():
        raise DermasegError("nothing to export yet: accept at least one annotation")
    out_dir.mkdir(parents=True, exist_ok=True)
    name = _slug(project.root.name)
    masks = out_dir / f"{name}-masks"
    shutil.rmtree(masks, ignore_errors=True)
    report = project.export_coco(out_dir / f"{name}-coco.json", masks_dir=masks)
    archive = shutil.make_archive(str(out_dir / f"{name}-masks"), "zip", masks)
    return [report.coco_path, Path(archive)]


def check_export(s: Session, image_id: int | None = None) -> None:
    """With blind raters (a team project with 2+ raters per image), an export holds every rater's work: the
    project's is for reviewers, an image's for whoever may see all of it (`Team.sees_all`: a rater once they
    submitted); DermasegError otherwise."""
    if not s.team or s.project.team.raters_per_image() < 2:
        return
    if s.user is None:
        raise DermasegError("log in to export from this team project")
    if image_id is not None and s.project.team.sees_all(image_id, s.user):
        return
    if s.project.user(s.user).role == "reviewer":
        return
    if image_id is not None:
        raise DermasegError("this image's export holds other raters' work: submit yours first")
    raise DermasegError("a team project's export holds every rater's work: it is for reviewers")


def export_image(s: Session, out_dir: Path) -> list[Path]:
    """COCO JSON of the current image's saved annotations (`Project.export_coco` for that image: the same
    category ids, polygons and tolerance as a project export) and its PNG mask (union of them)."""
    image = s.require_image()
    check_export(s, s.image_id)
    if s.image_id is None or not s.project.annotations(s.image_id):
        raise DermasegError(f"nothing to export for {image.name}: accept an annotation first")
    rec = s.project.image(s.image_id)
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = _slug(Path(rec.path).stem)
    masks = out_dir / f"{stem}-masks"
    report = s.project.export_coco(out_dir / f"{stem}-coco.json", masks_dir=masks, image_ids=[rec.id])
    png = out_dir / f"{stem}-mask.png"
    (masks / PurePosixPath(rec.path).with_suffix(".png")).replace(png)
    shutil.rmtree(masks, ignore_errors=True)
    return [report.coco_path, png]


def _slug(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in name) or "dermaseg"

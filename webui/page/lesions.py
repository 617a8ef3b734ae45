"""The open image's saved lesions as the tab sees them: listed, named, one selected for editing, or a new one."""

from __future__ import annotations

from typing import TYPE_CHECKING

from dermaseg.core.annotation.geometry import Polygons
from dermaseg.core.annotation.project import Annotation
from dermaseg.core.errors import DermasegError
from dermaseg.core.segment.prompts import Prompts
from dermaseg.webui.page.masks import on_grid, outline

if TYPE_CHECKING:
    from dermaseg.webui.page.session import Session


def count(n: int, word: str) -> str:
    """ "1 saved lesion", "2 saved lesions"."""
    return f"{n} {word}{'' if n == 1 else 's'}"


def lesions(s: Session) -> list[Annotation]:
    """The open image's saved annotations the tab's user may see, oldest first (lesion 1, 2, ...): in a team
    project as `Team.visible_annotations` says (blind raters; none of anyone's until the user is known)."""
    if s.image_id is None:
        return []
    return s.project.team.visible_annotations(s.image_id, s.user) if s.team else s.project.annotations(s.image_id)


def lesion_name(s: Session, ann_id: int, saved: list[Annotation] | None = None) -> str:
    """ "lesion 2 of 3 ('naevus')": the annotation's place among the image's lesions."""
    saved = lesions(s) if saved is None else saved
    for i, a in enumerate(saved, 1):
        if a.id == ann_id:
            return f"lesion {i} of {len(saved)} ({a.label!r})"
    return f"annotation {ann_id}"


def lesion_choices(s: Session) -> list[tuple[str, str]]:
    """Radio choices for the side panel: each saved lesion (value: its id), and "new lesion" (value "new")."""
    saved = lesions(s)
    out = [(f"{i} · {a.label} · annotation {a.id} (v{a.version})", str(a.id)) for i, a in enumerate(saved, 1)]
    return [*out, ("＋ new lesion", "new")]


def load_saved(s: Session, ann: Annotation) -> None:
    """Make a saved annotation the edited lesion, at the version it has now."""
    s.annotation_id, s.annotation_version = ann.id, ann.version
    full = ann.mask()
    s.mask = on_grid(s, full)
    s.full = (s.mask, full)
    s.polygons = Polygons.from_json(ann.polygons) if ann.polygons else outline(s, s.mask)
    s.result, s.metrics, s.edited = None, None, True
    s.undo.restart(Prompts(), s.polygons, full)  # undo comes back to the saved outline
    s.pending = s.conflict = None


def select_lesion(s: Session, ann_id: int | str) -> None:
    """Edit a saved lesion of the open image (the outline being drawn, if any, is dropped)."""
    s.require_image()
    if not (isinstance(ann_id, int) or (isinstance(ann_id, str) and ann_id.isdecimal() and len(ann_id) < 19)):
        raise DermasegError(f"not an annotation id: {str(ann_id)[:40]!r}")
    saved = lesions(s)
    ann = next((a for a in saved if a.id == int(ann_id)), None)
    if ann is None:
        raise DermasegError(f"annotation {ann_id} is not a saved lesion of this image (deleted meanwhile?)")
    load_saved(s, ann)
    s.message = f"editing {lesion_name(s, ann.id, saved)}, annotation {ann.id} version {ann.version}"


def new_lesion(s: Session) -> None:
    """Start a fresh outline beside the saved lesions, which stay as they are."""
    s.require_image()
    s.undo.restart()
    s.result = s.mask = s.polygons = s.metrics = None
    s.edited = False
    s.annotation_id = s.annotation_version = s.pending = s.conflict = None
    n = len(lesions(s))
    s.message = "new lesion: draw a box or click on it" + (f" ({count(n, 'saved lesion')} stay as saved)" if n else "")

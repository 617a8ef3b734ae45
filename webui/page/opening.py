"""Opening an image: a project image made current (its saved lesions and draft with it), the next one
found, and what the project remembers for the page (the last image, the annotator's name)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from dermaseg.core.annotation.project import DamagedAnnotation, Project
from dermaseg.core.image import LesionImage
from dermaseg.core.segment.segmenter import Engine
from dermaseg.webui.page.drafts import restore_draft
from dermaseg.webui.page.lesions import count, lesions
from dermaseg.webui.page.masks import on_grid_rgb
from dermaseg.webui.page.undo import UndoStack
from dermaseg.webui.page.uploads import shown_path

if TYPE_CHECKING:
    from dermaseg.webui.page.session import Session

EMBEDDING_SOURCE = {
    "computed": "embedding computed",
    "memory": "embedding from the memory cache",
    "disk": "embedding from the disk cache",
}
LAST_IMAGE_KEY, ANNOTATOR_KEY = "last_image_id", "annotator"  # `Project.ui_state` keys


def open_project_image(s: Session, image_id: int) -> str:
    """Make a project image current, drawing a new lesion: its saved lesions are shown, none is edited
    until selected (`select_lesion`), so no prompt can replace a saved lesion unasked. What the first click
    needs beyond the image's embedding is made by the first click, or before in the background
    (`Prefetcher.prepare_clicks`)."""
    image = s.project.load_image(image_id)
    source = s.segmenter.set_image(image)
    _reset(s, image, image_id)
    saved = lesions(s)
    restored = restore_draft(s, image_id)
    s.message = f"{shown_path(image.name)}: {image.width}×{image.height} px, {EMBEDDING_SOURCE.get(source, source)}"
    if saved:
        drawing = (
            "your unsaved lesion restored beside them" if restored else "drawing a new one (select one to edit it)"
        )
        s.message += f"; {count(len(saved), 'saved lesion')} shown, {drawing}"
    if restored:
        s.message += f"; {restored}"
    damaged = damaged_note(s.project.damaged_annotations(image_id))
    if damaged:
        s.message += f"; ⚠ {damaged}"
    s.project.set_ui_state(LAST_IMAGE_KEY, str(image_id))
    return s.message


def _reset(s: Session, image: LesionImage, image_id: int | None) -> None:
    s.image, s.image_id = image, image_id
    s.work_rgb, s.full = on_grid_rgb(image.rgb, s.mask_shape()), None
    s.undo = UndoStack()
    s.result = s.mask = s.polygons = s.metrics = None
    s.edited = False
    s.ruler = ()
    s.annotation_id = s.annotation_version = s.pending = s.conflict = None


def neighbour_id(project: Project, image_id: int | None, step: int) -> int | None:
    """The image `step` places after (or before) `image_id` in the project list, wrapping around."""
    ids = [r.id for r in project.images()]
    if not ids:
        return None
    if image_id not in ids:
        return ids[0]
    return ids[(ids.index(image_id) + step) % len(ids)]


def needs_encoding(engine: Engine, image: LesionImage) -> bool:
    """True when the embedding is in no cache: opening the image will run the encoder (~0.4 s)."""
    return not engine.cache.contains(engine.key(image))


def damaged_note(damaged: list[DamagedAnnotation]) -> str:
    """A sentence naming damaged annotations (left out of the page and exports), or "" when none."""
    if not damaged:
        return ""
    names = "; ".join(d.describe() for d in damaged)
    return (
        f"{len(damaged)} damaged annotation(s) left out ({names}); the rest of the project works: "
        "run `dermaseg project check FOLDER --repair`"
    )


def last_image_id(project: Project) -> int | None:
    """The image the page showed last (kept in the project), if it is still in the project."""
    value = project.ui_state(LAST_IMAGE_KEY)
    ids = {r.id for r in project.images()}
    return int(value) if value is not None and value.isdigit() and int(value) in ids else None


def remember_annotator(project: Project, name: str | None) -> None:
    """Keep the annotator's name in the project, for the next visit of the page."""
    name = (name or "").strip()
    if name != (project.ui_state(ANNOTATOR_KEY) or ""):
        project.set_ui_state(ANNOTATOR_KEY, name)


def remembered_annotator(project: Project) -> str:
    return project.ui_state(ANNOTATOR_KEY) or ""

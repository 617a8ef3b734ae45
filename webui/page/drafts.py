"""Drafts: the work in progress put back after a reload, a crash or a kill -9 (kept in the project store).

Every edit keeps the image's draft (`undo.keep_draft`); opening the image restores it here.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from dermaseg.core.annotation.geometry import Polygons
from dermaseg.core.annotation.project import Draft
from dermaseg.core.errors import DermasegError
from dermaseg.core.segment.prompts import Prompts
from dermaseg.webui.page.edits import require_size
from dermaseg.webui.page.lesions import lesions, load_saved
from dermaseg.webui.page.undo import UndoStep, draft_user, restore

if TYPE_CHECKING:
    from dermaseg.webui.page.session import Session


def restore_draft(s: Session, image_id: int) -> str:
    """Put the image's draft back as the current step (undo returns to the opening state); returns a note."""
    if s.team and s.user is None:
        return ""
    draft = s.project.draft(image_id, draft_user(s))
    if draft is None:
        return ""
    image = s.require_image()
    try:
        prompts, outline, head = draft_step(draft, image.width, image.height)
    except (DermasegError, KeyError, TypeError, ValueError, OverflowError) as e:
        s.project.discard_draft(image_id, draft_user(s))
        return f"the unsaved work on this image could not be restored and was dropped ({e})"
    s.head = head
    edited, note = draft.prompts.get("annotation") or [None, None], ""
    if edited[0] is not None:  # the draft edits a saved lesion: edit it again, if nobody changed it since
        ann = next((a for a in lesions(s) if a.id == edited[0]), None)
        if ann is not None and ann.version == edited[1]:
            load_saved(s, ann)
        else:
            note = f" as a new lesion (annotation {edited[0]} it edited was changed or deleted since)"
    step = UndoStep(prompts, outline)
    s.undo.edits.append(step)
    restore(s, step)
    when = draft.updated_utc.replace("T", " ")[:16]
    return f"restored the work in progress of {when} UTC{note} (not yet accepted)"


def draft_step(draft: Draft, width: int, height: int) -> tuple[Prompts, Polygons | None, int | str]:
    """(prompts, outline or None, decoder head) of a draft for an image of `width` x `height` px."""
    d = draft.prompts
    box = tuple(float(v) for v in d["box"]) if d.get("box") else None
    points = tuple((float(x), float(y)) for x, y in d.get("points", ()))
    prompts = Prompts(box, points, tuple(int(v) for v in d.get("labels", ())))
    prompts = prompts if prompts.is_empty else prompts.validated(width, height)  # empty: an edited saved outline
    outline = Polygons.from_json(draft.polygons) if draft.polygons is not None else None
    if outline is not None:
        require_size(outline, width, height)
    head = d.get("head", 0)
    return prompts, outline, head if head == "best" else int(head) if head in (0, 1, 2, 3) else 0

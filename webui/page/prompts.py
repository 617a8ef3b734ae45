"""Prompts: a box or a click re-segments the lesion (undoable); Esc clears them; another decoder head."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from dermaseg.core.segment.prompts import Prompts
from dermaseg.webui.page.lesions import new_lesion
from dermaseg.webui.page.masks import predict
from dermaseg.webui.page.undo import UndoStep, keep_draft, record

if TYPE_CHECKING:
    from dermaseg.webui.page.session import Session


def prompt_box(s: Session, box: Iterable[float]) -> None:
    """Replace the box (x0, y0, x1, y1) and re-segment."""
    s.require_image()
    _push(s, s.prompts.with_box(tuple(float(v) for v in box)))


def prompt_click(s: Session, x: float, y: float, positive: bool) -> None:
    """Add a positive (on the lesion) or negative (not the lesion) click and re-segment."""
    s.require_image()
    _push(s, s.prompts.with_point(float(x), float(y), bool(positive)))


def _push(s: Session, prompts: Prompts) -> None:
    image = s.require_image()
    prompts = prompts.validated(image.width, image.height)  # reject before it enters the history
    predict(s, prompts)
    record(s, UndoStep(prompts))


def clear_prompts(s: Session) -> None:
    """Esc: drop the prompts and outline. On a saved lesion, that lesion stays as saved and a new one starts."""
    s.require_image()
    if s.annotation_id is not None:
        new_lesion(s)
        s.ruler = ()
        return
    s.undo.restart()
    predict(s, s.prompts)
    s.ruler = ()
    keep_draft(s)


def choose_head(s: Session, head: int | str) -> None:
    """Use another decoder head (0-3) or "best"; re-segments with the current prompts."""
    s.head = head if head == "best" else int(head)
    if not s.prompts.is_empty:
        predict(s, s.prompts)
        keep_draft(s)

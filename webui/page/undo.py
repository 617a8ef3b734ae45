"""The page's one undo stack: edits in memory, saves and deletes in the project store.

Undo first takes back the tab's edits of the outline being drawn (prompts, outline edits, brush strokes):
they live in memory (`UndoStack.edits`), cheap to keep and to restore (the decoder's answers are cached),
and the newest of them is also kept as the image's draft in the store (`keep_draft`), so the work in
progress survives a reload (Undo then starts at the draft). Past the first edit, Undo takes back the tab's
saves and deletes on the image: those live in the store's own history (`Project.undo` / `redo`, durable
like the annotations); the stack keeps only their action ids (`SavedStep`), so Undo never takes back a
step of another tab or user (the store refuses when one came after). After a reload the saves stay saved
and the draft puts the edits back; Undo of a save stays with the tab that made it, since a new tab cannot
tell its own saves from another's.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from dermaseg.core.annotation.geometry import Polygons
from dermaseg.core.errors import DermasegError
from dermaseg.core.segment.prompts import Prompts
from dermaseg.webui.page.lesions import lesion_name, lesions, load_saved, new_lesion
from dermaseg.webui.page.masks import full_mask, on_grid, predict, rasterised, vertex_count

if TYPE_CHECKING:
    from dermaseg.webui.page.session import Session

# Bounds of one session's memory. An edited outline costs ~140 bytes per vertex in the undo history (30 edits
# of 100,000 vertices added 415 MiB before these bounds); the page's outline of a 44 MP image (dev masks
# upscaled 10x) had at most 1,650 vertices simplified at 1 px, 9,500 at 0 px. The history keeps at most
# MAX_UNDO steps before the current one and MAX_HISTORY_VERTICES edited vertices in all (~70 MB); the
# oldest steps are dropped first.
MAX_UNDO = 100
MAX_HISTORY_VERTICES = 500_000


@dataclass(frozen=True)
class UndoStep:
    """One undoable state: the prompts, and the outline edited by hand (None: the model's mask for them).

    mask: the exact mask, when the outline alone does not give it (a saved annotation, at image resolution;
    a painted mask, on the working grid); else the outline is rasterised when the step is restored.
    """

    prompts: Prompts
    outline: Polygons | None = None
    mask: np.ndarray | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True)
class SavedStep:
    """A save or delete this tab made on the open image: the store's action id and the annotation changed."""

    action_id: int
    annotation_id: int


@dataclass
class UndoStack:
    """edits: undoable states, the last one current (starts with no prompts); undone_edits: for Redo.
    saved / undone_saved: this tab's saves and deletes on the image, taken back once `edits` is at its start.
    """

    edits: list[UndoStep] = field(default_factory=lambda: [UndoStep(Prompts())])
    undone_edits: list[UndoStep] = field(default_factory=list)
    saved: list[SavedStep] = field(default_factory=list)
    undone_saved: list[SavedStep] = field(default_factory=list)

    @property
    def current(self) -> UndoStep:
        return self.edits[-1]

    @property
    def at_start(self) -> bool:
        """Nothing edited since the image opened (or since the last restart)."""
        return len(self.edits) <= 1

    def restart(
        self, prompts: Prompts | None = None, outline: Polygons | None = None, mask: np.ndarray | None = None
    ) -> None:
        """Start the edits afresh at one step (default: no prompts); the saved steps stay undoable."""
        self.edits, self.undone_edits = [UndoStep(prompts or Prompts(), outline, mask)], []

    def push(self, step: UndoStep) -> None:
        """Make `step` the newest edit; drop the oldest beyond MAX_UNDO or MAX_HISTORY_VERTICES."""
        self.edits.append(step)
        self.undone_edits.clear()
        keep, vertices = 0, 0
        for kept in reversed(self.edits):
            vertices += vertex_count(kept.outline) if kept.outline is not None else 0
            if keep > MAX_UNDO or (keep and vertices > MAX_HISTORY_VERTICES):
                break
            keep += 1
        del self.edits[:-keep]

    def saved_step(self, step: SavedStep) -> None:
        """A save or delete just made: undoable; the store dropped its redo steps, so does the stack."""
        self.saved.append(step)
        self.undone_saved.clear()


def prompts_json(p: Prompts) -> dict[str, Any]:
    """Prompts as JSON (the draft's and the provenance's format)."""
    return {"box": list(p.box) if p.box else None, "points": [list(q) for q in p.points], "labels": list(p.labels)}


def keep_draft(s: Session) -> None:
    """Store the open project image's work in progress (prompts, hand-edited outline) as its draft.

    Called after every change of prompts or outline: one small committed UPSERT (the prompts re-run the
    decoder on restore, the outline is rasterised), never the mask. Back at the opening state (nothing
    done since the image opened, or everything undone or cleared) the draft is dropped.
    """
    if s.image_id is None or (s.team and s.user is None):
        return  # a team project keeps each rater's draft: nobody's until the user is known
    if s.undo.at_start:
        s.project.discard_draft(s.image_id, draft_user(s))
        return
    step = s.undo.current
    prompts = {**prompts_json(step.prompts), "head": s.head, "annotation": [s.annotation_id, s.annotation_version]}
    outline = step.outline.to_json() if step.outline is not None else None
    s.project.save_draft(s.image_id, prompts, outline, s.tolerance_px, draft_user(s))


def draft_user(s: Session) -> str:
    """Whose drafts the tab keeps and restores: the logged-in rater in a team project, else "" (one person)."""
    return (s.user or "") if s.team else ""


def record(s: Session, step: UndoStep) -> None:
    """Make `step` the newest undoable edit and keep it as the draft."""
    s.undo.push(step)
    keep_draft(s)


def restore(s: Session, step: UndoStep) -> None:
    """Make `step` current: the model's mask for its prompts, then its hand-edited outline if any."""
    predict(s, step.prompts)
    if step.outline is not None and s.image is not None:
        s.polygons = step.outline
        s.mask = on_grid(s, step.mask) if step.mask is not None else rasterised(s, step.outline)
        if step.mask is not None:
            s.full = (s.mask, step.mask)
        s.edited, s.metrics = True, None
        s.message = f"outline: {int(s.mask.sum()):,} px (edited by hand)"


def undo_prompt(s: Session) -> None:
    """Undo the last prompt or outline edit; past them, this tab's last save or delete on the image."""
    stack = s.undo
    if stack.at_start:
        if stack.saved:
            _undo_saved(s)
            return
        raise DermasegError("nothing to undo")
    stack.undone_edits.append(stack.edits.pop())
    restore(s, stack.current)
    keep_draft(s)


def redo_prompt(s: Session) -> None:
    """Redo the last undone prompt or outline edit, else the save or delete undone last."""
    stack = s.undo
    if not stack.undone_edits:
        if stack.undone_saved:
            _undo_saved(s, redo=True)
            return
        raise DermasegError("nothing to redo")
    stack.edits.append(stack.undone_edits.pop())
    restore(s, stack.current)
    keep_draft(s)


def saved_step(s: Session, ann_id: int) -> None:
    """Remember the store step just made on annotation `ann_id` (for the page's Undo)."""
    action = s.project.last_action(s.image_id) if s.image_id is not None else None
    if action is not None:
        s.undo.saved_step(SavedStep(action, ann_id))
    else:
        s.undo.undone_saved.clear()


def _undo_saved(s: Session, redo: bool = False) -> None:
    """Undo (or redo) this tab's last save or delete on the image, then edit that lesion as it is now."""
    stack = s.undo
    src, dst = (stack.undone_saved, stack.saved) if redo else (stack.saved, stack.undone_saved)
    step = src[-1]
    s.require_image()
    # StoreError if another tab's step came after
    (s.project.redo if redo else s.project.undo)(s.image_id, step.action_id)
    dst.append(src.pop())
    saved = lesions(s)
    ann = next((a for a in saved if a.id == step.annotation_id), None)
    if ann is not None:
        load_saved(s, ann)
    else:
        mask, polygons, full = s.mask, s.polygons, s.full
        new_lesion(s)
        if not redo and mask is not None and polygons is not None:  # a save taken back: its outline stays, unsaved
            s.mask, s.polygons, s.edited, s.full = mask, polygons, True, full
            stack.restart(Prompts(), polygons, full_mask(s))
    what = "redone" if redo else "undone"
    s.message = (
        f"{what}: {lesion_name(s, step.annotation_id, saved)} is back as saved (version {ann.version})"
        if ann is not None
        else f"{what}: annotation {step.annotation_id} is no longer saved"
    )

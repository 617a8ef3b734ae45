"""Saving a lesion (Accept), deleting one, and the confirmations and conflicts around both."""

from __future__ import annotations

from typing import TYPE_CHECKING

from dermaseg.core.annotation.project import Provenance
from dermaseg.core.errors import ConflictError, DermasegError
from dermaseg.webui.page.lesions import lesion_name, lesions, new_lesion, select_lesion
from dermaseg.webui.page.masks import full_mask
from dermaseg.webui.page.measuring import measurements
from dermaseg.webui.page.opening import remember_annotator
from dermaseg.webui.page.undo import draft_user, prompts_json, saved_step

if TYPE_CHECKING:
    from dermaseg.webui.page.session import Session


class ConfirmationNeeded(DermasegError):
    """Replacing or deleting a saved lesion waits for the user's confirmation (`Session.pending`)."""


def accept(s: Session, label: str, annotator: str | None = None, *, replace: bool = False) -> int:
    """Save the current outline with `label` (committed at once), mark the image done; returns its id.

    A new lesion becomes a new annotation. A saved lesion (selected, or saved before by this tab) is
    updated from the version it was loaded at: when it was changed since it was loaded or saved,
    ConfirmationNeeded asks first (then `replace=True`, or `confirm_pending`); when someone else changed
    or deleted it meanwhile, ConflictError leaves it as stored (`resolve_conflict` offers the choice).
    annotator: the person's name for the provenance (blank: none recorded).
    """
    image = s.require_image()
    if s.image_id is None:
        raise DermasegError("this image is not in the project; reopen it from the list")
    if s.mask is None or not s.mask.any():
        raise DermasegError("nothing to accept: draw a box or click on the lesion first")
    if s.annotation_id is not None and not s.undo.at_start and not replace:
        s.pending = ("replace", s.annotation_id)
        s.message = (
            f"Accept would replace saved {lesion_name(s, s.annotation_id)}: Confirm to replace it (Undo brings "
            "it back), Cancel to keep editing, or New lesion to save yours beside it"
        )
        raise ConfirmationNeeded(s.message)
    metrics = measurements(s)
    prov = Provenance(
        source="manual" if s.edited else "model",
        prompts=prompts_json(s.prompts),
        model_id=s.result.model_id if s.result else None,
        annotator=(annotator or "").strip() or None,
    )
    kw = dict(polygons=s.polygons, metrics=metrics.to_dict() if metrics else None, provenance=prov)
    s.pending = None
    mask = full_mask(s)
    if s.annotation_id is not None:
        try:
            ann = s.project.update_annotation(
                s.annotation_id, mask=mask, label=label, tolerance_px=s.tolerance_px,
                expected_version=s.annotation_version, **kw,
            )  # fmt: skip
        except ConflictError as e:
            s.conflict = e.annotation_id
            s.message = f"⚠ {e}"
            raise
    else:
        ann = s.project.add_annotation(s.image_id, mask, label, tolerance_px=s.tolerance_px, **kw)
    s.project.set_status(s.image_id, "done")
    saved_step(s, ann.id)
    s.annotation_id, s.annotation_version, s.conflict = ann.id, ann.version, None
    s.undo.restart(s.prompts, s.polygons, mask)  # Undo now takes the save back
    s.project.discard_draft(s.image_id, draft_user(s))  # accepted: nothing in progress any more
    if annotator is not None:  # the page always sends its field; API callers may leave it out
        remember_annotator(s.project, annotator)
    s.message = f"saved: {lesion_name(s, ann.id)} on {image.name} (annotation {ann.id}), marked done"
    return ann.id


def delete_lesion(s: Session, *, confirmed: bool = False) -> None:
    """Delete the selected saved lesion: asks first (ConfirmationNeeded), then deletes it (undoable)."""
    s.require_image()
    if s.annotation_id is None:
        raise DermasegError("select a saved lesion first (in the list of lesions, or on the image)")
    name = lesion_name(s, s.annotation_id)
    if not confirmed:
        s.pending = ("delete", s.annotation_id)
        s.message = f"Delete {name}? Confirm to delete it (Undo brings it back), or Cancel"
        raise ConfirmationNeeded(s.message)
    ann_id = s.annotation_id
    try:
        s.project.delete_annotation(ann_id, expected_version=s.annotation_version)
    except ConflictError as e:
        s.pending, s.conflict, s.message = None, e.annotation_id, f"⚠ {e}"
        raise
    saved_step(s, ann_id)
    new_lesion(s)
    s.message = f"deleted {name} (annotation {ann_id}); Undo brings it back"


def confirm_pending(s: Session, label: str, annotator: str | None = None) -> None:
    """Carry out the replace or delete the user was asked about."""
    if s.pending is None or s.pending[1] != s.annotation_id:
        s.pending = None
        raise DermasegError("nothing to confirm")
    if s.pending[0] == "delete":
        delete_lesion(s, confirmed=True)
    else:
        accept(s, label, annotator, replace=True)


def cancel_pending(s: Session) -> None:
    s.pending = None
    s.message = "cancelled: nothing was saved or deleted"


def resolve_conflict(s: Session, choice: str, label: str, annotator: str | None = None) -> None:
    """After a refused save: "reload" shows the stored version (or a new lesion if it was deleted),
    dropping this tab's edit; "keep_both" saves this tab's outline as a new annotation beside it."""
    if s.conflict is None:
        raise DermasegError("no conflicting save to resolve")
    ann_id, s.conflict = s.conflict, None
    if choice == "reload":
        saved = {a.id: a for a in lesions(s)}
        if ann_id in saved:
            select_lesion(s, ann_id)
            s.message = f"reloaded the saved version: {s.message}"
        else:
            new_lesion(s)
            s.message = f"annotation {ann_id} was deleted; {s.message}"
    elif choice == "keep_both":
        s.annotation_id = s.annotation_version = None
        accept(s, label, annotator)
    else:
        raise DermasegError(f"unknown choice {choice!r}: reload or keep_both")

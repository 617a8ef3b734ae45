"""Who works on which image in a team project: claiming the next image, submitting, reviewing, blind raters.

The rules (one row of the `assignments` table is one rater's slot on one image):

- A project wants `raters_per_image` raters on each image (a `meta` setting, default 1; 2+ for an agreement
  study). Every assignment row holds a slot, whatever its state: a returned image goes back to the SAME
  rater to fix (their slot stays theirs), so it is never offered to anyone else.
- `claim_next(user)` gives, in this order: the user's own image still "claimed" (resume), then one
  "returned" to them (fix), else the oldest image (lowest id: scan order) that the user has no slot on and
  that has fewer slots than `raters_per_image`, which it claims; None when there is nothing left for them.
- Two people asking at once never get the same slot. PostgreSQL: the candidate image row is locked `FOR NO
  KEY UPDATE SKIP LOCKED` (a claimer passes over an image another claimer is deciding on; NO KEY: annotation
  inserts, which only check that the image exists, are not blocked), then the slots are counted again by a
  new statement (READ COMMITTED: it sees every claim committed before the lock was granted) and only then
  the slot is inserted; the user's row is locked first, so one person's claims from two windows take turns.
  SQLite: the write transaction (BEGIN IMMEDIATE) serialises every claim. Last guard on both: the table's
  UNIQUE(image_id, user_id).
- `submit(user, image)`: the user's claimed or returned slot becomes "submitted"; they must have at least one
  annotation on the image (provenance.annotator = their name). The store does not freeze the annotations.
- `review(reviewer, image, rater, accept, comment)`: a submitted slot becomes "accepted", or "returned" with a
  comment (required). Only a user with the reviewer role reviews, never their own work.
- Blind raters, with 2+ raters per image (an agreement study: one rater per image has nobody to be blind
  to, and the team may see and edit each other's work): while a rater's work on an image is open (claimed
  or returned), or they have no slot there, they see only their own annotations there
  (`visible_annotations`); once submitted or accepted, all of them. Reviewers and a project without users
  see everything; someone not known in a project with users, nothing of anyone's.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, case, exists, func, insert, select, update

from dermaseg.core.annotation.project import annotation_rows
from dermaseg.core.annotation.project.database import Database, upsert
from dermaseg.core.annotation.project.records import (
    IMAGE_STATES,
    Annotation,
    Assignment,
    ImageState,
    User,
    utc_now,
)
from dermaseg.core.annotation.project.schema import annotations as AN
from dermaseg.core.annotation.project.schema import assignments as A
from dermaseg.core.annotation.project.schema import images as I  # noqa: E741
from dermaseg.core.annotation.project.schema import meta
from dermaseg.core.annotation.project.schema import provenance as P
from dermaseg.core.annotation.project.schema import users as U
from dermaseg.core.errors import StoreError

RATERS_KEY = "raters_per_image"
DEFAULT_RATERS = 1
MAX_RATERS = 20
OPEN_STATES = ("claimed", "returned")  # the rater's work is not finished: it is theirs to do

_RATER = U.alias("rater")
_REVIEWER = U.alias("reviewer")
_ASSIGNMENTS = (
    select(
        A.c.image_id, _RATER.c.name, A.c.state, A.c.claimed_utc, A.c.submitted_utc, _REVIEWER.c.name,
        A.c.reviewed_utc, A.c.comment,
    )
    .join(_RATER, _RATER.c.id == A.c.user_id)
    .outerjoin(_REVIEWER, _REVIEWER.c.id == A.c.reviewer_id)
    .order_by(A.c.image_id, A.c.id)
)  # fmt: skip


# ---- the setting


def raters_per_image(db: Database) -> int:
    """How many raters each image needs (the project's setting; 1 when never set)."""
    with db.read() as c:
        return _raters(c)


def set_raters_per_image(db: Database, n: int) -> None:
    """Set how many raters each image needs, 1 to MAX_RATERS. Lowering it takes no slot away."""
    if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= MAX_RATERS:
        raise StoreError(f"raters per image is a whole number from 1 to {MAX_RATERS}, got {n!r}")
    with db.write() as c:
        upsert(c, meta, {"key": RATERS_KEY, "value": str(n)}, ["key"])


def _raters(c: Connection) -> int:
    v = c.execute(select(meta.c.value).where(meta.c.key == RATERS_KEY)).scalar()
    return int(v) if v is not None else DEFAULT_RATERS


# ---- claiming, submitting, reviewing


def _user(c: Connection, name: str, *, lock: bool = False) -> User:
    """The enabled user named `name` (its row locked FOR NO KEY UPDATE with lock=True); else StoreError."""
    stmt = select(U.c.id, U.c.name, U.c.role, U.c.created_utc, U.c.disabled).where(U.c.name == str(name).strip())
    row = c.execute(stmt.with_for_update(key_share=True) if lock else stmt).first()
    if row is None:
        raise StoreError(f"no user named {name!r} in this project")
    if row[4]:
        raise StoreError(f"user {row[1]!r} is disabled")
    return User(row[0], row[1], row[2], row[3], bool(row[4]))


def _image_exists(c: Connection, image_id: int) -> None:
    if c.execute(select(I.c.id).where(I.c.id == image_id)).first() is None:
        raise StoreError(f"image id {image_id}: not in this project")


def claim_next(db: Database, user: str) -> int | None:
    """The id of the image `user` should work on next, claimed for them; None when none is left for them.

    Their own claimed image first, then one returned to them, else a new slot on the oldest image that
    still needs a rater and that they have no slot on (module docstring: the rule and the locking).
    """
    with db.write() as c:
        u = _user(c, user, lock=True)
        own = c.execute(
            select(A.c.image_id)
            .where(A.c.user_id == u.id, A.c.state.in_(OPEN_STATES))
            .order_by(case((A.c.state == "claimed", 0), else_=1), A.c.id)
            .limit(1)
        ).scalar()
        if own is not None:
            return int(own)
        n = _raters(c)
        taken = select(func.count()).select_from(A).where(A.c.image_id == I.c.id).scalar_subquery()
        mine = exists().where(A.c.image_id == I.c.id, A.c.user_id == u.id)
        candidate = (
            select(I.c.id)
            .where(~mine, taken < n)
            .order_by(I.c.id)
            .limit(1)
            .with_for_update(skip_locked=True, key_share=True, of=I)
        )
        while (image_id := c.execute(candidate).scalar()) is not None:
            # Counted again under the row lock: the candidate's snapshot may predate a claim committed since.
            slots = c.execute(select(A.c.user_id).where(A.c.image_id == image_id)).scalars().all()
            if len(slots) < n and u.id not in slots:
                c.execute(insert(A).values(image_id=image_id, user_id=u.id, state="claimed", claimed_utc=utc_now()))
                return int(image_id)
            # Taken meanwhile: the next candidate query (a newer snapshot) no longer offers it.
        return None


def _slot(c: Connection, image_id: int, user: User) -> tuple[int, str]:
    """(id, state) of the user's slot on the image, its row locked; StoreError when they have none."""
    _image_exists(c, image_id)
    row = c.execute(
        select(A.c.id, A.c.state).where(A.c.image_id == image_id, A.c.user_id == user.id).with_for_update()
    ).first()
    if row is None:
        raise StoreError(f"image id {image_id}: {user.name!r} has not claimed it (use Next image)")
    return int(row[0]), str(row[1])


def _own_annotations(c: Connection, image_id: int, name: str) -> int:
    stmt = select(func.count()).select_from(AN.join(P, P.c.annotation_id == AN.c.id))
    return int(c.execute(stmt.where(AN.c.image_id == image_id, P.c.annotator == name)).scalar() or 0)


def submit(db: Database, user: str, image_id: int) -> None:
    """Submit the user's work on the image for review: their claimed (or returned) slot becomes "submitted".

    StoreError when they hold no open slot there or have no annotation of their own on it.
    """
    with db.write() as c:
        u = _user(c, user)
        slot_id, state = _slot(c, image_id, u)
        if state not in OPEN_STATES:
            raise StoreError(f"image id {image_id}: {u.name!r}'s work there is already {state}")
        if _own_annotations(c, image_id, u.name) == 0:
            raise StoreError(f"image id {image_id}: {u.name!r} has no annotation there yet; outline the lesion first")
        c.execute(update(A).where(A.c.id == slot_id).values(state="submitted", submitted_utc=utc_now()))


def review(db: Database, reviewer: str, image_id: int, rater: str, accept: bool, comment: str | None = None) -> None:
    """Accept `rater`'s submitted work on the image, or send it back to them (accept=False) with a comment.

    StoreError when `reviewer` is not a reviewer, reviews their own work, the work is not submitted, or a
    send-back has no comment.
    """
    comment = (comment or "").strip() or None
    with db.write() as c:
        r = _user(c, reviewer)
        if r.role != "reviewer":
            raise StoreError(f"{r.name!r} is an {r.role}; only a reviewer reviews")
        u = _user(c, rater)
        if u.id == r.id:
            raise StoreError(f"{r.name!r} cannot review their own work; ask another reviewer")
        if not accept and comment is None:
            raise StoreError("say what to fix: a comment is required when sending work back")
        slot_id, state = _slot(c, image_id, u)
        if state != "submitted":
            raise StoreError(f"image id {image_id}: {u.name!r}'s work there is {state}, not submitted for review")
        verdict = "accepted" if accept else "returned"
        values = {"state": verdict, "reviewer_id": r.id, "reviewed_utc": utc_now(), "comment": comment}
        c.execute(update(A).where(A.c.id == slot_id).values(**values))


# ---- reading: slots, blind raters, image states


def _assignment(row: Sequence[Any]) -> Assignment:
    return Assignment(int(row[0]), *row[1:])


def assignments(db: Database, image_id: int | None = None, *, state: str | None = None) -> list[Assignment]:
    """The slots of one image (or all), by image then first claimed; only those in `state` when given."""
    stmt = _ASSIGNMENTS
    if image_id is not None:
        stmt = stmt.where(A.c.image_id == image_id)
    if state is not None:
        stmt = stmt.where(A.c.state == state)
    return [_assignment(r) for r in db.query(stmt)]


def sees_all(db: Database, image_id: int, user: str | None) -> bool:
    """True when `user` may see every rater's annotations on the image: always with one rater per image
    (nothing to be blind to); else a reviewer, or a rater whose own work there is submitted or accepted (a
    rater without a slot on the image sees only their own: they may claim it later). user None: someone not
    known, who sees all only in a project without users (one person's)."""
    with db.read() as c:
        if _raters(c) < 2:
            return True
        if user is None:
            return not c.execute(select(func.count()).select_from(U)).scalar()
        u = _user(c, user)
        if u.role == "reviewer":
            return True
        state = c.execute(select(A.c.state).where(A.c.image_id == image_id, A.c.user_id == u.id)).scalar()
    return state in ("submitted", "accepted")


def visible_annotations(db: Database, image_id: int, user: str | None) -> list[Annotation]:
    """The image's annotations `user` may see (`sees_all`, else only those whose provenance names them)."""
    anns = annotation_rows.annotations(db, image_id)
    if sees_all(db, image_id, user):
        return anns
    return [a for a in anns if user is not None and (a.provenance.annotator or "").strip() == user.strip()]


def image_state(slots: Sequence[Assignment], needed: int) -> str:
    """An image's state from its slots: "returned" when any is returned, else "in_progress" when any is
    claimed, else "submitted" when any awaits review, else "accepted" when every slot wanted is taken and
    accepted, else "unassigned" (nobody holds it and it needs a rater; earlier raters' accepted work stays)."""
    states = {a.state for a in slots}
    for s, image in (("returned", "returned"), ("claimed", "in_progress"), ("submitted", "submitted")):
        if s in states:
            return image
    return "accepted" if slots and needed == 0 else "unassigned"


def image_states(db: Database) -> list[ImageState]:
    """Every image's state and slots, ordered by path."""
    with db.read() as c:
        n = _raters(c)
        by_image: dict[int, list[Assignment]] = {}
        for row in c.execute(_ASSIGNMENTS):
            by_image.setdefault(int(row[0]), []).append(_assignment(row))
        paths = c.execute(select(I.c.id, I.c.path).order_by(I.c.path)).all()
    out = []
    for image_id, path in paths:
        slots = tuple(by_image.get(image_id, ()))
        needed = max(0, n - len(slots))
        out.append(ImageState(image_id, path, image_state(slots, needed), slots, needed))
    return out


def team_summary(db: Database) -> dict[str, Any]:
    """Counts for `dermaseg project status` of a team project: images by state (IMAGE_STATES), slots by
    rater and state, and the raters per image setting."""
    states = image_states(db)
    by_user: dict[str, Counter[str]] = {}
    for s in states:
        for a in s.slots:
            by_user.setdefault(a.user, Counter())[a.state] += 1
    by_state = dict.fromkeys(IMAGE_STATES, 0)
    by_state.update(Counter(s.state for s in states))
    return {
        "raters_per_image": raters_per_image(db),
        "images": len(states),
        "by_state": by_state,
        "by_user": {name: dict(sorted(c.items())) for name, c in sorted(by_user.items())},
    }


@dataclass(frozen=True)
class Team:
    """A project's team work (`Project.team`): this module's functions on the project's database."""

    db: Database

    def raters_per_image(self) -> int:
        return raters_per_image(self.db)

    def set_raters_per_image(self, n: int) -> None:
        set_raters_per_image(self.db, n)

    def claim_next(self, user: str) -> int | None:
        return claim_next(self.db, user)

    def submit(self, user: str, image_id: int) -> None:
        submit(self.db, user, image_id)

    def review(self, reviewer: str, image_id: int, rater: str, accept: bool, comment: str | None = None) -> None:
        review(self.db, reviewer, image_id, rater, accept, comment)

    def assignments(self, image_id: int | None = None, *, state: str | None = None) -> list[Assignment]:
        return assignments(self.db, image_id, state=state)

    def sees_all(self, image_id: int, user: str | None) -> bool:
        return sees_all(self.db, image_id, user)

    def visible_annotations(self, image_id: int, user: str | None) -> list[Annotation]:
        return visible_annotations(self.db, image_id, user)

    def image_states(self) -> list[ImageState]:
        return image_states(self.db)

    def summary(self) -> dict[str, Any]:
        return team_summary(self.db)

"""Team work on both engines (SQLite file, real PostgreSQL server): claiming the next image (N raters per
image, resume, returned work back to its rater), submitting, reviewing, blind raters, image states; and
several OS processes claiming at once on one project, one of them killed with SIGKILL mid-way."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import insert

from dermaseg.core.annotation.project import Provenance, annotation_rows, annotations, assignments, users
from dermaseg.core.annotation.project.database import Database
from dermaseg.core.annotation.project.records import utc_now
from dermaseg.core.annotation.project.schema import images as I  # noqa: E741
from dermaseg.core.errors import StoreError

WORKER = Path(__file__).with_name("team_worker.py")
SIZE = 48  # px, the images' width and height
PASSWORD = "correct horse"


def _images(db: Database, n: int) -> list[int]:
    """n image rows (as the folder scan makes them; assignment never reads pixels), ids in scan order."""
    with db.write() as c:
        for i in range(n):
            c.execute(
                insert(I).values(
                    path=f"img{i:03d}.jpg",
                    file_sha256=f"{i:064x}",
                    file_size=1000 + i,
                    file_mtime_ns=i,
                    width=SIZE,
                    height=SIZE,
                    added_utc=utc_now(),
                )  # fmt: skip
            )
    return [r.id for r in db.query(I.select().order_by(I.c.id))]


@pytest.fixture(params=["sqlite", "postgresql"])
def target(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Where a fresh project's database is: an SQLite file, or a new database on the throwaway server."""
    if request.param == "sqlite":
        return str(tmp_path / "project.sqlite")
    return request.getfixturevalue("postgres_url")


def _open(target: str) -> Database:
    return Database.server(target) if target.startswith("postgresql") else Database.sqlite(Path(target))


@pytest.fixture
def db(target: str) -> Iterator[Database]:
    d = _open(target)
    d.create_schema(["lesion"])
    yield d
    d.close()


def _team(db: Database, *names: str, reviewers: tuple[str, ...] = ()) -> None:
    for name in names:
        users.add_user(db, name, PASSWORD, "annotator")
    for name in reviewers:
        users.add_user(db, name, PASSWORD, "reviewer")


def _annotate(db: Database, image_id: int, user: str | None, shift: int = 0) -> None:
    mask = np.zeros((SIZE, SIZE), dtype=bool)
    mask[10 + shift : 30 + shift, 12:34] = True
    annotations.add_annotation(db, image_id, mask, provenance=Provenance(source="manual", annotator=user))


def _work(db: Database, user: str) -> int:
    """Claim, annotate and submit one image as `user`; its id."""
    image_id = assignments.claim_next(db, user)
    assert image_id is not None
    _annotate(db, image_id, user)
    assignments.submit(db, user, image_id)
    return image_id


# ------------------------------------------------------------------------------- the rules


def test_raters_per_image_is_a_setting_from_1(db: Database) -> None:
    assert assignments.raters_per_image(db) == 1
    assignments.set_raters_per_image(db, 3)
    assert assignments.raters_per_image(db) == 3
    for bad in (0, -1, 2.5, True, assignments.MAX_RATERS + 1):
        with pytest.raises(StoreError, match="raters per image"):
            assignments.set_raters_per_image(db, bad)
    assert assignments.raters_per_image(db) == 3


def test_one_rater_per_image_oldest_first_resume_then_nothing_left(db: Database) -> None:
    ids = _images(db, 3)
    _team(db, "ann", "bob")
    assert assignments.claim_next(db, "ann") == ids[0]
    assert assignments.claim_next(db, "ann") == ids[0]  # resume: still hers, no second claim
    assert assignments.claim_next(db, "bob") == ids[1]
    _annotate(db, ids[0], "ann")
    assignments.submit(db, "ann", ids[0])
    assert assignments.claim_next(db, "ann") == ids[2]
    _annotate(db, ids[2], "ann")
    assignments.submit(db, "ann", ids[2])
    assert assignments.claim_next(db, "ann") is None  # ids[1] is bob's, the image needs one rater
    assert [(a.image_id, a.user, a.state) for a in assignments.assignments(db)] == [
        (ids[0], "ann", "submitted"), (ids[1], "bob", "claimed"), (ids[2], "ann", "submitted"),
    ]  # fmt: skip


def test_two_raters_per_image_never_the_same_rater_twice(db: Database) -> None:
    ids = _images(db, 2)
    _team(db, "ann", "bob", "cat")
    assignments.set_raters_per_image(db, 2)
    assert _work(db, "ann") == ids[0]
    assert _work(db, "bob") == ids[0]  # the second slot of the oldest image
    assert _work(db, "cat") == ids[1]
    assert _work(db, "ann") == ids[1]
    assert assignments.claim_next(db, "bob") is None  # ids[1] is full, ids[0] has bob already
    assert Counter(a.image_id for a in assignments.assignments(db)) == {ids[0]: 2, ids[1]: 2}


def test_submit_needs_a_claim_and_an_annotation_of_ones_own(db: Database) -> None:
    ids = _images(db, 2)
    _team(db, "ann", "bob")
    with pytest.raises(StoreError, match="has not claimed"):
        assignments.submit(db, "ann", ids[0])
    assert assignments.claim_next(db, "ann") == ids[0]
    _annotate(db, ids[0], "bob")  # someone else's outline does not count
    with pytest.raises(StoreError, match="no annotation"):
        assignments.submit(db, "ann", ids[0])
    _annotate(db, ids[0], "ann")
    assignments.submit(db, "ann", ids[0])
    with pytest.raises(StoreError, match="already submitted"):
        assignments.submit(db, "ann", ids[0])
    with pytest.raises(StoreError, match="not in this project"):
        assignments.submit(db, "ann", 999)
    with pytest.raises(StoreError, match="no user named"):
        assignments.claim_next(db, "nobody")
    users.set_disabled(db, "bob", True)
    with pytest.raises(StoreError, match="disabled"):
        assignments.claim_next(db, "bob")


def test_review_accept_or_send_back_to_the_same_rater(db: Database) -> None:
    ids = _images(db, 2)
    _team(db, "ann", "bob", reviewers=("rev", "rita"))
    assert _work(db, "ann") == ids[0]
    with pytest.raises(StoreError, match="only a reviewer"):
        assignments.review(db, "bob", ids[0], "ann", True)
    with pytest.raises(StoreError, match="comment is required"):
        assignments.review(db, "rev", ids[0], "ann", False, "  ")
    assignments.review(db, "rev", ids[0], "ann", False, "the border misses the lower lobe")
    (slot,) = assignments.assignments(db, ids[0])
    assert (slot.state, slot.reviewer, slot.comment) == ("returned", "rev", "the border misses the lower lobe")
    with pytest.raises(StoreError, match="returned, not submitted"):
        assignments.review(db, "rev", ids[0], "ann", True)
    assert assignments.claim_next(db, "bob") == ids[1]  # a returned image is never offered to another rater
    assert assignments.claim_next(db, "ann") == ids[0]  # it goes back to its rater, before any new image
    assignments.submit(db, "ann", ids[0])
    assignments.review(db, "rev", ids[0], "ann", True)
    assert assignments.assignments(db, ids[0])[0].state == "accepted"
    # A reviewer annotates too, but never reviews their own work.
    assignments.set_raters_per_image(db, 2)
    assert _work(db, "rev") == ids[0]
    with pytest.raises(StoreError, match="own work"):
        assignments.review(db, "rev", ids[0], "rev", True)
    assignments.review(db, "rita", ids[0], "rev", True, "fine")


def test_a_rater_is_blind_to_other_raters_until_they_submit(db: Database) -> None:
    (image_id,) = _images(db, 1)
    _team(db, "ann", "bob", reviewers=("rev",))
    assignments.set_raters_per_image(db, 2)
    assert _work(db, "ann") == image_id
    assert assignments.claim_next(db, "bob") == image_id
    assert assignments.visible_annotations(db, image_id, "bob") == []  # ann's outline is hidden
    _annotate(db, image_id, "bob", shift=5)
    _annotate(db, image_id, None, shift=8)  # nobody's (e.g. imported): hidden from a rater too

    def raters(user: str | None) -> list[str]:
        return sorted(str(a.provenance.annotator) for a in assignments.visible_annotations(db, image_id, user))

    assert raters("bob") == ["bob"]
    assert raters("ann") == ["None", "ann", "bob"]  # hers is submitted
    assert raters("rev") == raters(None) == ["None", "ann", "bob"]  # a reviewer, a project without users
    assignments.submit(db, "bob", image_id)
    assert raters("bob") == ["None", "ann", "bob"]
    assignments.review(db, "rev", image_id, "bob", False, "redo")
    assert raters("bob") == ["bob"]  # work open again: blind again


def test_image_states_and_summary_say_who_holds_what(db: Database) -> None:
    ids = _images(db, 5)
    _team(db, "ann", "bob", reviewers=("rev",))
    assignments.set_raters_per_image(db, 2)
    for user in ("ann", "bob"):  # both raters on ids[0], submitted, then accepted
        assert _work(db, user) == ids[0]
        assignments.review(db, "rev", ids[0], user, True)
    assert _work(db, "ann") == ids[1]  # submitted, needs a second rater
    assert assignments.claim_next(db, "bob") == ids[1]  # and bob is on it: in progress
    assert _work(db, "ann") == ids[2]
    assignments.review(db, "rev", ids[2], "ann", False, "fix")
    assert _work(db, "ann") == ids[2]  # fixed and resubmitted...
    assignments.review(db, "rev", ids[2], "ann", True)  # ...accepted: needs a second rater, nobody holds it
    assert _work(db, "ann") == ids[3]
    states = {s.image_id: s for s in assignments.image_states(db)}
    assert [states[i].state for i in ids] == ["accepted", "in_progress", "unassigned", "submitted", "unassigned"]
    assert states[ids[1]].holders == ("bob",)
    assert [a.user for a in states[ids[1]].slots] == ["ann", "bob"]
    assert [states[i].needed for i in ids] == [0, 0, 1, 1, 2]
    assert assignments.image_state(assignments.assignments(db, ids[2])[:0], 2) == "unassigned"
    s = assignments.team_summary(db)
    assert s["raters_per_image"] == 2
    assert s["by_state"] == {"unassigned": 2, "in_progress": 1, "submitted": 1, "returned": 0, "accepted": 1}
    assert s["by_user"] == {"ann": {"accepted": 2, "submitted": 2}, "bob": {"accepted": 1, "claimed": 1}}


# ------------------------------------------------------------------------------- processes at once


def _worker(target: str, user: str, pause_s: float = 0.0) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, str(WORKER), target, user, str(pause_s)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"},
    )


def _line(proc: subprocess.Popen) -> str:
    line = proc.stdout.readline()
    assert line, proc.stderr.read()[-3000:]
    return line.strip()


def _start(procs: list[subprocess.Popen]) -> None:
    """Wait until every process is connected, then let them all go at once."""
    for p in procs:
        assert _line(p) == "READY"
    for p in procs:
        p.stdin.write("go\n")
        p.stdin.flush()


def _finish(proc: subprocess.Popen) -> list[str]:
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err[-3000:]
    lines = out.split()
    assert lines[-1] == "DONE"
    return out.strip().splitlines()


def _submitted(lines: list[str]) -> list[int]:
    return [int(x.split()[1]) for x in lines if x.startswith("SUBMITTED")]


@pytest.mark.parametrize(("n_images", "raters", "workers"), [(12, 2, 6), (10, 1, 4)])
def test_processes_claiming_at_once_never_share_a_slot(
    db: Database, target: str, n_images: int, raters: int, workers: int
) -> None:
    ids = _images(db, n_images)
    names = [f"rater{i}" for i in range(workers)]
    _team(db, *names)
    assignments.set_raters_per_image(db, raters)
    procs = [_worker(target, name) for name in names]
    _start(procs)
    done = {name: _submitted(_finish(p)) for name, p in zip(names, procs, strict=True)}
    slots = assignments.assignments(db)
    assert Counter(a.image_id for a in slots) == dict.fromkeys(ids, raters)  # every image exactly N raters
    assert len({(a.image_id, a.user) for a in slots}) == len(slots)
    assert all(a.state == "submitted" for a in slots)
    assert sorted((i, u) for u, got in done.items() for i in got) == sorted((a.image_id, a.user) for a in slots)
    assert sum(len(got) > 0 for got in done.values()) >= 2, done  # they did work side by side


def test_a_process_killed_mid_way_loses_nothing_it_confirmed(db: Database, target: str) -> None:
    ids = _images(db, 16)
    names = [f"rater{i}" for i in range(4)]
    _team(db, *names)
    assignments.set_raters_per_image(db, 2)
    victim = _worker(target, names[0], 0.05)
    others = [_worker(target, name, 0.05) for name in names[1:]]
    _start([victim, *others])
    confirmed: list[str] = []
    while len([x for x in confirmed if x.startswith("SUBMITTED")]) < 2 or not confirmed[-1].startswith("SAVED"):
        confirmed.append(_line(victim))
        assert confirmed[-1] != "DONE", "the others were done before the kill: give them more images"
    victim.send_signal(signal.SIGKILL)  # holding a claimed image with a saved annotation, not yet submitted
    victim.wait(timeout=10)
    assert victim.returncode == -signal.SIGKILL
    held = int(confirmed[-1].split()[1])
    for p in others:
        _finish(p)  # the others keep going to the end
    mine = {a.image_id: a.state for a in assignments.assignments(db) if a.user == names[0]}
    for image_id in _submitted(confirmed):
        assert mine[image_id] == "submitted"
    assert mine[held] == "claimed"  # its slot is kept for it: nobody else took it
    assert [a.provenance.annotator for a in annotation_rows.annotations(db, held)].count(names[0]) == 1  # saved
    slots = assignments.assignments(db)
    assert Counter(a.image_id for a in slots) == dict.fromkeys(ids, 2)
    assert [(a.image_id, a.user) for a in slots if a.state != "submitted"] == [(held, names[0])]
    # Back again, it resumes the image it held, then finishes.
    again = _worker(target, names[0])
    _start([again])
    assert _submitted(_finish(again))[0] == held
    assert all(a.state == "submitted" for a in assignments.assignments(db))

"""Team work on both engines (SQLite file, real PostgreSQL server): claiming the next image (N raters per
image, resume, returned work back to its rater), submitting, reviewing, blind raters, image states; and
several OS processes claiming at once on one project, one of them killed with SIGKILL mid-way."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dermaseg.core.annotation.project import Project, Provenance, assignments
from dermaseg.core.annotation.project.assignments import Team
from dermaseg.core.errors import StoreError

WORKER = Path(__file__).with_name("team_worker.py")
SIZE = 48  # px, the images' width and height
PASSWORD = "correct horse"


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest) -> str | None:
    """Where a fresh project's records are: None (the folder's SQLite file) or a new database on the server."""
    return request.getfixturevalue("postgres_url") if request.param == "postgresql" else None


@pytest.fixture
def make_project(tmp_path: Path, db_url: str | None) -> Iterator[Callable[[int], Project]]:
    """make(n): a project of n small PNG images (img000.png...: scan order is id order) on the engine."""
    made: list[Project] = []

    def make(n: int) -> Project:
        root = tmp_path / "team"
        root.mkdir()
        for i in range(n):
            rgb = np.random.default_rng(i).integers(0, 255, (SIZE, SIZE, 3), dtype=np.uint8)
            Image.fromarray(rgb).save(root / f"img{i:03d}.png")
        made.append(Project.init(root, db=db_url))
        return made[-1]

    yield make
    for p in made:
        p.close()


def _ids(project: Project) -> list[int]:
    return [r.id for r in sorted(project.images(), key=lambda r: r.id)]


def _people(project: Project, *names: str, reviewers: tuple[str, ...] = ()) -> Team:
    for name in names:
        project.add_user(name, PASSWORD, "annotator")
    for name in reviewers:
        project.add_user(name, PASSWORD, "reviewer")
    return project.team


def _annotate(project: Project, image_id: int, user: str | None, shift: int = 0) -> None:
    mask = np.zeros((SIZE, SIZE), dtype=bool)
    mask[10 + shift : 30 + shift, 12:34] = True
    project.add_annotation(image_id, mask, provenance=Provenance(source="manual", annotator=user))


def _work(project: Project, user: str) -> int:
    """Claim, annotate and submit one image as `user`; its id."""
    image_id = project.team.claim_next(user)
    assert image_id is not None
    _annotate(project, image_id, user)
    project.team.submit(user, image_id)
    return image_id


# ------------------------------------------------------------------------------- the rules


def test_raters_per_image_is_a_setting_from_1(make_project: Callable[[int], Project]) -> None:
    team = make_project(1).team
    assert team.raters_per_image() == 1
    team.set_raters_per_image(3)
    assert team.raters_per_image() == 3
    for bad in (0, -1, 2.5, True, assignments.MAX_RATERS + 1):
        with pytest.raises(StoreError, match="raters per image"):
            team.set_raters_per_image(bad)
    assert team.raters_per_image() == 3


def test_one_rater_per_image_oldest_first_resume_then_nothing_left(make_project: Callable[[int], Project]) -> None:
    p = make_project(3)
    ids = _ids(p)
    team = _people(p, "ann", "bob")
    assert team.claim_next("ann") == ids[0]
    assert team.claim_next("ann") == ids[0]  # resume: still hers, no second claim
    assert team.claim_next("bob") == ids[1]
    _annotate(p, ids[0], "ann")
    team.submit("ann", ids[0])
    assert team.claim_next("ann") == ids[2]
    _annotate(p, ids[2], "ann")
    team.submit("ann", ids[2])
    assert team.claim_next("ann") is None  # ids[1] is bob's, the image needs one rater
    assert [(a.image_id, a.user, a.state) for a in team.assignments()] == [
        (ids[0], "ann", "submitted"), (ids[1], "bob", "claimed"), (ids[2], "ann", "submitted"),
    ]  # fmt: skip


def test_two_raters_per_image_never_the_same_rater_twice(make_project: Callable[[int], Project]) -> None:
    p = make_project(2)
    ids = _ids(p)
    team = _people(p, "ann", "bob", "cat")
    team.set_raters_per_image(2)
    assert _work(p, "ann") == ids[0]
    assert _work(p, "bob") == ids[0]  # the second slot of the oldest image
    assert _work(p, "cat") == ids[1]
    assert _work(p, "ann") == ids[1]
    assert team.claim_next("bob") is None  # ids[1] is full, ids[0] has bob already
    assert Counter(a.image_id for a in team.assignments()) == {ids[0]: 2, ids[1]: 2}


def test_submit_needs_a_claim_and_an_annotation_of_ones_own(make_project: Callable[[int], Project]) -> None:
    p = make_project(2)
    ids = _ids(p)
    team = _people(p, "ann", "bob")
    with pytest.raises(StoreError, match="has not claimed"):
        team.submit("ann", ids[0])
    assert team.claim_next("ann") == ids[0]
    _annotate(p, ids[0], "bob")  # someone else's outline does not count
    with pytest.raises(StoreError, match="no annotation"):
        team.submit("ann", ids[0])
    _annotate(p, ids[0], "ann")
    team.submit("ann", ids[0])
    with pytest.raises(StoreError, match="already submitted"):
        team.submit("ann", ids[0])
    with pytest.raises(StoreError, match="not in this project"):
        team.submit("ann", 999)
    with pytest.raises(StoreError, match="no user named"):
        team.claim_next("nobody")
    p.set_disabled("bob", True)
    with pytest.raises(StoreError, match="disabled"):
        team.claim_next("bob")


def test_review_accept_or_send_back_to_the_same_rater(make_project: Callable[[int], Project]) -> None:
    p = make_project(2)
    ids = _ids(p)
    team = _people(p, "ann", "bob", reviewers=("rev", "rita"))
    assert _work(p, "ann") == ids[0]
    with pytest.raises(StoreError, match="only a reviewer"):
        team.review("bob", ids[0], "ann", True)
    with pytest.raises(StoreError, match="comment is required"):
        team.review("rev", ids[0], "ann", False, "  ")
    team.review("rev", ids[0], "ann", False, "the border misses the lower lobe")
    (slot,) = team.assignments(ids[0])
    assert (slot.state, slot.reviewer, slot.comment) == ("returned", "rev", "the border misses the lower lobe")
    with pytest.raises(StoreError, match="returned, not submitted"):
        team.review("rev", ids[0], "ann", True)
    assert team.claim_next("bob") == ids[1]  # a returned image is never offered to another rater
    assert team.claim_next("ann") == ids[0]  # it goes back to its rater, before any new image
    team.submit("ann", ids[0])
    team.review("rev", ids[0], "ann", True)
    assert team.assignments(ids[0])[0].state == "accepted"
    # A reviewer annotates too, but never reviews their own work.
    team.set_raters_per_image(2)
    assert _work(p, "rev") == ids[0]
    with pytest.raises(StoreError, match="own work"):
        team.review("rev", ids[0], "rev", True)
    team.review("rita", ids[0], "rev", True, "fine")


def test_a_rater_is_blind_to_other_raters_until_they_submit(make_project: Callable[[int], Project]) -> None:
    p = make_project(1)
    (image_id,) = _ids(p)
    _annotate(p, image_id, "ann")
    team = p.team
    assert [a.provenance.annotator for a in team.visible_annotations(image_id, None)] == ["ann"]  # no users
    team = _people(p, "ann", "bob", "cat", reviewers=("rev",))
    assert len(team.visible_annotations(image_id, "bob")) == 1  # one rater per image: nobody to be blind to
    team.set_raters_per_image(2)  # an agreement study: blind
    assert team.visible_annotations(image_id, "bob") == team.visible_annotations(image_id, None) == []
    p.delete_annotation(p.annotations(image_id)[0].id)
    assert _work(p, "ann") == image_id
    assert team.claim_next("bob") == image_id
    assert team.visible_annotations(image_id, "bob") == []  # ann's outline is hidden
    _annotate(p, image_id, "bob", shift=5)
    _annotate(p, image_id, None, shift=8)  # nobody's (e.g. imported): hidden from a rater too

    def raters(user: str | None) -> list[str]:
        return sorted(str(a.provenance.annotator) for a in team.visible_annotations(image_id, user))

    assert raters("bob") == ["bob"]
    assert raters("ann") == ["None", "ann", "bob"]  # hers is submitted
    assert raters("rev") == ["None", "ann", "bob"]  # a reviewer
    assert raters("cat") == raters(None) == []  # no slot there; someone not known
    team.submit("bob", image_id)
    assert raters("bob") == ["None", "ann", "bob"]
    team.review("rev", image_id, "bob", False, "redo")
    assert raters("bob") == ["bob"]  # work open again: blind again


def test_image_states_and_summary_say_who_holds_what(make_project: Callable[[int], Project]) -> None:
    p = make_project(5)
    ids = _ids(p)
    team = _people(p, "ann", "bob", reviewers=("rev",))
    team.set_raters_per_image(2)
    for user in ("ann", "bob"):  # both raters on ids[0], submitted, then accepted
        assert _work(p, user) == ids[0]
        team.review("rev", ids[0], user, True)
    assert _work(p, "ann") == ids[1]  # submitted, needs a second rater
    assert team.claim_next("bob") == ids[1]  # and bob is on it: in progress
    assert _work(p, "ann") == ids[2]
    team.review("rev", ids[2], "ann", False, "fix")
    assert _work(p, "ann") == ids[2]  # fixed and resubmitted...
    team.review("rev", ids[2], "ann", True)  # ...accepted: needs a second rater, nobody holds it
    assert _work(p, "ann") == ids[3]
    states = {s.image_id: s for s in team.image_states()}
    assert [states[i].state for i in ids] == ["accepted", "in_progress", "unassigned", "submitted", "unassigned"]
    assert states[ids[1]].holders == ("bob",)
    assert [a.user for a in states[ids[1]].slots] == ["ann", "bob"]
    assert [states[i].needed for i in ids] == [0, 0, 1, 1, 2]
    assert assignments.image_state((), 2) == "unassigned"
    s = team.summary()
    assert s["raters_per_image"] == 2
    assert s["by_state"] == {"unassigned": 2, "in_progress": 1, "submitted": 1, "returned": 0, "accepted": 1}
    assert s["by_user"] == {"ann": {"accepted": 2, "submitted": 2}, "bob": {"accepted": 1, "claimed": 1}}


# ------------------------------------------------------------------------------- processes at once


def _worker(p: Project, db_url: str | None, user: str, pause_s: float = 0.0) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, str(WORKER), str(p.root), db_url or "-", user, str(pause_s)],
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
    for proc in procs:
        assert _line(proc) == "READY"
    for proc in procs:
        proc.stdin.write("go\n")
        proc.stdin.flush()


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
    make_project: Callable[[int], Project], db_url: str | None, n_images: int, raters: int, workers: int
) -> None:
    p = make_project(n_images)
    ids = _ids(p)
    names = [f"rater{i}" for i in range(workers)]
    team = _people(p, *names)
    team.set_raters_per_image(raters)
    procs = [_worker(p, db_url, name) for name in names]
    _start(procs)
    done = {name: _submitted(_finish(proc)) for name, proc in zip(names, procs, strict=True)}
    slots = team.assignments()
    assert Counter(a.image_id for a in slots) == dict.fromkeys(ids, raters)  # every image exactly N raters
    assert len({(a.image_id, a.user) for a in slots}) == len(slots)
    assert all(a.state == "submitted" for a in slots)
    assert sorted((i, u) for u, got in done.items() for i in got) == sorted((a.image_id, a.user) for a in slots)
    assert sum(len(got) > 0 for got in done.values()) >= 2, done  # they did work side by side


def test_a_process_killed_mid_way_loses_nothing_it_confirmed(
    make_project: Callable[[int], Project], db_url: str | None
) -> None:
    p = make_project(16)
    ids = _ids(p)
    names = [f"rater{i}" for i in range(4)]
    team = _people(p, *names)
    team.set_raters_per_image(2)
    victim = _worker(p, db_url, names[0], 0.05)
    others = [_worker(p, db_url, name, 0.05) for name in names[1:]]
    _start([victim, *others])
    confirmed: list[str] = []
    while len([x for x in confirmed if x.startswith("SUBMITTED")]) < 2 or not confirmed[-1].startswith("SAVED"):
        confirmed.append(_line(victim))
        assert confirmed[-1] != "DONE", "the others were done before the kill: give them more images"
    victim.send_signal(signal.SIGKILL)  # holding a claimed image with a saved annotation, not yet submitted
    victim.wait(timeout=10)
    assert victim.returncode == -signal.SIGKILL
    held = int(confirmed[-1].split()[1])
    for proc in others:
        _finish(proc)  # the others keep going to the end
    mine = {a.image_id: a.state for a in team.assignments() if a.user == names[0]}
    for image_id in _submitted(confirmed):
        assert mine[image_id] == "submitted"
    assert mine[held] == "claimed"  # its slot is kept for it: nobody else took it
    assert [a.provenance.annotator for a in p.annotations(held)].count(names[0]) == 1  # saved
    slots = team.assignments()
    assert Counter(a.image_id for a in slots) == dict.fromkeys(ids, 2)
    assert [(a.image_id, a.user) for a in slots if a.state != "submitted"] == [(held, names[0])]
    # Back again, it resumes the image it held, then finishes.
    again = _worker(p, db_url, names[0])
    _start([again])
    assert _submitted(_finish(again))[0] == held
    assert all(a.state == "submitted" for a in team.assignments())

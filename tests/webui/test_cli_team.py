"""`dermaseg project raters|next|submit|review` and the team part of `status`, through the real CLI entry point."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dermaseg.core.annotation.project import Project, Provenance
from dermaseg.webui.cli.main import main
from dermaseg.webui.cli.team import EXIT_NOTHING_LEFT


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """A project of two images and three people (two annotators, a reviewer)."""
    root = tmp_path / "proj"
    root.mkdir()
    for i, name in enumerate(("a.png", "b.png")):
        rgb = np.random.default_rng(i).integers(0, 255, (60, 80, 3), dtype=np.uint8)
        Image.fromarray(rgb).save(root / name)
    with Project.init(root) as p:
        p.add_user("ann", "password-ann")
        p.add_user("bob", "password-bob")
        p.add_user("rev", "password-rev", "reviewer")
    return root


def _annotate(folder: Path, path: str, user: str) -> None:
    with Project.open(folder, scan=False) as p:
        rec = p.image_by_path(path)
        mask = np.zeros((rec.height, rec.width), dtype=bool)
        mask[10:40, 20:60] = True
        p.add_annotation(rec.id, mask, provenance=Provenance(source="manual", annotator=user))


def _json(capsys: pytest.CaptureFixture[str]) -> dict:
    return json.loads(capsys.readouterr().out)


def test_two_raters_claim_submit_review_and_status(folder: Path, capsys: pytest.CaptureFixture[str]) -> None:
    f = str(folder)
    assert main(["project", "raters", f]) == 0
    assert capsys.readouterr().out.strip() == "raters per image: 1"
    assert main(["project", "raters", f, "2"]) == 0
    assert capsys.readouterr().out.strip() == "raters per image: 2"
    assert main(["project", "raters", f, "0"]) == 2
    assert "raters per image is a whole number" in capsys.readouterr().err

    assert main(["project", "next", f, "--user", "ann", "--json"]) == 0
    assert _json(capsys)["path"] == "a.png"
    assert main(["project", "next", f, "--user", "bob"]) == 0
    assert capsys.readouterr().out.split() == ["1", "a.png"]  # the second slot of the same image

    assert main(["project", "submit", f, "a.png", "--user", "ann"]) == 2
    assert "no annotation there yet" in capsys.readouterr().err
    _annotate(folder, "a.png", "ann")
    assert main(["project", "submit", f, "a.png", "--user", "ann"]) == 0
    assert "submitted a.png" in capsys.readouterr().out

    review = ["project", "review", f, "1", "--user", "rev", "--rater", "ann"]
    assert main([*review, "--return"]) == 2
    assert "comment is required" in capsys.readouterr().err
    assert main([*review, "--return", "--comment", "include the satellite"]) == 0
    assert "sent back to ann" in capsys.readouterr().out
    assert main(["project", "review", f, "1", "--user", "ann", "--rater", "bob", "--accept"]) == 2
    assert "only a reviewer" in capsys.readouterr().err
    assert main(["project", "submit", f, "nothere.png", "--user", "ann"]) == 2
    assert "no such image" in capsys.readouterr().err

    assert main(["project", "status", f]) == 0
    out = capsys.readouterr().out
    assert "team: 2 rater(s) per image; images: needs a rater 1, in progress 0" in out
    assert "a.png: sent back - ann returned: 'include the satellite'; bob claimed" in out
    assert main(["project", "status", f, "--json"]) == 0
    team = _json(capsys)["team"]
    assert team["by_state"]["returned"] == 1 and team["by_user"] == {"ann": {"returned": 1}, "bob": {"claimed": 1}}
    (a, b) = team["image_states"]
    assert (a["path"], a["state"], a["holders"], a["needed"]) == ("a.png", "returned", ["ann", "bob"], 0)
    assert a["raters"][0]["comment"] == "include the satellite" and a["raters"][0]["reviewer"] == "rev"
    assert (b["state"], b["needed"]) == ("unassigned", 2)

    assert main(["project", "next", f, "--user", "ann"]) == 0  # her returned image first
    assert capsys.readouterr().out.split() == ["1", "a.png"]
    assert main(["project", "submit", f, "1", "--user", "ann"]) == 0
    assert main([*review, "--accept"]) == 0
    assert "ann's work accepted" in capsys.readouterr().out
    assert main(["project", "next", f, "--user", "ann"]) == 0
    assert capsys.readouterr().out.split() == ["2", "b.png"]
    assert main(["project", "next", f, "--user", "rev", "--json"]) == 0  # a reviewer rates too
    assert _json(capsys) == {"image_id": 2, "path": "b.png"}
    assert main(["project", "next", f, "--user", "bob", "--json"]) == 0  # bob still holds a.png
    assert _json(capsys)["path"] == "a.png"
    _annotate(folder, "a.png", "bob")
    assert main(["project", "submit", f, "a.png", "--user", "bob"]) == 0
    capsys.readouterr()
    assert main(["project", "next", f, "--user", "bob", "--json"]) == EXIT_NOTHING_LEFT  # b.png is full
    assert _json(capsys) == {"image_id": None, "path": None}


def test_status_of_a_project_without_users_has_no_team_part(tmp_path: Path, capsys) -> None:
    root = tmp_path / "solo"
    root.mkdir()
    Image.fromarray(np.zeros((20, 20, 3), dtype=np.uint8)).save(root / "x.png")
    Project.init(root).close()
    assert main(["project", "status", str(root), "--json"]) == 0
    assert "team" not in json.loads(capsys.readouterr().out)
    assert main(["project", "status", str(root)]) == 0
    assert "team:" not in capsys.readouterr().out
    assert main(["project", "next", str(root), "--user", "ann"]) == 2
    assert "no user named 'ann'" in capsys.readouterr().err


def test_next_submit_review_on_a_postgresql_project(tmp_path: Path, postgres_url: str, capsys) -> None:
    """--db URL: the same commands on a project whose records are on a PostgreSQL server."""
    root = tmp_path / "shared"
    root.mkdir()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (60, 80, 3), dtype=np.uint8)).save(root / "a.png")
    with Project.init(root, db=postgres_url) as p:
        p.add_user("ann", "password-ann")
        p.add_user("rev", "password-rev", "reviewer")
        rec = p.image_by_path("a.png")
    db = ["--db", postgres_url]
    assert main(["project", "raters", str(root), *db]) == 0
    assert main(["project", "next", str(root), "--user", "ann", "--json", *db]) == 0
    capsys.readouterr()
    with Project.open(root, db=postgres_url, scan=False) as p:
        mask = np.zeros((rec.height, rec.width), dtype=bool)
        mask[10:40, 20:60] = True
        p.add_annotation(rec.id, mask, provenance=Provenance(source="manual", annotator="ann"))
    assert main(["project", "submit", str(root), "a.png", "--user", "ann", *db]) == 0
    assert main(["project", "review", str(root), "a.png", "--user", "rev", "--rater", "ann", "--accept", *db]) == 0
    assert "ann's work accepted" in capsys.readouterr().out
    with Project.open(root, db=postgres_url, scan=False) as p:
        assert [(a.user, a.state, a.reviewer) for a in p.team.assignments()] == [("ann", "accepted", "rev")]
    assert main(["project", "next", str(root), "--user", "ann", *db]) == EXIT_NOTHING_LEFT
    capsys.readouterr()
    assert main(["project", "status", str(root), "--json", *db]) == 0
    team = json.loads(capsys.readouterr().out)["team"]
    assert team["by_state"]["accepted"] == 1 and team["image_states"][0]["raters"][0]["reviewer"] == "rev"
    assert not (root / ".dermaseg" / "project.sqlite").exists()  # nothing went to a local file

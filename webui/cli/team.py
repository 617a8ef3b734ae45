"""`dermaseg project ...` for a team: who works on which image, for people and for scripts.

    dermaseg project raters FOLDER [N]                         raters each image needs (show, or set to N)
    dermaseg project next FOLDER --user NAME [--json]          claim the user's next image, print it
    dermaseg project submit FOLDER IMAGE --user NAME           submit the user's work on IMAGE for review
    dermaseg project review FOLDER IMAGE --user REVIEWER --rater NAME (--accept | --return --comment TEXT)

Each takes `--db URL` (default $DERMASEG_DB) as every project command. IMAGE is an image id or its path
in the project. `dermaseg project status` adds the team's states
(`print_status` / `status_json`) when the project has users. The rules are `core.annotation.project.
assignments`'. These commands trust whoever can open the project's database (file permissions, or the
database login in a PostgreSQL URL): `--user` is not asked for a password. They never take the folder's
lock: they run while `dermaseg serve` has the project open, as several people's processes do.

Exit codes: 0 done; 2 refused (the message says why); EXIT_NOTHING_LEFT (4) when `next` finds no image
left for the user.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from dermaseg.core.annotation.project import Project
from dermaseg.core.annotation.project.records import IMAGE_STATE_WORDS
from dermaseg.core.errors import StoreError

EXIT_NOTHING_LEFT = 4

Opener = Callable[[argparse.Namespace], Project]


def register(psub: Any, parents: list[argparse.ArgumentParser], opener: Opener) -> None:
    """Add `raters`, `next`, `submit` and `review` to the `project` command's subparsers.

    parents: the options every project command takes (--db); opener: how a command opens the project from
    its arguments (the project command's: on the database --db names, without a scan of the folder).
    """

    def add(name: str, help: str, run: Callable[[Project, argparse.Namespace], int]) -> argparse.ArgumentParser:
        p = psub.add_parser(name, parents=parents, help=help)
        p.add_argument("folder", type=Path)

        def go(args: argparse.Namespace) -> int:
            with opener(args) as project:
                return run(project, args)

        p.set_defaults(run=go)
        return p

    p = add("raters", "show or set how many raters each image needs (2+: an agreement study)", _raters)
    p.add_argument("n", type=int, nargs="?", help="the new number (1 for production)")

    p = add("next", "claim the user's next image (their open one first) and print its id and path", _next)
    p.add_argument("--user", required=True, metavar="NAME")
    p.add_argument("--json", action="store_true", help='print {"image_id": ..., "path": ...} (null when none)')

    p = add("submit", "submit the user's annotations on an image for review", _submit)
    p.add_argument("image", help="image id or path in the project")
    p.add_argument("--user", required=True, metavar="NAME")

    p = add("review", "accept a rater's submitted work on an image, or send it back with a comment", _review)
    p.add_argument("image", help="image id or path in the project")
    p.add_argument("--user", required=True, metavar="REVIEWER", help="the reviewer")
    p.add_argument("--rater", required=True, metavar="NAME", help="whose work")
    verdict = p.add_mutually_exclusive_group(required=True)
    verdict.add_argument("--accept", action="store_true")
    verdict.add_argument("--return", dest="send_back", action="store_true", help="send back (needs --comment)")
    p.add_argument("--comment", help="what to fix (required with --return)")


def image_id(project: Project, image: str) -> int:
    """An image given as an id or as its path in the project; StoreError when it is neither."""
    rec = project.image_by_path(image)
    if rec is not None:
        return rec.id
    if image.isdigit():
        return project.image(int(image)).id
    raise StoreError(f"{image}: no such image in the project (give its id or its path)")


def _raters(project: Project, args: argparse.Namespace) -> int:
    if args.n is not None:
        project.team.set_raters_per_image(args.n)
    print(f"raters per image: {project.team.raters_per_image()}")
    return 0


def _next(project: Project, args: argparse.Namespace) -> int:
    got = project.team.claim_next(args.user)
    path = project.image(got).path if got is not None else None
    if args.json:
        print(json.dumps({"image_id": got, "path": path}))
    elif got is None:
        print(f"nothing left for {args.user}")
    else:
        print(f"{got}\t{path}")
    return 0 if got is not None else EXIT_NOTHING_LEFT


def _submit(project: Project, args: argparse.Namespace) -> int:
    i = image_id(project, args.image)
    project.team.submit(args.user, i)
    print(f"submitted {project.image(i).path} for review")
    return 0


def _review(project: Project, args: argparse.Namespace) -> int:
    i = image_id(project, args.image)
    project.team.review(args.user, i, args.rater, accept=args.accept, comment=args.comment)
    done = f"{args.rater}'s work accepted" if args.accept else f"sent back to {args.rater}"
    print(f"{project.image(i).path}: {done}")
    return 0


# ---- `dermaseg project status` of a team project


def status_json(project: Project) -> dict[str, Any]:
    """The team part of `status --json`: counts, and per image its state and every rater's slot."""
    team = project.team.summary()
    team["image_states"] = [
        {
            "image_id": s.image_id,
            "path": s.path,
            "state": s.state,
            "holders": list(s.holders),
            "needed": s.needed,
            "raters": [
                {
                    "user": a.user,
                    "state": a.state,
                    "claimed_utc": a.claimed_utc,
                    "submitted_utc": a.submitted_utc,
                    "reviewer": a.reviewer,
                    "reviewed_utc": a.reviewed_utc,
                    "comment": a.comment,
                }
                for a in s.slots
            ],
        }  # fmt: skip
        for s in project.team.image_states()
    ]
    return team


def print_status(project: Project) -> None:
    """The team part of `status`: counts by state and rater, then each image that someone worked on."""
    team = project.team.summary()
    print(f"team: {team['raters_per_image']} rater(s) per image; images: " + ", ".join(
        f"{IMAGE_STATE_WORDS[k]} {v}" for k, v in team["by_state"].items()
    ))  # fmt: skip
    for name, counts in team["by_user"].items():
        print(f"  {name}: " + ", ".join(f"{k} {v}" for k, v in counts.items()))
    for s in project.team.image_states():
        if s.slots:
            print(f"  {s.path}: {s.describe()}")

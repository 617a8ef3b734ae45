"""`dermaseg project user ...`: the people of a project, who log in to its page.

    dermaseg project user add FOLDER NAME [--role annotator|reviewer] [--password-stdin]
    dermaseg project user list FOLDER
    dermaseg project user passwd FOLDER NAME [--password-stdin]
    dermaseg project user role FOLDER NAME --role annotator|reviewer
    dermaseg project user disable|enable FOLDER NAME
    (each takes --db URL, or $DERMASEG_DB, for a project on a PostgreSQL server, as every `project` command)

A project without users is one person's: the page asks for no login. Once it has one, `dermaseg serve` asks
every visitor to log in as one of them, and each saved annotation names who saved it. Passwords are asked on
the terminal (twice, not echoed) or read from the first line of stdin with `--password-stdin`; never from
the command line, where the shell history and `ps` would keep them. No password is ever printed or logged.
"""

from __future__ import annotations

import argparse
import getpass
import sys
from pathlib import Path
from typing import Any

from dermaseg.core.annotation.project import Project
from dermaseg.core.annotation.project.records import ROLES, User
from dermaseg.core.annotation.project.users import check_name, check_password
from dermaseg.core.errors import DermasegError

ROLE_HELP = "an annotator saves annotations; a reviewer also annotates, and reviews others' work"


def register(psub: Any, db: argparse.ArgumentParser) -> None:
    """Add `user` and its actions to the `project` command's subparsers; `db`: the `--db URL` parent parser."""
    user = psub.add_parser(
        "user",
        help="the people who log in to the project's page: add, list, passwd, role, disable, enable",
        description="The people of a project, with a role (a reviewer also annotates). A project without users "
        "asks for no login; once it has one, `dermaseg serve` requires a login as one of them.",
    )
    usub = user.add_subparsers(metavar="ACTION")

    p = _action(usub, db, "add", "add a person; their password is asked twice (or read with --password-stdin)")
    p.add_argument("--role", choices=ROLES, default="annotator", help=f"{ROLE_HELP} (default: annotator)")
    _password_option(p)
    p.set_defaults(run=_add)

    p = usub.add_parser("list", parents=[db], help="every user: name, role, enabled or disabled")
    p.add_argument("folder", type=Path)
    p.set_defaults(run=_list)

    p = _action(usub, db, "passwd", "set a new password for NAME")
    _password_option(p)
    p.set_defaults(run=_passwd)

    p = _action(usub, db, "role", "change NAME's role")
    p.add_argument("--role", choices=ROLES, required=True, help=ROLE_HELP)
    p.set_defaults(run=_role)

    p = _action(usub, db, "disable", "NAME can no longer log in (their annotations stay)")
    p.set_defaults(run=lambda args: _set_disabled(args, True))
    p = _action(usub, db, "enable", "NAME can log in again")
    p.set_defaults(run=lambda args: _set_disabled(args, False))

    user.set_defaults(run=lambda args: _help(user))


def _action(usub: Any, db: argparse.ArgumentParser, name: str, help: str) -> argparse.ArgumentParser:
    p = usub.add_parser(name, parents=[db], help=help)
    p.add_argument("folder", type=Path)
    p.add_argument("name", help="the user's name (1 to 64 printable characters, no ':')")
    return p


def _password_option(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--password-stdin",
        action="store_true",
        help="read the password from the first line of stdin (for scripts), instead of asking on the terminal",
    )


def _help(parser: argparse.ArgumentParser) -> int:
    parser.print_help()
    return 2


def _open(args: argparse.Namespace) -> Project:
    from dermaseg.webui.cli.project import open_project  # that module registers this one

    return open_project(args, scan=False)


def read_password(args: argparse.Namespace) -> str:
    """The new password: stdin's first line with --password-stdin, else asked twice on the terminal."""
    if args.password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
        if not password:
            raise DermasegError("--password-stdin: no password on stdin (give it as the first line)")
        return check_password(password)
    if not sys.stdin.isatty():
        raise DermasegError("no terminal to ask the password on: give it on stdin with --password-stdin")
    password = check_password(getpass.getpass(f"new password for {args.name}: "))
    if getpass.getpass("the same password again: ") != password:
        raise DermasegError("the two passwords differ; nothing was changed")
    return password


def _add(args: argparse.Namespace) -> int:
    with _open(args) as p:
        first = not p.has_users()
        if check_name(args.name) in {u.name for u in p.users()}:  # refused before a password is asked
            raise DermasegError(f"there is already a user named {check_name(args.name)!r}")
        password = read_password(args)
        user = p.add_user(args.name, password, args.role)
    print(f"added {_describe(user)} to {args.folder}")
    if first:
        print("the project's page now requires a login (restart `dermaseg serve` if it is running)")
    return 0


def _list(args: argparse.Namespace) -> int:
    with _open(args) as p:
        people = p.users()
    if not people:
        print(f"{args.folder}: no users; the page asks for no login (add one: dermaseg project user add FOLDER NAME)")
        return 0
    width = max(len("name"), *(len(u.name) for u in people))
    print(f"{'name':<{width}}  {'role':<9}  {'state':<8}  created (UTC)")
    for u in people:
        print(f"{u.name:<{width}}  {u.role:<9}  {'disabled' if u.disabled else 'enabled':<8}  {u.created_utc}")
    return 0


def _passwd(args: argparse.Namespace) -> int:
    with _open(args) as p:
        p.user(args.name)  # an unknown name is refused before a password is asked
        p.set_password(args.name, read_password(args))
    print(f"changed the password of {args.name!r}")
    return 0


def _role(args: argparse.Namespace) -> int:
    with _open(args) as p:
        p.set_role(args.name, args.role)
        print(f"{_describe(p.user(args.name))}")
    return 0


def _set_disabled(args: argparse.Namespace, disabled: bool) -> int:
    with _open(args) as p:
        p.set_disabled(args.name, disabled)
        left = [u for u in p.users() if not u.disabled]
    if disabled:
        print(f"disabled {args.name!r}: they can no longer log in or save (their annotations stay)")
        if not left:
            print("warning: no enabled user is left, so nobody can log in to the page until one is enabled")
    else:
        print(f"enabled {args.name!r}: they can log in again")
    return 0


def _describe(user: User) -> str:
    return f"{user.name!r} ({user.role}{', disabled' if user.disabled else ''})"

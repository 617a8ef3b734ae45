"""The people of a project (`users.py`, through the `Project` facade): scrypt hashes, logins, disabled users and
bad input, on SQLite and on a real throwaway PostgreSQL server (`postgres_url`)."""

from __future__ import annotations

import base64
import dataclasses
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select

from dermaseg.core.annotation.project import Project, users
from dermaseg.core.annotation.project.records import ROLES, User
from dermaseg.core.annotation.project.schema import users as U
from dermaseg.core.errors import StoreError

PASSWORD = "correct-horse-battery"


@pytest.fixture(params=["sqlite", "postgresql"])
def p(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Project]:
    """A new project on each engine: its SQLite file, or a fresh database of a real PostgreSQL server."""
    url = request.getfixturevalue("postgres_url") if request.param == "postgresql" else None
    project = Project.init(tmp_path, db=url)
    assert project.shared == (url is not None)
    yield project
    project.close()


def stored_hash(p: Project, name: str) -> str:
    return p._db.query(select(U.c.password_hash).where(U.c.name == name))[0][0]


def test_a_new_project_has_no_users(p: Project) -> None:
    assert not p.has_users()
    assert p.users() == []


def test_a_user_is_stored_with_a_salted_scrypt_hash(p: Project) -> None:
    ann = p.add_user("ann", PASSWORD)
    bob = p.add_user("bob", PASSWORD, "reviewer")
    assert (ann.name, ann.role, ann.disabled) == ("ann", "annotator", False)
    assert (bob.name, bob.role) == ("bob", "reviewer")
    assert p.has_users()
    assert [u.name for u in p.users()] == ["ann", "bob"]
    kind, n, r, par, salt, digest = stored_hash(p, "ann").split("$")
    assert (kind, int(n), int(r), int(par)) == ("scrypt", 2**15, 8, 1)
    assert len(base64.b64decode(salt)) == 16 and len(base64.b64decode(digest)) == 32
    assert PASSWORD not in stored_hash(p, "ann")
    assert stored_hash(p, "ann") != stored_hash(p, "bob")  # same password, another salt


def test_the_user_record_holds_no_password() -> None:
    assert {f.name for f in dataclasses.fields(User)} == {"id", "name", "role", "created_utc", "disabled"}


def test_login_with_the_right_password_only(p: Project) -> None:
    p.add_user("ann", PASSWORD)
    assert p.authenticate("ann", PASSWORD) == p.user("ann")
    assert p.authenticate("ann", PASSWORD + "x") is None
    assert p.authenticate("ann", "") is None
    assert p.authenticate("Ann", PASSWORD) is None  # names are exact


def test_an_unknown_name_costs_a_full_scrypt_check(p: Project, monkeypatch: pytest.MonkeyPatch) -> None:
    """No timing assertion: the dummy hash of an unknown name goes through the same scrypt as a real one."""
    p.add_user("ann", PASSWORD)
    real = users.hashlib.scrypt
    calls: list[tuple[int, int]] = []

    def counted(password: bytes, **kw: object) -> bytes:
        calls.append((kw["n"], len(kw["salt"])))  # type: ignore[arg-type]
        return real(password, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(users.hashlib, "scrypt", counted)
    assert p.authenticate("nobody", PASSWORD) is None
    assert p.authenticate("ann", "wrong password") is None
    assert calls == [(2**15, 16), (2**15, 16)]


def test_a_disabled_user_cannot_log_in_and_can_be_enabled_again(p: Project) -> None:
    p.add_user("ann", PASSWORD)
    p.set_disabled("ann", True)
    assert p.user("ann").disabled
    assert p.authenticate("ann", PASSWORD) is None
    p.set_disabled("ann", False)
    assert p.authenticate("ann", PASSWORD) is not None


def test_a_new_password_replaces_the_old_one(p: Project) -> None:
    p.add_user("ann", PASSWORD)
    p.set_password("ann", "another-passphrase")
    assert p.authenticate("ann", PASSWORD) is None
    assert p.authenticate("ann", "another-passphrase") is not None
    with pytest.raises(StoreError, match="at least 8"):
        p.set_password("ann", "short")
    assert p.authenticate("ann", "another-passphrase") is not None  # unchanged by the refusal


def test_a_role_can_change(p: Project) -> None:
    p.add_user("ann", PASSWORD)
    p.set_role("ann", "reviewer")
    assert p.user("ann").role == "reviewer"
    with pytest.raises(StoreError, match="a role is one of annotator, reviewer"):
        p.set_role("ann", "admin")
    assert p.user("ann").role == "reviewer"


@pytest.mark.parametrize("name", ["", "   ", "a:b", "x" * 65, "tab\there", "new\nline"])
def test_bad_names_are_refused(p: Project, name: str) -> None:
    with pytest.raises(StoreError, match="1 to 64 printable characters"):
        p.add_user(name, PASSWORD)
    assert not p.has_users()


def test_bad_roles_and_short_passwords_are_refused(p: Project) -> None:
    with pytest.raises(StoreError, match="a role is one of"):
        p.add_user("ann", PASSWORD, "admin")
    with pytest.raises(StoreError, match="at least 8 characters"):
        p.add_user("ann", "1234567")
    assert not p.has_users()
    assert ROLES == ("annotator", "reviewer")


def test_a_name_is_taken_once(p: Project) -> None:
    p.add_user("ann", PASSWORD)
    for taken in ("ann", "  ann "):
        with pytest.raises(StoreError, match="already a user named 'ann'"):
            p.add_user(taken, "other-password")
    assert p.authenticate("ann", PASSWORD) is not None  # the first one's password stays
    assert len(p.users()) == 1


def test_changing_an_unknown_user_is_refused(p: Project) -> None:
    for change in (
        lambda: p.set_password("nobody", PASSWORD),
        lambda: p.set_role("nobody", "reviewer"),
        lambda: p.set_disabled("nobody", True),
        lambda: p.user("nobody"),
    ):
        with pytest.raises(StoreError, match="no user named 'nobody'"):
            change()


def test_a_malformed_stored_hash_never_matches() -> None:
    for stored in ("", "plain", "bcrypt$1$2$3$AAAA$AAAA", "scrypt$x$8$1$AAAA$AAAA", "scrypt$32768$8$1$!!$AAAA"):
        assert not users.password_matches(PASSWORD, stored)
    assert users.password_matches(PASSWORD, users.hash_password(PASSWORD))

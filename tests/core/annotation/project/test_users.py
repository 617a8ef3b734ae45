"""The people of a project (`users.py`): scrypt hashes, logins, disabled users and bad input, on SQLite and on
a real throwaway PostgreSQL server (`postgres_url`)."""

from __future__ import annotations

import base64
import dataclasses
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select

from dermaseg.core.annotation.project import users
from dermaseg.core.annotation.project.database import Database
from dermaseg.core.annotation.project.records import ROLES, User
from dermaseg.core.annotation.project.schema import users as U
from dermaseg.core.errors import StoreError

PASSWORD = "correct-horse-battery"


@pytest.fixture(params=["sqlite", "postgresql"])
def db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Database]:
    """An empty project database on each engine."""
    if request.param == "sqlite":
        database = Database.sqlite(tmp_path / "project.db")
    else:
        database = Database.server(request.getfixturevalue("postgres_url"))
    database.create_schema(["lesion"])
    yield database
    database.close()


def stored_hash(db: Database, name: str) -> str:
    return db.query(select(U.c.password_hash).where(U.c.name == name))[0][0]


def test_a_new_project_has_no_users(db: Database) -> None:
    assert not users.has_users(db)
    assert users.users(db) == []


def test_a_user_is_stored_with_a_salted_scrypt_hash(db: Database) -> None:
    ann = users.add_user(db, "ann", PASSWORD)
    bob = users.add_user(db, "bob", PASSWORD, "reviewer")
    assert (ann.name, ann.role, ann.disabled) == ("ann", "annotator", False)
    assert (bob.name, bob.role) == ("bob", "reviewer")
    assert users.has_users(db)
    assert [u.name for u in users.users(db)] == ["ann", "bob"]
    kind, n, r, p, salt, digest = stored_hash(db, "ann").split("$")
    assert (kind, int(n), int(r), int(p)) == ("scrypt", 2**15, 8, 1)
    assert len(base64.b64decode(salt)) == 16 and len(base64.b64decode(digest)) == 32
    assert PASSWORD not in stored_hash(db, "ann")
    assert stored_hash(db, "ann") != stored_hash(db, "bob")  # same password, another salt


def test_the_user_record_holds_no_password() -> None:
    assert {f.name for f in dataclasses.fields(User)} == {"id", "name", "role", "created_utc", "disabled"}


def test_login_with_the_right_password_only(db: Database) -> None:
    users.add_user(db, "ann", PASSWORD)
    assert users.authenticate(db, "ann", PASSWORD) == users.user(db, "ann")
    assert users.authenticate(db, "ann", PASSWORD + "x") is None
    assert users.authenticate(db, "ann", "") is None
    assert users.authenticate(db, "Ann", PASSWORD) is None  # names are exact


def test_an_unknown_name_costs_a_full_scrypt_check(db: Database, monkeypatch: pytest.MonkeyPatch) -> None:
    """No timing assertion: the dummy hash of an unknown name goes through the same scrypt as a real one."""
    users.add_user(db, "ann", PASSWORD)
    real = users.hashlib.scrypt
    calls: list[tuple[int, int]] = []

    def counted(password: bytes, **kw: object) -> bytes:
        calls.append((kw["n"], len(kw["salt"])))  # type: ignore[arg-type]
        return real(password, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(users.hashlib, "scrypt", counted)
    assert users.authenticate(db, "nobody", PASSWORD) is None
    assert users.authenticate(db, "ann", "wrong password") is None
    assert calls == [(2**15, 16), (2**15, 16)]


def test_a_disabled_user_cannot_log_in_and_can_be_enabled_again(db: Database) -> None:
    users.add_user(db, "ann", PASSWORD)
    users.set_disabled(db, "ann", True)
    assert users.user(db, "ann").disabled
    assert users.authenticate(db, "ann", PASSWORD) is None
    users.set_disabled(db, "ann", False)
    assert users.authenticate(db, "ann", PASSWORD) is not None


def test_a_new_password_replaces_the_old_one(db: Database) -> None:
    users.add_user(db, "ann", PASSWORD)
    users.set_password(db, "ann", "another-passphrase")
    assert users.authenticate(db, "ann", PASSWORD) is None
    assert users.authenticate(db, "ann", "another-passphrase") is not None
    with pytest.raises(StoreError, match="at least 8"):
        users.set_password(db, "ann", "short")
    assert users.authenticate(db, "ann", "another-passphrase") is not None  # unchanged by the refusal


def test_a_role_can_change(db: Database) -> None:
    users.add_user(db, "ann", PASSWORD)
    users.set_role(db, "ann", "reviewer")
    assert users.user(db, "ann").role == "reviewer"
    with pytest.raises(StoreError, match="a role is one of annotator, reviewer"):
        users.set_role(db, "ann", "admin")
    assert users.user(db, "ann").role == "reviewer"


@pytest.mark.parametrize("name", ["", "   ", "a:b", "x" * 65, "tab\there", "new\nline"])
def test_bad_names_are_refused(db: Database, name: str) -> None:
    with pytest.raises(StoreError, match="1 to 64 printable characters"):
        users.add_user(db, name, PASSWORD)
    assert not users.has_users(db)


def test_bad_roles_and_short_passwords_are_refused(db: Database) -> None:
    with pytest.raises(StoreError, match="a role is one of"):
        users.add_user(db, "ann", PASSWORD, "admin")
    with pytest.raises(StoreError, match="at least 8 characters"):
        users.add_user(db, "ann", "1234567")
    assert not users.has_users(db)
    assert ROLES == ("annotator", "reviewer")


def test_a_name_is_taken_once(db: Database) -> None:
    users.add_user(db, "ann", PASSWORD)
    for taken in ("ann", "  ann "):
        with pytest.raises(StoreError, match="already a user named 'ann'"):
            users.add_user(db, taken, "other-password")
    assert users.authenticate(db, "ann", PASSWORD) is not None  # the first one's password stays
    assert len(users.users(db)) == 1


def test_changing_an_unknown_user_is_refused(db: Database) -> None:
    for change in (
        lambda: users.set_password(db, "nobody", PASSWORD),
        lambda: users.set_role(db, "nobody", "reviewer"),
        lambda: users.set_disabled(db, "nobody", True),
        lambda: users.user(db, "nobody"),
    ):
        with pytest.raises(StoreError, match="no user named 'nobody'"):
            change()


def test_a_malformed_stored_hash_never_matches() -> None:
    for stored in ("", "plain", "bcrypt$1$2$3$AAAA$AAAA", "scrypt$x$8$1$AAAA$AAAA", "scrypt$32768$8$1$!!$AAAA"):
        assert not users.password_matches(PASSWORD, stored)
    assert users.password_matches(PASSWORD, users.hash_password(PASSWORD))

"""The people of a project: named users with a role (`records.ROLES`) and a password, stored hashed.

Passwords are hashed with scrypt (Python's `hashlib.scrypt`, memory-hard, a random 16-byte salt per
user) and compared in constant time; neither the password nor its hash ever leaves this module. A
project without users is one person's: the page asks for no login and names no one.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os

from sqlalchemy import Row, func, insert, select, update

from dermaseg.core.annotation.project.database import Database
from dermaseg.core.annotation.project.records import ROLES, User, utc_now
from dermaseg.core.annotation.project.schema import users as U
from dermaseg.core.errors import StoreError

MIN_PASSWORD_LENGTH = 8
# scrypt cost N=2^15, r=8, p=1: 32 MiB and ~70 ms per check here (OWASP lists N=2^17 for servers with
# many logins; a laptop's annotation server has few, and 128 MiB per login would count against its memory).
_N, _R, _P = 2**15, 8, 1
_DUMMY = f"scrypt${_N}${_R}${_P}$AAAAAAAAAAAAAAAAAAAAAA==$" + "A" * 43 + "="  # checked for unknown users too

_COLUMNS = (U.c.id, U.c.name, U.c.role, U.c.created_utc, U.c.disabled)


def hash_password(password: str) -> str:
    """`scrypt$N$r$p$salt$hash` (base64) of the password with a new random salt."""
    salt = os.urandom(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=_N, r=_R, p=_P, maxmem=64 * 2**20, dklen=32)
    return f"scrypt${_N}${_R}${_P}${base64.b64encode(salt).decode()}${base64.b64encode(digest).decode()}"


def password_matches(password: str, stored: str) -> bool:
    """True when `password` hashes to `stored` (compared in constant time); False for a malformed hash."""
    try:
        kind, n, r, p, salt, digest = stored.split("$")
        if kind != "scrypt":
            return False
        want = base64.b64decode(digest)
        got = hashlib.scrypt(
            password.encode(), salt=base64.b64decode(salt), n=int(n), r=int(r), p=int(p), maxmem=64 * 2**20,
            dklen=len(want),
        )  # fmt: skip
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(got, want)


def check_name(name: str) -> str:
    """The name stripped; StoreError unless it is 1-64 printable characters without ':'."""
    name = str(name).strip()
    if not name or len(name) > 64 or not name.isprintable() or ":" in name:
        raise StoreError(f"a user name is 1 to 64 printable characters without ':', got {name!r}")
    return name


def check_password(password: str) -> str:
    if len(password) < MIN_PASSWORD_LENGTH:
        raise StoreError(f"a password needs at least {MIN_PASSWORD_LENGTH} characters")
    return password


def check_role(role: str) -> str:
    if role not in ROLES:
        raise StoreError(f"a role is one of {', '.join(ROLES)}, got {role!r}")
    return role


def _user(row: Row) -> User:
    return User(row[0], row[1], row[2], row[3], bool(row[4]))


def add_user(db: Database, name: str, password: str, role: str = "annotator") -> User:
    """Add a person; StoreError when the name is taken or the name, password or role is not acceptable."""
    name, role = check_name(name), check_role(role)
    hashed = hash_password(check_password(password))  # before the transaction: ~50 ms
    with db.write() as c:
        if c.execute(select(U.c.id).where(U.c.name == name)).first() is not None:
            raise StoreError(f"there is already a user named {name!r}")
        c.execute(insert(U).values(name=name, password_hash=hashed, role=role, created_utc=utc_now()))
    return user(db, name)


def users(db: Database) -> list[User]:
    """Every user, by name."""
    return [_user(r) for r in db.query(select(*_COLUMNS).order_by(U.c.name))]


def user(db: Database, name: str) -> User:
    """The user of that name; StoreError when there is none."""
    rows = db.query(select(*_COLUMNS).where(U.c.name == str(name).strip()))
    if not rows:
        raise StoreError(f"no user named {name!r} in this project")
    return _user(rows[0])


def has_users(db: Database) -> bool:
    """True when the project has at least one user (then the page requires a login)."""
    return bool(db.query(select(func.count()).select_from(U))[0][0])


def authenticate(db: Database, name: str, password: str) -> User | None:
    """The user when `name` and `password` match an enabled user, else None. Takes as long for an
    unknown name as for a wrong password (a dummy hash is checked), so names cannot be probed by time."""
    rows = db.query(select(*_COLUMNS, U.c.password_hash).where(U.c.name == str(name).strip()))
    stored = rows[0][5] if rows else _DUMMY
    ok = password_matches(password, stored)
    if not rows or not ok or rows[0][4]:
        return None
    return _user(rows[0])


def set_password(db: Database, name: str, password: str) -> None:
    hashed = hash_password(check_password(password))
    _set(db, name, password_hash=hashed)


def set_role(db: Database, name: str, role: str) -> None:
    _set(db, name, role=check_role(role))


def set_disabled(db: Database, name: str, disabled: bool) -> None:
    """Disable (or enable again) a user: a disabled user cannot log in; their work stays."""
    _set(db, name, disabled=int(disabled))


def _set(db: Database, name: str, **values: object) -> None:
    with db.write() as c:
        if c.execute(update(U).where(U.c.name == str(name).strip()).values(**values)).rowcount != 1:
            raise StoreError(f"no user named {name!r} in this project")

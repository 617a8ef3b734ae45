"""A real, throwaway PostgreSQL server for the tests: `initdb` + `pg_ctl` in a temporary folder, on a free
loopback port, removed at the end.

    with PostgresCluster.create() as cluster:
        url = cluster.create_database("t1")  # postgresql+psycopg://postgres:PASSWORD@127.0.0.1:PORT/t1

Logins over TCP need a password (scram-sha-256), so tests can log in with one and see a wrong one refused;
the unix socket, in the cluster's private folder, trusts its owner (for debugging: `psql -h FOLDER -U postgres`).
`initdb` refuses to run as root: as root the folder belongs to the `postgres` user and the server's programs
run as that user through `runuser`; otherwise they run as the current user.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import re
import secrets
import shlex
import shutil
import socket
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from glob import glob
from pathlib import Path
from typing import Literal
from urllib.parse import quote

import psycopg
from psycopg import sql

SUPERUSER = "postgres"
LOOPBACK = "127.0.0.1"
_DBNAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")  # needs no quoting in SQL nor in a URL
# Throwaway settings. fsync off: a test never survives an OS crash, and an immediate stop or a killed client
# still recovers from the WAL in the page cache. 200 connections: 8 processes with SQLAlchemy's default pools.
_SETTINGS = f"""
listen_addresses = '{LOOPBACK}'
max_connections = 200
fsync = off
full_page_writes = off
"""


class PostgresClusterError(RuntimeError):
    """A server program failed; the message carries its output or the end of the server log."""


def find_bindir() -> Path | None:
    """The folder holding PostgreSQL's server programs (`initdb`, `pg_ctl`): `pg_config --bindir`, else the
    newest `/usr/lib/postgresql/*/bin` (Debian keeps them off PATH), else PATH; None when not installed."""
    candidates: list[Path] = []
    if pg_config := shutil.which("pg_config"):
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            out = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True, timeout=10, check=True)
            candidates.append(Path(out.stdout.strip()))
    versions = glob("/usr/lib/postgresql/*/bin")
    candidates += [Path(p) for p in sorted(versions, key=lambda p: int(re.sub(r"\D", "", p) or 0), reverse=True)]
    if initdb := shutil.which("initdb"):
        candidates.append(Path(initdb).parent)
    return next((d for d in candidates if (d / "initdb").is_file() and (d / "pg_ctl").is_file()), None)


def _free_port() -> int:
    """A TCP port free on the loopback address now (the OS's choice; it may be taken before the server binds)."""
    with socket.socket() as s:
        s.bind((LOOPBACK, 0))
        return s.getsockname()[1]


@dataclass(frozen=True)
class PostgresCluster:
    """One running PostgreSQL server owned by the tests. Make it with `create()`; `close()` (or leaving the
    `with` block) stops it and deletes its folder. The port and password stay the same across stop()/start(),
    so URLs made before a restart work after it."""

    root: Path  # the private folder: data/, the server log, the unix socket
    bindir: Path
    port: int
    password: str  # the superuser's, over TCP
    run_as: tuple[str, ...]  # the command prefix that runs the server programs: ("runuser", "-u", "postgres", "--")
    watchdog: subprocess.Popen | None = None  # stops the server if this process dies without close()

    @classmethod
    def create(cls, bindir: Path | None = None, attempts: int = 3) -> PostgresCluster:
        """initdb a new cluster in a temporary folder and start it on a free loopback port (a few seconds)."""
        bindir = bindir or find_bindir()
        if bindir is None:
            raise PostgresClusterError("PostgreSQL's server programs (initdb, pg_ctl) are not installed")
        root = Path(tempfile.mkdtemp(prefix="dermaseg-pg-"))
        run_as: tuple[str, ...] = ()
        try:
            password = secrets.token_urlsafe(18)
            pwfile = root / "pwfile"
            pwfile.write_text(password + "\n")
            if os.geteuid() == 0:  # initdb refuses root
                try:
                    user = pwd.getpwnam(SUPERUSER)
                except KeyError:
                    raise PostgresClusterError(
                        f"running as root needs the '{SUPERUSER}' user (Debian's postgresql package makes it)"
                    ) from None
                for path in (root, pwfile):
                    os.chown(path, user.pw_uid, user.pw_gid)
                run_as = ("runuser", "-u", SUPERUSER, "--")
            cluster = cls(root, bindir, 0, password, run_as)
            auth = ("-U", SUPERUSER, f"--pwfile={pwfile}", "--auth-local=trust", "--auth-host=scram-sha-256")
            # C collation: text sorts as in SQLite (BINARY). --no-sync: a throwaway cluster.
            cluster._run("initdb", "-D", str(root / "data"), *auth, "--encoding=UTF8", "--locale=C", "--no-sync")
            pwfile.unlink()
            with open(root / "data" / "postgresql.conf", "a") as conf:
                conf.write(_SETTINGS + f"unix_socket_directories = '{root}'\n")
            for attempt in range(attempts):  # another process may take the free port before the server binds it
                cluster = cls(root, bindir, _free_port(), password, run_as, cluster._start_watchdog())
                try:
                    cluster.start()
                    return cluster
                except PostgresClusterError as e:
                    cluster._stop_watchdog()
                    if attempt + 1 == attempts or "already in use" not in str(e):
                        raise
        except BaseException:
            shutil.rmtree(root, ignore_errors=True)
            raise
        raise AssertionError("unreachable")

    def url(
        self, dbname: str = "postgres", user: str = SUPERUSER, password: str | None = None, *, scheme: str = ""
    ) -> str:
        """`postgresql+psycopg://USER:PASSWORD@127.0.0.1:PORT/DBNAME` (SQLAlchemy's form; `scheme="postgresql"`
        gives libpq's). `password` None: the superuser's; "": none in the URL."""
        password = self.password if password is None else password
        secret = f":{quote(password, safe='')}" if password else ""
        return f"{scheme or 'postgresql+psycopg'}://{quote(user, safe='')}{secret}@{LOOPBACK}:{self.port}/{dbname}"

    def create_database(self, name: str) -> str:
        """Make an empty database `name` (lower-case letters, digits, _) and return its `url()`."""
        if not _DBNAME.fullmatch(name):
            raise ValueError(f"database name {name!r}: use lower-case letters, digits and _ (at most 63)")
        self.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return self.url(name)

    def drop_database(self, name: str) -> None:
        """Drop database `name`, closing any connection still open on it (a test's leftover pool)."""
        self.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))

    def execute(self, statement: sql.Composable | str, dbname: str = "postgres") -> None:
        """Run one statement as the superuser, outside a transaction (CREATE DATABASE, CREATE ROLE...)."""
        with psycopg.connect(self.url(dbname, scheme="postgresql"), autocommit=True, connect_timeout=10) as conn:
            conn.execute(statement)

    def start(self) -> None:
        """Start the server and wait until it accepts connections."""
        log = self.root / "server.log"
        seen = log.stat().st_size if log.exists() else 0
        try:
            options = ("-l", str(log), "-o", f"-p {self.port}", "-w", "-t", "60")
            self._run("pg_ctl", "-D", str(self.root / "data"), *options, "start")
        except PostgresClusterError as e:
            tail = log.read_bytes()[seen:][-2000:].decode(errors="replace") if log.exists() else "(none)"
            raise PostgresClusterError(f"{e}\nserver log:\n{tail}") from None

    def stop(self, mode: Literal["smart", "fast", "immediate"] = "immediate") -> None:
        """Stop the server (default: at once, like a crash; `start()` then recovers)."""
        self._run(*self._stop_args(mode))

    def close(self) -> None:
        """Stop the server if it runs and delete the folder. Safe to call twice."""
        self._stop_watchdog()
        if (self.root / "data" / "postmaster.pid").exists():
            with contextlib.suppress(PostgresClusterError):
                self.stop()
        shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> PostgresCluster:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _stop_args(self, mode: str) -> tuple[str, ...]:
        return ("pg_ctl", "-D", str(self.root / "data"), "-m", mode, "-w", "stop")

    def _run(self, program: str, *args: str) -> None:
        cmd = [*self.run_as, str(self.bindir / program), *args]
        done = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=120)
        if done.returncode:
            raise PostgresClusterError(f"{program} failed ({done.returncode}): {done.stdout.strip()}")

    def _start_watchdog(self) -> subprocess.Popen:
        """A shell that waits for this process to end, then stops the server and deletes the folder: a test run
        killed outright (SIGKILL, a CI timeout) leaves no server behind. `close()` ends it first."""
        stop = shlex.join([*self.run_as, str(self.bindir / "pg_ctl"), *self._stop_args("immediate")[1:]])
        script = f'while kill -0 "$1" 2>/dev/null; do sleep 1; done; {stop}; rm -rf {shlex.quote(str(self.root))}'
        return subprocess.Popen(
            ["sh", "-c", script, "sh", str(os.getpid())],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,  # survives the ctrl-c sent to pytest's process group, which close() handles
        )

    def _stop_watchdog(self) -> None:
        if self.watchdog is not None and self.watchdog.poll() is None:
            self.watchdog.terminate()
            self.watchdog.wait(timeout=10)


if __name__ == "__main__":  # `python tests/postgres_cluster.py`: start one, print its URL, stop on Enter
    with PostgresCluster.create() as c:
        print(c.url(), file=sys.stderr)
        input("Enter stops the server and deletes its folder. ")

"""People and roles on the page and in the CLI (issue 20): `dermaseg project user ...` (real subprocesses, passwords
on stdin), the page served with a login as the project's users (throttled as `--auth` is), every save named after
the logged-in user whatever the client sends, and no password in any log line or message."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from devtools import load_test
from gradio_client import Client

from dermaseg.core.annotation.project import Project
from dermaseg.core.evaluation.dataset import box_from_mask
from dermaseg.webui.cli.main import main
from dermaseg.webui.login import LoginLimits, project_login

ANN = ("ann", "ann-secret-passphrase")
BOB = ("bob", "bob-secret-passphrase")
CAROL = ("carol", "carol-secret-passphrase")  # disabled
SECRETS = (ANN[1], BOB[1], CAROL[1])


def cli(*args: str, stdin: str | None = None, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """`python -m dermaseg.webui.cli ARGS`, stdin given (or none: /dev/null, not a terminal)."""
    return subprocess.run(
        [sys.executable, "-m", "dermaseg.webui.cli", *args],
        input=stdin,
        stdin=subprocess.DEVNULL if stdin is None else None,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **(env or {})},
    )


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    (tmp_path / "proj").mkdir()
    Project.init(tmp_path / "proj").close()
    return tmp_path / "proj"


# --------------------------------------------------------------------------------------------------
# the CLI


def test_user_commands_in_a_real_process(folder: Path) -> None:
    r = cli("project", "user", "list", str(folder))
    assert r.returncode == 0 and "no users; the page asks for no login" in r.stdout

    r = cli("project", "user", "add", str(folder), "ann", "--password-stdin", stdin=ANN[1] + "\n")
    assert r.returncode == 0, r.stderr
    assert "added 'ann' (annotator)" in r.stdout and "now requires a login" in r.stdout
    r = cli("project", "user", "add", str(folder), "bob", "--role", "reviewer", "--password-stdin", stdin=BOB[1])
    assert r.returncode == 0 and "added 'bob' (reviewer)" in r.stdout and "now requires" not in r.stdout

    r = cli("project", "user", "list", str(folder))
    rows = [line.split() for line in r.stdout.splitlines()]
    assert rows[0][:3] == ["name", "role", "state"]
    assert [row[:3] for row in rows[1:]] == [["ann", "annotator", "enabled"], ["bob", "reviewer", "enabled"]]

    r = cli("project", "user", "passwd", str(folder), "ann", "--password-stdin", stdin="a-new-passphrase\n")
    assert r.returncode == 0 and "changed the password of 'ann'" in r.stdout
    assert cli("project", "user", "role", str(folder), "ann", "--role", "reviewer").stdout.strip() == "'ann' (reviewer)"
    r = cli("project", "user", "disable", str(folder), "bob")
    assert r.returncode == 0 and "can no longer log in" in r.stdout
    with Project.open(folder, scan=False) as p:
        assert p.authenticate("ann", "a-new-passphrase") is not None and p.authenticate("ann", ANN[1]) is None
        assert p.authenticate("bob", BOB[1]) is None and p.user("bob").disabled
        assert p.user("ann").role == "reviewer"
    r = cli("project", "user", "disable", str(folder), "ann")
    assert "no enabled user is left" in r.stdout
    assert cli("project", "user", "enable", str(folder), "bob").returncode == 0
    with Project.open(folder, scan=False) as p:
        assert p.authenticate("bob", BOB[1]) is not None


def test_users_of_a_project_on_postgresql(tmp_path: Path, postgres_url: str) -> None:
    """The same commands with DERMASEG_DB (a team's project on a server); the page's login checks the server."""
    folder = tmp_path / "laptop"
    folder.mkdir()
    env = {"DERMASEG_DB": postgres_url}
    assert cli("project", "init", str(folder), env=env).returncode == 0
    r = cli("project", "user", "add", str(folder), "ann", "--password-stdin", stdin=ANN[1], env=env)
    assert r.returncode == 0, r.stderr
    r = cli(
        "project", "user", "add", str(folder), "bob", "--role", "reviewer", "--password-stdin", stdin=BOB[1], env=env
    )
    assert r.returncode == 0, r.stderr
    assert cli("project", "user", "disable", str(folder), "bob", env=env).returncode == 0
    r = cli("project", "user", "list", str(folder), env=env)
    assert [line.split()[:3] for line in r.stdout.splitlines()[1:]] == [
        ["ann", "annotator", "enabled"],
        ["bob", "reviewer", "disabled"],
    ]
    assert all(secret not in r.stdout + r.stderr for secret in SECRETS)
    assert not (folder / ".dermaseg" / "project.sqlite").exists()  # the users are on the server
    with Project.open(folder, db=postgres_url, scan=False) as p:
        check = project_login(p)
        assert asyncio.run(check(*ANN)) and not asyncio.run(check(ANN[0], BOB[1]))
        assert not asyncio.run(check(*BOB))  # disabled


@pytest.mark.parametrize(
    ("args", "stdin", "says"),
    [
        (("add", "ann"), ANN[1], "there is already a user named 'ann'"),
        (("add", " ann "), ANN[1], "there is already a user named 'ann'"),
        (("add", "dan"), "short\n", "a password needs at least 8 characters"),
        (("add", "dan"), "\n", "no password on stdin"),
        (("add", "a:b"), ANN[1], "1 to 64 printable characters without ':'"),
        (("add", "dan", "--role", "admin"), ANN[1], "invalid choice: 'admin'"),
        (("passwd", "zed"), ANN[1], "no user named 'zed'"),
        (("role", "zed", "--role", "reviewer"), None, "no user named 'zed'"),
        (("disable", "zed"), None, "no user named 'zed'"),
        (("enable", "zed"), None, "no user named 'zed'"),
    ],
)
def test_bad_input_is_refused_with_a_clear_message(folder: Path, args, stdin, says) -> None:
    with Project.open(folder, scan=False) as p:
        p.add_user(*ANN)
    password = ("--password-stdin",) if args[0] in ("add", "passwd") else ()
    r = cli("project", "user", args[0], str(folder), *args[1:], *password, stdin=stdin)
    assert r.returncode == 2 and says in r.stderr
    assert "Traceback" not in r.stderr and ANN[1] not in r.stdout + r.stderr
    with Project.open(folder, scan=False) as p:
        assert [u.name for u in p.users()] == ["ann"] and p.authenticate(*ANN) is not None


def test_a_password_is_never_taken_from_the_command_line_or_a_non_terminal(folder: Path) -> None:
    r = cli("project", "user", "add", str(folder), "ann")  # stdin is /dev/null: no terminal to ask on
    assert r.returncode == 2 and "give it on stdin with --password-stdin" in r.stderr
    r = cli("project", "user", "add", str(folder), "ann", "--password", ANN[1])
    assert r.returncode == 2 and "unrecognized arguments" in r.stderr
    r = cli("project", "user", "add", "--help")
    assert "a reviewer also annotates" in " ".join(r.stdout.split())
    with Project.open(folder, scan=False) as p:
        assert not p.has_users()


def test_the_terminal_asks_twice(folder: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    """getpass on a terminal (stdin a tty): the two entries must agree, nothing is saved otherwise."""
    answers = iter([ANN[1], ANN[1] + "typo", ANN[1], ANN[1]])
    monkeypatch.setattr("getpass.getpass", lambda prompt="": next(answers))
    monkeypatch.setattr(sys.stdin, "isatty", lambda: True)
    assert main(["project", "user", "add", str(folder), "ann"]) == 2
    assert "the two passwords differ" in capsys.readouterr().err
    assert main(["project", "user", "add", str(folder), "ann"]) == 0
    with Project.open(folder, scan=False) as p:
        assert p.authenticate(*ANN) is not None


class Everything(logging.Handler):
    """Every log record of every logger, at every level, formatted with its arguments."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


@pytest.fixture
def all_logs() -> Iterator[Everything]:
    handler = Everything()
    loggers = [logging.getLogger(), *(logging.getLogger(n) for n in list(logging.root.manager.loggerDict))]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.addHandler(handler)
        lg.setLevel(logging.DEBUG)
    yield handler
    for lg, level in zip(loggers, levels, strict=True):
        lg.removeHandler(handler)
        lg.setLevel(level)


def test_user_add_logs_no_password(folder: Path, monkeypatch: pytest.MonkeyPatch, capfd, all_logs) -> None:
    monkeypatch.setattr(sys, "stdin", io.StringIO(ANN[1] + "\n"))
    assert main(["project", "user", "add", str(folder), "ann", "--password-stdin"]) == 0
    monkeypatch.setattr(sys, "stdin", io.StringIO("short\n"))
    assert main(["project", "user", "passwd", str(folder), "ann", "--password-stdin"]) == 2
    out, err = capfd.readouterr()
    assert "added 'ann'" in out and "at least 8" in err
    assert all_logs.lines, "the log capture saw nothing: it would prove nothing"
    for text in (out, err, *all_logs.lines):
        assert ANN[1] not in text and "short" not in text.replace("a password needs", "")


# --------------------------------------------------------------------------------------------------
# the page, served with the project's users


LIMITS = LoginLimits(free=2, delay_s=0.2, max_delay_s=0.4, lockout_after=5, lockout_s=2.0)


@pytest.fixture(scope="module")
def team(engine, dev_folder, tmp_path_factory) -> Iterator[tuple[str, Project]]:
    """A project with users ann (annotator), bob (reviewer) and carol (disabled), served on 127.0.0.1 without
    --auth: the login is the users'. Yields (url, project)."""
    from dermaseg.core.settings import Settings
    from dermaseg.webui.page.app import build_app, launch

    folder = tmp_path_factory.mktemp("team")
    dev_folder(folder, 2)
    project = Project.init(folder)
    project.add_user(*ANN)
    project.add_user(*BOB, role="reviewer")
    project.add_user(*CAROL)
    project.set_disabled(CAROL[0], True)
    app = build_app(engine, project, Settings.from_env(cache_dir=tmp_path_factory.mktemp("team-cache")))
    url = launch(app, block=False, quiet=True, login_limits=LIMITS)
    yield url, project
    app.close()
    project.close()


def login(url: str, name: str, password: str, address: str = "127.0.0.1") -> int:
    transport = httpx.HTTPTransport(local_address=address)
    with httpx.Client(transport=transport, timeout=60) as http:
        return http.post(url + "login", data={"username": name, "password": password}).status_code


def test_a_project_with_users_requires_their_login_even_on_loopback(team) -> None:
    url, _ = team
    assert httpx.get(url + "config").status_code == 401
    assert login(url, *ANN, address="127.0.0.21") == 200
    assert login(url, *BOB, address="127.0.0.21") == 200
    assert login(url, ANN[0], BOB[1], address="127.0.0.22") == 400  # another user's password
    assert login(url, "nobody", ANN[1], address="127.0.0.23") == 400
    assert login(url, *CAROL, address="127.0.0.24") == 400  # disabled


def test_failed_logins_of_users_are_slowed_then_refused(team) -> None:
    url, _ = team
    answers = [login(url, ANN[0], f"guess-{i}", address="127.0.0.31") for i in range(LIMITS.lockout_after)]
    assert answers == [400] * LIMITS.lockout_after
    assert login(url, *ANN, address="127.0.0.31") == 429  # locked: even the right password
    assert login(url, *ANN, address="127.0.0.32") == 200  # another address is not


def saved_annotator(client: Client, project: Project, image_index: int, typed: str, dev_data) -> str | None:
    """Open an image through the API, box its lesion, Accept with `typed` in the annotator field: who is stored."""
    rec = project.images()[image_index]
    expert = next(c for c in dev_data if c.image.name == Path(rec.path).name).load_mask()
    client.predict(rec.id, api_name="/open_image")
    client.predict(*box_from_mask(expert, margin=8), api_name="/box")
    canvas, _, _ = client.predict(project.labels()[0], typed, api_name="/accept")
    assert json.loads(canvas)["message"].startswith("saved:"), json.loads(canvas)["message"]
    return project.annotations(rec.id)[-1].provenance.annotator


def test_a_save_names_the_logged_in_user_whatever_the_client_sends(team, dev_data) -> None:
    url, project = team
    ann = Client(url, auth=ANN, verbose=False, download_files=False)
    assert saved_annotator(ann, project, 0, "bob", dev_data) == "ann"  # the field says bob: ann is logged in
    bob = Client(url, auth=BOB, verbose=False, download_files=False)
    assert saved_annotator(bob, project, 1, "", dev_data) == "bob"


def test_a_confirmed_replace_names_the_logged_in_user_too(team, dev_data) -> None:
    """Bob redraws a lesion ann saved: Accept asks first, Confirm saves it, and the field's "ann" is ignored."""
    url, project = team
    ann = Client(url, auth=ANN, verbose=False, download_files=False)
    assert saved_annotator(ann, project, 0, "", dev_data) == "ann"
    rec = project.images()[0]
    saved = project.annotations(rec.id)[-1]
    expert = next(c for c in dev_data if c.image.name == Path(rec.path).name).load_mask()
    bob = Client(url, auth=BOB, verbose=False, download_files=False)
    bob.predict(rec.id, api_name="/open_image")
    bob.predict(str(saved.id), api_name="/select_lesion")
    bob.predict(*box_from_mask(expert, margin=20), api_name="/box")
    canvas, _, _ = bob.predict(project.labels()[0], "ann", api_name="/accept")
    assert "Confirm to replace it" in json.loads(canvas)["message"]
    assert project.annotation(saved.id).provenance.annotator == "ann"  # asked first: nothing saved yet
    canvas, _, _ = bob.predict(project.labels()[0], "ann", api_name="/confirm")
    assert json.loads(canvas)["message"].startswith("saved:")
    replaced = project.annotation(saved.id)
    assert replaced.version > saved.version and replaced.provenance.annotator == "bob"


def test_a_user_disabled_after_logging_in_cannot_save(team, dev_data) -> None:
    url, project = team
    project.add_user("dan", "dan-secret-passphrase")
    dan = Client(url, auth=("dan", "dan-secret-passphrase"), verbose=False, download_files=False)
    project.set_disabled("dan", True)
    rec = project.images()[0]
    before = len(project.annotations(rec.id))
    expert = next(c for c in dev_data if c.image.name == Path(rec.path).name).load_mask()
    dan.predict(rec.id, api_name="/open_image")
    dan.predict(*box_from_mask(expert, margin=8), api_name="/box")
    canvas, _, _ = dan.predict(project.labels()[0], "dan", api_name="/accept")
    assert "'dan' is disabled in this project: nothing was saved" in json.loads(canvas)["message"]
    assert len(project.annotations(rec.id)) == before


def test_logins_log_no_password(team, all_logs, capfd) -> None:
    url, _ = team
    assert login(url, ANN[0], "not-the-password-" + BOB[1], address="127.0.0.41") == 400
    assert login(url, *ANN, address="127.0.0.41") == 200
    assert login(url, *CAROL, address="127.0.0.41") == 400
    out, err = capfd.readouterr()
    assert any("login: ann (annotator)" in line for line in all_logs.lines)  # the capture sees the server's logs
    for text in (out, err, *all_logs.lines):
        assert not any(secret in text for secret in SECRETS)


# --------------------------------------------------------------------------------------------------
# `dermaseg serve`


def test_serve_uses_the_users_login_on_any_host(models_dir, folder, tmp_path, monkeypatch, capsys) -> None:
    seen: dict = {}

    def fake_launch(app, **kw):
        seen.update(kw)
        app.close()
        return "http://x/"

    monkeypatch.setattr("dermaseg.webui.page.app.launch", fake_launch)
    cache = load_test.server_cache(models_dir, tmp_path / "cache")
    with Project.open(folder, scan=False) as p:
        p.add_user(*ANN)
    for host in ("127.0.0.1", "0.0.0.0"):
        assert main(["serve", "--project", str(folder), "--cache-dir", str(cache), "--host", host]) == 0
        assert callable(seen["auth"]) and seen["host"] == host
        assert "every visitor must log in as one of the project's users" in capsys.readouterr().out
    assert main(["serve", "--project", str(folder), "--cache-dir", str(cache), "--auth", "x:shared-password"]) == 2
    assert "this project has users" in capsys.readouterr().err

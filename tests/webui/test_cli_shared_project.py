"""A project shared on a real PostgreSQL server, through the real CLI (`--db` / DERMASEG_DB), and what goes
wrong with one: a wrong URL, a refused login, no server, no database, a server gone mid-session, a schema
from a newer dermaseg. Each is a clear message and exit code 2, no traceback, and never the password."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys

import numpy as np
import pytest
from postgres_cluster import PostgresCluster
from sqlalchemy import text

from dermaseg.core.annotation.project import Project
from dermaseg.core.errors import StoreError
from dermaseg.webui.cli.main import main


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "dermaseg.webui.cli", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=120,
    )


def _without_password(url: str) -> tuple[str, str]:
    """(the URL without its password, the password): how a user keeps it out of the command line."""
    head, rest = url.split("://", 1)
    userinfo, host = rest.split("@", 1)
    user, password = userinfo.split(":", 1)
    return f"postgresql://{user}@{host}", password


def test_init_status_export_and_migrate_through_the_cli(dev_folder, tmp_path, postgres_url) -> None:
    folder = tmp_path / "site-a"
    dev_folder(folder, 2)
    url, password = _without_password(postgres_url)
    env = {"PGPASSWORD": password}  # libpq's own: the URL on the command line carries none
    out = _cli("project", "init", str(folder), "--db", url, "--label", "naevus", env=env)
    assert out.returncode == 0, out.stderr
    assert "2 added" in out.stdout and password not in out.stdout + out.stderr
    with Project.open(folder, db=postgres_url) as p:
        rec = p.images()[0]
        m = np.zeros((rec.height, rec.width), bool)
        m[100:300, 200:500] = True
        p.add_annotation(rec.id, m)
    # another computer, no images, the URL in DERMASEG_DB
    empty = tmp_path / "site-b"
    empty.mkdir()
    out = _cli("project", "status", str(empty), "--json", env={**env, "DERMASEG_DB": url})
    assert out.returncode == 0, out.stderr
    status = json.loads(out.stdout)
    assert status["annotations"] == 1 and len(status["scan"]["remote"]) == 2
    out = _cli("project", "export-coco", str(empty), "--out", str(tmp_path / "out.json"), "--db", url, env=env)
    assert out.returncode == 0, out.stderr
    assert len(json.loads((tmp_path / "out.json").read_text())["annotations"]) == 1
    # and back into a folder of its own: a complete SQLite project, images included
    back = tmp_path / "back"
    back.mkdir()
    out = _cli("project", "migrate", str(back), "--from", url, env=env)
    assert out.returncode == 0, out.stderr
    assert "2 image files written" in out.stdout
    out = _cli("project", "status", str(back), "--json")
    assert json.loads(out.stdout)["annotations"] == 1 and json.loads(out.stdout)["scan"]["missing"] == []


@pytest.mark.parametrize(
    "case",
    ["not a url", "another engine", "wrong password", "no server", "no database", "newer schema"],
)
def test_bad_database_input_is_a_clear_message(case, tmp_path, postgres_cluster, postgres_url) -> None:
    folder = tmp_path / "f"
    folder.mkdir()
    secret = postgres_cluster.password
    url = {
        "not a url": "postgresql://user:pw@host:notaport/db",
        "another engine": "mysql://u:s3cret-pw@localhost/db",
        "wrong password": postgres_url.replace(f":{secret}@", ":wrong-password@"),
        "no server": f"postgresql://postgres:{secret}@127.0.0.1:9/nothing",
        "no database": postgres_url.rsplit("/", 1)[0] + "/no_such_db",
        "newer schema": postgres_url,
    }[case]
    expected = {
        "not a url": "not a database URL",
        "another engine": "PostgreSQL only",
        "wrong password": "refused the login",
        "no server": "cannot reach the database server",
        "no database": "no such database",
        "newer schema": "made by a newer dermaseg",
    }[case]
    if case == "newer schema":
        Project.init(folder, db=url).close()
        with Project.open(folder, db=url, scan=False) as p, p._db.write() as c:
            c.execute(text("UPDATE alembic_version SET version_num = 'f00d'"))
    out = _cli("project", "status", str(folder), "--db", url)
    assert out.returncode == 2, out.stdout + out.stderr
    assert expected in out.stderr and "Traceback" not in out.stderr, out.stderr
    for word in ("wrong-password", secret, "s3cret-pw"):
        assert word not in out.stdout + out.stderr


def test_a_server_gone_mid_session_loses_nothing_confirmed_and_comes_back(dev_folder, tmp_path, caplog) -> None:
    """A server of its own (stopped and started here): a save while it is gone is refused with a message,
    the ones before it are kept, and the same open project saves again once the server is back."""
    folder = tmp_path / "f"
    dev_folder(folder, 1)
    caplog.set_level(logging.DEBUG)
    with PostgresCluster.create() as cluster:
        url = cluster.create_database("gone")
        with Project.init(folder, db=url) as p:
            rec = p.images()[0]
            m = np.zeros((rec.height, rec.width), bool)
            m[50:150, 50:150] = True
            first = p.add_annotation(rec.id, m)
            cluster.stop()
            with pytest.raises(StoreError, match="database server") as e:
                p.add_annotation(rec.id, m)
            assert cluster.password not in str(e.value)
            cluster.start()
            second = p.add_annotation(rec.id, m)  # the pool replaces the dropped connections
            assert [a.id for a in p.annotations()] == [first.id, second.id]
    assert cluster.password not in caplog.text


def test_the_cli_never_prints_a_password_in_a_traceback_or_log(tmp_path, postgres_url, capsys) -> None:
    """In-process too: main() turns the refused login into one line."""
    folder = tmp_path / "f"
    folder.mkdir()
    wrong = postgres_url.replace("postgres:", "postgres:x", 1)
    assert main(["project", "status", str(folder), "--db", wrong]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "refused the login" in err and wrong.split(":")[2].split("@")[0] not in err

"""The throwaway PostgreSQL server the store's tests run on (tests/postgres_cluster.py, fixtures in conftest.py):
it answers through SQLAlchemy + psycopg, keeps test databases apart, checks passwords, survives a restart and
listens on loopback only."""

from __future__ import annotations

import ipaddress
import socket

import psutil
import psycopg
import pytest
import sqlalchemy as sa
from postgres_cluster import LOOPBACK, PostgresCluster


def _scalar(url: str, query: str) -> object:
    engine = sa.create_engine(url, poolclass=sa.NullPool)
    try:
        with engine.connect() as conn:
            return conn.execute(sa.text(query)).scalar()
    finally:
        engine.dispose()


def test_answers_through_sqlalchemy_and_psycopg(postgres_url: str) -> None:
    assert postgres_url.startswith("postgresql+psycopg://postgres:")
    assert sa.make_url(postgres_url).host == LOOPBACK
    assert _scalar(postgres_url, "SELECT current_setting('server_version_num')::int") >= 130000
    assert _scalar(postgres_url, "SELECT current_database()") == sa.make_url(postgres_url).database


def test_test_databases_are_isolated(postgres_cluster: PostgresCluster, postgres_url: str) -> None:
    other = postgres_cluster.create_database("isolation_other")
    try:
        engine = sa.create_engine(postgres_url)
        with engine.begin() as conn:
            conn.execute(sa.text("CREATE TABLE t (x int)"))
            conn.execute(sa.text("INSERT INTO t VALUES (1)"))
        engine.dispose()
        assert _scalar(postgres_url, "SELECT count(*) FROM t") == 1
        assert _scalar(other, "SELECT to_regclass('public.t')") is None  # the table exists in one database only
    finally:
        postgres_cluster.drop_database("isolation_other")
    assert _scalar(postgres_url, "SELECT count(*) FROM pg_database WHERE datname = 'isolation_other'") == 0


def test_a_wrong_password_is_refused(postgres_cluster: PostgresCluster, postgres_url: str) -> None:
    dbname = sa.make_url(postgres_url).database
    assert dbname is not None
    for password in ("wrong", ""):  # a wrong one, and none at all
        with pytest.raises(psycopg.OperationalError, match="password"):
            psycopg.connect(postgres_cluster.url(dbname, password=password, scheme="postgresql"), connect_timeout=10)
    with pytest.raises(sa.exc.OperationalError, match="password authentication failed"):
        _scalar(postgres_cluster.url(dbname, password="wrong"), "SELECT 1")


def test_a_role_with_a_password_logs_in(postgres_cluster: PostgresCluster, postgres_url: str) -> None:
    dbname = sa.make_url(postgres_url).database
    assert dbname is not None
    postgres_cluster.execute("CREATE ROLE annotator_a LOGIN PASSWORD 'p@ss:w/rd'")  # URL-special characters
    try:
        assert _scalar(postgres_cluster.url(dbname, "annotator_a", "p@ss:w/rd"), "SELECT current_user") == "annotator_a"
        with pytest.raises(sa.exc.OperationalError, match="password authentication failed"):
            _scalar(postgres_cluster.url(dbname, "annotator_a", "p@ss:w/rd!"), "SELECT 1")
    finally:
        postgres_cluster.execute("DROP ROLE annotator_a")


def test_stop_then_start(postgres_cluster: PostgresCluster, postgres_url: str) -> None:
    engine = sa.create_engine(postgres_url)
    with engine.begin() as conn:
        conn.execute(sa.text("CREATE TABLE kept (x int)"))
        conn.execute(sa.text("INSERT INTO kept VALUES (42)"))
    held = engine.connect()  # a connection open when the server goes away
    postgres_cluster.stop()
    try:
        with pytest.raises(sa.exc.OperationalError):
            held.execute(sa.text("SELECT 1"))
        with pytest.raises(sa.exc.OperationalError, match="Connection refused|connection failed"):
            _scalar(postgres_url, "SELECT 1")
    finally:
        held.close()
        postgres_cluster.start()
    # The same URL works again, and what was committed before the crash-like stop survived it.
    assert _scalar(postgres_url, "SELECT x FROM kept") == 42
    engine.dispose()


def test_listens_on_loopback_only(postgres_cluster: PostgresCluster, postgres_url: str) -> None:
    assert _scalar(postgres_url, "SHOW listen_addresses") == LOOPBACK
    with socket.create_connection((LOOPBACK, postgres_cluster.port), timeout=5):
        pass  # the port is the server's
    others = [
        a.address
        for addrs in psutil.net_if_addrs().values()
        for a in addrs
        if a.family == socket.AF_INET and not ipaddress.ip_address(a.address).is_loopback
    ]
    for address in others:  # the machine's other addresses: nothing listens there
        with pytest.raises(ConnectionRefusedError), socket.create_connection((address, postgres_cluster.port), 5):
            pass


def test_close_stops_the_server_and_deletes_its_folder(postgres_cluster: PostgresCluster) -> None:
    """A second, short-lived cluster (the session's stays up): close() leaves nothing behind."""
    with PostgresCluster.create(postgres_cluster.bindir) as cluster:
        url = cluster.create_database("short_lived")
        assert _scalar(url, "SELECT 1") == 1
    assert not cluster.root.exists()
    assert cluster.watchdog is not None and cluster.watchdog.poll() is not None  # ended, not left waiting
    with pytest.raises(sa.exc.OperationalError):
        _scalar(url, "SELECT 1")

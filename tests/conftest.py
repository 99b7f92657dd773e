"""Shared fixtures: real databases (a SQLite file, a fresh PostgreSQL database per test).

PostgreSQL tests run when NUMSYNC_TEST_DATABASE_URL names a server; without it they skip,
unless NUMSYNC_REQUIRE_POSTGRES=1 (CI sets it), in which case a missing server fails the run
instead of letting every PostgreSQL test skip quietly.
"""

from __future__ import annotations

import logging
import os
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
import structlog
from sqlalchemy.engine import make_url

from numsync.daemon.db import upgrade

PG_ENV = "NUMSYNC_TEST_DATABASE_URL"


def _pg_reachable(url: str) -> bool:
    parsed = make_url(url)
    try:
        with socket.create_connection((parsed.host or "127.0.0.1", parsed.port or 5432), timeout=0.5):
            return True
    except OSError:
        return False


def _require_pg() -> str:
    url = os.environ.get(PG_ENV)
    required = os.environ.get("NUMSYNC_REQUIRE_POSTGRES") == "1"
    if not url:
        if required:
            pytest.fail(f"{PG_ENV} is not set but NUMSYNC_REQUIRE_POSTGRES=1")
        pytest.skip(f"PostgreSQL tests need {PG_ENV}")
    if not _pg_reachable(url):
        if required:
            pytest.fail(f"PostgreSQL at {make_url(url).render_as_string(hide_password=True)} is not reachable")
        pytest.skip("PostgreSQL server not reachable")
    return url


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A brand-new PostgreSQL database for one test, dropped afterwards."""
    base = _require_pg()
    name = f"numsync_t_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(base, isolation_level="AUTOCOMMIT", poolclass=sa.pool.NullPool)
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(base).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'numsync.db'}"


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Each test using this runs twice: on a SQLite file and on PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'numsync.db'}"
    url = str(request.getfixturevalue("pg_url"))
    upgrade(url)  # as `numsync db upgrade` would; PostgreSQL is never migrated implicitly
    return url


@pytest.fixture(autouse=True)
def _reset_logging() -> Iterator[None]:
    """Each test starts with structlog's defaults, whatever an earlier test configured."""
    structlog.reset_defaults()
    structlog.contextvars.clear_contextvars()
    yield
    structlog.contextvars.clear_contextvars()
    structlog.reset_defaults()
    root = logging.getLogger()
    for handler in list(root.handlers):
        if not type(handler).__module__.startswith("_pytest"):
            root.removeHandler(handler)

"""A migrated scratch database for one benchmark run, on SQLite or PostgreSQL.

SQLite: a file in the run's work directory. PostgreSQL: a database ``name`` next to
NUMSYNC_TEST_DATABASE_URL's (default: the CI machine's), dropped and made again, so each run starts
from empty tables. Either way the schema is made here, before any timing.
"""

from __future__ import annotations

import os
from pathlib import Path

import sqlalchemy as sa

from numsync.daemon.db import upgrade

DEFAULT_POSTGRES = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


def scratch_database(db: str, workdir: Path, name: str) -> str:
    """The URL of an empty, migrated database ``name`` (``db``: sqlite or postgres)."""
    if db == "sqlite":
        url = f"sqlite:///{workdir / f'{name}.db'}"
    else:
        _admin(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)", f"CREATE DATABASE {name}")
        url = _postgres_base().rsplit("/", 1)[0] + f"/{name}"
    upgrade(url)
    return url


def drop_scratch_database(db: str, name: str) -> None:
    """Drop the PostgreSQL database ``name`` (a SQLite file goes with its work directory)."""
    if db != "sqlite":
        _admin(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def _postgres_base() -> str:
    return os.environ.get("NUMSYNC_TEST_DATABASE_URL", DEFAULT_POSTGRES)


def _admin(*statements: str) -> None:
    admin = sa.create_engine(_postgres_base(), isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as c:
            for statement in statements:
                c.execute(sa.text(statement))
    finally:
        admin.dispose()

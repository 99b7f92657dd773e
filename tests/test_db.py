"""The database layer's own behaviour: a bulk transaction's log copy on SQLite (``LogCopy``)."""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import sessionmaker

from numsync.daemon.db import AUTOCHECKPOINT_PAGES, LogCopy, make_engine

ROWS = 3000  # of 4 KiB each: 12 MiB, three times the log SQLite copies at commit by itself
BLOB = b"x" * 4096


def _autocheckpoints(engine: sa.Engine) -> set[int]:
    """The automatic checkpoint setting of every connection the pool holds."""
    seen, held = set(), []
    try:
        for _ in range(engine.pool.checkedin()):
            conn = engine.connect()
            held.append(conn)
            seen.add(conn.exec_driver_sql("PRAGMA wal_autocheckpoint").scalar_one())
    finally:
        for conn in held:
            conn.close()
    return seen


@pytest.fixture
def engine(tmp_path: Path) -> sa.Engine:
    engine = make_engine(f"sqlite:///{tmp_path / 'numsync.db'}")
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE bulk (data BLOB)")
    yield engine
    engine.dispose()


def test_a_bulk_commit_leaves_the_log_to_the_copy_which_puts_it_in_the_file(tmp_path: Path, engine: sa.Engine) -> None:
    db, wal = tmp_path / "numsync.db", tmp_path / "numsync.db-wal"
    copy = LogCopy(sessionmaker(engine))
    with copy.transaction() as session:
        session.connection().exec_driver_sql("INSERT INTO bulk VALUES (?)", [(BLOB,)] * ROWS)
    # committed: another connection reads every row, which are still only in the log
    with engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT count(*) FROM bulk").scalar_one() == ROWS
    assert wal.stat().st_size > ROWS * 4096 > 20 * db.stat().st_size
    assert _autocheckpoints(engine) == {AUTOCHECKPOINT_PAGES}  # only that transaction went without

    copy.start()
    copy.wait()
    assert db.stat().st_size > ROWS * 4096
    with engine.connect() as conn:
        busy, logged, copied = conn.exec_driver_sql("PRAGMA wal_checkpoint(PASSIVE)").one()
        assert (busy, copied) == (0, logged)
        assert conn.exec_driver_sql("SELECT count(*) FROM bulk").scalar_one() == ROWS


def test_a_failed_bulk_transaction_writes_nothing_and_commits_copy_the_log_again(
    tmp_path: Path, engine: sa.Engine
) -> None:
    copy = LogCopy(sessionmaker(engine))

    def snapshot_that_fails() -> None:
        with copy.transaction() as session:
            session.connection().exec_driver_sql("INSERT INTO bulk VALUES (?)", [(BLOB,)] * ROWS)
            raise RuntimeError("listing failed")

    with pytest.raises(RuntimeError, match="listing failed"):
        snapshot_that_fails()
    assert _autocheckpoints(engine) == {AUTOCHECKPOINT_PAGES}
    copy.start()  # nothing was committed: the copy has nothing to do, and must not fail
    copy.wait()
    with engine.begin() as conn:
        assert conn.exec_driver_sql("SELECT count(*) FROM bulk").scalar_one() == 0
        conn.exec_driver_sql("INSERT INTO bulk VALUES (?)", [(BLOB,)] * ROWS)
    # an ordinary commit copies the log at once, as SQLite does by default
    assert (tmp_path / "numsync.db").stat().st_size > ROWS * 4096


@pytest.mark.postgres
def test_on_postgresql_a_bulk_transaction_is_a_plain_one(pg_url: str) -> None:
    engine = make_engine(pg_url)
    try:
        with engine.begin() as conn:
            conn.exec_driver_sql("CREATE TABLE bulk (data bytea)")
        copy = LogCopy(sessionmaker(engine))
        with copy.transaction() as session:
            session.connection().exec_driver_sql("INSERT INTO bulk VALUES (%s)", [(BLOB,)] * 10)
        copy.start()
        copy.wait()
        with engine.connect() as conn:
            assert conn.exec_driver_sql("SELECT count(*) FROM bulk").scalar_one() == 10
    finally:
        engine.dispose()

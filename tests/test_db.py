"""The database layer's own behaviour: a bulk transaction's log copy on SQLite (``LogCopy``), and
the migration the code says it works with."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic.script import ScriptDirectory
from sqlalchemy.orm import Session, sessionmaker

from numsync.daemon.db import (
    AUTOCHECKPOINT_PAGES,
    HEAD_REVISION,
    LogCopy,
    alembic_config,
    bulk_insert,
    make_engine,
    upgrade,
)
from numsync.daemon.models import Action, Run

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


def test_the_code_names_the_newest_migration_as_its_own(tmp_path: Path) -> None:
    # Commands compare a database's migration with HEAD_REVISION rather than load every script to
    # learn the head: a new migration must move it (one head, or alembic raises here).
    assert ScriptDirectory.from_config(alembic_config("sqlite://")).get_current_head() == HEAD_REVISION
    url = f"sqlite:///{tmp_path / 'fresh.db'}"
    assert upgrade(url) == HEAD_REVISION


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


def test_bulk_insert_writes_what_the_orm_would(db_url: str) -> None:
    """``bulk_insert`` (COPY on PostgreSQL) writes each value as its column's type does: JSON
    encoded (None as JSON null, like the ORM), times checked to be aware, plain defaults filled in."""
    engine = make_engine(db_url)
    try:
        upgrade(db_url, engine)
        when = datetime(2026, 11, 27, 12, 30, 15, 250000, tzinfo=timezone(timedelta(hours=2)))
        run_id = str(uuid.uuid4())
        with Session(engine) as session, session.begin():
            session.add(Run(id=run_id, seq=1, mode="plan", started_at=when))
        with Session(engine) as session, session.begin():
            bulk_insert(session, Action, [
                {"run_id": run_id, "source": "s", "number": n, "action": "import", "state": "planned",
                 "request": request, "detail": "d'é\t\\n", "created_at": when}
                for n, request in (("+1", {"number": "+1", "tags": ["a", None]}), ("+2", None))])
        with Session(engine) as session:
            got = session.execute(sa.select(Action).order_by(Action.number)).scalars().all()
            assert [(a.number, a.request, a.attempts, a.detail, a.created_at, a.vapi_id) for a in got] == [
                ("+1", {"number": "+1", "tags": ["a", None]}, 0, "d'é\t\\n", when, None),
                ("+2", None, 0, "d'é\t\\n", when, None)]
            assert session.execute(sa.select(sa.func.count()).where(Action.request.is_(None))).scalar_one() == 0
        refused = pytest.raises((sa.exc.StatementError, ValueError), match="naive")
        with Session(engine) as session, session.begin(), refused:
            bulk_insert(session, Action, [{"run_id": run_id, "source": "s", "number": "+3", "action": "import",
                                           "state": "planned", "created_at": datetime(2026, 1, 1)}])
        with Session(engine) as session:
            assert session.execute(sa.select(sa.func.count()).select_from(Action)).scalar_one() == 2
    finally:
        engine.dispose()

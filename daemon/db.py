"""Database engine and migration state: one place that knows SQLite from PostgreSQL.

Commands call ``open_database`` before anything else, so a database that is unreachable, behind
the code's migrations or ahead of them fails with one clear line instead of a stack trace from
the middle of a run. An empty SQLite file is upgraded on first use because that is what a
person trying numsync on a laptop expects; PostgreSQL is migrated explicitly (a Job in
Kubernetes), never by whichever replica starts first.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import sqlalchemy as sa
import structlog
from alembic import command
from alembic.config import Config as AlembicConfig
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import ArgumentError, NoSuchModuleError, OperationalError, SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import NullPool

from numsync.errors import DatabaseError

__all__ = [
    "HEAD_REVISION",
    "LogCopy",
    "alembic_config",
    "bulk_insert",
    "can_copy",
    "copy_rows",
    "current_revision",
    "make_engine",
    "open_database",
    "safe_url",
    "upgrade",
]

log = structlog.get_logger(__name__)

AUTOCHECKPOINT_PAGES = 1000  # SQLite's default, restored after a bulk transaction (LogCopy)


def can_copy(conn: sa.Connection) -> bool:
    """Whether ``copy_rows`` can write through this connection: PostgreSQL's COPY, as psycopg 3 sends it."""
    return conn.dialect.name == "postgresql" and conn.dialect.driver == "psycopg"


def copy_rows(conn: sa.Connection, statement: str, rows: Iterable[Sequence[Any]],
              types: Sequence[str] | None = None) -> None:
    """Send ``rows`` through ``statement`` (a ``COPY ... FROM STDIN``), each value as psycopg dumps it,
    or, given ``types``, in binary as those PostgreSQL types."""
    cursor = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
    try:
        with cursor.copy(statement) as copy:
            if types is not None:
                copy.set_types(types)
            for row in rows:
                copy.write_row(row)
    finally:
        cursor.close()


def bulk_insert(session: Session, model: type[Any], rows: list[dict[str, Any]]) -> None:
    """Insert ``rows`` (each with the same keys) into ``model``'s table, each value as its column's
    type writes it (JSON encoded, times checked to be UTC), without the ORM's bulk path.

    A run writes its findings, their first-seen state and its planned actions after the listings,
    where nothing else runs beside it. For 10,000 findings on PostgreSQL, the ORM's bulk insert
    took 0.41-0.44 s, a Core INSERT per row 0.25-0.29 s, and COPY 0.10 s; SQLite takes a Core
    executemany.
    """
    if not rows:
        return
    table: sa.Table = model.__table__
    conn = session.connection()
    if not can_copy(conn):
        conn.execute(table.insert(), rows)
        return
    names = list(rows[0])
    # what an INSERT would fill in from the models: their columns' plain Python defaults
    defaults = {c.name: c.default.arg for c in table.columns  # type: ignore[attr-defined]
                if c.name not in rows[0] and c.default is not None and c.default.is_scalar}
    columns = [*names, *defaults]
    processors = [table.columns[name].type.dialect_impl(conn.dialect).bind_processor(conn.dialect)
                  for name in columns]
    filled = list(defaults.values())
    copy_rows(conn, f"COPY {table.name} ({', '.join(columns)}) FROM STDIN", (
        [value if process is None else process(value)
         for process, value in zip(processors, [*map(row.__getitem__, names), *filled], strict=True)]
        for row in rows))


def safe_url(url: str) -> str:
    """The URL with its password masked, for messages."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return "<unparseable database URL>"


def make_engine(url: str, *, null_pool: bool = False) -> Engine:
    """Create the engine with the settings numsync relies on (SQLite WAL + FKs, PG keepalives)."""
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise DatabaseError(f"database_url is not a database URL: {safe_url(url)}") from None
    kwargs: dict[str, Any] = {"future": True}
    if parsed.get_backend_name() == "sqlite":
        kwargs["connect_args"] = {"timeout": 30, "check_same_thread": False}
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).expanduser().parent.mkdir(parents=True, exist_ok=True)
    elif parsed.get_backend_name() == "postgresql":
        kwargs["connect_args"] = {
            "connect_timeout": 10,
            "keepalives": 1,
            "keepalives_idle": 10,
            "keepalives_interval": 5,
            "keepalives_count": 3,
            "application_name": "numsync",
        }
        kwargs["pool_pre_ping"] = True
    if null_pool:
        kwargs["poolclass"] = NullPool
    try:
        engine = sa.create_engine(parsed, **kwargs)
    except (NoSuchModuleError, ImportError) as exc:
        raise DatabaseError(f"no driver for {safe_url(url)}: {exc}") from None
    if parsed.get_backend_name() == "sqlite":
        sa.event.listen(engine, "connect", _sqlite_pragmas)
    return engine


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA busy_timeout=30000")
    # 64 MiB of page cache (the default is 2 MiB): a snapshot's index inserts at a million numbers
    # otherwise go to the OS for most pages, which tripled their cost. Allocated only as used.
    cur.execute("PRAGMA cache_size=-65536")
    cur.close()


def alembic_config(url: str) -> AlembicConfig:
    cfg = AlembicConfig()
    cfg.set_main_option("script_location", "numsync:migrations")
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


# The newest migration's revision. Every command compares the database's with it first, and
# learning it from alembic loads every migration script (8 modules compiled and run: ~5 ms of a
# 10,000-number plan's 0.38 s, at each start of the CLI). tests/test_db.py holds it to alembic's head.
HEAD_REVISION = "0008"


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def upgrade(url: str, engine: Engine | None = None) -> str:
    """Apply every migration; returns the revision the database is now at."""
    cfg = alembic_config(url)
    own = engine is None
    engine = engine or make_engine(url)
    try:
        with engine.begin() as conn:
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, "head")
        rev = current_revision(engine)
    except OperationalError as exc:
        raise DatabaseError(_connect_message(url, exc)) from None
    finally:
        if own:
            engine.dispose()
    return rev or ""


def _connect_message(url: str, exc: Exception) -> str:
    reason = str(getattr(exc, "orig", exc)).strip().splitlines()[0] if str(exc) else exc.__class__.__name__
    return f"cannot use the database at {safe_url(url)}: {reason}"


def open_database(url: str, *, auto_upgrade_sqlite: bool = True) -> Engine:
    """Return an engine for a database at the code's migration, or raise DatabaseError saying why."""
    engine = make_engine(url)
    try:
        current = current_revision(engine)
    except SQLAlchemyError as exc:
        engine.dispose()
        raise DatabaseError(_connect_message(url, exc)) from None
    if current == HEAD_REVISION:
        return engine
    script = ScriptDirectory.from_config(alembic_config(url))
    known = {rev.revision for rev in script.walk_revisions()}
    if current is not None and current not in known:
        engine.dispose()
        raise DatabaseError(
            f"the database at {safe_url(url)} is at migration {current}, which this numsync does not know "
            f"(newer than {HEAD_REVISION}): upgrade numsync, or point it at another database"
        )
    if engine.dialect.name == "sqlite" and auto_upgrade_sqlite and current is None:
        with engine.connect() as conn:
            empty = not sa.inspect(conn).get_table_names()
        if empty:
            upgrade(url, engine)
            return engine
    engine.dispose()
    where = "empty" if current is None else f"at migration {current}"
    raise DatabaseError(
        f"the database at {safe_url(url)} is {where}, behind this numsync ({HEAD_REVISION}): run `numsync db upgrade`"
    )


class LogCopy:
    """One bulk transaction whose commit leaves SQLite's write-ahead log to be copied in a thread.

    Why: in WAL mode the commit that finds the log past 1,000 pages copies the whole log into the
    database file and syncs it before it returns. After a million-number snapshot that is half a
    gigabyte, and the run waited about 2.4 s for it. SQLite's own advice for this is to turn the
    automatic checkpoint off and run it in another thread: here, for the snapshot's transaction
    only, while the run goes on to the diff (readers and writers carry on beside a checkpoint in
    WAL mode). Every other commit keeps the automatic checkpoint, which skips its turn while this
    copy runs.

    ``wait`` joins the copy, so a run leaves the database file whole when it ends (and a command
    exits with no log behind): it waits only for the part of the copy that outlasts the diff and
    the plan. On PostgreSQL, or an in-memory SQLite, this is a plain transaction.
    """

    def __init__(self, sessions: sessionmaker[Session]) -> None:
        engine = sessions.kw.get("bind")
        self._sessions = sessions
        self._engine = engine if isinstance(engine, Engine) and _wal_file(engine) else None
        self._thread: threading.Thread | None = None

    @contextlib.contextmanager
    def transaction(self) -> Iterator[Session]:
        """A session in one transaction, committed on leaving; the log is not copied at commit.

        Call ``start`` once it has committed.
        """
        if self._engine is None:
            with self._sessions.begin() as session:
                yield session
            return
        with self._engine.connect() as conn:
            raw = conn.connection.driver_connection
            assert raw is not None
            raw.execute("PRAGMA wal_autocheckpoint=0")
            try:
                with self._sessions(bind=conn) as session, session.begin():
                    yield session
            finally:  # before the connection goes back to the pool
                raw.execute(f"PRAGMA wal_autocheckpoint={AUTOCHECKPOINT_PAGES}")

    def start(self) -> None:
        """Copy the log into the database file in a thread (nothing on PostgreSQL)."""
        if self._engine is None or self._thread is not None:
            return
        begun = threading.Event()
        self._thread = threading.Thread(target=self._copy, args=(self._engine, begun),
                                        name="numsync-log-copy", daemon=True)
        self._thread.start()
        # Until the copy holds SQLite's checkpoint lock, the next commit of the run would make it
        # itself; once it does, such a commit's automatic checkpoint skips its turn.
        begun.wait()

    def wait(self) -> None:
        """Wait for the copy to end, if one was started."""
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    @staticmethod
    def _copy(engine: Engine, begun: threading.Event) -> None:
        raw = None
        try:
            raw = engine.raw_connection()
            driver = raw.driver_connection
            assert driver is not None
            begun.set()  # the checkpoint below takes its lock first thing, holding the GIL until then
            driver.execute("PRAGMA wal_checkpoint(PASSIVE)")
        except Exception as exc:  # harmless: a later commit makes the copy instead
            log.warning("sqlite_log_copy_failed", error=exc.__class__.__name__)
        finally:
            begun.set()
            if raw is not None:
                raw.close()


def reads_in_parallel(engine: Engine) -> bool:
    """Whether two sessions of ``engine`` read the same database at once: PostgreSQL, or a SQLite
    file (in WAL mode readers do not wait for each other); not an in-memory SQLite database, of
    which each thread's connection is a database of its own."""
    return engine.dialect.name == "postgresql" or _wal_file(engine)


def _wal_file(engine: Engine) -> bool:
    """Whether the engine's database is a SQLite file (in WAL mode: ``_sqlite_pragmas``)."""
    return engine.dialect.name == "sqlite" and engine.url.database not in (None, "", ":memory:")

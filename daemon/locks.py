"""Locks that keep two runs (or two schedulers) from working on the same database at once.

PostgreSQL: a session advisory lock on a connection of its own (never a pooled one: returning it
to a pool would leak the lock to the pool's next user). SQLite: ``flock`` on a file beside the
database, released by the kernel even when the holder is SIGKILLed. A busy lock raises
``LockHeld``; the CLI maps that to exit status 75.
"""

from __future__ import annotations

import fcntl
import os
import threading
from pathlib import Path
from typing import IO, Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine, make_url

from numsync.errors import DatabaseError, LockHeld

from .db import make_engine, safe_url

__all__ = ["LEADER_LOCK", "RUN_LOCK", "DatabaseLock"]

RUN_LOCK = 0x6E756D0001  # one run at a time
LEADER_LOCK = 0x6E756D0002  # one scheduler at a time

_local_locks: dict[tuple[str, int], threading.Lock] = {}
_local_guard = threading.Lock()


class DatabaseLock:
    """A non-blocking exclusive lock named by ``key`` in the database at ``url``."""

    def __init__(self, url: str, key: int, *, what: str = "another numsync run") -> None:
        self.url = url
        self.key = key
        self.what = what
        self._engine: Engine | None = None
        self.connection: Connection | None = None
        self._file: IO[Any] | None = None
        self._local: threading.Lock | None = None
        parsed = make_url(url)
        self.backend = parsed.get_backend_name()
        self._sqlite_path = parsed.database if self.backend == "sqlite" else None

    def acquire(self) -> DatabaseLock:
        if self.backend == "postgresql":
            self._engine = make_engine(self.url, null_pool=True)
            try:
                conn = self._engine.connect()
                got = conn.execute(sa.text("SELECT pg_try_advisory_lock(:k)"), {"k": self.key}).scalar()
                conn.commit()
            except sa.exc.OperationalError as exc:
                self._engine.dispose()
                raise DatabaseError(f"cannot take the lock in {safe_url(self.url)}: {exc.orig}") from None
            if not got:
                conn.close()
                self._engine.dispose()
                raise LockHeld(f"{self.what} holds the lock in {safe_url(self.url)}; try again later")
            self.connection = conn
            return self
        if self._sqlite_path and self._sqlite_path != ":memory:":
            path = Path(f"{self._sqlite_path}.{self.key:x}.lock")
            path.parent.mkdir(parents=True, exist_ok=True)
            handle = path.open("a+")
            try:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                handle.close()
                raise LockHeld(f"{self.what} holds the lock {path}; try again later") from None
            handle.seek(0)
            handle.truncate()
            handle.write(f"{os.getpid()}\n")
            handle.flush()
            self._file = handle
            return self
        with _local_guard:
            lock = _local_locks.setdefault((self.url, self.key), threading.Lock())
        if not lock.acquire(blocking=False):
            raise LockHeld(f"{self.what} holds the lock; try again later")
        self._local = lock
        return self

    def alive(self) -> bool:
        """For PostgreSQL: is our session (and so the lock) still there? A heartbeat calls this."""
        if self.connection is None:
            return self._file is not None or self._local is not None
        try:
            held = self.connection.execute(
                sa.text("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid() "
                        "AND objid = (:k & 4294967295) AND classid = (:k >> 32) AND granted"),
                {"k": self.key},
            ).scalar()
            self.connection.commit()
        except sa.exc.SQLAlchemyError:
            return False
        return bool(held)

    def release(self) -> None:
        if self.connection is not None:
            try:
                self.connection.execute(sa.text("SELECT pg_advisory_unlock(:k)"), {"k": self.key})
                self.connection.commit()
            except sa.exc.SQLAlchemyError:
                pass  # the session is gone, and the lock with it
            finally:
                self.connection.close()
                self.connection = None
        if self._engine is not None:
            self._engine.dispose()
            self._engine = None
        if self._file is not None:
            fcntl.flock(self._file.fileno(), fcntl.LOCK_UN)
            self._file.close()
            self._file = None
        if self._local is not None:
            self._local.release()
            self._local = None

    def __enter__(self) -> DatabaseLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()

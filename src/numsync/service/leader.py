"""Leadership: one replica runs the schedule, by holding the leader lock in the database.

On PostgreSQL the lock lives as long as its database session. When the session ends (a
database restart, a network cut, an admin's ``pg_terminate_backend``) the lock is free at once
and a standby can take it, but the old holder only learns so at its next query. Two checks
narrow that window: a heartbeat every couple of seconds, and ``guard`` before every side effect
of a run (it asks the lock's own connection, so an import is never sent by a replica that has
already been replaced). A deposed leader exits; it does not try to become leader again with
a run possibly half-done, since Kubernetes restarting it as a clean standby is simpler to
reason about.
"""

from __future__ import annotations

import threading

from numsync.daemon.locks import LEADER_LOCK, DatabaseLock
from numsync.errors import EngineError

__all__ = ["Backoff", "LeaderLease"]


class LeaderLease:
    """The leader lock plus what the heartbeat learnt about it, shared by the loop and the runs."""

    def __init__(self, url: str) -> None:
        self.lock = DatabaseLock(url, LEADER_LOCK, what="another numsync daemon")
        self.lost = threading.Event()
        self._mutex = threading.Lock()  # the lock's connection is used by the heartbeat and the runs

    def acquire(self) -> LeaderLease:
        """Take the lock or raise ``LockHeld`` (a standby) / ``DatabaseError`` (no database)."""
        self.lock.acquire()
        return self

    def check(self) -> bool:
        """Is the lock still ours? Once it was found lost, it stays lost."""
        if self.lost.is_set():
            return False
        with self._mutex:
            ok = self.lock.alive()
        if not ok:
            self.lost.set()
        return ok

    def guard(self) -> None:
        """For ``run_once``: raise before a side effect if this replica is no longer the leader."""
        if not self.check():
            raise EngineError("leadership lost: another replica may be running the schedule now")

    def release(self) -> None:
        with self._mutex:
            self.lock.release()


class Backoff:
    """Capped exponential delays (1, 2, 4 ... ``cap`` seconds) for retrying an absent database."""

    def __init__(self, first: float = 1.0, cap: float = 30.0) -> None:
        self.first, self.cap = first, cap
        self._next = first

    def next(self) -> float:
        delay = self._next
        self._next = min(self._next * 2, self.cap)
        return delay

    def reset(self) -> None:
        self._next = self.first

"""Stage 4: apply the plan. The only module in the engine that changes anything outside.

Vapi has no idempotency key, so exactly-once comes from the journal and from looking before
writing:

1. the action is marked ``started`` (attempts + 1) and committed *before* the request leaves;
2. the number must not have arrived in Vapi since the snapshot's listing: ``_Arrivals`` reads
   every record created since the listing's bound (a page or two, at most once a second) and the
   import is ``done`` (adopted) if one holds the number;
3. only then is it created; an answer settles the action;
4. a create whose outcome is unknown (timeout or reset after sending, 5xx) is resolved by looking
   the number up (``search=``), never by a second blind POST; a number still absent is ``failed``
   and is planned afresh by the next run, whose own snapshot will show whether it arrived after all.

A process killed anywhere leaves at most one action ``started`` per import in flight;
``recover_started`` settles each at the start of the next reconcile by the same lookup.

Step 2 used to be a search per number, which doubled the requests of an import (a million
numbers with 10,000 missing: 20,000 requests instead of 10,000 and a few pages). The two
guard against the same thing, a number someone else imports while numsync runs, and neither can
close that race, since Vapi accepts a number twice; the search left one round trip open, the
bulk read leaves at most ``RECHECK_SECONDS`` and a round trip. Numsync's own lost creates are
covered either way, by step 4 and by the journal.
"""

from __future__ import annotations

import contextvars
import threading
import time
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, cast

import sqlalchemy as sa
import structlog
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session, sessionmaker

from numsync.adapters.base import Source, VapiApi
from numsync.adapters.vapi_model import unchecked_forms
from numsync.errors import AdapterError, InDoubtError, PermanentError, TransientError

from .models import Action, VapiRecord, in_run

__all__ = ["ApplyResult", "apply_plan", "recover_started"]

log = structlog.get_logger(__name__)

Clock = Callable[[], datetime]

RECHECK_SECONDS = 1.0  # how old the read of new Vapi records may be when an import relies on it
# How far before the newest record seen the next read starts: a record can become visible after
# a later-stamped one (a create stamped before it commits, and slow to commit, shows up late).
CREATED_MARGIN = timedelta(seconds=5)


@dataclass
class ApplyResult:
    done: int = 0
    failed: int = 0
    interrupted: bool = False
    arrival_checks: int = 0  # reads of the records created in Vapi since the listing


class _Arrivals:
    """The numbers to import that someone created in Vapi after the snapshot's listing.

    One read of every record created since ``listing_bound`` answers, for all imports at once,
    what a search per number answered for one (module docstring, step 2). Reads repeat once
    ``RECHECK_SECONDS`` have passed, each from the newest record the last one saw (less
    ``CREATED_MARGIN``), so numsync's own imports are read back only for a few seconds. When a
    read fails, the rest of the run searches per number instead (``holder`` raises).
    """

    def __init__(self, vapi: VapiApi, listing_bound: datetime | None, numbers: set[str],
                 held: Mapping[str, str]) -> None:
        self._vapi = vapi
        self._since = listing_bound - CREATED_MARGIN if listing_bound is not None else None
        self._wanted = numbers
        self._found: dict[str, str] = dict(held)  # number -> the id of a record holding it
        self._due = float("-inf")
        self._broken: AdapterError | None = None
        self._lock = threading.Lock()
        self.checks = 0

    def holder(self, number: str) -> str | None:
        """The id of a record created since the listing that holds ``number``, if any."""
        with self._lock:
            if self._broken is not None:
                raise self._broken
            if time.monotonic() >= self._due:
                try:
                    self._read()
                except AdapterError as exc:
                    log.warning("reading new Vapi records failed; searching per number instead", error=str(exc))
                    self._broken = exc
                    raise
            return self._found.get(number)

    def _read(self) -> None:
        started = time.monotonic()
        newest: datetime | None = None
        for vapi_id, number, created in self._vapi.created_since(self._since):
            if number in self._wanted:
                self._found.setdefault(number, vapi_id)
            newest = created if newest is None or created > newest else newest
        self.checks += 1
        self._due = started + RECHECK_SECONDS
        if newest is not None:
            since = newest - CREATED_MARGIN
            self._since = since if self._since is None else max(self._since, since)


def _lookup(vapi: VapiApi, number: str, attempts: int = 3, pause: float = 0.5) -> str | None:
    """The id of a Vapi record holding ``number``, looking a few times when the answer matters."""
    last: AdapterError | None = None
    for i in range(attempts):
        try:
            found = vapi.find_by_number(number)
        except TransientError as exc:
            last = exc
        else:
            if found:
                return str(found[0]["id"])
            return None
        time.sleep(pause * (2**i))
    assert last is not None
    raise last


_ACTIONS = cast(sa.Table, Action.__table__)
# The journal's two writes per import, as Core statements compiled once: through the ORM's bulk
# update (expressions rebuilt, a session synchronised) they were 40% of an import's CPU.
_CLAIM = (sa.update(_ACTIONS)
          .where(_ACTIONS.c.id == sa.bindparam("action_id"), _ACTIONS.c.state == "planned")
          .values(state="started", attempts=_ACTIONS.c.attempts + 1,
                  started_at=sa.bindparam("now", type_=_ACTIONS.c.started_at.type)))
_SETTLE = (sa.update(_ACTIONS)
           .where(_ACTIONS.c.id == sa.bindparam("action_id"))
           .values(state=sa.bindparam("new_state"), vapi_id=sa.bindparam("new_vapi_id"),
                   detail=sa.bindparam("new_detail"),
                   finished_at=sa.bindparam("now", type_=_ACTIONS.c.finished_at.type)))


def recover_started(sessions: sessionmaker[Session], vapi: VapiApi, clock: Clock) -> int:
    """Settle actions a killed run left 'started': done if Vapi has the number, else failed."""
    with sessions() as session:
        rows = session.execute(sa.select(Action.id, Action.number).where(Action.state == "started")).all()
    for action_id, number in rows:
        try:
            vapi_id = _lookup(vapi, number)
        except AdapterError as exc:
            log.warning("journal recovery lookup failed", action_id=action_id, error=str(exc))
            continue
        with sessions.begin() as session:
            if vapi_id:
                _settle(session.connection(), action_id, "done", clock, vapi_id=vapi_id,
                        detail="interrupted run; found in Vapi on recovery")
            else:
                _settle(session.connection(), action_id, "failed", clock,
                        detail="interrupted before Vapi confirmed; not in Vapi on recovery")
    return len(rows)


def _settle(conn: Connection, action_id: int, state: str, clock: Clock, *, vapi_id: str | None = None,
            detail: str | None = None) -> None:
    conn.execute(_SETTLE, {"action_id": action_id, "new_state": state, "new_vapi_id": vapi_id,
                           "new_detail": detail, "now": clock()})


def apply_plan(
    sessions: sessionmaker[Session],
    run_id: str,
    vapi: VapiApi,
    sources: Mapping[str, Source],
    clock: Clock,
    *,
    listing_bound: datetime | None,
    stop: threading.Event | None = None,
    guard: Callable[[], None] | None = None,
    concurrency: int = 1,
) -> ApplyResult:
    """Carry out every 'planned' action of ``run_id``; each settles on its own.

    ``listing_bound`` is the snapshot's (``VapiApi.listing_bound``): numbers created in Vapi
    from then on are looked for before any is imported. Up to ``concurrency`` imports are in
    flight at once. Each is the same sequence as alone (claim, check, create, settle), and no two
    are for one number, so the journal's promise holds per action: a process killed anywhere
    leaves at most ``concurrency`` actions 'started', each settled by ``recover_started``. One
    import at a time, 10,000 imports at 20 ms were more than six minutes. A stop, or a guard or
    database failure, starts no new import; those in flight settle, then the failure is raised here.
    """
    result = ApplyResult()
    with sessions() as session:
        engine = session.get_bind().engine
        todo = session.execute(
            sa.select(Action.id, Action.source, Action.number, Action.request)
            .where(Action.run_id == run_id, Action.state == "planned")
            .order_by(Action.id)
        ).all()
        numbers = {number for _, _, number, _ in todo}
        held = _held_as_written(session, run_id, numbers)
    arrivals = _Arrivals(vapi, listing_bound, numbers, held)
    # SQLite has one writer: a second one waits in its busy handler, which sleeps 1, 2, 5, 10 ...
    # ms between tries. Eight imports' claims and settles took 5 ms each, up to 130 ms, that way;
    # taking turns hands the database over at once. PostgreSQL writes rows side by side.
    writes: AbstractContextManager[Any] = threading.Lock() if engine.dialect.name == "sqlite" else nullcontext()
    lock = threading.Lock()
    taken = 0
    failures: list[BaseException] = []

    def take() -> Any:
        nonlocal taken
        with lock:
            if failures or taken >= len(todo):
                return None
            if stop is not None and stop.is_set():
                result.interrupted = True
                return None
            taken += 1
            return todo[taken - 1]

    def work() -> None:
        try:
            # One connection per worker (a checkout per write cost a ping), in autocommit: each
            # journal write is one statement, committed once it returns, in one round trip to
            # PostgreSQL instead of three (BEGIN, UPDATE, COMMIT).
            with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
                while (item := take()) is not None:
                    state = _apply_one(conn, writes, vapi, arrivals, sources, clock, guard, *item)
                    with lock:
                        if state == "done":
                            result.done += 1
                        elif state is not None:
                            result.failed += 1
        except BaseException as exc:
            with lock:
                failures.append(exc)

    workers = [threading.Thread(target=contextvars.copy_context().run, args=(work,), name=f"numsync-import-{i}")
               for i in range(min(concurrency, len(todo)) - 1)]
    for worker in workers:
        worker.start()
    work()  # this thread is one of them (and the only one when imports run one at a time)
    for worker in workers:
        worker.join()
    result.arrival_checks = arrivals.checks
    if failures:
        raise failures[0]
    return result


def _held_as_written(session: Session, run_id: str, numbers: set[str]) -> dict[str, str]:
    """Numbers to import that the snapshot holds in a form the diff does not match (``unchecked_forms``).

    A SIP-trunk record without Vapi's E.164 check keeps its number as written, and the diff,
    which compares such numbers as text, finds the carrier's E.164 form missing. The search that
    once ran before every create found these records; the bulk check reads only new ones, so they
    are looked for here, in the snapshot, by the run's match-key index.
    """
    forms = {form: number for number in numbers for form in unchecked_forms(number)}
    keys = sorted(forms)
    held: dict[str, str] = {}
    for start in range(0, len(keys), 500):
        for vapi_id, key in session.execute(
            sa.select(VapiRecord.vapi_id, VapiRecord.match_key)
            .where(in_run(VapiRecord, run_id), VapiRecord.match_key.in_(keys[start:start + 500]))
        ):
            held.setdefault(forms[str(key)], vapi_id)
    return held


def _apply_one(conn: Connection, writes: AbstractContextManager[Any], vapi: VapiApi,
               arrivals: _Arrivals, sources: Mapping[str, Source], clock: Clock, guard: Callable[[], None] | None,
               action_id: int, source_name: str, number: str,
               request: Mapping[str, Any] | None) -> str | None:
    """Claim, import and settle one action; its final state, or None if another run had claimed it."""
    if guard is not None:
        guard()
    with writes:
        claimed = conn.execute(_CLAIM, {"action_id": action_id, "now": clock()}).rowcount
    if not claimed:
        return None
    state, vapi_id, detail = _import_one(vapi, arrivals, sources[source_name], number, dict(request or {}))
    with writes:
        _settle(conn, action_id, state, clock, vapi_id=vapi_id, detail=detail)
    log.info("import settled", source=source_name, number=number, state=state, vapi_id=vapi_id)
    return state


def _import_one(vapi: VapiApi, arrivals: _Arrivals, source: Source, number: str,
                public: dict[str, Any]) -> tuple[str, str | None, str | None]:
    """Returns (state, vapi_id, detail). Never raises for one number's failure."""
    try:
        existing = arrivals.holder(number)
    except AdapterError:
        try:
            existing = _lookup(vapi, number)
        except AdapterError as exc:
            return "failed", None, f"could not look the number up in Vapi before creating it: {exc}"
    if existing:
        return "done", existing, "already in Vapi before create; adopted"
    body = {**source.import_body(number), **public}
    for attempt in range(3):
        try:
            created = vapi.create(body)
        except InDoubtError as exc:
            try:
                found = _lookup(vapi, number, attempts=4)
            except AdapterError:
                found = None
            if found:
                return "done", found, "create answer lost; found in Vapi afterwards"
            return "failed", None, f"create outcome unknown ({exc}); not in Vapi yet, re-checked next run"
        except PermanentError as exc:
            return "failed", None, f"Vapi refused the import: {exc}"
        except TransientError as exc:
            # Refused before it was processed (429, connection refused): look again, then retry.
            wait = exc.retry_after if exc.retry_after is not None else 0.5 * (2**attempt)
            time.sleep(min(wait, 30.0))
            try:
                found = _lookup(vapi, number)
            except AdapterError:
                found = None
            if found:
                return "done", found, "found in Vapi before retrying the create; adopted"
            continue
        return "done", str(created.get("id")), None
    return "failed", None, "Vapi kept refusing the create (rate limited or unreachable)"

"""One run, start to finish: snapshot -> diff (recheck) -> plan -> (apply) -> findings -> run record.

The CLI and the scheduler both call ``execute``; neither knows the stages. Everything the run
needs from outside (the Vapi client, the sources, the clock) is handed in, so tests drive it
with the sandbox and a fixed clock.
"""

from __future__ import annotations

import os
import socket
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import sqlalchemy as sa
import structlog
from sqlalchemy.orm import Session, sessionmaker

from numsync.adapters.base import Source, VapiApi
from numsync.adapters.vapi_model import owner_for
from numsync.config import Config

from .apply import apply_plan, recover_started
from .db import LogCopy, bulk_insert
from .diff import FindingDraft, SourceJudgement, compute_findings, judge_sources, prepare_diff, scan_run
from .models import TRIGGERS, Action, Finding, FindingState, Run, RunSource
from .plan import make_plan
from .recheck import recheck_orphans
from .snapshot import Progress, prune_snapshots, take_snapshot
from .workers import fork_available

__all__ = ["EXIT_CODES", "RunResult", "execute"]

log = structlog.get_logger(__name__)

EXIT_CODES = {"in_sync": 0, "drift": 2, "error": 1}
KEEP_SNAPSHOTS = 3  # runs whose snapshot tables are kept (for debugging the last few diffs)


# For the bulk UPDATE and DELETE statements of a run: no session of a run holds the objects they
# change, so the ORM's default (work out which are affected, by evaluating the WHERE clause in
# Python or selecting them first) is cost without use: 0.1-0.6 ms a statement the first time a
# process runs it (2.6 against 2.1 ms for the first of a run's), two of them before the listings.
_UNSYNCED = {"synchronize_session": False}


@dataclass
class RunResult:
    run_id: str
    mode: str
    outcome: str
    error: str | None = None
    summary: dict[str, int] = field(default_factory=dict)
    source_numbers: dict[str, int] = field(default_factory=dict)
    source_status: dict[str, str] = field(default_factory=dict)
    findings_by_source: dict[tuple[str, str], int] = field(default_factory=dict)
    seconds: float = 0.0
    stats: dict[str, Any] = field(default_factory=dict)

    @property
    def exit_code(self) -> int:
        return EXIT_CODES[self.outcome]


def _next_seq_and_last_count(session: Session) -> tuple[int, int | None]:
    """The new run's sequence number, and the number of Vapi records the last finished run saw
    (``_vapi_suspect``'s yardstick), in one statement: the run lock is held, so no run finishes
    before this one is judged, and the question need not wait for the listings."""
    last = (sa.select(Run.vapi_numbers)
            .where(Run.status == "finished", Run.vapi_numbers.is_not(None), Run.vapi_numbers > 0)
            .order_by(Run.seq.desc()).limit(1).scalar_subquery())
    top, count = session.execute(sa.select(sa.func.coalesce(sa.func.max(Run.seq), 0), last)).one()
    return int(top) + 1, count


# How far back a run looks for each source's last whole listing (``_last_listed``)
LISTED_LOOKBACK_RUNS = 20


def _last_listed(session: Session, names: Sequence[str]) -> dict[str, int]:
    """How many numbers each of ``names`` found in its latest whole listing among the last
    ``LISTED_LOOKBACK_RUNS`` runs: a listing's first round asks for as many pages as those fill
    (``Source.list_numbers``), and a hint need not read a long history to be found."""
    recent = sa.select(Run.id, Run.seq).order_by(Run.seq.desc()).limit(LISTED_LOOKBACK_RUNS).subquery()
    rows = session.execute(sa.select(RunSource.source, RunSource.numbers)
                           .join(recent, recent.c.id == RunSource.run_id)
                           .where(RunSource.status == "ok", RunSource.source.in_(names))
                           .order_by(recent.c.seq))
    return {source: numbers for source, numbers in rows}  # noqa: C416 - a later run's replaces an earlier's


def execute(
    sessions: sessionmaker[Session],
    config: Config,
    *,
    mode: str,
    clients: Callable[[], tuple[VapiApi, Sequence[Source]]],
    selected: Sequence[str] | None,
    clock: Callable[[], datetime],
    progress: Progress | None = None,
    stop: threading.Event | None = None,
    guard: Callable[[], None] | None = None,
    run_id: str | None = None,
    trigger: str = "command",
) -> RunResult:
    """Run a plan or a reconcile and record it (``trigger``: what started it, one of ``TRIGGERS``);
    returns the outcome (never raises for drift).

    ``clients`` returns the Vapi client and the sources, waiting for them if they are still being
    built (``app._Clients``): the run is recorded meanwhile, in a transaction that stays open until
    they are ready, so that one that cannot be built (its error raised here) leaves no run behind.
    Recording the run is the first use of the database in a process (the ORM's mappers set up,
    its statements compiled, its first writes): 13-20 ms of a 10,000-number plan, beside the
    clients' 3-5 ms since a source's ca_bundle is read alone (``http_util.PinnedVerifyAdapter``).
    """
    if mode not in ("plan", "reconcile"):
        raise ValueError(f"unknown mode {mode!r}")
    if trigger not in TRIGGERS:
        raise ValueError(f"unknown trigger {trigger!r}")
    run_id = run_id or str(uuid.uuid4())
    t0 = time.monotonic()
    filtered = selected is not None
    with sessions.begin() as session:
        # We hold the run lock, so a run still marked 'running' belongs to a process that died. Asked
        # first: there rarely is one, and the two updates cost a run 2-3 ms of compiling for nothing.
        dead = list(session.execute(sa.select(Run.id).where(Run.status == "running")).scalars())
        if dead:
            _skip_unattempted(session, dead, clock(), "the run was killed before this was attempted")
            session.execute(sa.update(Run).where(Run.id.in_(dead)).values(
                status="interrupted", outcome="error", error="the process running it stopped before it finished"),
                execution_options=_UNSYNCED)
        seq, last_count = _next_seq_and_last_count(session)
        expected = _last_listed(session, list(selected or ()) if filtered else [c.name for c in config.sources])
        session.add(Run(id=run_id, seq=seq, mode=mode, status="running", started_at=clock(),
                        selected_sources=list(selected or ()) if filtered else None,
                        holder=f"{socket.gethostname()}:{os.getpid()}", trigger=trigger))
        session.flush()  # its statements run now, beside the clients' building
        vapi, sources = clients()
    chosen = [s for s in sources if not filtered or s.name in set(selected or ())]
    structlog.contextvars.bind_contextvars(run_id=run_id)
    log.info("run started", mode=mode, sources=[s.name for s in chosen])
    log_copy = LogCopy(sessions)
    try:
        result = _execute(sessions, log_copy, config, run_id, mode, vapi, chosen, filtered, clock, progress,
                          stop, guard, last_count, expected)
    except BaseException as exc:
        with sessions.begin() as session:
            status = "interrupted" if isinstance(exc, KeyboardInterrupt | SystemExit) else "failed"
            session.execute(sa.update(Run).where(Run.id == run_id).values(
                status=status, outcome="error", finished_at=clock(),
                error=f"{status}: {exc.__class__.__name__}"))
        raise
    finally:
        log_copy.wait()  # the run ends with the database file whole
        structlog.contextvars.unbind_contextvars("run_id")
    result.seconds = time.monotonic() - t0
    return result


def _execute(
    sessions: sessionmaker[Session],
    log_copy: LogCopy,
    config: Config,
    run_id: str,
    mode: str,
    vapi: VapiApi,
    chosen: Sequence[Source],
    filtered: bool,
    clock: Callable[[], datetime],
    progress: Progress | None,
    stop: threading.Event | None,
    guard: Callable[[], None] | None,
    last_count: int | None,
    expected: dict[str, int],
) -> RunResult:
    stats: dict[str, Any] = {}
    if mode == "reconcile":
        stats["recovered_actions"] = recover_started(sessions, vapi, clock)

    owners = {}
    for src_cfg in config.sources:  # every configured source, so others' records are not 'unmanaged'
        owner = owner_for(src_cfg)
        owners[(owner.provider, owner.account_value)] = src_cfg.name

    t = time.monotonic()
    with log_copy.transaction() as session:
        snap = take_snapshot(session, run_id, vapi, list(chosen), owners, progress=progress,
                             processes=_list_in_processes(config.performance.list_in_processes),
                             expected=expected)
    log_copy.start()  # SQLite: the snapshot's log goes into the database file beside the diff
    stats["snapshot_seconds"] = round(time.monotonic() - t, 3)
    stats["vapi_seconds"] = round(snap.vapi_seconds, 3)
    stats["source_seconds"] = {n: round(o.seconds, 3) for n, o in snap.sources.items()}
    if snap.cpu_seconds:
        stats["listing_cpu_seconds"] = snap.cpu_seconds
    kinds = {s.name: s.kind for s in chosen}
    if snap.vapi_error is None:
        snap.vapi_error = _vapi_suspect(last_count, snap.vapi_numbers, config.policy.max_orphan_fraction)

    if snap.vapi_error is not None:
        with sessions.begin() as session:
            for name, out in snap.sources.items():
                session.add(RunSource(run_id=run_id, source=name, kind=out.kind,
                                      status="failed" if out.error else "ok",
                                      numbers=out.numbers, error=out.error, seconds=out.seconds))
        return _finish(sessions, run_id, clock, outcome="error", error=f"Vapi: {snap.vapi_error}",
                       vapi_numbers=None, drafts=[], stats=stats, mode=mode, judged=set(),
                       judge_nulls=False)

    t = time.monotonic()
    prepare_diff(sessions, run_id)
    scan = scan_run(sessions, run_id, [n for n, o in snap.sources.items() if o.error is None])
    with sessions.begin() as session:
        judgements = judge_sources(
            session, run_id,
            {n: (o.numbers, o.error) for n, o in snap.sources.items()},
            kinds, config.policy.max_orphan_fraction, scan,
        )
        lost = recheck_orphans(judgements, {s.name: s for s in chosen}, _open_orphans(session, judgements))
        if lost:
            stats["listing_lost_numbers"] = lost
        for name, j in judgements.items():
            session.add(RunSource(run_id=run_id, source=name, kind=kinds[name], status=j.status,
                                  numbers=j.numbers, error=j.error, seconds=snap.sources[name].seconds))
        drafts = compute_findings(
            session, run_id, judgements=judgements, selected=frozenset(kinds), filtered=filtered,
            now=clock(), stuck_after=config.policy.stuck_activating_after, scan=scan,
        )
        stats["diff_seconds"] = round(time.monotonic() - t, 3)
        ok_sources = [c.name for c in config.sources if judgements.get(c.name) and
                      judgements[c.name].status == "ok"]
        settings = {c.name: c.import_ for c in config.sources}
        planned = make_plan(drafts, settings=settings, kinds=kinds, source_order=ok_sources,
                            max_imports=config.policy.max_imports_per_run)
        now = clock()
        if planned:
            bulk_insert(session, Action, [
                {"run_id": run_id, "source": p.source, "number": p.number, "action": "import",
                 "state": p.state, "attempts": 0, "request": p.request, "detail": p.detail,
                 "created_at": now}
                for p in planned
            ])
    if any(j.status != "ok" for j in judgements.values()):
        error = "; ".join(f"{n}: {j.status}" for n, j in judgements.items() if j.status != "ok")
    else:
        error = None

    if mode == "reconcile" and any(p.state == "planned" for p in planned):
        t = time.monotonic()
        applied = apply_plan(sessions, run_id, vapi, {s.name: s for s in chosen}, clock,
                             listing_bound=snap.vapi_bound, stop=stop, guard=guard,
                             concurrency=config.vapi.max_concurrency)
        stats["apply_seconds"] = round(time.monotonic() - t, 3)
        stats["imports_done"], stats["imports_failed"] = applied.done, applied.failed
        stats["arrival_checks"] = applied.arrival_checks
        with sessions() as session:
            settled = {(s, n): (st, d) for s, n, st, d in session.execute(
                sa.select(Action.source, Action.number, Action.state, Action.detail)
                .where(Action.run_id == run_id, Action.action == "import"))}
        for d in drafts:
            if d.action == "import" and (d.source, d.number) in settled:
                state, detail = settled[(d.source or "", d.number or "")]
                d.action_status = {"started": "failed", "planned": "skipped"}.get(state, state)
                if state == "planned":
                    detail = "not attempted: the run was stopped"
                if detail and detail not in (d.detail or ""):
                    d.detail = f"{d.detail}; {detail}" if d.detail else detail
        if applied.interrupted:
            error = (error + "; " if error else "") + "stopped before every import was applied"

    judged = {n for n, j in judgements.items() if j.status == "ok"}
    remaining = [
        d for d in drafts
        if d.kind != "unmanaged" and not (d.action == "import" and d.action_status == "done")
    ]
    failed_actions = any(d.action_status == "failed" for d in drafts)
    if error is not None or failed_actions:
        outcome = "error"
        if failed_actions and error is None:
            error = "some imports failed"
    elif remaining:
        outcome = "drift"
    else:
        outcome = "in_sync"
    return _finish(sessions, run_id, clock, outcome=outcome, error=error, vapi_numbers=snap.vapi_numbers,
                   drafts=drafts, stats=stats, mode=mode, judged=judged, judge_nulls=not filtered,
                   status="interrupted" if stop is not None and stop.is_set() else "finished")


def _list_in_processes(setting: bool | str) -> bool:
    """``auto`` forks listing processes only from the main thread (the CLI's case).

    A host that runs numsync in threads (the daemon's scheduler, a test running plan and
    reconcile side by side) may have another thread inside a lock at the moment of fork; the
    child would then wait on it forever. Seen: structlog's write locks (now held across the fork)
    and OpenSSL's (an in-process emulator mid-handshake; the children now start only once all are
    forked), but a host's threads can hold any lock. ``true`` forks from any thread; ``false``
    never forks.
    """
    if setting == "auto":
        return fork_available() and threading.current_thread() is threading.main_thread()
    return bool(setting) and fork_available()


def _open_orphans(session: Session, judgements: dict[str, SourceJudgement]) -> set[str]:
    """The keys of the ``orphaned`` findings still open for the sources with numbers to recheck
    (none asked for in a run without orphans)."""
    names = [n for n, j in judgements.items() if j.status == "ok" and j.unowned]
    if not names:
        return set()
    return set(session.execute(sa.select(FindingState.key).where(
        FindingState.kind == "orphaned", FindingState.source.in_(names))).scalars())


def _skip_unattempted(session: Session, runs: Sequence[str], now: datetime, detail: str) -> None:
    """Planned actions of a run that ended early are settled as skipped; the next plan re-plans them."""
    session.execute(sa.update(Action).where(Action.run_id.in_(runs), Action.state == "planned")
                    .values(state="skipped", detail=detail, finished_at=now), execution_options=_UNSYNCED)


def _vapi_suspect(previous: int | None, seen: int, max_fraction: float) -> str | None:
    """Vapi's listing collapsed since the last run (``previous`` records, ``seen`` now): believing
    it would import duplicates of everything.

    The check before each create cannot save us here: it only reads what was created after this
    listing, which it takes as the truth about everything before. The same policy knob as a suspect
    source decides what counts as a collapse.
    """
    if not previous:
        return None
    if seen == 0 or (previous >= 5 and (previous - seen) / previous > max_fraction):
        return (f"suspect listing: {seen} records where the previous run saw {previous} "
                f"(a drop above policy.max_orphan_fraction {max_fraction:g}); nothing was judged or imported")
    return None


def _finish(
    sessions: sessionmaker[Session],
    run_id: str,
    clock: Callable[[], datetime],
    *,
    outcome: str,
    error: str | None,
    vapi_numbers: int | None,
    drafts: list[FindingDraft],
    stats: dict[str, Any],
    mode: str,
    judged: set[str],
    judge_nulls: bool,
    status: str = "finished",
) -> RunResult:
    now = clock()
    summary = dict(sorted(Counter(d.kind for d in drafts).items()))
    with sessions.begin() as session:
        if status == "interrupted":
            _skip_unattempted(session, [run_id], now, "not attempted: the run was stopped")
        _record_findings(session, run_id, drafts, now, judged, judge_nulls, vapi_ok=vapi_numbers is not None)
        t = time.monotonic()
        _prune_snapshots(session)
        stats["prune_seconds"] = round(time.monotonic() - t, 3)
        session.execute(sa.update(Run).where(Run.id == run_id).values(
            status=status, outcome=outcome, finished_at=now, vapi_numbers=vapi_numbers,
            error=error, summary=summary, stats=stats), execution_options=_UNSYNCED)
        sources = session.execute(
            sa.select(RunSource.source, RunSource.status, RunSource.numbers).where(RunSource.run_id == run_id)
        ).all()
    log.info("run finished", outcome=outcome, summary=summary, error=error)
    return RunResult(
        run_id=run_id, mode=mode, outcome=outcome, error=error, summary=summary,
        source_numbers={s: n for s, _, n in sources}, source_status={s: st for s, st, _ in sources},
        findings_by_source=dict(Counter((d.kind, d.source or "") for d in drafts)), stats=stats,
    )


def _record_findings(session: Session, run_id: str, drafts: list[FindingDraft], now: datetime,
                     judged: set[str], judge_nulls: bool, vapi_ok: bool) -> None:
    """Write the run's findings, carrying first_seen_at from finding_state, then update the state."""
    keys = [d.key for d in drafts]
    known: dict[str, datetime] = {}
    for chunk_start in range(0, len(keys), 5000):
        chunk = keys[chunk_start:chunk_start + 5000]
        known.update(session.execute(
            sa.select(FindingState.key, FindingState.first_seen_at).where(FindingState.key.in_(chunk))
        ).all())
    if drafts:
        bulk_insert(session, Finding, [
            {"run_id": run_id, "key": d.key, "kind": d.kind, "number": d.number, "source": d.source,
             "vapi_ids": d.vapi_ids, "carrier_id": d.carrier_id, "first_seen_at": known.get(d.key, now),
             "action": d.action, "action_status": d.action_status, "detail": d.detail}
            for d in drafts
        ])
    if not vapi_ok:
        return  # nothing was judged: every open finding keeps its state
    # Resolved: open findings whose source was judged in this run (or that belong to no source, in
    # an unfiltered run) and that this run did not report again.
    scope: sa.ColumnElement[bool] = FindingState.source.in_(sorted(judged))
    if judge_nulls:
        scope = sa.or_(scope, FindingState.source.is_(None))
    emitted = sa.select(Finding.key).where(Finding.run_id == run_id)
    session.execute(sa.delete(FindingState).where(scope, FindingState.key.not_in(emitted)),
                    execution_options=_UNSYNCED)
    session.execute(sa.update(FindingState).where(FindingState.key.in_(emitted)).values(last_seen_run=run_id),
                    execution_options=_UNSYNCED)
    new = [d for d in drafts if d.key not in known]
    if new:
        bulk_insert(session, FindingState, [
            {"key": d.key, "kind": d.kind, "number": d.number, "source": d.source, "first_seen_at": now,
             "last_seen_run": run_id}
            for d in new
        ])


def _prune_snapshots(session: Session) -> None:
    keep = session.execute(sa.select(Run.id).order_by(Run.seq.desc()).limit(KEEP_SNAPSHOTS)).scalars().all()
    prune_snapshots(session, list(keep))

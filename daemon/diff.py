"""Stage 2: the diff, as set-based SQL over one run's two snapshot tables.

Each query returns only the rows that are findings, so the work grows with the drift, not with
the inventory: 100,000 numbers in sync cost a few index scans and return nothing. The rules
are the contract's (INTERFACE.md, "Finding kinds"); the comments below say which rule each
query implements.

At a million numbers, only three questions need every row of the run: which numbers no Vapi
record holds, which Vapi records hold a number their source does not list, and which numbers
two Vapi records hold. Each is one pass over the (match_key, source) indexes of the run's rows
(``_lacking``, ``_duplicates``) that yields a handful of keys; the queries that state the rules
then read only the records with those keys (``_among``). The second question is asked once (by
``scan_run``, else by ``judge_sources``), and the records it finds travel to ``compute_findings``
in the judgements. Blocked,
unrouted and sourceless records come from a partial index of their own (``_notable``).

The three passes (and the count of each source's Vapi records, a fourth) need nothing but the
snapshot, so ``scan_run`` asks them before judging, two at a time on connections of their own:
the rest of a run waits for the diff on one core, and both databases answer two readers at once.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
import structlog
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, aliased, sessionmaker

from numsync.adapters.vapi_model import CARRIER_PROVIDERS

from .db import reads_in_parallel
from .models import NOTABLE_VAPI_RECORD, SNAPSHOT_TABLES, in_run, snapshot_partition
from .models import CarrierRecord as C
from .models import VapiRecord as V

__all__ = [
    "FindingDraft", "RunScan", "SourceJudgement", "compute_findings", "judge_sources", "prepare_diff", "scan_run",
]

log = structlog.get_logger(__name__)

# One Vapi record a source holds but does not list: (vapi_id, number, the listed source that owns
# the number or None).
Unowned = tuple[str, str, str | None]

_CHUNK = 5000  # keys bound in one IN (...) list on SQLite


@dataclass
class FindingDraft:
    kind: str
    number: str | None
    source: str | None
    vapi_ids: list[str] = field(default_factory=list)
    carrier_id: str | None = None
    detail: str | None = None
    action: str = "none"
    action_status: str = "none"
    # Not in the report: what the planner needs.
    labels: dict[str, Any] | None = None
    anchor: str | None = None  # keeps keys unique for records with neither number nor sipUri

    @property
    def key(self) -> str:
        return finding_key(self.kind, self.number if self.number is not None else self.anchor, self.source)


def finding_key(kind: str, number: str | None, source: str | None) -> str:
    return f"{kind}|{number or ''}|{source or ''}"


@dataclass
class SourceJudgement:
    name: str
    status: str  # ok | failed | suspect
    numbers: int
    error: str | None
    # Not in the report: the source's Vapi records whose number it does not list, found while
    # judging it; compute_findings turns them into 'moved' and 'orphaned' without asking again.
    unowned: list[Unowned] | None = field(default=None, repr=False, compare=False)


@dataclass(frozen=True)
class RunScan:
    """The answers of the passes over every row of a run (``scan_run``), for ``judge_sources`` and
    ``compute_findings`` to use instead of asking them again."""

    rows: _Run  # the run's rows, as the passes named them
    sources: tuple[str, ...]  # the sources ``held`` and ``unlisted`` are for
    held: dict[str, int]  # each source's Vapi records
    unlisted: list[str]  # numbers held under one of ``sources`` that does not list them
    unheld: list[str]  # numbers a source lists that no Vapi record holds
    twice: list[str]  # numbers two or more Vapi records hold


@dataclass(frozen=True)
class _Run:
    """One run's snapshot rows, as the diff's queries name them (``V``, ``C``, and ``of`` to select
    the run's rows of either).

    On PostgreSQL they are the run's own partitions, named directly. Through the parent table,
    PostgreSQL reads only the run's partition but keeps ``run_id = ...`` as a filter on each of its
    rows, which an index-only scan of the (match_key, source) indexes cannot evaluate: it would
    read the table instead. Elsewhere (SQLite, or a run whose partitions do not exist) they are the
    rows of the tables with the run's id (``in_run``: on SQLite, read through the run's own index).
    """

    id: str
    V: Any
    C: Any
    partitioned: bool

    def of(self, entity: Any) -> sa.ColumnElement[bool]:
        """The condition that selects the run's rows of ``entity`` (``V``, ``C`` or an alias of one)."""
        return sa.true() if self.partitioned else in_run(entity, self.id)

    @property
    def v(self) -> sa.ColumnElement[bool]:
        return self.of(self.V)

    @property
    def c(self) -> sa.ColumnElement[bool]:
        return self.of(self.C)


def _partitions_of(session: Session, run_id: str) -> dict[str, str] | None:
    """``run_id``'s partition of each snapshot table, by table; None where it has none (SQLite, or
    rows written into the tables themselves)."""
    if session.get_bind().dialect.name != "postgresql":
        return None
    names = {table: snapshot_partition(table, run_id) for table in SNAPSHOT_TABLES}
    found = session.execute(sa.select(*(sa.func.to_regclass(name) for name in names.values()))).one()
    return names if all(found) else None


def _rows_of(session: Session, run_id: str) -> _Run:
    names = _partitions_of(session, run_id)
    if names is None:
        return _Run(run_id, V, C, partitioned=False)
    v, c = (aliased(model, _partition(model, names[model.__tablename__]), adapt_on_names=True) for model in (V, C))
    return _Run(run_id, v, c, partitioned=True)


def _partition(model: Any, name: str) -> sa.Table:
    """A table named ``name`` with ``model``'s columns, for a query to read instead of the model's."""
    return sa.Table(name, sa.MetaData(), *(sa.Column(col.name, col.type) for col in model.__table__.columns))


def prepare_diff(sessions: sessionmaker[Session], run_id: str | None = None) -> None:
    """Ready a snapshot just written for the diff: on PostgreSQL, vacuum and analyze its tables
    (``run_id``'s partitions, when it has them; else the snapshot tables whole).

    After a bulk insert PostgreSQL has no statistics for the new rows, so it plans each anti-join
    as a million index probes; and with the visibility map not yet set, every key it reads from
    an index costs a visit to the table as well. VACUUM sets the map (COPY FREEZE has set it
    already, leaving it next to nothing to do), so the diff reads the (match_key, source) indexes
    alone; a small ANALYZE sample is enough for the planner. Neither blocks readers or writers.
    SKIP_LOCKED passes over a table autovacuum is already busy with, and INDEX_CLEANUP OFF leaves
    the index entries of pruned snapshots to autovacuum, off this run's critical path. SQLite needs
    nothing: its plans for these queries do not depend on statistics. Failing here only makes the
    diff slower.
    """
    try:
        with sessions() as session:
            if session.get_bind().dialect.name != "postgresql":
                return
            partitions = _partitions_of(session, run_id) if run_id is not None else None
            tables = ", ".join(partitions.values() if partitions else SNAPSHOT_TABLES)
        with sessions() as session:
            conn = session.connection(execution_options={"isolation_level": "AUTOCOMMIT"})
            conn.exec_driver_sql(f"VACUUM (SKIP_LOCKED, INDEX_CLEANUP OFF) {tables}")
        with sessions.begin() as session:
            session.execute(sa.text("SET LOCAL default_statistics_target = 10"))
            session.execute(sa.text(f"ANALYZE (SKIP_LOCKED) {tables}"))
    except sa.exc.DBAPIError as exc:
        log.warning("could not vacuum or analyze the snapshot tables; the diff will be slower",
                    error=exc.__class__.__name__)


def scan_run(sessions: sessionmaker[Session], run_id: str, sources: list[str]) -> RunScan:
    """Ask the passes over every row of ``run_id``'s snapshot, for ``sources`` (those listed without
    an error), two at a time where the database can answer two connections at once.

    Measured at a million numbers, SQLite, one after another: 0.13 s (counts), 0.28 s (unlisted),
    0.23 s (unheld), 0.25 s (twice), while the run's other core waited.
    """
    sources = sorted(sources)
    with sessions() as session:
        run = _rows_of(session, run_id)  # once: the names hold for every connection

    def read(ask: Callable[[Session, _Run], tuple[Any, Any]]) -> tuple[Any, Any]:
        with sessions() as session:
            _plan_for_one_run(session)
            return ask(session, run)

    asks: list[Callable[[Session, _Run], tuple[Any, Any]]] = [
        lambda session, run: (_held(session, run, sources), _unlisted(session, run, sources)),
        lambda session, run: (_unheld(session, run), _twice(session, run)),
    ]
    engine = sessions.kw.get("bind")
    if isinstance(engine, Engine) and reads_in_parallel(engine):
        with ThreadPoolExecutor(max_workers=len(asks), thread_name_prefix="numsync-diff") as pool:
            (held, unlisted), (unheld, twice) = pool.map(read, asks)
    else:
        (held, unlisted), (unheld, twice) = map(read, asks)
    return RunScan(run, tuple(sources), held, unlisted, unheld, twice)


def _held(session: Session, run: _Run, sources: list[str]) -> dict[str, int]:
    """Each source's Vapi records, counted in one pass (GROUP BY source would have SQLite sort the
    run's rows)."""
    if not sources:
        return {}
    V = run.V
    counts = sa.select(*(sa.func.count().filter(V.source == name) for name in sources)).where(run.v)
    return dict(zip(sources, session.execute(counts).one(), strict=True))


def _unlisted(session: Session, run: _Run, sources: list[str]) -> list[str]:
    """Numbers held in Vapi under one of ``sources`` that does not list them."""
    if not sources:
        return []
    V, C = run.V, run.C
    return _lacking(
        session,
        sa.select(V.match_key, V.source).where(run.v, V.match_key.is_not(None), V.source.in_(sources)),
        sa.select(C.match_key, C.source).where(run.c),
    )


def _unheld(session: Session, run: _Run) -> list[str]:
    """Numbers a source lists that no Vapi record holds."""
    V, C = run.V, run.C
    return _lacking(
        session,
        sa.select(C.match_key).where(run.c, C.match_key.is_not(None)),
        sa.select(V.match_key).where(run.v, V.match_key.is_not(None)),
    )


def _twice(session: Session, run: _Run) -> list[str]:
    """Numbers two or more Vapi records hold: one ordered pass over the index."""
    V = run.V
    stmt = sa.select(V.match_key).where(run.v, V.match_key.is_not(None)).group_by(V.match_key).having(
        sa.func.count() > 1)
    return list(session.execute(stmt).scalars())


def judge_sources(
    session: Session,
    run_id: str,
    listed: dict[str, tuple[int, str | None]],
    kinds: dict[str, str],
    max_orphan_fraction: float,
    scan: RunScan | None = None,
) -> dict[str, SourceJudgement]:
    """Decide ok / failed / suspect per source (contract: 'A source is suspect when ...').

    A source's orphans here are its Vapi records whose number no listed source owns, and those
    without a number (no source can own them). ``scan``: the run's passes, asked already
    (``scan_run``); asked here when not given, or given for another run or other sources.
    """
    ok_listed = sorted(name for name, (_, err) in listed.items() if err is None)
    _plan_for_one_run(session)
    if scan is not None and (scan.rows.id != run_id or scan.sources != tuple(ok_listed)):
        scan = None
    run = scan.rows if scan is not None else _rows_of(session, run_id)
    V = run.V
    vapi_counts: dict[str, int] = {}
    orphan_counts: dict[str | None, int] = {}
    unowned: dict[str, list[Unowned]] = {}
    if ok_listed:
        vapi_counts = scan.held if scan is not None else _held(session, run, ok_listed)
        numberless = (
            sa.select(V.source, sa.func.count())
            .where(run.v, V.match_key.is_(None), V.source.in_(ok_listed))
            .group_by(V.source)
        )
        orphan_counts = {name: int(n) for name, n in session.execute(numberless)}
        unowned = _unowned(session, run, ok_listed, owners=ok_listed,
                           candidates=scan.unlisted if scan is not None else None)
        for name, records in unowned.items():
            orphan_counts[name] = orphan_counts.get(name, 0) + sum(owner is None for _, _, owner in records)
    out: dict[str, SourceJudgement] = {}
    for name, (numbers, err) in listed.items():
        if err is not None:
            out[name] = SourceJudgement(name, "failed", numbers, err)
            continue
        held = vapi_counts.get(name, 0)
        orphans = orphan_counts.get(name, 0)
        if numbers == 0 and held > 0:
            judgement = SourceJudgement(
                name, "suspect", numbers,
                f"the {kinds[name]} inventory is empty while Vapi holds {held} of its numbers",
            )
        elif held >= 5 and orphans / held > max_orphan_fraction:
            judgement = SourceJudgement(
                name, "suspect", numbers,
                f"it would orphan {orphans} of its {held} Vapi numbers "
                f"(more than policy.max_orphan_fraction {max_orphan_fraction:g})",
            )
        else:
            judgement = SourceJudgement(name, "ok", numbers, None)
        judgement.unowned = unowned.get(name, [])
        out[name] = judgement
    return out


def compute_findings(
    session: Session,
    run_id: str,
    *,
    judgements: dict[str, SourceJudgement],
    selected: frozenset[str],
    filtered: bool,
    now: datetime,
    stuck_after: timedelta,
    scan: RunScan | None = None,
) -> list[FindingDraft]:
    """Every finding of the run, merged by key (kind, number, source); ``scan``: as for ``judge_sources``."""
    ok = sorted(n for n, j in judgements.items() if j.status == "ok")
    # A suspect source's inventory is not trusted enough to orphan its records, but a number it
    # lists is still a number it owns: another source's record of it is 'moved', not 'orphaned'.
    listed = sorted(n for n, j in judgements.items() if j.status != "failed")
    _plan_for_one_run(session)
    if scan is not None and scan.rows.id != run_id:
        scan = None
    run = scan.rows if scan is not None else _rows_of(session, run_id)
    drafts: dict[str, FindingDraft] = {}

    def add(d: FindingDraft) -> None:
        existing = drafts.get(d.key)
        if existing is None:
            drafts[d.key] = d
        else:
            existing.vapi_ids = sorted(set(existing.vapi_ids) | set(d.vapi_ids))

    for d in _source_unavailable(judgements):
        add(d)
    for d in _invalid_numbers(session, run, ok):
        add(d)
    for d in _missing(session, run, ok, scan.unheld if scan is not None else None):
        add(d)
    for d in _moved_and_orphaned(session, run, judgements, ok, listed):
        add(d)
    if not filtered:
        for d in _unmanaged(session, run):
            add(d)
    scope = sorted(selected) if filtered else None
    for d in _vapi_side(session, run, scope, now - stuck_after):
        add(d)
    for d in _duplicates(session, run, scope, scan.twice if scan is not None else None):
        add(d)
    return sorted(drafts.values(), key=lambda d: (d.kind, d.source or "", d.number or "", d.anchor or ""))


def _source_unavailable(judgements: dict[str, SourceJudgement]) -> Iterable[FindingDraft]:
    for j in judgements.values():
        if j.status != "ok":
            yield FindingDraft(
                "source_unavailable", None, j.name,
                detail=f"source {j.status}: {j.error}; its Vapi numbers were not judged orphaned "
                "and nothing was imported from it",
            )


def _invalid_numbers(session: Session, run: _Run, ok: list[str]) -> Iterable[FindingDraft]:
    C = run.C
    # invalid_number: a source returned a number that cannot be read as E.164.
    stmt = sa.select(C.source, C.number, C.carrier_id).where(
        run.c, C.source.in_(ok), C.match_key.is_(None)
    )
    for source, number, carrier_id in session.execute(stmt):
        yield FindingDraft("invalid_number", number, source, carrier_id=carrier_id,
                           detail=f"not a valid E.164 number ({carrier_id}); never imported")


def _plan_for_one_run(session: Session) -> None:
    """On PostgreSQL, for the rest of the transaction: read a run's rows from the indexes, in one
    process, and do not JIT.

    A run's rows were just written and read, so its index pages are in memory; at the default
    random_page_cost (4) the planner still reads the tables instead, twice as slow. Given workers,
    it splits an anti-join of two runs' worth of keys across them, and each worker then reads the
    whole inner side: at a million numbers one process merging two index-only scans took 0.25 s,
    three took 0.32-0.36 s and three times the CPU (a hash join in parallel, 0.5-0.6 s). JIT
    compiling these queries costs more than it saves. A lower random_page_cost already set is kept.
    """
    if session.get_bind().dialect.name == "postgresql":
        session.execute(sa.text(
            "SELECT set_config('random_page_cost',"
            " least(current_setting('random_page_cost')::float8, 1.1)::text, true), set_config('jit', 'off', true),"
            " set_config('max_parallel_workers_per_gather', '0', true)"
        ))


def _lacking(
    session: Session, rows: sa.Select[*tuple[Any, ...]], others: sa.Select[*tuple[Any, ...]]
) -> list[Any]:
    """The distinct first columns of the ``rows`` that ``others`` lacks (both select the same keys).

    This is the pass over every row of the run, written the way each database runs it fastest
    over the (match_key, source) indexes: SQLite merges two index-ordered scans for
    EXCEPT ... ORDER BY (as an anti-join it would descend a B-tree once per row, 3 to 5 times
    slower), PostgreSQL merges them for an anti-join (its EXCEPT sorts or hashes both sides). The
    answer is a handful of keys, which the caller looks up (``_among``): used as a
    subquery instead, it can lead PostgreSQL to misjudge its size and join every row to it.
    """
    if session.get_bind().dialect.name == "sqlite":
        difference = sa.except_(rows, others)
        stmt: sa.Executable = difference.order_by(*difference.selected_columns)
    else:
        same = [o == r for r, o in zip(rows.selected_columns, others.selected_columns, strict=True)]
        stmt = rows.where(~others.where(*same).exists())
    return list(dict.fromkeys(row[0] for row in session.execute(stmt)))


def _among(session: Session, column: Any, keys: list[Any]) -> Iterator[sa.ColumnElement[bool]]:
    """``column`` is one of ``keys``, as conditions for one query each: PostgreSQL takes the keys as
    one array (a bound value each cost more than the lookups), SQLite a few thousand at a time."""
    if session.get_bind().dialect.name == "postgresql":
        if keys:
            yield column == sa.any_(sa.bindparam(None, keys, type_=postgresql.ARRAY(sa.String())))
        return
    for start in range(0, len(keys), _CHUNK):
        yield column.in_(keys[start:start + _CHUNK])


def _missing(session: Session, run: _Run, ok: list[str], unheld: list[str] | None) -> Iterable[FindingDraft]:
    C = run.C
    # missing_in_vapi / routed_elsewhere: owned at an ok source, and no Vapi record at all holds
    # the number (a number held under another source is 'moved' or 'unmanaged', not missing).
    if not ok:
        return
    if unheld is None:
        unheld = _unheld(session, run)
    # Folded here: a source that lists a number twice (a CSV) gives one finding, with the first
    # record's id and labels, judged routed elsewhere if any of its records is.
    merged: dict[tuple[str, str], list[Any]] = {}
    for among in _among(session, C.match_key, unheld):
        stmt = (
            sa.select(C.source, C.match_key, C.carrier_id, C.routed_elsewhere, C.routing, C.labels)
            .where(run.c, C.source.in_(ok), among)
            .order_by(C.source, C.match_key, C.carrier_id)
        )
        for source, key, carrier_id, elsewhere, routing, labels in session.execute(stmt):
            seen = merged.get((source, key))
            if seen is None:
                merged[(source, key)] = [carrier_id, bool(elsewhere), routing, labels]
            else:
                seen[1] = seen[1] or bool(elsewhere)
                seen[2] = min(filter(None, (seen[2], routing)), default=None)
    for (source, key), (carrier_id, elsewhere, routing, labels) in merged.items():
        if elsewhere:
            yield FindingDraft("routed_elsewhere", key, source, carrier_id=carrier_id,
                               detail=f"voice routing points elsewhere: {routing}", labels=labels)
        else:
            yield FindingDraft("missing_in_vapi", key, source, carrier_id=carrier_id, labels=labels)


def _unowned(session: Session, run: _Run, sources: list[str], *, owners: list[str],
             candidates: list[str] | None = None) -> dict[str, list[Unowned]]:
    """Per source of ``sources``: its Vapi records whose number it does not list, with the first of
    ``owners`` that lists the number (None if none does). Records without a number are not here.
    ``candidates``: ``_unlisted`` for these sources, when already asked."""
    V, C = run.V, run.C
    if not sources:
        return {}
    if candidates is None:
        candidates = _unlisted(session, run, sources)
    owned_here = sa.exists().where(run.c, C.source == V.source, C.match_key == V.match_key)
    c = aliased(C)
    owner = (
        sa.select(sa.func.min(c.source))
        .where(run.of(c), c.match_key == V.match_key, c.source.in_(owners))
        .scalar_subquery()
    )
    out: dict[str, list[Unowned]] = {}
    for among in _among(session, V.match_key, candidates):
        stmt = sa.select(V.vapi_id, V.source, V.match_key, owner).where(
            run.v, V.source.in_(sources), among, ~owned_here
        )
        for vapi_id, source, key, owner_name in session.execute(stmt):
            out.setdefault(source, []).append((vapi_id, key, owner_name))
    return out


def _moved_and_orphaned(
    session: Session, run: _Run, judgements: dict[str, SourceJudgement], ok: list[str], listed: list[str]
) -> Iterable[FindingDraft]:
    # orphaned: a Vapi record of an ok source whose number that source does not own.
    # moved: the same, but another listed source owns the number (its name goes in detail).
    found: dict[str, list[Unowned]] = {name: judgements[name].unowned or [] for name in ok}
    if any(judgements[name].unowned is None for name in ok):  # judgements not made by judge_sources
        found = _unowned(session, run, ok, owners=listed)
    for source in ok:
        for vapi_id, key, owner_name in found.get(source, []):
            if owner_name:
                yield FindingDraft("moved", key, source, vapi_ids=[vapi_id],
                                   detail=f"held in Vapi under {source}, but owned by source {owner_name}")
            else:
                yield FindingDraft("orphaned", key, source, vapi_ids=[vapi_id],
                                   detail=f"source {source} does not own this number")


def _unmanaged(session: Session, run: _Run) -> Iterable[FindingDraft]:
    V = run.V
    # unmanaged: a carrier-account record that no configured source covers (informational).
    stmt = sa.select(V.vapi_id, V.provider, V.account, V.match_key, V.sip_uri).where(
        run.v, _notable(), V.provider.in_(CARRIER_PROVIDERS), V.source.is_(None)
    )
    for vapi_id, provider, account, key, sip in session.execute(stmt):
        yield FindingDraft("unmanaged", key or sip, None, vapi_ids=[vapi_id], anchor=vapi_id,
                           detail=f"{provider} account {account or '(none)'} is not covered by any source")


def _notable() -> sa.TextClause:
    """Implied by the conditions of _unmanaged and _vapi_side; stated so they read only the
    records in ix_vapi_records_notable, not every record of the run."""
    return sa.text(f"({NOTABLE_VAPI_RECORD})")


def _in_scope(source: Any, scope: list[str] | None) -> sa.ColumnElement[bool]:
    """A filtered run judges Vapi-side facts only for the records of the sources it selected."""
    return source.in_(scope) if scope is not None else sa.true()


def _vapi_side(
    session: Session, run: _Run, scope: list[str] | None, stuck_before: datetime
) -> Iterable[FindingDraft]:
    V = run.V
    # blocked / stuck_activating / unrouted: facts about Vapi records, judged whatever the carriers say.
    stmt = sa.select(
        V.vapi_id, V.source, V.match_key, V.sip_uri, V.status, V.routed, V.updated_at
    ).where(
        run.v,
        _notable(),
        _in_scope(V.source, scope),
        sa.or_(
            V.status == "blocked",
            sa.and_(V.status == "activating", V.updated_at < stuck_before),
            V.routed.is_(False),
        ),
    )
    for vapi_id, source, key, sip, status, routed, updated_at in session.execute(stmt):
        number = key or sip
        anchor = None if number else vapi_id
        if status == "blocked":
            yield FindingDraft("blocked", number, source, vapi_ids=[vapi_id], anchor=anchor,
                               detail="Vapi status is blocked")
        if status == "activating" and updated_at is not None and updated_at < stuck_before:
            yield FindingDraft("stuck_activating", number, source, vapi_ids=[vapi_id], anchor=anchor,
                               detail=f"activating since {updated_at.strftime('%Y-%m-%dT%H:%M:%SZ')}")
        if not routed:
            yield FindingDraft("unrouted", number, source, vapi_ids=[vapi_id], anchor=anchor,
                               detail="no assistantId, squadId, workflowId or server.url")


def _duplicates(
    session: Session, run: _Run, scope: list[str] | None, twice: list[str] | None
) -> Iterable[FindingDraft]:
    V = run.V
    # duplicate_in_vapi: one E.164 number (or sipUri) on two or more Vapi records.
    # Records are grouped by their number, or their sipUri if they have none. One ordered pass
    # over the index finds the numbers held twice; the records without a number are few and all
    # read (a sipUri may even equal another record's number as written); no other record is.
    unnumbered = session.execute(
        sa.select(V.sip_uri, V.vapi_id, V.source)
        .where(run.v, V.match_key.is_(None), V.sip_uri.is_not(None))
    ).all()
    groups: dict[str | None, list[tuple[str, str | None]]] = {}
    for sip, vapi_id, source in unnumbered:
        groups.setdefault(sip, []).append((vapi_id, source))
    keys = list(set(_twice(session, run) if twice is None else twice) | groups.keys())
    for among in _among(session, V.match_key, keys):
        held = sa.select(V.match_key, V.vapi_id, V.source).where(run.v, among)
        for key, vapi_id, source in session.execute(held):
            groups.setdefault(key, []).append((vapi_id, source))
    for key, records in groups.items():
        sources = [source for _, source in records if source is not None]
        if len(records) < 2 or (scope is not None and not set(sources) & set(scope)):
            continue
        same = len(sources) == len(records) and len(set(sources)) == 1
        yield FindingDraft("duplicate_in_vapi", key, sources[0] if same else None,
                           vapi_ids=sorted(vapi_id for vapi_id, _ in records),
                           detail=f"{len(records)} Vapi records hold this number")

"""Stage 1: list Vapi and every source at once and write both sides into the snapshot tables.

Listings run at once (the critical path is the slowest API, not their sum), each in a process of
its own where the platform allows (``workers``), and hand finished rows to the caller's thread,
which alone writes to the database; SQLite allows one writer and this keeps PostgreSQL simple too.
A side that fails leaves no rows behind: a failed source's rows are deleted before commit, and a
failed Vapi listing fails the whole snapshot.
"""

from __future__ import annotations

import functools
import itertools
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, cast

import msgspec
import orjson
import sqlalchemy as sa
from sqlalchemy.orm import Session

from numsync.adapters.base import Source, SourceRecord, VapiApi, VapiNumber, is_storable, storable, to_e164
from numsync.errors import DatabaseError, NumsyncError

from .db import can_copy, copy_rows
from .models import (
    SNAPSHOT_TABLES,
    CarrierRecord,
    UTCDateTime,
    VapiRecord,
    create_snapshot_run_index,
    in_run,
    is_snapshot_partition,
    run_of_snapshot_index,
    snapshot_partition,
    snapshot_run_index,
)
from .workers import Job, run_in_processes, run_in_threads

__all__ = ["SnapshotResult", "SourceOutcome", "listing_jobs", "prune_snapshots", "take_snapshot", "vapi_match_key"]

BATCH = 2000
# Rows a COPY carries at least (but a table's last): the server sets up each COPY, with a slot for
# each of the up to 1,000 rows it buffers, and takes it all down after, and with a COPY for each
# batch that was a quarter of its COPY's CPU. A plan of 300,000 numbers: the server's CPU went from
# 4.53-5.12 s to 3.32-3.8 s; the main process holds 15 MB more (25 batches a COPY: 55 MB, no less CPU).
COPY_ROWS = 10 * BATCH

# Vapi's listing runs at a lower CPU priority than the carriers' when they run in processes. It
# pages 8 at a time through 1,000-record pages, so its requests take little of a run's time (2.5 s
# of 20 ms latency for a million records); carriers' APIs page through smaller pages, fewer at a
# time or one after another (each adapter says how), and a carrier listing kept waiting for a
# core waits longer in all. Where the cores are enough for everyone, nothing changes; where
# they are not, Vapi's listing takes more of what the carriers leave. Not more than 5: on SQLite
# the run's own process (which writes every row) is busy too, and at 10 Vapi's listing, starved,
# became the slowest (25.8 s of a 29.4 s plan of a million numbers, on two cores).
VAPI_LISTING_NICE = 5


class _BulkWriter:
    """Inserts snapshot rows through the driver: executemany on SQLite, binary COPY on PostgreSQL.

    A snapshot is all bulk, and SQLAlchemy's per-row parameter processing (type decorators, JSON)
    was a third of a 100,000-number run's CPU. The listings therefore build their rows in the
    driver's form themselves (``_vapi_row``, ``_carrier_row``): JSON as text, and timestamps
    through ``stamp``, as SQLite's text form or an aware datetime for PostgreSQL. On PostgreSQL,
    COPY (psycopg's ``write_row``) moves a row for a fraction of an INSERT's cost, and its binary
    form, with each column's type stated once, for a quarter of the client's CPU of its text form
    (1.0 s against 3.5-3.8 s per million vapi_records rows) and less of the server's.
    """

    def __init__(self, session: Session, table: sa.Table, run_id: str, *, skip: tuple[str, ...] = (),
                 fresh: str | None = None) -> None:
        """Rows hold every column but ``run_id`` (and ``skip``): the run's id is the same in each,
        so it is written once, not carried by every row from its listing's process and bound to
        every insert (13 values a Vapi row became 12: SQLite inserted a million in 3.6 s rather
        than 3.8-4.0). ``fresh``: write into this table instead, one made (empty) in this
        transaction by ``_RunTables.table_for``, whose run_id defaults to the run's, which COPY
        may then write frozen."""
        self._conn = session.connection()
        columns = [c for c in table.columns if c.name not in skip and c.name != "run_id"]
        self.columns = [c.name for c in columns]
        into = fresh or table.name
        names = ", ".join(self.columns)
        mark = "?" if self._conn.dialect.paramstyle == "qmark" else "%s"
        literal = "'" + run_id.replace("'", "''") + "'"
        self._sql = f"INSERT INTO {into} (run_id, {names}) VALUES ({literal}, {', '.join([mark] * len(self.columns))})"
        self._copy: str | None = None
        self._types: list[str] | None = None
        self._prefix: tuple[str, ...] = ()  # (run_id,): for a table whose run_id has no default, each row's first value
        self._held: list[tuple[Any, ...]] = []  # rows for the next COPY
        if can_copy(self._conn):
            self._types = _binary_types(columns)
            options = [*(["FORMAT BINARY"] if self._types is not None else []), *(["FREEZE"] if fresh else [])]
            with_options = f" ({', '.join(options)})" if options else ""
            if fresh:
                self._copy = f"COPY {into} ({names}) FROM STDIN{with_options}"
            else:
                self._copy = f"COPY {into} (run_id, {names}) FROM STDIN{with_options}"
                self._types = ["text", *self._types] if self._types is not None else None
                self._prefix = (run_id,)
        # A remote timestamp (ISO text) as this driver takes a UTCDateTime column's value.
        self.stamp: Callable[[str | None], Any] = _sqlite_stamp if self._conn.dialect.name == "sqlite" else _aware_ts

    def write(self, rows: list[tuple[Any, ...]]) -> None:
        """Insert rows in the driver's form, in ``columns`` order; on PostgreSQL some may wait in
        this writer for the next COPY, until ``flush``."""
        if not rows:
            return
        if self._copy is None:
            self._conn.exec_driver_sql(self._sql, rows)
            return
        self._held.extend(rows)
        if len(self._held) >= COPY_ROWS:
            self.flush()

    def flush(self) -> None:
        """Send the rows held for the next COPY."""
        rows, self._held = self._held, []
        if not rows:
            return
        if self._prefix:
            rows = [self._prefix + row for row in rows]
        assert self._copy is not None
        copy_rows(self._conn, self._copy, rows, self._types)


def _binary_types(columns: list[sa.Column[Any]]) -> list[str] | None:
    """The PostgreSQL type each column's values are sent as in a binary COPY, or None (use text)
    when a column's type is not one the rows are known to hold exactly.

    A binary value is read with the column's own receive function: varchar's and json's read
    text, so both are sent as text (a row holds JSON already encoded).
    """
    types = []
    for column in columns:
        kind = column.type
        if isinstance(kind, sa.Boolean):
            types.append("bool")
        elif isinstance(kind, sa.String | sa.JSON):
            types.append("text")
        elif isinstance(kind, UTCDateTime):  # its values are aware datetimes (``stamp``)
            types.append("timestamptz")
        else:
            return None
    return types


class _RunTables:
    """Where a run's snapshot rows go: on PostgreSQL, into tables of the run's own that become its
    partitions of the snapshot tables once the listings are done; elsewhere (SQLite), into the
    tables, whose index of the run's rows (``snapshot_run_index``) is made once they are written.

    Why, on PostgreSQL (a million numbers, 2,000,000 rows, server CPU): a table made in the same
    transaction takes COPY FREEZE, which writes rows already visible to all (no hint bits to set
    later, no visibility map for VACUUM to fill), and an index built once from sorted keys when the
    table is attached costs less than two million random-order index inserts: loading went from
    11.7 s to 5.7-6.4 s. Pruning an old run's snapshot is then a DROP TABLE (0.1 s) where it was
    two million deletions (2.1 s, and as much again for VACUUM later). A failed run rolls its
    tables back with everything else.
    """

    def __init__(self, session: Session, run_id: str) -> None:
        self._conn = session.connection()
        self._own = self._conn.dialect.name == "postgresql"
        if str(uuid.UUID(run_id)) != run_id:  # it goes into DDL as text
            raise ValueError(f"a run id is a UUID in its canonical form, not {run_id!r}")
        self._run_id = run_id
        # table -> the run's table for it (PostgreSQL), or the index its rows await (SQLite)
        self._unattached: dict[str, str] = (
            {} if self._own else {table: snapshot_run_index(table, run_id) for table in SNAPSHOT_TABLES})

    def table_for(self, table: sa.Table) -> str | None:
        """Make the run's own (empty) table for ``table`` and return its name; None: write into ``table``."""
        if not self._own:
            return None
        mine = snapshot_partition(table.name, self._run_id)
        # With the table's CHECK constraints, which a partition must have to be attached, and one
        # that each row is the run's, checked as it is copied, so attaching needs no pass to check it.
        # Rows are written without their run_id (``_BulkWriter``): here it defaults to the run's.
        self._ddl(f"CREATE TABLE {mine} (LIKE {table.name} INCLUDING DEFAULTS INCLUDING CONSTRAINTS, "
                  f"CONSTRAINT {mine}_run CHECK (run_id = '{self._run_id}'))", table.name)
        self._ddl(f"ALTER TABLE {mine} ALTER COLUMN run_id SET DEFAULT '{self._run_id}'", table.name)
        self._unattached[table.name] = mine
        return mine

    def attach(self, table: sa.Table | None = None) -> None:
        """Make the run's table for ``table`` (else each not yet attached) its partition, which
        builds its indexes: about 0.8 s each at a million rows; on SQLite, index the run's rows
        of it. Vapi's is attached as soon as its listing is done, while the carriers' go on
        (``take_snapshot``), so that time is not spent after the slowest listing."""
        for name in [table.name] if table is not None else list(self._unattached):
            if (mine := self._unattached.pop(name, None)) is None:
                continue
            if self._own:
                self._ddl(f"ALTER TABLE {name} ATTACH PARTITION {mine} FOR VALUES IN ('{self._run_id}')", name)
            else:
                self._conn.exec_driver_sql(create_snapshot_run_index(name, self._run_id))

    def _ddl(self, statement: str, table: str) -> None:
        """Run ``statement``; a user without the rights it needs gets an error that says which
        (a least-privilege setup that migrates as one user and runs as another hits this first)."""
        try:
            self._conn.exec_driver_sql(statement)
        except sa.exc.DBAPIError as exc:
            if getattr(exc.orig, "sqlstate", None) != "42501":  # insufficient_privilege
                raise
            raise DatabaseError(
                f"the database user cannot make this run's partition of {table}: each run creates a table "
                f"in the snapshot tables' schema and attaches it, which needs CREATE on that schema and "
                f"ownership of {table} (run numsync as the user that ran `numsync db upgrade`, or give "
                f"this user both): {str(exc.orig).strip().splitlines()[0]}"
            ) from None


def prune_snapshots(session: Session, keep: list[str]) -> None:
    """Remove the snapshots of every run not in ``keep``: on PostgreSQL by dropping their partitions
    (and deleting any rows the default partition holds, written by a release before 0005), on
    SQLite by deleting their rows and the index of them."""
    conn = session.connection()
    if conn.dialect.name != "postgresql":
        # Each old run's rows found through its index, not a scan of every run's rows; every run
        # with rows has one (take_snapshot makes it in the transaction that writes them, and
        # migration 0008 made those of the runs before it).
        for model in (VapiRecord, CarrierRecord):
            table = model.__tablename__
            indexes = conn.exec_driver_sql(
                "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = ?", (table,)).scalars().all()
            for name in sorted(indexes):
                run_id = run_of_snapshot_index(name)
                if run_id is not None and run_id not in keep:
                    session.execute(sa.delete(model).where(in_run(model, run_id)))
                    conn.exec_driver_sql(f"DROP INDEX {name}")
        return
    kept = {snapshot_partition(table, run_id) for table in SNAPSHOT_TABLES for run_id in keep}
    for table in SNAPSHOT_TABLES:
        parts = conn.exec_driver_sql(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
            "WHERE i.inhparent = to_regclass(%(t)s)", {"t": table}).scalars().all()
        for part in sorted(parts):
            if part == f"{table}_default":
                conn.execute(sa.text(f"DELETE FROM {part} WHERE run_id NOT IN :keep").bindparams(
                    sa.bindparam("keep", expanding=True, type_=sa.String())), {"keep": keep})
            elif is_snapshot_partition(part) and part not in kept:
                conn.exec_driver_sql(f"DROP TABLE {part}")


class _Writing:
    """The snapshot's writes, in order, in one thread of their own, a few batches behind the caller.

    Why: a write waits on the database (SQLite's inserts, PostgreSQL's answer to each COPY), and
    while the thread that receives the listings' batches waited, the listings waited on it: at a
    million numbers on PostgreSQL, the Vapi listing spent 9.5 s of its 24 s blocked on a full
    pipe. Both drivers let go of the GIL while they wait, so receiving the next batch goes on.
    The database connection is used by this thread alone until ``finish``; a failed write is
    raised in the caller at its next ``write`` or at ``finish``.
    """

    AHEAD = 4  # batches written behind the caller, at most

    def __init__(self) -> None:
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="numsync-snapshot-write")
        self._pending: deque[Future[None]] = deque()

    def write(self, writer: _BulkWriter, rows: list[tuple[Any, ...]]) -> None:
        self.call(functools.partial(writer.write, rows))

    def call(self, fn: Callable[[], None]) -> None:
        """Run ``fn`` on the connection after the writes before it."""
        self._pending.append(self._pool.submit(fn))
        while len(self._pending) > self.AHEAD or (self._pending and self._pending[0].done()):
            self._pending.popleft().result()

    def finish(self, *, quiet: bool = False) -> None:
        """Wait for the writes; raises the first that failed unless ``quiet`` (the caller is already
        failing). The connection is the caller's again."""
        try:
            while self._pending:
                future = self._pending.popleft()
                if not quiet:
                    future.result()
                elif not future.cancel():
                    future.exception()  # waited for; its error gives way to the caller's
        finally:
            self._pool.shutdown(wait=True, cancel_futures=True)


Progress = Callable[[str, int, int | None], None]


@dataclass
class SourceOutcome:
    name: str
    kind: str
    numbers: int = 0
    error: str | None = None
    seconds: float = 0.0


@dataclass
class SnapshotResult:
    vapi_numbers: int = 0
    vapi_error: str | None = None
    vapi_seconds: float = 0.0
    vapi_bound: datetime | None = None  # records created from then on are not in the snapshot
    sources: dict[str, SourceOutcome] = field(default_factory=dict)
    cpu_seconds: dict[str, float] = field(default_factory=dict)  # per listing process, when they ran in processes


def vapi_match_key(rec: VapiNumber) -> str | None:
    """How a Vapi number is compared: E.164, or as written for byo numbers without the E.164 check."""
    if rec.number is None:
        return None
    if not rec.e164_check:
        return rec.number.strip()
    number = rec.number
    if number[:1] == "+" and number[1:].isdigit():
        return number  # already E.164: the common case, and parsing 100,000 of them costs a second
    return to_e164(number, assume_plus=True) or number.strip()


def _sqlite_stamp(text: str | None) -> str | None:
    """ISO text as SQLite keeps a ``UTCDateTime``: UTC, naive, "YYYY-MM-DD HH:MM:SS.ffffff".

    Vapi writes its times one way ("2026-11-26T20:55:55.628Z"), which is cut into that form once
    read as a valid time; anything else goes through a datetime, as the column type would.
    """
    if not text or (when := _aware_ts(text)) is None:
        return None
    if len(text) == 24 and text[23] == "Z" and text[19] == "." and text[10] == "T":
        return f"{text[:10]} {text[11:23]}000"
    if when.tzinfo is not UTC:
        when = when.astimezone(UTC)
    return when.replace(tzinfo=None).isoformat(" ", "microseconds")


def _parse_ts(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        return datetime.fromisoformat(text)  # Python 3.11+ reads a trailing "Z" itself
    except ValueError:
        return None


def _aware_ts(text: str | None) -> datetime | None:
    """ISO text as PostgreSQL's binary COPY takes a ``UTCDateTime``: aware. A time given without
    an offset is read as UTC on both databases (``UTCDateTime`` itself refuses one, and the
    machine's local time would make the same record differ between hosts)."""
    when = _parse_ts(text)
    if when is not None and when.tzinfo is None:
        return when.replace(tzinfo=UTC)
    return when


def _error_text(exc: BaseException) -> str:
    if isinstance(exc, NumsyncError):
        return str(exc)
    # Unknown exceptions: the class name only; their text may quote a request.
    return f"unexpected {exc.__class__.__name__}"


def take_snapshot(
    session: Session,
    run_id: str,
    vapi: VapiApi,
    sources: list[Source],
    owners: dict[tuple[str, str], str],
    *,
    progress: Progress | None = None,
    processes: bool = False,
    expected: Mapping[str, int] | None = None,
) -> SnapshotResult:
    """List everything and write it for ``run_id``; ``owners`` maps (provider, account) to a source;
    ``expected``: how many numbers a source's last whole listing found (``Source.list_numbers``).

    Each listing is a job that turns records into finished rows (``workers``: in a child process
    each when ``processes``, else in threads); this thread only writes what they send.
    """
    result = SnapshotResult(sources={s.name: SourceOutcome(s.name, s.kind) for s in sources})
    tables = _RunTables(session, run_id)
    vapi_table, carrier_table = cast(sa.Table, VapiRecord.__table__), cast(sa.Table, CarrierRecord.__table__)
    vapi_writer = _BulkWriter(session, vapi_table, run_id, skip=("raw",), fresh=tables.table_for(vapi_table))
    carrier_writer = _BulkWriter(session, carrier_table, run_id, fresh=tables.table_for(carrier_table))
    jobs = listing_jobs(vapi, sources, owners, vapi_writer.stamp, expected)
    started = time.monotonic()
    writing = _Writing()
    events = run_in_processes(jobs) if processes else run_in_threads(jobs)
    failed = True
    try:
        for tag, kind, payload in events:
            if kind == "rows":
                if tag == "vapi":
                    writing.write(vapi_writer, payload)
                    result.vapi_numbers += len(payload)
                else:
                    writing.write(carrier_writer, payload)
                    out = result.sources[tag]
                    out.numbers += len(payload)
                    if progress:
                        progress(tag, out.numbers, None)
            elif kind == "progress":
                if progress:
                    progress(tag, *payload)
            elif kind == "cpu":
                result.cpu_seconds[tag] = payload
            elif kind == "bound":
                result.vapi_bound = payload
            else:  # done | error
                elapsed = time.monotonic() - started
                error = payload if kind == "error" else None
                if tag == "vapi":
                    result.vapi_seconds, result.vapi_error = elapsed, error
                    if error is None:
                        writing.call(vapi_writer.flush)
                        writing.call(functools.partial(tables.attach, vapi_table))
                else:
                    result.sources[tag].seconds, result.sources[tag].error = elapsed, error
        writing.call(carrier_writer.flush)  # Vapi's were sent when its listing ended (or go unsent: it failed)
        failed = False
    finally:
        try:
            events.close()
        finally:
            writing.finish(quiet=failed)
    tables.attach()
    if processes:
        vapi.reset_connections()  # a child may have left one of them mid-request
    for out in result.sources.values():
        if out.error is not None:
            session.execute(
                sa.delete(CarrierRecord).where(in_run(CarrierRecord, run_id), CarrierRecord.source == out.name)
            )
            out.numbers = 0
    if result.vapi_error is not None:
        session.execute(sa.delete(VapiRecord).where(in_run(VapiRecord, run_id)))
        result.vapi_numbers = 0
    return result


Row = tuple[Any, ...]


def listing_jobs(vapi: VapiApi, sources: list[Source], owners: dict[tuple[str, str], str],
                 stamp: Callable[[str | None], Any], expected: Mapping[str, int] | None = None) -> list[Job]:
    """The snapshot's listings, in the order they are started: by their expected length. A forked
    listing starts as soon as it is forked where nothing else in this process could be set working
    by it (``run_in_processes``), and each fork takes 2-6 ms. So the carriers' come first, the one
    with the fewest numbers per round trip first, then Vapi's, whose requests take little of a
    run's time (``VAPI_LISTING_NICE``)."""
    # plain_rows: a row holds text, None, bools and ``stamp``'s text or aware datetime (``_vapi_row``, ``_carrier_row``)
    expected = expected or {}
    jobs = [Job(src.name, functools.partial(_source_job, src, expected.get(src.name)), _error_text, plain_rows=True)
            for src in sorted(sources, key=lambda s: s.numbers_per_round_trip)]
    jobs.append(Job("vapi", lambda: _vapi_job(vapi, owners, stamp), _error_text, plain_rows=True,
                    nice=VAPI_LISTING_NICE))
    return jobs


def _vapi_job(vapi: VapiApi, owners: dict[tuple[str, str], str],
              stamp: Callable[[str | None], Any]) -> Iterator[tuple[str, Any]]:
    """Vapi's records as finished rows (``iter_numbers`` gives each record once)."""
    said: list[tuple[int, int]] = []

    def vapi_progress(done: int, total: int) -> None:
        said.append((done, total))

    rows: list[Row] = []
    for rec in vapi.iter_numbers(progress=vapi_progress):
        rows.append(_vapi_row(rec, owners, stamp))
        if said:
            if rows:
                yield "rows", rows
                rows = []
            yield "progress", said[-1]
            said.clear()
        elif len(rows) >= BATCH:
            yield "rows", rows
            rows = []
    if rows:
        yield "rows", rows
    if said:
        yield "progress", said[-1]
    yield "bound", vapi.listing_bound


def _source_job(src: Source, expected: int | None) -> Iterator[tuple[str, Any]]:
    rows = (_carrier_row(src.name, rec) for rec in src.list_numbers(expected))
    while batch := list(itertools.islice(rows, BATCH)):
        yield "rows", batch


def _cut(value: str | None, size: int) -> str | None:
    """Fit a remote value into its column: PostgreSQL refuses an over-long one and fails the run."""
    return value[:size] if value else value


def _vapi_row(rec: VapiNumber, owners: dict[tuple[str, str], str],
              stamp: Callable[[str | None], Any]) -> tuple[Any, ...]:
    """One vapi_records row as the driver takes it, in the table's column order; neither ``raw`` nor
    ``run_id`` (``_BulkWriter``) is in it.

    Values are cut to their columns (PostgreSQL refuses an over-long one and fails the run);
    inline, because this runs once per Vapi record (``s[:n]`` is ``s`` itself when it fits).
    Their text is storable already, unlike a carrier row's (``_carrier_row``): the Vapi client's
    JSON decoding (``http_util.loads``) marks what no database holds, for a byte search per page
    where a check here would cost the critical listing a search per record.
    """
    account = rec.account
    name = rec.name
    return (
        rec.id[:64],
        rec.provider[:32],
        rec.number and rec.number[:64],
        _cut(vapi_match_key(rec), 64),
        rec.sip_uri and rec.sip_uri[:255],
        rec.status and rec.status[:16],
        name[:80] if name else None,
        account and account[:128],
        owners.get((rec.provider, account)) if account else None,
        rec.routed,
        rec.created_at and rec.created_at[:40],
        stamp(rec.updated_at),
    )


def _carrier_row(source: str, rec: SourceRecord) -> tuple[Any, ...]:
    """One carrier_records row as the driver takes it (labels as JSON text), in the table's column
    order, without ``run_id`` (``_BulkWriter``).

    Text no database can hold (U+0000, a lone surrogate) becomes U+FFFD, as in the JSON the
    adapters read (``http_util.loads``): an SDK's own parsing or a CSV file can hold it too, and
    one such record failed the whole snapshot. One search over the record's text finds it.
    """
    try:
        labels = orjson.dumps(dict(rec.labels)).decode() if rec.labels else None
        clean = is_storable(f"{rec.number}{rec.e164}{rec.carrier_id}{rec.status}{rec.routing}") and not (
            labels and "\\u0000" in labels)
    except orjson.JSONEncodeError:  # a lone surrogate in a label
        clean = False
    if not clean:
        rec = SourceRecord(*storable(list(msgspec.structs.astuple(rec))))
        labels = orjson.dumps(dict(rec.labels)).decode() if rec.labels else None
    return (
        source,
        rec.number[:128],
        _cut(rec.e164, 64),
        rec.carrier_id[:128],
        _cut(rec.status, 40),
        labels,
        _cut(rec.routing, 255) or None,
        rec.routed_elsewhere,
    )

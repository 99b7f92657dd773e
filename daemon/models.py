"""SQLAlchemy models: runs, the two snapshots, findings, finding state and the action journal.

The snapshots are per run so a diff is always between two sides captured by the same run, and
an interrupted run can never mix its half-listing with a previous one. Old snapshots are pruned;
findings and runs are kept for reports and the history chart.
"""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    text,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

__all__ = [
    "NOTABLE_VAPI_RECORD",
    "SNAPSHOT_TABLES",
    "TRIGGERS",
    "Action",
    "Base",
    "CarrierRecord",
    "Finding",
    "FindingState",
    "Run",
    "RunSource",
    "UTCDateTime",
    "VapiRecord",
    "create_snapshot_run_index",
    "in_run",
    "is_snapshot_partition",
    "run_of_snapshot_index",
    "snapshot_partition",
    "snapshot_run_index",
]

# What starts a run: a command (the CLI, the demo, a caller of run_once), the daemon's schedule,
# or its nightly report.
TRIGGERS = ("command", "schedule", "nightly")

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class UTCDateTime(TypeDecorator[datetime]):
    """Aware UTC datetimes on both databases (SQLite has no time zones and returns naive values)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map: dict[Any, Any] = {datetime: UTCDateTime(), dict[str, Any]: JSON, list[Any]: JSON}


class Run(Base):
    """One plan or reconcile. ``status`` is the lifecycle, ``outcome`` the contract's verdict."""

    __tablename__ = "runs"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    seq: Mapped[int] = mapped_column(Integer, unique=True)  # orders runs; ids are random
    mode: Mapped[str] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(16), default="running")  # running|finished|failed|interrupted
    outcome: Mapped[str | None] = mapped_column(String(16))  # in_sync|drift|error
    started_at: Mapped[datetime]
    finished_at: Mapped[datetime | None]
    vapi_numbers: Mapped[int | None] = mapped_column(Integer)
    error: Mapped[str | None] = mapped_column(Text)
    selected_sources: Mapped[list[Any] | None] = mapped_column(JSON)
    summary: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    holder: Mapped[str | None] = mapped_column(String(200))  # host:pid, for humans reading the table
    stats: Mapped[dict[str, Any] | None] = mapped_column(JSON)  # timings and request counts
    # command|schedule|nightly (TRIGGERS); NULL for runs recorded before 0007. The nightly report
    # finds the previous one by it: its folders may not outlive the pod, the database does.
    trigger: Mapped[str | None] = mapped_column(String(16))

    __table_args__ = (Index("ix_runs_trigger_seq", "trigger", "seq"),)


class RunSource(Base):
    __tablename__ = "run_sources"

    run_id: Mapped[str] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True)
    source: Mapped[str] = mapped_column(String(64), primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(16))  # ok|failed|suspect
    numbers: Mapped[int] = mapped_column(Integer, default=0)
    error: Mapped[str | None] = mapped_column(Text)
    seconds: Mapped[float | None]


# On PostgreSQL each snapshot table is partitioned by run: a run writes its rows into a table of
# its own and attaches it (``daemon.snapshot``), and pruning drops whole partitions. SQLite has
# one plain table each, and an index for each run's rows (``snapshot_run_index``).
SNAPSHOT_TABLE_OPTIONS = {"postgresql_partition_by": "LIST (run_id)"}
SNAPSHOT_TABLES = ("vapi_records", "carrier_records")
_PARTITION = re.compile(rf"({'|'.join(SNAPSHOT_TABLES)})_(default|[0-9a-f]{{32}})")


def snapshot_partition(table: str, run_id: str) -> str:
    """The name of ``run_id``'s partition of a snapshot table (PostgreSQL). A run id is a UUID that
    numsync made; parsing it here is what keeps the name, used in DDL, free of anything else."""
    return f"{table}_{uuid.UUID(run_id).hex}"


_RUN_INDEX = re.compile(rf"ix_({'|'.join(SNAPSHOT_TABLES)})_run_([0-9a-f]{{32}})")


def snapshot_run_index(table: str, run_id: str) -> str:
    """The name of the index of ``run_id``'s rows of a snapshot table (SQLite): (match_key, source)
    where run_id is the run's, made when the run's listing has been written (``daemon.snapshot``).

    Why one per run, made after: SQLite keeps every run's rows in one table, and an index over all
    of them, (run_id, match_key, source), took each row's key as it came. Listings come in the
    order the APIs keep (when a number was bought), not in the numbers' order, so each insert went
    to a random place in an index larger than the page cache. A plan of a million numbers so
    listed: the main process's CPU went from 48.7-49.4 s to 29.8-30.9 s; in the numbers' own
    order, from 32.7-32.8 s to 25.2-28.0 s (two cores, slow that day). The index leaves the other
    runs' rows out, but SQLite reads them all to build it: more kept runs, more to read.
    """
    return f"ix_{table}_run_{uuid.UUID(run_id).hex}"


def create_snapshot_run_index(table: str, run_id: str) -> str:
    """The statement that makes ``snapshot_run_index``: its condition is written here, beside
    ``in_run``, whose queries must state it in the same form for SQLite to use the index."""
    return (f"CREATE INDEX {snapshot_run_index(table, run_id)} ON {table} (match_key, source) "
            f"WHERE run_id = '{uuid.UUID(run_id)}'")


def run_of_snapshot_index(name: str) -> str | None:
    """The run whose rows the index ``name`` holds (``snapshot_run_index``), or None: another index."""
    found = _RUN_INDEX.fullmatch(name)
    return str(uuid.UUID(found.group(2))) if found else None


def in_run(entity: Any, run_id: str) -> sa.ColumnElement[bool]:
    """The condition that selects ``run_id``'s rows of a snapshot table (or of an alias of one).

    The id is written into the statement as a literal: SQLite uses a partial index only for a query
    that states the index's condition in the same form (``snapshot_run_index``), which a bound
    parameter is not. SQLAlchemy still compiles the statement once, and adds the literal when it runs.
    """
    return entity.run_id == sa.literal(run_id, String(36), literal_execute=True)


def is_snapshot_partition(name: str) -> bool:
    """Whether a table is a partition of a snapshot table (a run's, or the default one), which the
    models do not declare and the migrations leave alone."""
    return _PARTITION.fullmatch(name) is not None


def _key_text(length: int) -> String:
    """Text the diff sorts and merges on (numbers, source names): byte order on PostgreSQL.

    Under a database's default collation (en_US.UTF-8, even C.UTF-8) PostgreSQL compares such text
    through the C library's strcoll and cannot abbreviate the keys it sorts; under "C" it compares
    bytes. At a million numbers, building a run's (match_key, source) index took 0.63 s against
    1.91 s, and the diff can merge two index-ordered scans instead of hashing one side. SQLite
    already compares bytes.
    """
    return String(length).with_variant(String(length, collation="C"), "postgresql")


def _only_on(dialect: str, index: Index) -> Index:
    """An index that only ``dialect`` gets (the migrations' environment compares it there alone)."""
    index.info["dialect"] = dialect
    return index.ddl_if(dialect=dialect)


# The Vapi records the diff reads one by one, whatever the carriers list: blocked, activating or
# unrouted ones, and those no configured source owns. ix_vapi_records_notable holds only these,
# so finding them does not read every row of a run; a query uses it by stating this condition
# word for word (SQLite matches a partial index's condition by its form).
NOTABLE_VAPI_RECORD = "status IN ('blocked', 'activating') OR NOT routed OR source IS NULL"


class VapiRecord(Base):
    """A Vapi phone-number record as seen by one run (secrets already removed by the client)."""

    __tablename__ = "vapi_records"

    # No key column (migration 0005): a snapshot is a million rows written at once and dropped a few
    # runs later, and nothing looks a row up by itself; the ORM's identity is (run_id, vapi_id).
    # No foreign key (migration 0004): PostgreSQL checks one with a query per row, half of its cost
    # of loading a snapshot. Only the run that made the runs row writes these, and pruning deletes them.
    run_id: Mapped[str] = mapped_column(String(36))
    vapi_id: Mapped[str] = mapped_column(String(64))  # unique in a run: the listing keeps each record once
    provider: Mapped[str] = mapped_column(String(32))
    number: Mapped[str | None] = mapped_column(String(64))
    match_key: Mapped[str | None] = mapped_column(_key_text(64))  # E.164, or the number as written
    sip_uri: Mapped[str | None] = mapped_column(String(255))
    status: Mapped[str | None] = mapped_column(String(16))
    name: Mapped[str | None] = mapped_column(String(80))
    account: Mapped[str | None] = mapped_column(String(128))  # twilioAccountSid or credentialId
    source: Mapped[str | None] = mapped_column(_key_text(64))  # the configured source it belongs to
    routed: Mapped[bool] = mapped_column(Boolean)  # assistant, squad, workflow or server.url set
    created_at: Mapped[str | None] = mapped_column(String(40))
    updated_at: Mapped[datetime | None]
    # Not written since 0002 (nothing read it, and encoding and storing it was a third of a
    # snapshot's cost); kept, nullable, so the previous release can still insert it during a
    # rolling deploy, to be dropped by a later migration.
    raw: Mapped[dict[str, Any] | None] = mapped_column(JSON)

    __table_args__ = (
        # The source is in the index so the diff's passes over a run's numbers read it alone (0003).
        # On PostgreSQL the diff reads the run's partition, where run_id is one value, so it is left
        # out (0006); SQLite has an index like it for each run's rows (``snapshot_run_index``, 0008).
        _only_on("postgresql", Index("ix_vapi_records_key", "match_key", "source")),
        Index("ix_vapi_records_notable", "run_id",
              sqlite_where=text(NOTABLE_VAPI_RECORD), postgresql_where=text(NOTABLE_VAPI_RECORD)),
        SNAPSHOT_TABLE_OPTIONS,
    )
    __mapper_args__ = {"primary_key": ("run_id", "vapi_id")}


class CarrierRecord(Base):
    """A number as one source owns it, in one run."""

    __tablename__ = "carrier_records"

    run_id: Mapped[str] = mapped_column(String(36))  # no key column and no foreign key, as VapiRecord
    source: Mapped[str] = mapped_column(_key_text(64))
    number: Mapped[str] = mapped_column(String(128))
    match_key: Mapped[str | None] = mapped_column(_key_text(64))  # None: not a valid E.164 number
    carrier_id: Mapped[str] = mapped_column(String(128))
    status: Mapped[str | None] = mapped_column(String(40))
    labels: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    routing: Mapped[str | None] = mapped_column(String(255))
    routed_elsewhere: Mapped[bool] = mapped_column(Boolean, default=False)

    __table_args__ = (
        # As the vapi_records ones, and in the same order, so the two can be merged (0003, 0006, 0008).
        _only_on("postgresql", Index("ix_carrier_records_key", "match_key", "source")),
        SNAPSHOT_TABLE_OPTIONS,
    )
    # A carrier's id for a number is unique within its source's listing (a CSV's is the number).
    __mapper_args__ = {"primary_key": ("run_id", "source", "carrier_id")}


class Finding(Base):
    __tablename__ = "findings"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    run_id: Mapped[str] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"))
    key: Mapped[str] = mapped_column(String(400))  # kind|number|source: identity across runs
    kind: Mapped[str] = mapped_column(String(32))
    number: Mapped[str | None] = mapped_column(String(255))
    source: Mapped[str | None] = mapped_column(String(64))
    vapi_ids: Mapped[list[Any]] = mapped_column(JSON)
    carrier_id: Mapped[str | None] = mapped_column(String(128))
    first_seen_at: Mapped[datetime]
    action: Mapped[str] = mapped_column(String(16), default="none")
    action_status: Mapped[str] = mapped_column(String(16), default="none")
    detail: Mapped[str | None] = mapped_column(Text)

    __table_args__ = (
        UniqueConstraint("run_id", "key", name="uq_findings_run_key"),
        Index("ix_findings_run_kind", "run_id", "kind"),
    )


class FindingState(Base):
    """When each open finding was first seen; survives runs that could not judge it."""

    __tablename__ = "finding_state"

    key: Mapped[str] = mapped_column(String(400), primary_key=True)
    kind: Mapped[str] = mapped_column(String(32))
    number: Mapped[str | None] = mapped_column(String(255))
    source: Mapped[str | None] = mapped_column(String(64))
    first_seen_at: Mapped[datetime]
    last_seen_run: Mapped[str] = mapped_column(String(36))


class Action(Base):
    """The journal: every side effect is written here before it is sent and settled after."""

    __tablename__ = "actions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    run_id: Mapped[str] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"))
    source: Mapped[str] = mapped_column(String(64))
    number: Mapped[str] = mapped_column(String(64))
    action: Mapped[str] = mapped_column(String(16))  # import
    state: Mapped[str] = mapped_column(String(16))  # planned|skipped|started|done|failed
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    vapi_id: Mapped[str | None] = mapped_column(String(64))
    request: Mapped[dict[str, Any] | None] = mapped_column(JSON)  # the create body, secrets removed
    detail: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime]
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]

    __table_args__ = (
        UniqueConstraint("run_id", "source", "number", "action", name="uq_actions_run_source_number_action"),
        Index("ix_actions_state", "state"),
    )

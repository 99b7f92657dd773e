"""on SQLite, each run's snapshot rows indexed on their own, once they are written

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-28 04:00:00

SQLite keeps every run's rows in one table per side, and indexed them all on (run_id, match_key,
source) as they came. The APIs list numbers in the order they keep them (when each was bought),
which is not the numbers' order, so every insert went to a random place in an index larger than
the page cache. A run now indexes its own rows on (match_key, source) when its listing has been
written, in one sorted pass: a partial index per run (``WHERE run_id = '<the run>'``), dropped
with the run's rows when it is pruned. PostgreSQL is unchanged (each run's rows are a partition
of their own there, indexed when attached).

Rows are kept: each run that has rows gets its index here. SQLite reads the whole table to build
each one (a million rows among three million: 1.8 s), so with four runs of a million numbers kept
this takes some 15 s.
Rows under a run id that is not a UUID, which numsync never wrote, cannot be named in an index and
are deleted with the old index (snapshots are working data of the last few runs; their findings,
which reports read, stay).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence

from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TABLES = ("vapi_records", "carrier_records")


def _canonical(run_id: str | None) -> str | None:
    try:
        return run_id if run_id is not None and str(uuid.UUID(run_id)) == run_id else None
    except ValueError:
        return None


def upgrade() -> None:
    conn = op.get_bind()
    if conn.dialect.name != "sqlite":
        return
    for table in TABLES:
        for run_id in conn.exec_driver_sql(f"SELECT DISTINCT run_id FROM {table}").scalars().all():
            if _canonical(run_id) is None:
                conn.exec_driver_sql(f"DELETE FROM {table} WHERE run_id IS ?", (run_id,))
                continue
            # the same name and form as numsync.daemon.models.create_snapshot_run_index
            conn.exec_driver_sql(f"CREATE INDEX IF NOT EXISTS ix_{table}_run_{uuid.UUID(run_id).hex} "
                                 f"ON {table} (match_key, source) WHERE run_id = '{run_id}'")
        op.drop_index(f"ix_{table}_run_key", table_name=table)


def downgrade() -> None:
    conn = op.get_bind()
    if conn.dialect.name != "sqlite":
        return
    for table in TABLES:
        op.create_index(f"ix_{table}_run_key", table, ["run_id", "match_key", "source"], unique=False)
        names = conn.exec_driver_sql("SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = ? "
                                     "AND name LIKE ?", (table, f"ix_{table}_run_%")).scalars().all()
        for name in names:
            if name != f"ix_{table}_run_key":
                op.drop_index(name, table_name=table)

"""on PostgreSQL, snapshot keys compared as bytes and indexed without the run

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-27 16:00:00

The diff sorts and merges a run's rows on (match_key, source). Under the database's default
collation PostgreSQL compares that text with the C library's strcoll and cannot abbreviate the
keys it sorts; under "C" it compares bytes (phone numbers and source names have no linguistic
order to keep). And since 0005 each run's rows are a partition of their own, which the diff reads
by name, so run_id, one value there, is left out of the index: building it for a million rows
took 0.63 s against 1.91 s, and the diff's passes over two runs' partitions merge two index-only
scans (about 0.25 s each) where they hashed one side in parallel (0.5-0.6 s, on three cores).
SQLite is unchanged: it keeps every run's rows in one table, and compares bytes already.

Rows are kept; the new index is built on the kept partitions (a few seconds at a million numbers).
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TABLES = ("vapi_records", "carrier_records")


def _collate(table: str, collation: str) -> None:
    # varchar to varchar of the same length: no rewrite, only the indexes on the columns rebuilt
    op.execute(f'ALTER TABLE {table} ALTER COLUMN match_key TYPE VARCHAR(64) COLLATE "{collation}", '
               f'ALTER COLUMN source TYPE VARCHAR(64) COLLATE "{collation}"')


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for table in TABLES:
        op.drop_index(f"ix_{table}_run_key", table_name=table)  # and its partitions' copies
        _collate(table, "C")
        op.create_index(f"ix_{table}_key", table, ["match_key", "source"], unique=False)


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for table in TABLES:
        op.drop_index(f"ix_{table}_key", table_name=table)
        _collate(table, "default")
        op.create_index(f"ix_{table}_run_key", table, ["run_id", "match_key", "source"], unique=False)

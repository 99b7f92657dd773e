"""snapshot rows without a foreign key to runs: checking it was half of PostgreSQL's cost of loading them

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-27 08:00:00

PostgreSQL checks a foreign key with a trigger that runs a query for every row: COPYing a
million vapi_records rows took 10.7-11.3 s of the server's CPU with the key and 5.6-5.9 s without
it. Nothing relied on the key: runs are never deleted (so ON DELETE CASCADE never fired), the
snapshot's rows are written only by the run that has just made its runs row, in one transaction
with it, and pruning deletes old snapshots' rows itself. findings, actions and run_sources keep
theirs (a few rows per run). The previous release's inserts work on the changed tables.
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TABLES = ("vapi_records", "carrier_records")


def upgrade() -> None:
    for table in TABLES:
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.drop_constraint(f"fk_{table}_run_id_runs", type_="foreignkey")


def downgrade() -> None:
    for table in TABLES:
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.create_foreign_key(f"fk_{table}_run_id_runs", "runs", ["run_id"], ["id"], ondelete="CASCADE")

"""indexes for the diff at a million numbers: the run_key indexes also hold the source, and a
partial index holds the few Vapi records the diff reads one by one

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-26 18:40:00

With the source in (run_id, match_key, source) on both snapshot tables, the diff's passes over a
run's numbers read the indexes alone, in the same order on both sides. ix_vapi_records_notable
holds only blocked, activating, unrouted and sourceless records, so finding those does not read
every row (it costs a snapshot's inserts next to nothing). Each run_key index still serves every
lookup the previous release makes by (run_id, match_key), so it keeps working during a rolling
deploy.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# As models.NOTABLE_VAPI_RECORD (a migration keeps its own copy: the model may change later).
NOTABLE = "status IN ('blocked', 'activating') OR NOT routed OR source IS NULL"


def upgrade() -> None:
    for table in ("vapi_records", "carrier_records"):
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.drop_index(f"ix_{table}_run_key")
            batch_op.create_index(f"ix_{table}_run_key", ["run_id", "match_key", "source"], unique=False)
    with op.batch_alter_table("vapi_records", schema=None) as batch_op:
        batch_op.create_index("ix_vapi_records_notable", ["run_id"], unique=False,
                              sqlite_where=sa.text(NOTABLE), postgresql_where=sa.text(NOTABLE))


def downgrade() -> None:
    with op.batch_alter_table("vapi_records", schema=None) as batch_op:
        batch_op.drop_index("ix_vapi_records_notable")
    for table in ("vapi_records", "carrier_records"):
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.drop_index(f"ix_{table}_run_key")
            batch_op.create_index(f"ix_{table}_run_key", ["run_id", "match_key"], unique=False)

"""runs.trigger: what started a run (a command, the daemon's schedule, its nightly report)

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-27 20:30:00

The nightly report measures "new" and "resolved" against the previous nightly report. It found
that one by its dated folder alone, and on a Deployment's emptyDir the folders go with the pod:
the first nightly report after a restart or a failover compared with nothing, and a nightly report
that was due while no replica led was never made up. The database outlives pods, so it now says
which runs were nightly reports. Existing runs keep NULL (started before anyone recorded why).
The previous release writes runs without the column and reads none of it.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("runs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("trigger", sa.String(length=16), nullable=True))
        batch_op.create_index("ix_runs_trigger_seq", ["trigger", "seq"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("runs", schema=None) as batch_op:
        batch_op.drop_index("ix_runs_trigger_seq")
        batch_op.drop_column("trigger")

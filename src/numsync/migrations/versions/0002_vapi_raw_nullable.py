"""vapi_records.raw becomes nullable: the snapshot stops writing it

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-26 18:10:00

Expand step only: the previous release still writes ``raw`` and keeps working; a later release
drops the column once no running release writes it.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("vapi_records") as batch_op:
        batch_op.alter_column("raw", existing_type=sa.JSON(), nullable=True)


def downgrade() -> None:
    # Rows written since the upgrade have no raw record: give them an empty object first.
    op.execute(sa.text("UPDATE vapi_records SET raw = '{}' WHERE raw IS NULL"))
    with op.batch_alter_table("vapi_records") as batch_op:
        batch_op.alter_column("raw", existing_type=sa.JSON(), nullable=False)

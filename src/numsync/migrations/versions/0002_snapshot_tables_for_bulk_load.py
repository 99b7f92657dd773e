"""snapshot tables shaped for bulk loading: an integer key and one index each, raw nullable

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-26 18:10:00

Loading a snapshot is one insert per number, and at a million numbers the indexes made each
insert cost 15-20 us on SQLite: the random-ordered (run_id, vapi_id) primary key above all, then
the (run_id, source) indexes no query needs. vapi_records gets an integer key (a Vapi id is
unique within a run because the listing keeps each record once) and both tables keep only the
(run_id, match_key) index the diff joins on. ``raw`` is no longer written (nothing read it).

vapi_records is recreated rather than altered: it only ever holds the last few runs' snapshots,
which nothing reads after their run, and SQLite could not change a primary key in place anyway.
The previous release's inserts (which name raw and no id) still work on the new table.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _vapi_columns(*, new: bool) -> list[sa.Column[Any]]:
    key: list[sa.Column[Any]] = [sa.Column("id", sa.Integer(), autoincrement=True, nullable=False)] if new else []
    return [
        *key,
        sa.Column("run_id", sa.String(length=36), nullable=False),
        sa.Column("vapi_id", sa.String(length=64), nullable=False),
        sa.Column("provider", sa.String(length=32), nullable=False),
        sa.Column("number", sa.String(length=64), nullable=True),
        sa.Column("match_key", sa.String(length=64), nullable=True),
        sa.Column("sip_uri", sa.String(length=255), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=True),
        sa.Column("name", sa.String(length=80), nullable=True),
        sa.Column("account", sa.String(length=128), nullable=True),
        sa.Column("source", sa.String(length=64), nullable=True),
        sa.Column("routed", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.String(length=40), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("raw", sa.JSON(), nullable=new),
    ]


def upgrade() -> None:
    op.drop_table("vapi_records")  # its indexes go with it
    op.create_table(
        "vapi_records",
        *_vapi_columns(new=True),
        sa.ForeignKeyConstraint(
            ["run_id"], ["runs.id"], name=op.f("fk_vapi_records_run_id_runs"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_vapi_records")),
    )
    with op.batch_alter_table("vapi_records", schema=None) as batch_op:
        batch_op.create_index("ix_vapi_records_run_key", ["run_id", "match_key"], unique=False)
    with op.batch_alter_table("carrier_records", schema=None) as batch_op:
        batch_op.drop_index("ix_carrier_records_run_source")


def downgrade() -> None:
    with op.batch_alter_table("carrier_records", schema=None) as batch_op:
        batch_op.create_index("ix_carrier_records_run_source", ["run_id", "source", "match_key"], unique=False)
    op.drop_table("vapi_records")
    op.create_table(
        "vapi_records",
        *_vapi_columns(new=False),
        sa.ForeignKeyConstraint(
            ["run_id"], ["runs.id"], name=op.f("fk_vapi_records_run_id_runs"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("run_id", "vapi_id", name=op.f("pk_vapi_records")),
    )
    with op.batch_alter_table("vapi_records", schema=None) as batch_op:
        batch_op.create_index("ix_vapi_records_run_key", ["run_id", "match_key"], unique=False)
        batch_op.create_index("ix_vapi_records_run_source", ["run_id", "source"], unique=False)

"""snapshot tables without a key column and, on PostgreSQL, partitioned by run

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-27 14:00:00

A run on PostgreSQL now writes its snapshot into tables of its own, made in its transaction, and
attaches them as its partitions (``daemon.snapshot._RunTables``): COPY FREEZE into a fresh table
and an index built once from sorted keys loaded a million numbers (2,000,000 rows) with 5.7-6.4 s
of the server's CPU against 11.7 s, and pruning a run's snapshot is a DROP TABLE (0.1 s) where it
deleted two million rows (2.1 s, and VACUUM's work later). A partitioned table's primary key has
to hold the partition key, and the integer key held nothing anyone looked up, so both tables lose
it, on SQLite too (one schema for both). The default partition takes rows written by the previous
release during a rolling deploy (its COPY names the parent table); pruning deletes them.

Both tables are recreated, empty: they only ever hold the last few runs' snapshots, which nothing
reads after their run (findings, actions and runs are untouched). So is the downgrade.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

NOTABLE = "status IN ('blocked', 'activating') OR NOT routed OR source IS NULL"


def _vapi_columns() -> list[sa.Column[Any]]:
    return [
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
        sa.Column("raw", sa.JSON(), nullable=True),
    ]


def _carrier_columns() -> list[sa.Column[Any]]:
    return [
        sa.Column("run_id", sa.String(length=36), nullable=False),
        sa.Column("source", sa.String(length=64), nullable=False),
        sa.Column("number", sa.String(length=128), nullable=False),
        sa.Column("match_key", sa.String(length=64), nullable=True),
        sa.Column("carrier_id", sa.String(length=128), nullable=False),
        sa.Column("status", sa.String(length=40), nullable=True),
        sa.Column("labels", sa.JSON(), nullable=True),
        sa.Column("routing", sa.String(length=255), nullable=True),
        sa.Column("routed_elsewhere", sa.Boolean(), nullable=False),
    ]


def _create(*, partitioned: bool) -> None:
    postgresql = op.get_bind().dialect.name == "postgresql"
    options: dict[str, Any] = {"postgresql_partition_by": "LIST (run_id)"} if partitioned else {}
    for table, columns in (("vapi_records", _vapi_columns()), ("carrier_records", _carrier_columns())):
        parts: list[Any] = list(columns)
        if not partitioned:  # as 0004 left them: an integer key
            parts = [sa.Column("id", sa.Integer(), autoincrement=True, nullable=False), *parts,
                     sa.PrimaryKeyConstraint("id", name=op.f(f"pk_{table}"))]
        op.create_table(table, *parts, **options)
        op.create_index(f"ix_{table}_run_key", table, ["run_id", "match_key", "source"], unique=False)
        if partitioned and postgresql:
            op.execute(f"CREATE TABLE {table}_default PARTITION OF {table} DEFAULT")
    op.create_index("ix_vapi_records_notable", "vapi_records", ["run_id"], unique=False,
                    sqlite_where=sa.text(NOTABLE), postgresql_where=sa.text(NOTABLE))


def _drop() -> None:
    for table in ("vapi_records", "carrier_records"):
        op.drop_table(table)  # with its indexes, and on PostgreSQL its partitions


def upgrade() -> None:
    _drop()
    _create(partitioned=True)


def downgrade() -> None:
    _drop()
    _create(partitioned=False)

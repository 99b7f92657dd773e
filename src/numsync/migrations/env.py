"""Alembic environment: batch mode on SQLite, an advisory lock on PostgreSQL while migrating.

The lock matters in Kubernetes, where a migration Job and a developer's laptop could otherwise
run the same migration twice at once.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import context

from numsync.daemon.models import Base, is_snapshot_partition, run_of_snapshot_index

MIGRATION_LOCK_ID = 0x6E756D73796E63  # 'numsync'

config = context.config
target_metadata = Base.metadata


def _include_name(name: str | None, type_: str, parent_names: object) -> bool:
    """Leave the snapshot tables' partitions (PostgreSQL) and the indexes of each run's rows
    (SQLite) out of autogenerate's comparison: the runs make and drop them (``daemon.snapshot``),
    the models declare only the tables."""
    if name is None:
        return True
    if type_ == "table":
        return not is_snapshot_partition(name)
    return not (type_ == "index" and run_of_snapshot_index(name) is not None)


def _include_object(obj: object, name: str | None, type_: str, reflected: bool, compare_to: object) -> bool:
    """Compare an index the models give one database only (``models._only_on``) on that database
    alone; elsewhere it is not expected to exist."""
    dialect = getattr(obj, "info", {}).get("dialect") if type_ == "index" and not reflected else None
    return dialect is None or dialect == context.get_bind().dialect.name


def _run(connection: sa.Connection) -> None:
    sqlite = connection.dialect.name == "sqlite"
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=sqlite,
        transaction_per_migration=True,
        compare_type=True,
        include_name=_include_name,
        include_object=_include_object,
    )
    if connection.dialect.name == "postgresql":
        connection.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": MIGRATION_LOCK_ID})
        connection.execute(sa.text("SET LOCAL lock_timeout = '10s'"))
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    given = config.attributes.get("connection")
    if given is not None:
        _run(given)
        return
    url = context.get_x_argument(as_dictionary=True).get("url") or config.get_main_option("sqlalchemy.url")
    engine = sa.create_engine(url or "sqlite://")
    with engine.begin() as connection:
        _run(connection)
    engine.dispose()


def run_migrations_offline() -> None:
    context.configure(url=config.get_main_option("sqlalchemy.url"), target_metadata=target_metadata,
                      literal_binds=True, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()

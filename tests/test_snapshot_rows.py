"""The snapshot's rows are built in the driver's form by the listings themselves (no second pass):
these check that the shortcuts give exactly what SQLAlchemy's column types would have stored."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import cast

import pytest
import sqlalchemy as sa
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy.orm import Session

from numsync.adapters.base import SourceRecord
from numsync.adapters.vapi_model import to_vapi_number
from numsync.daemon.db import open_database, upgrade
from numsync.daemon.models import CarrierRecord, Run, VapiRecord
from numsync.daemon.snapshot import BATCH, COPY_ROWS, _BulkWriter, _carrier_row, _parse_ts, _sqlite_stamp, _vapi_row


def _general(text: str) -> str | None:
    """What the column type stores on SQLite for the time ``text`` means (UTC, naive, microseconds)."""
    when = _parse_ts(text)
    if when is None:
        return None
    return when.astimezone(UTC).replace(tzinfo=None).isoformat(" ", "microseconds")


@given(st.datetimes(min_value=datetime(1970, 1, 2), max_value=datetime(2999, 12, 31), timezones=st.just(UTC)))
def test_vapi_timestamps_take_the_short_way_to_the_same_text(moment: datetime) -> None:
    text = moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"  # how Vapi writes them
    assert _sqlite_stamp(text) == _general(text)


@pytest.mark.parametrize("text", [
    "2026-11-26T20:55:55.628+02:00", "2026-11-26T20:55:55Z", "2026-11-26 20:55:55.628Z",
    "2026-11-26T20:55:55.628123Z", "2026-11-26T20:55:55.628-05:30",
])
def test_other_forms_go_through_a_datetime(text: str) -> None:
    assert _sqlite_stamp(text) == _general(text)
    assert _sqlite_stamp(text) is not None


@pytest.mark.parametrize("text", [None, "", "yesterday", "2026-13-01T00:00:00.000Z", "2026-02-30T00:00:00.000Z"])
def test_unreadable_times_are_stored_as_null(text: str | None) -> None:
    assert _sqlite_stamp(text) is None


# Rows do not carry their run id: the writer writes it, on SQLite as a literal (hence the quote).
RUN = "run 'one'"


def test_rows_read_back_as_the_orm_would_have_written_them(db_url: str) -> None:
    """Through the writer the snapshot uses: executemany on SQLite, binary COPY on PostgreSQL,
    where a value of the wrong type or form would fail the copy or read back changed."""
    upgrade(db_url)
    engine = open_database(db_url)
    try:
        carrier = SourceRecord(number="+14155550100", e164="+14155550100", carrier_id="PN1", status="active",
                               labels={"country": "US", "note": "\u00fc"}, routing="https://x",
                               routed_elsewhere=False)
        bare = SourceRecord(number="415 555 0101", e164=None, carrier_id="PN2", routed_elsewhere=True)
        vapi = to_vapi_number({"id": "v1", "provider": "twilio", "number": "+14155550100",
                               "twilioAccountSid": "AC1", "createdAt": "2026-11-26T20:55:55.628Z",
                               "updatedAt": "2026-11-26T21:00:01.005Z", "assistantId": "a"})
        # A time without an offset is UTC, and a record may hold almost nothing.
        other = to_vapi_number({"id": "v2", "provider": "byo-phone-number", "name": "Caf\u00e9",
                                "updatedAt": "2026-11-26T21:00:01"})
        with Session(engine) as session, session.begin():
            session.add(Run(id=RUN, seq=1, mode="plan", status="running", started_at=datetime.now(UTC)))
        with Session(engine) as session, session.begin():
            carriers = _BulkWriter(session, cast(sa.Table, CarrierRecord.__table__), RUN)
            carriers.write([_carrier_row("twilio-main", carrier), _carrier_row("twilio-main", bare)])
            vapis = _BulkWriter(session, cast(sa.Table, VapiRecord.__table__), RUN, skip=("raw",))
            owners = {("twilio", "AC1"): "twilio-main"}
            vapis.write([_vapi_row(vapi, owners, vapis.stamp), _vapi_row(other, owners, vapis.stamp)])
            carriers.flush()  # on PostgreSQL rows wait for a COPY of many batches, the last for this
            vapis.flush()
        with Session(engine) as session:
            got, got_bare = session.execute(sa.select(CarrierRecord).order_by(CarrierRecord.carrier_id)).scalars()
            seen, seen_other = session.execute(sa.select(VapiRecord).order_by(VapiRecord.vapi_id)).scalars()
        assert {got.run_id, got_bare.run_id, seen.run_id, seen_other.run_id} == {RUN}
        assert got.labels == {"country": "US", "note": "\u00fc"}
        assert (got.number, got.match_key, got.carrier_id, got.routing) == ("+14155550100", "+14155550100", "PN1",
                                                                           "https://x")
        assert (got_bare.match_key, got_bare.labels, got_bare.status, got_bare.routed_elsewhere) == (
            None, None, None, True)
        assert seen.updated_at == datetime(2026, 11, 26, 21, 0, 1, 5000, tzinfo=UTC)
        assert (seen.match_key, seen.source, seen.routed, seen.created_at) == (
            "+14155550100", "twilio-main", True, "2026-11-26T20:55:55.628Z")
        assert seen_other.updated_at == datetime(2026, 11, 26, 21, 0, 1, tzinfo=UTC)
        assert (seen_other.name, seen_other.number, seen_other.source, seen_other.routed) == (
            "Caf\u00e9", None, None, False)
    finally:
        engine.dispose()


def test_rows_held_for_the_next_copy_are_written_by_flush(db_url: str) -> None:
    """On PostgreSQL a COPY carries at least ``COPY_ROWS`` rows: the writer holds the batches before
    them, and ``flush`` sends the rest. SQLite inserts each batch as it comes."""
    upgrade(db_url)
    engine = open_database(db_url)
    rows = [_carrier_row("trunk", SourceRecord(number=f"+1415{i:07d}", e164=f"+1415{i:07d}", carrier_id=f"PN{i}"))
            for i in range(2 * COPY_ROWS + BATCH // 2)]
    try:
        with Session(engine) as session, session.begin():
            session.add(Run(id=RUN, seq=1, mode="plan", status="running", started_at=datetime.now(UTC)))
        with Session(engine) as session, session.begin():
            writer = _BulkWriter(session, cast(sa.Table, CarrierRecord.__table__), RUN)
            for start in range(0, len(rows), BATCH):
                writer.write(rows[start:start + BATCH])
            count = sa.select(sa.func.count()).select_from(CarrierRecord)
            written = session.execute(count).scalar_one()
            assert written == (2 * COPY_ROWS if engine.dialect.name == "postgresql" else len(rows))
            writer.flush()
            assert session.execute(count).scalar_one() == len(rows)
            writer.flush()  # nothing held: nothing sent twice
            assert session.execute(count).scalar_one() == len(rows)
    finally:
        engine.dispose()

"""The snapshot's rows are built in the driver's form by the listings themselves (no second pass):
these check that the shortcuts give exactly what SQLAlchemy's column types would have stored."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
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
from numsync.daemon.snapshot import _carrier_row, _parse_ts, _sqlite_stamp, _vapi_row


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


def _insert(session: Session, table: sa.Table, row: tuple[object, ...]) -> None:
    cols = [c.name for c in table.columns if c.name not in ("id", "raw")]
    assert len(cols) == len(row)  # the row builders follow the table's column order
    session.connection().exec_driver_sql(
        f"INSERT INTO {table.name} ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})", [row])


def test_rows_read_back_as_the_orm_would_have_written_them(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'rows.db'}"
    upgrade(url)
    engine = open_database(url)
    try:
        carrier = SourceRecord(number="+14155550100", e164="+14155550100", carrier_id="PN1", status="active",
                               labels={"country": "US", "note": "\u00fc"}, routing="https://x",
                               routed_elsewhere=False)
        vapi = to_vapi_number({"id": "v1", "provider": "twilio", "number": "+14155550100",
                               "twilioAccountSid": "AC1", "createdAt": "2026-11-26T20:55:55.628Z",
                               "updatedAt": "2026-11-26T21:00:01.005Z", "assistantId": "a"})
        with Session(engine) as session, session.begin():
            session.add(Run(id="r1", seq=1, mode="plan", status="running", started_at=datetime.now(UTC)))
        with Session(engine) as session, session.begin():
            _insert(session, cast(sa.Table, CarrierRecord.__table__), _carrier_row("r1", "twilio-main", carrier))
            _insert(session, cast(sa.Table, VapiRecord.__table__),
                    _vapi_row("r1", vapi, {("twilio", "AC1"): "twilio-main"}, _sqlite_stamp))
        with Session(engine) as session:
            got = session.execute(sa.select(CarrierRecord)).scalar_one()
            seen = session.execute(sa.select(VapiRecord)).scalar_one()
        assert got.labels == {"country": "US", "note": "\u00fc"}
        assert (got.number, got.match_key, got.carrier_id, got.routing) == ("+14155550100", "+14155550100", "PN1",
                                                                           "https://x")
        assert seen.updated_at == datetime(2026, 11, 26, 21, 0, 1, 5000, tzinfo=UTC)
        assert (seen.match_key, seen.source, seen.routed) == ("+14155550100", "twilio-main", True)
    finally:
        engine.dispose()

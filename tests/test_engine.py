"""The engine end to end against the Vapi emulation and CSV sources, on SQLite and PostgreSQL.

Every test seeds a known state, runs the real `run_once`, and compares the findings with the
seeded ones exactly: a missing or an extra finding fails.
"""

from __future__ import annotations

import json
import re
import tempfile
import threading
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import alembic.command
import httpx
import jsonschema
import psycopg
import pytest
import sqlalchemy as sa
import sqlalchemy.orm

from numsync.app import run_once
from numsync.config import Config, parse_config
from numsync.daemon.db import alembic_config, make_engine, open_database, upgrade
from numsync.daemon.diff import compute_findings, judge_sources, prepare_diff, scan_run
from numsync.daemon.models import Action, CarrierRecord, FindingState, Run, RunSource, VapiRecord, in_run
from numsync.daemon.recheck import MAX_RECHECKS
from numsync.daemon.run import KEEP_SNAPSHOTS, LISTED_LOOKBACK_RUNS, _last_listed
from numsync.daemon.snapshot import prune_snapshots
from numsync.errors import ConfigError, DatabaseError
from numsync.sandbox.demo import Sandbox, start_sandbox
from numsync.sandbox.server import EmulatorServer
from numsync.sandbox.vapi import VapiEmulator
from numsync.sandbox.vonage import make_tls

SCHEMA = json.loads((Path(__file__).parent / "schemas" / "report.schema.json").read_text())
TWILIO_SID = "AC" + "1" * 32
OTHER_SID = "AC" + "9" * 32
ASSISTANT = "asst-0001"


@pytest.fixture
def sandbox(tmp_path: Path) -> Iterator[Sandbox]:
    """The demo's emulations (every API, the demo's records), stopped after the test."""
    sb = start_sandbox(workdir=tmp_path / "sandbox")
    try:
        yield sb
    finally:
        sb.stop()


@pytest.fixture
def vapi() -> Iterator[tuple[VapiEmulator, EmulatorServer]]:
    emu = VapiEmulator(api_key="test-vapi-key")
    with EmulatorServer(emu) as server:
        yield emu, server


def write_csv(path: Path, numbers: list[str], extra: str = "") -> Path:
    path.write_text("number,label" + extra + "\n" + "".join(f"{n},line {i}\n" for i, n in enumerate(numbers)))
    return path


def make_config(tmp_path: Path, db_url: str, vapi_url: str, sources: str, policy: str = "") -> Config:
    text = f"""
database_url: {db_url}
vapi:
  api_key: test-vapi-key
  base_url: {vapi_url}
  backoff_base: 0.01
  requests_per_second: 0
sources:
{sources}
policy:
  max_orphan_fraction: 0.5
{policy}
reports:
  dir: {tmp_path / 'reports'}
"""
    return parse_config(text, origin="test.yaml", base_dir=tmp_path, env={})


def byo_source(name: str, numbers_file: Path, credential: str) -> str:
    """One trunk source, as make_config's ``sources`` takes it."""
    return f"""
  - name: {name}
    kind: byo
    numbers_file: {numbers_file}
    vapi_credential_id: {credential}
"""


def findings_of(report: dict[str, Any]) -> set[tuple[str, str | None, str | None]]:
    return {(f["kind"], f["number"], f["source"]) for f in report["findings"]}


def test_vapi_side_findings_are_exactly_the_seeded_ones(tmp_path: Path, db_url: str, vapi: Any) -> None:
    emu, server = vapi
    now = datetime.now(UTC)
    trunk = write_csv(tmp_path / "trunk.csv", ["+14155550100", "+14155550101", "+14155550102", "+14155550103"])
    common = {"credentialId": "cred-trunk", "assistantId": ASSISTANT}
    emu.add("byo-phone-number", number="+14155550100", **common)  # healthy
    emu.add("byo-phone-number", number="+14155550101", status="blocked", **common)
    emu.add("byo-phone-number", number="+14155550102", status="activating",
            updatedAt=(now - timedelta(hours=3)).isoformat().replace("+00:00", "Z"), **common)
    emu.add("byo-phone-number", number="+14155550103", credentialId="cred-trunk")  # unrouted
    fresh = emu.add("vapi", sipUri="sip:fresh@sip.vapi.ai", status="activating", assistantId=ASSISTANT)
    dup_a = emu.add("vapi", number="+14155550199", assistantId=ASSISTANT)
    dup_b = emu.add("vapi", number="+14155550199", assistantId=ASSISTANT)
    cfg = make_config(tmp_path, db_url, server.url, byo_source("trunk-a", trunk, "cred-trunk"))
    out = run_once(cfg, mode="plan")
    assert findings_of(out.report) == {
        ("blocked", "+14155550101", "trunk-a"),
        ("stuck_activating", "+14155550102", "trunk-a"),
        ("unrouted", "+14155550103", "trunk-a"),
        ("duplicate_in_vapi", "+14155550199", None),
    }
    dup = next(f for f in out.report["findings"] if f["kind"] == "duplicate_in_vapi")
    assert dup["vapi_ids"] == sorted([dup_a["id"], dup_b["id"]])
    assert fresh["id"] not in json.dumps(out.report)  # activating, but not for long: no finding
    assert out.result.outcome == "drift"
    assert out.result.exit_code == 2
    jsonschema.validate(out.report, SCHEMA)
    assert out.report["vapi"]["numbers"] == 7
    assert {p.name for p in out.paths} == {"report.json", "report.md", "report.html", "report.csv"}


def test_carrier_findings_and_import(tmp_path: Path, db_url: str, vapi: Any) -> None:
    emu, server = vapi
    a = write_csv(tmp_path / "a.csv", ["+14155550100", "+14155550101", "+1 415 555 0102", "not-a-number",
                                       "+14155550300"])
    b = write_csv(tmp_path / "b.csv", ["+14155550200", "+14155550300"])
    emu.add("byo-phone-number", number="+14155550100", credentialId="cred-a", assistantId=ASSISTANT)
    emu.add("byo-phone-number", number="+14155550999", credentialId="cred-a", assistantId=ASSISTANT)  # orphan
    emu.add("byo-phone-number", number="+14155550200", credentialId="cred-a", assistantId=ASSISTANT)  # moved
    emu.add("twilio", number="+14155550500", twilioAccountSid=OTHER_SID, twilioAuthToken="tok-secret-xyz",
            assistantId=ASSISTANT)  # unmanaged
    cfg = make_config(tmp_path, db_url, server.url, f"""
  - name: trunk-a
    kind: byo
    numbers_file: {a}
    vapi_credential_id: cred-a
    import:
      assistant_id: {ASSISTANT}
  - name: trunk-b
    kind: byo
    numbers_file: {b}
    vapi_credential_id: cred-b
""")
    out = run_once(cfg, mode="plan")
    expected = {
        ("missing_in_vapi", "+14155550101", "trunk-a"),
        ("missing_in_vapi", "+14155550102", "trunk-a"),
        ("missing_in_vapi", "+14155550300", "trunk-a"),
        ("missing_in_vapi", "+14155550300", "trunk-b"),
        ("invalid_number", "not-a-number", "trunk-a"),
        ("orphaned", "+14155550999", "trunk-a"),
        ("moved", "+14155550200", "trunk-a"),
        ("unmanaged", "+14155550500", None),
    }
    assert findings_of(out.report) == expected
    assert out.result.exit_code == 2
    by_key = {(f["kind"], f["number"], f["source"]): f for f in out.report["findings"]}
    assert by_key[("missing_in_vapi", "+14155550300", "trunk-b")]["action"] == "none"  # trunk-a imports it
    assert by_key[("missing_in_vapi", "+14155550101", "trunk-a")]["action_status"] == "planned"
    assert "trunk-b" in by_key[("moved", "+14155550200", "trunk-a")]["detail"]
    assert "tok-secret-xyz" not in json.dumps(out.report)
    before = len(emu.records())
    assert before == 4  # plan never writes to Vapi

    out2 = run_once(cfg, mode="reconcile")
    imported = {r["number"] for r in emu.records()} - {"+14155550100", "+14155550999", "+14155550200",
                                                         "+14155550500"}
    assert imported == {"+14155550101", "+14155550102", "+14155550300"}
    assert all(len(emu.by_number(n)) == 1 for n in imported)
    rec = emu.by_number("+14155550101")[0]
    assert rec["provider"] == "byo-phone-number" and rec["credentialId"] == "cred-a"
    assert rec["assistantId"] == ASSISTANT and rec["name"] == "trunk-a +14155550101"
    assert out2.result.exit_code == 2  # orphaned / moved remain
    statuses = {(f["kind"], f["number"]): f["action_status"] for f in out2.report["findings"]}
    assert statuses[("missing_in_vapi", "+14155550101")] == "done"

    out3 = run_once(cfg, mode="plan")
    assert not [f for f in out3.report["findings"] if f["kind"] == "missing_in_vapi"]
    engine = make_engine(db_url)
    with engine.connect() as conn:
        states = conn.execute(sa.select(Action.state, sa.func.count()).group_by(Action.state)).all()
        assert dict(states) == {"planned": 3, "done": 3}  # the plan run's rows stay 'planned'
        rows = json.dumps([list(r) for r in conn.execute(sa.select(VapiRecord.__table__))], default=str)
        assert "tok-secret-xyz" not in rows and "+14155550101" in rows
    engine.dispose()


def test_first_seen_at_persists_and_resolves(tmp_path: Path, db_url: str, vapi: Any) -> None:
    emu, server = vapi
    trunk = write_csv(tmp_path / "t.csv", ["+14155550100"])
    rec = emu.add("byo-phone-number", number="+14155550100", credentialId="cred-t")  # unrouted
    cfg = make_config(tmp_path, db_url, server.url, byo_source("trunk-t", trunk, "cred-t"))
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    first = run_once(cfg, mode="plan", clock=lambda: t0)
    assert first.report["findings"][0]["first_seen_at"] == "2026-01-01T00:00:00.000Z"
    # The source fails (file gone): the finding's state must survive the blind run.
    trunk.rename(tmp_path / "gone.csv")
    blind = run_once(cfg, mode="plan", clock=lambda: t0 + timedelta(hours=1))
    assert blind.result.exit_code == 1
    assert {f["kind"] for f in blind.report["findings"]} == {"source_unavailable", "unrouted"}
    (tmp_path / "gone.csv").rename(trunk)
    again = run_once(cfg, mode="plan", clock=lambda: t0 + timedelta(hours=2))
    assert again.report["findings"][0]["first_seen_at"] == "2026-01-01T00:00:00.000Z"
    # Routed now: resolved, and a later return counts as new.
    resp = httpx.patch(f"{server.url}/phone-number/{rec['id']}", json={"assistantId": ASSISTANT},
                       headers={"Authorization": "Bearer test-vapi-key"})
    assert resp.status_code == 200
    run_once(cfg, mode="plan", clock=lambda: t0 + timedelta(hours=3))
    engine = make_engine(cfg.database_url)
    with engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(FindingState)).scalar() == 0
        assert conn.execute(sa.select(sa.func.count()).select_from(Run)).scalar() == 4
    engine.dispose()


def test_a_vapi_listing_that_collapsed_since_the_last_finished_run_is_not_believed(
    tmp_path: Path, db_url: str, vapi: Any
) -> None:
    """The yardstick is the last finished run that saw Vapi: not a run that died while running,
    nor one whose listing was itself not believed."""
    emu, server = vapi
    numbers = [f"+1415555{i:04d}" for i in range(10)]
    trunk = write_csv(tmp_path / "trunk.csv", numbers)
    records = [emu.add("byo-phone-number", number=n, credentialId="cred-t", assistantId=ASSISTANT) for n in numbers]
    cfg = make_config(tmp_path, db_url, server.url, byo_source("trunk-t", trunk, "cred-t"))
    first = run_once(cfg, mode="plan")
    assert first.result.outcome == "in_sync"
    for rec in records[2:]:
        emu.delete(rec["id"])
    engine = make_engine(cfg.database_url)
    with engine.begin() as conn:  # a run that died after seeing 3 records, newer than the first
        conn.execute(sa.insert(Run).values(id=str(uuid.uuid4()), seq=99, mode="plan", status="running",
                                           started_at=datetime.now(UTC), vapi_numbers=3))
    engine.dispose()
    for _ in range(2):  # the second compares with the first run as well: this one was not believed
        out = run_once(cfg, mode="plan")
        assert out.result.outcome == "error"
        assert out.result.error == (
            "Vapi: suspect listing: 2 records where the previous run saw 10 "
            "(a drop above policy.max_orphan_fraction 0.5); nothing was judged or imported")
        assert out.report["findings"] == []


def test_the_comparison_with_earlier_runs_is_read_only_for_a_format_that_shows_it(
    tmp_path: Path, db_url: str, vapi: Any
) -> None:
    emu, server = vapi
    trunk = write_csv(tmp_path / "t.csv", ["+14155550100"])
    emu.add("byo-phone-number", number="+14155550100", credentialId="cred-t")  # unrouted
    cfg = make_config(tmp_path, db_url, server.url, byo_source("trunk-t", trunk, "cred-t"))
    first = run_once(cfg, mode="plan", formats=["json", "csv"])
    assert first.context is None
    assert sorted(p.name for p in first.paths) == ["report.csv", "report.json"]
    second = run_once(cfg, mode="plan", formats=["JSON", " md"])
    assert second.context is not None and second.context.previous_run_id == first.result.run_id
    assert [h["run_id"] for h in second.context.history] == [first.result.run_id, second.result.run_id]
    unrendered = run_once(cfg, mode="plan", formats=["json"], write=False)  # the daemon renders it
    assert unrendered.context is not None and unrendered.paths == []


def test_snapshot_rows_read_back_as_written(tmp_path: Path, db_url: str, vapi: Any) -> None:
    """The snapshot is written through the driver's executemany: every type must read back intact."""
    emu, server = vapi
    trunk = write_csv(tmp_path / "t.csv", ["+14155550100"])
    rec = emu.add("byo-phone-number", number="+14155550100", credentialId="cred-t", assistantId=ASSISTANT,
                  updatedAt="2026-01-02T03:04:05.678Z", name="front desk")
    cfg = make_config(tmp_path, db_url, server.url, byo_source("trunk-t", trunk, "cred-t"))
    out = run_once(cfg, mode="plan")
    engine = make_engine(db_url)
    with sa.orm.Session(engine) as session:
        row = session.execute(sa.select(VapiRecord).where(VapiRecord.run_id == out.result.run_id,
                                                          VapiRecord.vapi_id == rec["id"])).scalar_one()
        assert row.updated_at == datetime(2026, 1, 2, 3, 4, 5, 678000, tzinfo=UTC)
        assert (row.routed, row.source, row.name, row.match_key) == (True, "trunk-t", "front desk", "+14155550100")
        assert row.raw is None  # not kept since migration 0002: nothing read it
        carrier = session.execute(sa.select(CarrierRecord)).scalar_one()
        assert (carrier.source, carrier.match_key, carrier.carrier_id) == ("trunk-t", "+14155550100", "line 2")
        assert carrier.labels == {"label": "line 0"}
        assert carrier.routed_elsewhere is False
    engine.dispose()


def test_text_no_database_can_hold_is_stored_marked_instead_of_failing_the_snapshot(
        tmp_path: Path, db_url: str, vapi: Any) -> None:
    """JSON may carry U+0000 and so may a CSV file; PostgreSQL's text can't, and one such value
    failed every run's snapshot there (a lone surrogate, on both databases). Each is kept as
    U+FFFD."""
    emu, server = vapi
    trunk = tmp_path / "t.csv"
    trunk.write_text("number,label\n+14155550100,desk\x00one\n+1415555\x000101,lobby\n")
    rec = emu.add("byo-phone-number", number="+14155550100", credentialId="cred-t", assistantId=ASSISTANT,
                  name="front\x00desk\ud800")  # and a lone surrogate, which no database takes
    cfg = make_config(tmp_path, db_url, server.url, byo_source("trunk-t", trunk, "cred-t"))
    out = run_once(cfg, mode="plan")
    assert out.result.error is None
    assert findings_of(out.report) == {("invalid_number", "+1415555\ufffd0101", "trunk-t")}
    engine = make_engine(db_url)
    with sa.orm.Session(engine) as session:
        name = session.execute(sa.select(VapiRecord.name).where(VapiRecord.run_id == out.result.run_id,
                                                                VapiRecord.vapi_id == rec["id"])).scalar_one()
        labels = session.execute(sa.select(CarrierRecord.labels).where(
            CarrierRecord.run_id == out.result.run_id, CarrierRecord.match_key == "+14155550100")).scalar_one()
    engine.dispose()
    assert (name, labels) == ("front\ufffddesk\ufffd", {"label": "desk\ufffdone"})


def test_diff_reads_records_in_batches_of_keys(
    tmp_path: Path, db_url: str, vapi: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The diff finds the keys that differ in one pass, then reads their records a batch of keys at
    a time: batches of one key find the same. A sipUri equal to another record's number as written
    is a duplicate; the {label} of a number its source gives no labels is its country."""
    from numsync.daemon import diff

    emu, server = vapi
    trunk = tmp_path / "t.csv"
    trunk.write_text("number\n+14155550100\n+14155550101\n+442079460123\n")
    common = {"credentialId": "cred-t", "assistantId": ASSISTANT}
    emu.add("byo-phone-number", number="+14155550100", **common)
    emu.add("byo-phone-number", number="+14155550100", **common)  # duplicate
    emu.add("byo-phone-number", number="+14155550199", **common)  # orphaned
    emu.add("byo-phone-number", number="sip:desk@example.com", numberE164CheckEnabled=False,
            assistantId=ASSISTANT)  # compared as written; no credential, so unmanaged
    emu.add("vapi", sipUri="sip:desk@example.com", assistantId=ASSISTANT)
    cfg = make_config(tmp_path, db_url, server.url, f"""
  - name: trunk-t
    kind: byo
    numbers_file: {trunk}
    vapi_credential_id: cred-t
    import:
      name: "{{label}} {{number}}"
""")
    expected = {
        ("duplicate_in_vapi", "+14155550100", "trunk-t"),
        ("duplicate_in_vapi", "sip:desk@example.com", None),
        ("orphaned", "+14155550199", "trunk-t"),
        ("missing_in_vapi", "+14155550101", "trunk-t"),
        ("missing_in_vapi", "+442079460123", "trunk-t"),
        ("unmanaged", "sip:desk@example.com", None),
    }
    assert findings_of(run_once(cfg, mode="plan").report) == expected
    monkeypatch.setattr(diff, "_CHUNK", 1)
    out = run_once(cfg, mode="plan")
    assert findings_of(out.report) == expected
    engine = make_engine(db_url)
    with engine.connect() as conn:
        requests = conn.execute(sa.select(Action.request).where(Action.run_id == out.result.run_id)).scalars()
        assert {r["name"] for r in requests} == {"US +14155550101", "GB +442079460123"}
    engine.dispose()


def test_a_run_left_running_by_a_dead_process_is_closed_and_its_planned_imports_skipped(
    tmp_path: Path, db_url: str, vapi: Any
) -> None:
    """Only the dead run's rows change: a finished run's actions keep their states."""
    emu, server = vapi
    trunk = write_csv(tmp_path / "t.csv", ["+14155550100"])
    emu.add("byo-phone-number", number="+14155550100", credentialId="cred-t", assistantId=ASSISTANT)
    cfg = make_config(tmp_path, db_url, server.url, byo_source("trunk-t", trunk, "cred-t"))
    engine = open_database(db_url)
    now = datetime.now(UTC)
    dead, done = str(uuid.uuid4()), str(uuid.uuid4())
    with engine.begin() as conn:
        for run_id, seq, status in ((done, 1, "finished"), (dead, 2, "running")):
            conn.execute(sa.insert(Run).values(id=run_id, seq=seq, mode="reconcile", status=status, started_at=now))
        for run_id, number, state in ((done, "+14155550101", "planned"), (dead, "+14155550102", "planned"),
                                      (dead, "+14155550103", "done")):
            conn.execute(sa.insert(Action).values(run_id=run_id, source="trunk-t", number=number, action="import",
                                                  state=state, created_at=now))
    out = run_once(cfg, mode="plan")
    assert out.result.outcome == "in_sync"
    with engine.connect() as conn:
        runs = {id_: (status, error) for id_, status, error in conn.execute(sa.select(Run.id, Run.status, Run.error))}
        actions = {number: (state, detail) for number, state, detail
                   in conn.execute(sa.select(Action.number, Action.state, Action.detail))}
    engine.dispose()
    assert runs[dead] == ("interrupted", "the process running it stopped before it finished")
    assert runs[done] == ("finished", None)
    assert actions == {"+14155550101": ("planned", None),
                       "+14155550102": ("skipped", "the run was killed before this was attempted"),
                       "+14155550103": ("done", None)}


def test_each_source_is_told_what_its_last_whole_listing_found(db_url: str) -> None:
    """The hint of a listing's first round: the latest ok listing of each source asked about,
    among the last LISTED_LOOKBACK_RUNS runs; a failed listing tells nothing."""
    engine = open_database(db_url)
    now = datetime.now(UTC)
    seqs = range(1, LISTED_LOOKBACK_RUNS + 3)
    listed = {1: [("old", "ok", 9)],  # beyond the lookback
              3: [("a", "ok", 5), ("b", "ok", 4)],
              LISTED_LOOKBACK_RUNS + 1: [("a", "ok", 7), ("b", "failed", 0), ("other", "ok", 3)]}
    with engine.begin() as conn:
        for seq in seqs:
            run_id = str(uuid.uuid4())
            conn.execute(sa.insert(Run).values(id=run_id, seq=seq, mode="plan", status="finished", started_at=now))
            for source, status, numbers in listed.get(seq, []):
                conn.execute(sa.insert(RunSource).values(run_id=run_id, source=source, kind="byo",
                                                         status=status, numbers=numbers))
    with sqlalchemy.orm.Session(engine) as session:
        assert _last_listed(session, ["a", "b", "old", "never"]) == {"a": 7, "b": 4}
    engine.dispose()


def test_a_vonage_listing_asks_for_its_first_rounds_pages_at_once_from_its_second_run(
    tmp_path: Path, sqlite_url: str, sandbox: Sandbox
) -> None:
    sb = sandbox
    for i in range(250):  # three pages of 100 with the demo's own
        sb.vonage.add_number(f"4477009{i:05d}", country="GB")
    cfg = parse_config(sb.config_text(database_url=sqlite_url, reports_dir=str(tmp_path / "reports"),
                                      with_broken_source=False), origin="numsync.yaml", env={})
    pages: list[str] = []
    arrived = threading.Event()
    said: list[bool] = []

    def hold(req: Any) -> None:  # page 1 waits for page 2 (5 s at most) from the second run on
        index = req.arg("index")
        if req.arg("pattern") is not None or index is None:
            return
        pages.append(index)
        if index == "2":
            arrived.set()
        elif index == "1" and pages.count("1") == 2:
            said.append(arrived.wait(5))

    sb.vonage.before_request.append(hold)
    first = run_once(cfg, mode="plan")
    assert sorted(pages) == ["1", "2", "3"] and pages[0] == "1"  # no count known: page 1 alone first
    arrived.clear()
    second = run_once(cfg, mode="plan")
    assert said == [True]
    assert sorted(pages[3:]) == ["1", "2", "3"]  # as many pages as the last count fills, no more
    assert second.result.source_numbers == first.result.source_numbers


def test_numbers_that_look_orphaned_are_looked_up_where_a_listing_can_lose_them(
    tmp_path: Path, sqlite_url: str, sandbox: Sandbox
) -> None:
    # Vonage pages by offset (a listing can lose a number when the inventory changes under it, see
    # daemon/recheck.py; the fault matrix's "churn: release + buy" loses one): each number that
    # looks orphaned is asked about first. Twilio's listing cannot lose one: nothing is asked.
    sb = sandbox
    gone = "+447700900999"
    sb.vapi.add("vonage", number=gone, credentialId=sb.creds.vonage_credential, assistantId="asst-1")
    cfg = parse_config(sb.config_text(database_url=sqlite_url, reports_dir=str(tmp_path / "reports"),
                                      with_broken_source=False), origin="numsync.yaml", env={})
    first = run_once(cfg, mode="plan")
    orphaned = {(number, source) for kind, number, source in findings_of(first.report) if kind == "orphaned"}
    assert orphaned == {(gone, "vonage-main"), ("+14155551300", "twilio-main")}  # and the demo's own
    lookups = [q["pattern"] for _m, _p, q, _s in sb.vonage.requests_to("GET", "/account/numbers") if "pattern" in q]
    assert lookups == [[gone.lstrip("+")]]
    assert not [q for _m, _p, q, _s in sb.twilio.requests_to("GET", "IncomingPhoneNumbers") if "PhoneNumber" in q]
    assert "listing_lost_numbers" not in first.result.stats

    # a lookup that fails changes nothing: the number is reported as the listing found it
    sb.vonage.faults.add("status", path="/account/numbers", status=401, after=1, times=None)
    second = run_once(cfg, mode="plan")
    assert findings_of(second.report) == findings_of(first.report)
    assert second.result.outcome == first.result.outcome == "drift"


def test_numbers_newly_orphaned_are_looked_up_before_those_orphaned_in_earlier_runs(
    tmp_path: Path, sqlite_url: str, sandbox: Sandbox
) -> None:
    # The lookups are capped (MAX_RECHECKS a source and run). A true orphan stays one run after
    # run, a number the listing lost is lost by this run: the new ones are asked about first, so
    # true orphans that sort before a lost number do not use up its lookup every run.
    sb = sandbox
    cred = sb.creds.vonage_credential
    stale = [f"+4477009001{i:02d}" for i in range(MAX_RECHECKS + 5)]
    for number in stale:
        sb.vapi.add("vonage", number=number, credentialId=cred, assistantId="asst-1")
    text = sb.config_text(database_url=sqlite_url, reports_dir=str(tmp_path / "reports"),
                          with_broken_source=False)
    # so many orphans make the source suspect (nothing judged, nothing asked) unless allowed
    text = text.replace("policy:\n", "policy:\n  max_orphan_fraction: 1.0\n", 1)
    cfg = parse_config(text, origin="numsync.yaml", env={})

    told: list[str] = []

    def lookups() -> list[str]:  # the numbers asked about since the last call
        asked = [q["pattern"][0] for _m, _p, q, _s in sb.vonage.requests_to("GET", "/account/numbers")
                 if "pattern" in q]
        new, told[:] = asked[len(told):], asked
        return new

    run_once(cfg, mode="plan")
    assert lookups() == [n.lstrip("+") for n in stale[:MAX_RECHECKS]]  # all new: by number
    fresh = "+447700900999"  # sorts after every stale one
    sb.vapi.add("vonage", number=fresh, credentialId=cred, assistantId="asst-1")
    second = run_once(cfg, mode="plan")
    assert lookups() == [n.lstrip("+") for n in [fresh, *stale[:MAX_RECHECKS - 1]]]
    orphaned = {number for kind, number, source in findings_of(second.report)
                if kind == "orphaned" and source == "vonage-main"}
    assert orphaned == {fresh, *stale}  # none of them is owned: the lookups changed nothing


def test_a_snapshot_write_that_fails_fails_the_run_and_leaves_no_rows(tmp_path: Path, sqlite_url: str,
                                                                     vapi: Any) -> None:
    # The snapshot's writes run a few batches behind the listings, in a thread of their own: the
    # database refusing one of them must still end the run, with nothing of the snapshot kept.
    emu, server = vapi
    for i in range(5000):
        emu.add("byo-phone-number", number=f"+1415555{i:04d}", credentialId="cred-a", assistantId=ASSISTANT)
    numbers = write_csv(tmp_path / "a.csv", [f"+1415555{i:04d}" for i in range(9000)])
    cfg = make_config(tmp_path, sqlite_url, server.url, byo_source("trunk-a", numbers, "cred-a"))
    engine = make_engine(sqlite_url)
    try:
        upgrade(sqlite_url, engine)
        with engine.begin() as conn:  # the database refuses one number, deep in the source's listing
            conn.exec_driver_sql("CREATE TRIGGER refuse BEFORE INSERT ON carrier_records "
                                 "WHEN NEW.number = '+14155558500' BEGIN SELECT RAISE(ABORT, 'refused'); END")
        with pytest.raises(sa.exc.IntegrityError, match="refused"):
            run_once(cfg, mode="plan", engine=engine)
        with engine.connect() as conn:
            assert conn.execute(sa.select(Run.status)).scalars().all() == ["failed"]
            assert conn.execute(sa.select(sa.func.count()).select_from(CarrierRecord)).scalar_one() == 0
            assert conn.execute(sa.select(sa.func.count()).select_from(VapiRecord)).scalar_one() == 0
    finally:
        engine.dispose()


def test_a_vapi_client_that_cannot_be_built_ends_the_run_before_it_starts_and_closes_the_sources(
        tmp_path: Path, sqlite_url: str, vapi: Any) -> None:
    # The clients are built in a thread while the database is opened and locked and the run is
    # recorded, in a transaction that waits for them: the sources built beside a Vapi client that
    # failed are closed all the same (a Twilio source with a CA of its own holds a temp file of its
    # trust store until then), and the transaction is rolled back, so nothing of a run is written.
    _emu, server = vapi
    _ctx, ca = make_tls(tmp_path)
    not_a_ca = tmp_path / "not-a-ca.pem"
    not_a_ca.write_text("this is not a certificate\n")
    cfg = make_config(tmp_path, sqlite_url, server.url, f"""
  - name: twilio-main
    kind: twilio
    account_sid: {TWILIO_SID}
    auth_token: twilio-token
    base_url: {server.url}
    ca_bundle: {ca}
""")
    cfg = cfg.model_copy(update={"vapi": cfg.vapi.model_copy(update={"ca_bundle": not_a_ca})})
    before = set(Path(tempfile.gettempdir()).glob("numsync-ca-*.pem"))
    with pytest.raises(ConfigError, match=f"ca_bundle {re.escape(str(not_a_ca))} of .*holds no PEM certificate"):
        run_once(cfg, mode="plan")
    assert set(Path(tempfile.gettempdir()).glob("numsync-ca-*.pem")) == before
    engine = make_engine(sqlite_url)
    try:
        with engine.connect() as conn:
            assert conn.execute(sa.select(sa.func.count()).select_from(Run)).scalar_one() == 0
    finally:
        engine.dispose()


def _snapshot_runs(conn: sa.Connection) -> dict[str, set[str]]:
    return {model.__tablename__: set(conn.execute(sa.select(model.run_id).distinct()).scalars())
            for model in (VapiRecord, CarrierRecord)}


def _partitions(conn: sa.Connection, table: str) -> set[str]:
    return set(conn.exec_driver_sql(
        "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
        "WHERE i.inhparent = to_regclass(%(t)s)", {"t": table}).scalars())


def _migrate(engine: sa.Engine, url: str, revision: str, *, down: bool = False) -> None:
    cfg = alembic_config(url)
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        (alembic.command.downgrade if down else alembic.command.upgrade)(cfg, revision)


def _run_indexes(conn: sa.Connection, table: str) -> set[str]:
    return set(conn.exec_driver_sql("SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = ? "
                                    "AND name LIKE 'ix_%_run_%'", (table,)).scalars())


def test_only_the_last_few_runs_keep_their_snapshots(tmp_path: Path, db_url: str, vapi: Any) -> None:
    """Pruning: on PostgreSQL each run's snapshot is a partition of its own, and the old ones are
    dropped; on SQLite each run's rows have an index of their own, dropped with them. Rows that a
    release before 0005 wrote into the tables themselves (the default partition on PostgreSQL;
    on SQLite, rows a release before 0008 wrote, which 0008 indexed) go when their run is no
    longer kept."""
    emu, server = vapi
    emu.add("byo-phone-number", number="+14155550100", credentialId="cred-a", assistantId=ASSISTANT)
    numbers = write_csv(tmp_path / "a.csv", ["+14155550100", "+14155550101"])
    cfg = make_config(tmp_path, db_url, server.url, byo_source("trunk-a", numbers, "cred-a"))
    engine = make_engine(db_url)
    sqlite = engine.dialect.name == "sqlite"
    try:
        if sqlite:  # rows from before 0008, which it indexes
            _migrate(engine, db_url, "0007")
        else:
            upgrade(db_url, engine)
        stale = "00000000-0000-4000-8000-000000000000"  # as the previous release would have written it
        with engine.begin() as conn:
            conn.execute(sa.insert(Run), [{"id": stale, "seq": 0, "mode": "plan", "status": "finished",
                                           "started_at": datetime.now(UTC)}])
            conn.execute(sa.insert(VapiRecord), [{"run_id": stale, "vapi_id": "v0", "provider": "byo-phone-number",
                                                  "routed": True}])
        upgrade(db_url, engine)
        runs = [run_once(cfg, mode="plan", engine=engine).result.run_id for _ in range(KEEP_SNAPSHOTS + 2)]
        with engine.connect() as conn:
            kept = set(runs[-KEEP_SNAPSHOTS:])
            assert _snapshot_runs(conn) == {"vapi_records": kept, "carrier_records": kept}
            if engine.dialect.name == "postgresql":
                for table in ("vapi_records", "carrier_records"):
                    assert _partitions(conn, table) == {f"{table}_default"} | {
                        f"{table}_{uuid.UUID(r).hex}" for r in kept}
                    # COPY FREEZE took: every page the run wrote is all-frozen, which VACUUM does not
                    # make of rows this young (pg_visibility ships with PostgreSQL)
                    conn.exec_driver_sql("CREATE EXTENSION IF NOT EXISTS pg_visibility")
                    pages, frozen = conn.exec_driver_sql(
                        "SELECT pg_relation_size(t) / current_setting('block_size')::int, s.all_frozen "
                        "FROM to_regclass(%(t)s) AS t, pg_visibility_map_summary(t) AS s",
                        {"t": f"{table}_{uuid.UUID(runs[-1]).hex}"}).one()
                    assert frozen == pages > 0
            else:
                for table in ("vapi_records", "carrier_records"):
                    assert _run_indexes(conn, table) == {f"ix_{table}_run_{uuid.UUID(r).hex}" for r in kept}
        with sqlalchemy.orm.Session(engine) as session, session.begin():  # keeping none (the default one too)
            prune_snapshots(session, [])
        with engine.connect() as conn:
            assert _snapshot_runs(conn) == {"vapi_records": set(), "carrier_records": set()}
            if sqlite:
                assert _run_indexes(conn, "vapi_records") == _run_indexes(conn, "carrier_records") == set()
    finally:
        engine.dispose()


def test_sqlite_migration_0008_indexes_each_runs_rows_and_0007_gets_its_index_back(sqlite_url: str) -> None:
    """Rows written before 0008 get their run's own index, which the diff's reads of a run use;
    rows under an id numsync never made (not a UUID) cannot be named in one and go. Downgrading
    brings back the index over every run's rows, with the rows kept."""
    engine = make_engine(sqlite_url)
    run_id, odd = "6f1c2a9e-3b4d-4e5f-8a6b-7c8d9e0f1a2b", "not-a-uuid"
    try:
        _migrate(engine, sqlite_url, "0007")
        with engine.begin() as conn:
            for rid in (run_id, odd):
                conn.execute(sa.insert(VapiRecord), [
                    {"run_id": rid, "vapi_id": f"v{i}", "provider": "twilio", "match_key": f"+1415555010{i}",
                     "source": "a", "routed": True} for i in range(3)])
                conn.execute(sa.insert(CarrierRecord), [
                    {"run_id": rid, "source": "a", "number": f"+1415555010{i}", "match_key": f"+1415555010{i}",
                     "carrier_id": f"c{i}"} for i in range(2)])
        upgrade(sqlite_url, engine)
        with engine.connect() as conn:
            for table, model in (("vapi_records", VapiRecord), ("carrier_records", CarrierRecord)):
                assert _run_indexes(conn, table) == {f"ix_{table}_run_{uuid.UUID(run_id).hex}"}
                assert set(conn.execute(sa.select(model.run_id).distinct()).scalars()) == {run_id}
            keys = sa.select(VapiRecord.match_key, VapiRecord.source).where(
                in_run(VapiRecord, run_id)).order_by(VapiRecord.match_key, VapiRecord.source)
            compiled = keys.compile(engine, compile_kwargs={"render_postcompile": True, "literal_binds": True})
            plan = " ".join(str(row[-1]) for row in conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {compiled}"))
            assert f"ix_vapi_records_run_{uuid.UUID(run_id).hex}" in plan and "TEMP B-TREE" not in plan, plan
            assert conn.execute(keys).all() == [(f"+1415555010{i}", "a") for i in range(3)]
        _migrate(engine, sqlite_url, "0007", down=True)
        with engine.connect() as conn:
            for table in ("vapi_records", "carrier_records"):
                assert _run_indexes(conn, table) == {f"ix_{table}_run_key"}
            assert conn.execute(sa.select(sa.func.count()).select_from(VapiRecord)).scalar_one() == 3
    finally:
        engine.dispose()


@pytest.mark.postgres
def test_postgres_the_diff_reads_the_runs_own_partitions(tmp_path: Path, pg_url: str, vapi: Any) -> None:
    """Through the parent table PostgreSQL keeps ``run_id = ...`` as a filter on every row, which the
    (match_key, source) indexes cannot answer, so the diff names the run's partitions instead; and
    they, like the tables, compare keys as bytes (collation "C"), which merging needs to be cheap."""
    emu, server = vapi
    emu.add("byo-phone-number", number="+14155550100", credentialId="cred-a", assistantId=ASSISTANT)
    emu.add("byo-phone-number", number="+14155550199", credentialId="cred-a", assistantId=ASSISTANT)
    numbers = write_csv(tmp_path / "a.csv", ["+14155550100", "+14155550101"])
    cfg = make_config(tmp_path, pg_url, server.url, byo_source("trunk-a", numbers, "cred-a"))
    engine = make_engine(pg_url)
    statements: list[str] = []
    try:
        upgrade(pg_url, engine)
        sa.event.listen(engine, "before_cursor_execute",
                        lambda conn, cursor, statement, *rest: statements.append(statement))
        out = run_once(cfg, mode="plan", engine=engine)
        assert findings_of(out.report) == {("missing_in_vapi", "+14155550101", "trunk-a"),
                                           ("orphaned", "+14155550199", "trunk-a")}
        hex_id = uuid.UUID(out.result.run_id).hex
        reads = [s for s in statements if s.lstrip().startswith("SELECT") and "_records" in s
                 and "pg_inherits" not in s]
        assert reads, "the diff read no snapshot rows"
        for statement in reads:
            tables = set(re.findall(r"(?:FROM|JOIN)\s+(\w+)", statement))
            assert tables <= {f"vapi_records_{hex_id}", f"carrier_records_{hex_id}"}, statement
            assert "run_id" not in statement, statement
        with engine.connect() as conn:
            collations = conn.exec_driver_sql(
                "SELECT DISTINCT a.attcollation::regcollation::text FROM pg_attribute a "
                "WHERE a.attrelid = ANY (ARRAY[%(v)s, %(c)s]::regclass[]) AND a.attname IN ('match_key', 'source')",
                {"v": f"vapi_records_{hex_id}", "c": f"carrier_records_{hex_id}"}).scalars().all()
            assert collations == ['"C"']
    finally:
        engine.dispose()


def test_a_snapshot_outside_the_runs_partitions_is_still_diffed(db_url: str) -> None:
    """Rows written into the snapshot tables themselves (as before 0005, or by a tool) rather
    than into the run's partitions: the diff reads them through the tables, by run id. The passes
    over every row asked ahead, two at a time on connections of their own (``scan_run``), give the
    same findings as asked in turn; a scan made for other sources is not used for their counts."""
    engine = make_engine(db_url)
    run_id, other = str(uuid.uuid4()), str(uuid.uuid4())
    try:
        upgrade(db_url, engine)
        with engine.begin() as conn:
            for rid in (run_id, other):  # the other run's rows must not count
                conn.execute(sa.insert(VapiRecord), [
                    {"run_id": rid, "vapi_id": f"v{i}", "provider": "byo-phone-number", "number": n,
                     "match_key": n, "account": "cred-a", "source": "trunk-a", "routed": True}
                    for i, n in enumerate(["+14155550100", "+14155550199", "+14155550100"] if rid == run_id
                                          else ["+14155550177"])])
                conn.execute(sa.insert(CarrierRecord), [
                    {"run_id": rid, "source": "trunk-a", "number": n, "match_key": n, "carrier_id": n,
                     "routed_elsewhere": False}
                    for n in (["+14155550100", "+14155550101"] if rid == run_id else ["+14155550188"])])
        sessions = sqlalchemy.orm.sessionmaker(engine)
        prepare_diff(sessions, run_id)
        found = []
        for scan in (None, scan_run(sessions, run_id, ["trunk-a"]), scan_run(sessions, run_id, [])):
            with sessions() as session:
                judged = judge_sources(session, run_id, {"trunk-a": (2, None)}, {"trunk-a": "byo"}, 0.9, scan)
                assert judged["trunk-a"].status == "ok"
                drafts = compute_findings(session, run_id, judgements=judged, selected=frozenset({"trunk-a"}),
                                          filtered=False, now=datetime.now(UTC), stuck_after=timedelta(hours=1),
                                          scan=scan)
            found.append(sorted((d.kind, d.number, d.source, tuple(d.vapi_ids)) for d in drafts))
        assert found[0] == found[1] == found[2]
        assert found[0] == [("duplicate_in_vapi", "+14155550100", "trunk-a", ("v0", "v2")),
                            ("missing_in_vapi", "+14155550101", "trunk-a", ()),
                            ("orphaned", "+14155550199", "trunk-a", ("v1",))]
    finally:
        engine.dispose()


@pytest.mark.postgres
def test_postgres_a_refused_snapshot_leaves_no_partition_behind(tmp_path: Path, pg_url: str, vapi: Any) -> None:
    """The run's tables are made in the snapshot's transaction, with the tables' CHECK constraints:
    a row one of them refuses fails the run and takes the run's tables with it."""
    emu, server = vapi
    for i in range(3000):
        emu.add("byo-phone-number", number=f"+1415555{i:04d}", credentialId="cred-a", assistantId=ASSISTANT)
    numbers = write_csv(tmp_path / "a.csv", [f"+1415555{i:04d}" for i in range(5000)])
    cfg = make_config(tmp_path, pg_url, server.url, byo_source("trunk-a", numbers, "cred-a"))
    engine = make_engine(pg_url)
    try:
        upgrade(pg_url, engine)
        with engine.begin() as conn:
            conn.exec_driver_sql("ALTER TABLE carrier_records ADD CONSTRAINT refuse CHECK (number <> '+14155554500')")
        with pytest.raises(psycopg.errors.CheckViolation, match="refuse"):  # raised by the driver's COPY
            run_once(cfg, mode="plan", engine=engine)
        with engine.connect() as conn:
            assert conn.execute(sa.select(Run.status)).scalars().all() == ["failed"]
            assert _snapshot_runs(conn) == {"vapi_records": set(), "carrier_records": set()}
            for table in ("vapi_records", "carrier_records"):
                assert _partitions(conn, table) == {f"{table}_default"}
        with engine.begin() as conn:
            conn.exec_driver_sql("ALTER TABLE carrier_records DROP CONSTRAINT refuse")
        out = run_once(cfg, mode="plan", engine=engine)  # the constraint copied to the run's table held
        assert out.result.error is None and out.report["summary"] == {"missing_in_vapi": 2000}
    finally:
        engine.dispose()


@pytest.mark.postgres
def test_postgres_user_that_cannot_make_partitions_is_told_so(tmp_path: Path, pg_url: str, vapi: Any) -> None:
    """Least privilege: migrated by the tables' owner, run by a user with only reads and writes.
    Each run creates and attaches a partition, so that user gets an error saying what it lacks."""
    emu, server = vapi
    emu.add("byo-phone-number", number="+14155550100", credentialId="cred-a", assistantId=ASSISTANT)
    numbers = write_csv(tmp_path / "a.csv", ["+14155550100"])
    upgrade(pg_url)
    role = f"numsync_dml_{uuid.uuid4().hex[:8]}"
    owner = make_engine(pg_url)
    try:
        with owner.begin() as conn:
            for statement in (f"CREATE ROLE {role} LOGIN", f"GRANT USAGE ON SCHEMA public TO {role}",
                              f"GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO {role}",
                              f"GRANT USAGE ON ALL SEQUENCES IN SCHEMA public TO {role}"):
                conn.exec_driver_sql(statement)
        as_role = sa.make_url(pg_url).set(username=role).render_as_string(hide_password=False)
        cfg = make_config(tmp_path, as_role, server.url, byo_source("trunk-a", numbers, "cred-a"))
        with pytest.raises(DatabaseError, match=r"cannot make this run's partition of vapi_records.*CREATE"):
            run_once(cfg, mode="plan")
        with owner.connect() as conn:
            assert conn.execute(sa.select(Run.status)).scalars().all() == ["failed"]
            assert _partitions(conn, "vapi_records") == {"vapi_records_default"}
    finally:
        with owner.begin() as conn:
            conn.exec_driver_sql(f"DROP OWNED BY {role}")
            conn.exec_driver_sql(f"DROP ROLE {role}")
        owner.dispose()

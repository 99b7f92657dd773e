"""Imports under faults: lost answers, throttling, refusals, outages, empty inventories, kill -9.

The invariant everywhere: never a duplicate in Vapi, never an import of a number no source owns,
never an orphan flood, nothing lost from the journal.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from helpers import wait_for

from numsync.app import RunOutput, run_once
from numsync.config import Config, parse_config
from numsync.daemon.db import make_engine
from numsync.daemon.models import Action, Run
from numsync.sandbox.server import EmulatorServer
from numsync.sandbox.twilio import TwilioEmulator
from numsync.sandbox.vapi import VapiEmulator

SID = "AC" + "3" * 32
TOKEN = "fault-test-token"


@pytest.fixture
def vapi() -> Iterator[tuple[VapiEmulator, EmulatorServer]]:
    emu = VapiEmulator(api_key="k-vapi-faults")
    with EmulatorServer(emu) as server:
        yield emu, server


@pytest.fixture
def twilio() -> Iterator[tuple[TwilioEmulator, EmulatorServer]]:
    emu = TwilioEmulator(accounts={SID: TOKEN})
    with EmulatorServer(emu) as server:
        yield emu, server


def config_text(tmp_path: Path, db_url: str, vapi_url: str, csv: Path, twilio_url: str | None = None,
                vapi_timeout: float = 5.0) -> str:
    twilio = f"""
  - name: twilio-main
    kind: twilio
    account_sid: {SID}
    auth_token: {TOKEN}
    base_url: {twilio_url}
    timeout: 5
""" if twilio_url else ""
    return f"""
database_url: {db_url}
vapi:
  api_key: k-vapi-faults
  base_url: {vapi_url}
  timeout: {vapi_timeout}
  backoff_base: 0.01
  requests_per_second: 0
sources:
  - name: trunk
    kind: byo
    numbers_file: {csv}
    vapi_credential_id: cred-trunk
    import:
      assistant_id: asst-1
{twilio}
reports:
  dir: {tmp_path / 'reports'}
"""


def make_config(*args: Any, **kwargs: Any) -> Config:
    return parse_config(config_text(*args, **kwargs), origin="t.yaml", env={})


def trunk_csv(tmp_path: Path, numbers: list[str]) -> Path:
    path = tmp_path / "trunk.csv"
    path.write_text("number\n" + "".join(f"{n}\n" for n in numbers))
    return path


NUMBERS = [f"+1415555{2000 + i}" for i in range(6)]


def assert_each_once(emu: VapiEmulator, numbers: list[str]) -> None:
    for n in numbers:
        assert len(emu.by_number(n)) == 1, n


def journal(db_url: str) -> list[tuple[str, str, str, int]]:
    engine = make_engine(db_url)
    with engine.connect() as conn:
        rows = conn.execute(sa.select(Action.run_id, Action.number, Action.state, Action.attempts)
                            .order_by(Action.id)).all()
    engine.dispose()
    return [tuple(r) for r in rows]  # type: ignore[misc]


def test_create_that_succeeds_but_times_out_is_resolved_by_lookup(tmp_path: Path, db_url: str, vapi: Any) -> None:
    emu, server = vapi
    cfg = make_config(tmp_path, db_url, server.url, trunk_csv(tmp_path, NUMBERS), vapi_timeout=0.5)
    emu.faults.add("timeout_after", method="POST", path="^/phone-number$", times=2, delay=1.5)
    out = run_once(cfg, mode="reconcile")
    assert_each_once(emu, NUMBERS)
    # The emulator logs a request when its (late) answer has gone out: wait for the two slow ones.
    wait_for(lambda: len(emu.requests_to("POST", "^/phone-number$")) >= len(NUMBERS))
    assert len(emu.requests_to("POST", "^/phone-number$")) == len(NUMBERS)  # no blind second POST
    details = [f["detail"] or "" for f in out.report["findings"] if f["kind"] == "missing_in_vapi"]
    assert sum("create answer lost; found in Vapi afterwards" in d for d in details) == 2
    assert out.result.exit_code == 0


def test_imports_run_side_by_side(tmp_path: Path, db_url: str, vapi: Any) -> None:
    # One import at a time is two round trips per number (look up, create): 10,000 imports at
    # 20 ms were minutes. Here each create is held until another one is in flight beside it.
    emu, server = vapi
    numbers = NUMBERS[:4]
    text = config_text(tmp_path, db_url, server.url, trunk_csv(tmp_path, numbers))
    cfg = parse_config(text.replace("requests_per_second: 0", "requests_per_second: 0\n  max_concurrency: 2"),
                       origin="t.yaml", env={})
    pair = threading.Barrier(2)
    lock = threading.Lock()
    in_flight: list[int] = [0]
    most: list[int] = [0]

    def is_create(method: str, path: str) -> bool:
        return method == "POST" and path == "/phone-number"

    def before(req: Any) -> None:
        if is_create(req.method, req.path):
            with lock:
                in_flight[0] += 1
                most[0] = max(most[0], in_flight[0])
            pair.wait(timeout=10)  # a lone create (imports one at a time) breaks the barrier: a 500

    def after(req: Any, _resp: Any) -> None:
        if is_create(req.method, req.path):
            with lock:
                in_flight[0] -= 1

    emu.before_request.append(before)
    emu.after_request.append(after)
    out = run_once(cfg, mode="reconcile")
    assert out.result.exit_code == 0, out.result.error
    assert_each_once(emu, numbers)
    assert most[0] >= 2
    assert out.result.stats["imports_done"] == 4


LISTED = "+14155559999"


def trunk_and_one_listed(tmp_path: Path, db_url: str, vapi: Any) -> Config:
    """The trunk holds NUMBERS and LISTED, and Vapi holds LISTED: the listing has a newest record,
    hence a bound for the apply's reads of what was created since."""
    emu, server = vapi
    emu.add("byo-phone-number", number=LISTED, credentialId="cred-trunk", assistantId="asst-1")
    return make_config(tmp_path, db_url, server.url, trunk_csv(tmp_path, [*NUMBERS, LISTED]))


def is_arrivals_read(query: dict[str, list[str]]) -> bool:
    """The apply's read of records created since the listing (an open-ended createdAt walk)."""
    return "createdAtGe" in query and "createdAtLt" not in query


def searched(emu: VapiEmulator) -> list[str]:
    """What the listing requests searched for (a number lookup searches its digits)."""
    return sorted(q["search"][0] for _, _, q, _ in emu.requests_to("GET", "^/v2/phone-number$") if "search" in q)


def reconcile_calling(tmp_path: Path, db_url: str, vapi: Any, on_arrivals_read: Callable[[], None]) -> RunOutput:
    """Reconcile the trunk (``trunk_and_one_listed``), calling ``on_arrivals_read`` as each of the
    apply's reads of new records reaches Vapi; every number ends up in Vapi once, exit 0."""
    emu, _ = vapi
    cfg = trunk_and_one_listed(tmp_path, db_url, vapi)
    emu.before_request.append(lambda req: on_arrivals_read() if is_arrivals_read(req.query) else None)
    out = run_once(cfg, mode="reconcile")
    assert out.result.exit_code == 0, out.result.error
    assert_each_once(emu, NUMBERS)
    return out


def test_numbers_created_after_the_listing_are_found_in_one_read_not_one_search_each(
    tmp_path: Path, db_url: str, vapi: Any
) -> None:
    # Someone imports one of the missing numbers between numsync's listing and its apply: it is
    # adopted, not created twice, and finding that out took no search per number.
    emu, _ = vapi
    theirs: list[str] = []

    def someone_else_imports() -> None:
        if not theirs:
            theirs.append(emu.add("byo-phone-number", number=NUMBERS[2], credentialId="cred-other")["id"])

    out = reconcile_calling(tmp_path, db_url, vapi, someone_else_imports)
    assert emu.by_number(NUMBERS[2])[0]["id"] == theirs[0]
    assert len(emu.requests_to("POST", "^/phone-number$")) == len(NUMBERS) - 1
    assert searched(emu) == []
    reads = [q for _, _, q, _ in emu.requests_to("GET", "^/v2/phone-number$") if is_arrivals_read(q)]
    assert 1 <= len(reads) <= out.result.stats["arrival_checks"] * 2  # a short page or two per read
    details = {f["number"]: f["detail"] or "" for f in out.report["findings"] if f["kind"] == "missing_in_vapi"}
    assert "adopted" in details[NUMBERS[2]]
    assert out.result.stats["imports_done"] == len(NUMBERS)


def test_when_the_read_of_new_numbers_fails_each_number_is_searched_instead(
    tmp_path: Path, db_url: str, vapi: Any
) -> None:
    emu, _ = vapi
    refused: list[int] = []

    def refuse() -> None:
        refused.append(1)
        raise RuntimeError("the arrivals read is down")  # the emulator drops the connection

    reconcile_calling(tmp_path, db_url, vapi, refuse)
    assert refused  # it was tried (and retried), then given up for the run
    assert searched(emu) == sorted(n.lstrip("+") for n in NUMBERS)


def test_throttled_and_refused_creates(tmp_path: Path, db_url: str, vapi: Any) -> None:
    emu, server = vapi
    numbers = [*NUMBERS, "+1" + "2" * 45]  # the last one is too long for Vapi: a 400 on create
    csv = tmp_path / "trunk.csv"
    csv.write_text("number\n" + "".join(f"{n}\n" for n in numbers))
    text = config_text(tmp_path, db_url, server.url, csv)
    text = text.replace("vapi_credential_id: cred-trunk", "vapi_credential_id: cred-trunk\n    e164_check: false")
    cfg = parse_config(text, origin="t.yaml", env={})
    emu.faults.add("status", method="POST", path="^/phone-number$", status=429, retry_after="1", times=2)
    out = run_once(cfg, mode="reconcile")
    assert_each_once(emu, NUMBERS)
    assert emu.by_number(numbers[-1]) == []
    failed = [f for f in out.report["findings"] if f["action_status"] == "failed"]
    assert len(failed) == 1
    assert failed[0]["number"] == numbers[-1]
    assert "Vapi refused the import" in failed[0]["detail"]
    assert out.result.exit_code == 1  # a failed action is an error, the others went on


def test_5xx_on_create_is_in_doubt_and_next_run_finishes(tmp_path: Path, db_url: str, vapi: Any) -> None:
    emu, server = vapi
    cfg = make_config(tmp_path, db_url, server.url, trunk_csv(tmp_path, NUMBERS))
    emu.faults.add("status", method="POST", path="^/phone-number$", status=500, times=1)
    first = run_once(cfg, mode="reconcile")
    assert first.result.exit_code == 1
    assert len(emu.records()) == len(NUMBERS) - 1
    second = run_once(cfg, mode="reconcile")
    assert second.result.exit_code == 0
    assert_each_once(emu, NUMBERS)


def test_carrier_outage_fails_only_that_source(tmp_path: Path, db_url: str, vapi: Any, twilio: Any) -> None:
    emu, server = vapi
    temu, tserver = twilio
    for i in range(6):
        n = f"+1650555{3000 + i}"
        temu.add_number(SID, n, voice_url="https://api.vapi.ai/twilio/inbound_call")
        emu.add("twilio", number=n, twilioAccountSid=SID, assistantId="asst-1")
    temu.faults.add("status", status=503, times=None)
    cfg = make_config(tmp_path, db_url, server.url, trunk_csv(tmp_path, NUMBERS), tserver.url)
    out = run_once(cfg, mode="reconcile")
    kinds = {(f["kind"], f["source"]) for f in out.report["findings"]}
    assert ("source_unavailable", "twilio-main") in kinds
    assert not [f for f in out.report["findings"] if f["kind"] == "orphaned"]
    assert {s["name"]: s["status"] for s in out.report["sources"]} == {"trunk": "ok", "twilio-main": "failed"}
    assert_each_once(emu, NUMBERS)  # the healthy source was still reconciled
    assert out.result.exit_code == 1


def test_empty_inventory_is_suspect_not_an_orphan_flood(tmp_path: Path, db_url: str, vapi: Any,
                                                        twilio: Any) -> None:
    emu, server = vapi
    temu, tserver = twilio
    for i in range(6):
        n = f"+1650555{3000 + i}"
        temu.add_number(SID, n, voice_url="https://api.vapi.ai/twilio/inbound_call")
        emu.add("twilio", number=n, twilioAccountSid=SID, assistantId="asst-1")
    temu.faults.add("empty", times=None)
    cfg = make_config(tmp_path, db_url, server.url, trunk_csv(tmp_path, []), tserver.url)
    out = run_once(cfg, mode="plan")
    assert [(f["kind"], f["source"]) for f in out.report["findings"]] == [("source_unavailable", "twilio-main")]
    assert "inventory is empty" in out.report["findings"][0]["detail"]
    assert out.result.exit_code == 1
    # Most numbers gone at once (4 of 6): suspect as well, not 4 orphans.
    temu.faults.clear()
    for i in range(4):
        temu.remove_number(SID, f"+1650555{3000 + i}")
    out = run_once(cfg, mode="plan")
    assert [f["kind"] for f in out.report["findings"]] == ["source_unavailable"]
    assert "would orphan 4 of its 6" in out.report["findings"][0]["detail"]


@pytest.mark.parametrize("kill_after", [1, 3])
def test_kill_9_mid_apply_then_rerun_imports_each_once(tmp_path: Path, db_url: str, vapi: Any,
                                                        kill_after: int) -> None:
    emu, server = vapi
    numbers = [f"+1415555{4000 + i}" for i in range(8)]
    cfg_path = tmp_path / "numsync.yaml"
    # One import at a time, so the kill lands after exactly ``kill_after`` creates (several in
    # flight at once are killed in tests/faults/test_crash.py).
    text = config_text(tmp_path, db_url, server.url, trunk_csv(tmp_path, numbers))
    cfg_path.write_text(text.replace("requests_per_second: 0", "requests_per_second: 0\n  max_concurrency: 1"))
    # Every create is processed at once but answered slowly: the kill lands between Vapi creating the
    # number and numsync hearing about it (the worst moment for exactly-once).
    emu.faults.add("timeout_after", method="POST", path="^/phone-number$", times=None, delay=0.8)
    env = {k: v for k, v in os.environ.items() if not k.startswith("NUMSYNC_")}
    proc = subprocess.Popen([sys.executable, "-m", "numsync", "reconcile", "--config", str(cfg_path)],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: len(emu.records()) >= kill_after)
        os.kill(proc.pid, signal.SIGKILL)
        assert proc.wait(timeout=10) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
    emu.faults.clear()
    assert len(emu.records()) == kill_after
    before = journal(cfg_path.read_text().split("database_url: ")[1].split()[0])
    assert [s for _, _, s, _ in before].count("started") == 1  # the in-flight one, journaled before sending

    cfg = parse_config(cfg_path.read_text(), origin=str(cfg_path), env={})
    out = run_once(cfg, mode="reconcile")
    assert_each_once(emu, numbers)
    assert out.result.exit_code == 0
    after = journal(cfg.database_url)
    assert "started" not in {s for _, _, s, _ in after}
    engine = make_engine(cfg.database_url)
    with engine.connect() as conn:
        statuses = dict(conn.execute(sa.select(Run.mode, Run.status).order_by(Run.seq)).all())
        first_status = conn.execute(sa.select(Run.status).order_by(Run.seq).limit(1)).scalar_one()
    engine.dispose()
    assert first_status == "interrupted"
    assert statuses["reconcile"] == "finished"


def test_a_number_vapi_holds_in_a_form_the_diff_does_not_match_is_adopted_not_created_again(
    tmp_path: Path, db_url: str, vapi: Any
) -> None:
    # A SIP-trunk record without Vapi's E.164 check keeps its number as written ('1415...'), so
    # the diff compares it as text and finds the carrier's E.164 form missing: the import must
    # still see that Vapi holds the number.
    emu, _ = vapi
    cfg = trunk_and_one_listed(tmp_path, db_url, vapi)
    as_written = emu.add("byo-phone-number", number=NUMBERS[1].lstrip("+"), credentialId="cred-trunk",
                         numberE164CheckEnabled=False, assistantId="asst-1",
                         created_at=datetime.now(UTC) - timedelta(days=1))["id"]
    out = run_once(cfg, mode="reconcile")
    assert_each_once(emu, NUMBERS)
    assert emu.by_number(NUMBERS[1])[0]["id"] == as_written
    assert len(emu.requests_to("POST", "^/phone-number$")) == len(NUMBERS) - 1
    details = {f["number"]: f["detail"] or "" for f in out.report["findings"] if f["kind"] == "missing_in_vapi"}
    assert "adopted" in details[NUMBERS[1]]

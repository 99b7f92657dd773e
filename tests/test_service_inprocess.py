"""The daemon's parts in this process: triggers, job options, nightly folders, the webhook, and a
whole ``Daemon`` (real scheduler, real database, the Vapi emulation, a webhook receiver).

The out-of-process behaviour (signals, two replicas, SIGKILL, a database that vanishes) is in
``test_service.py``; here the daemon runs in a thread so a test can swap the nightly cron for a
trigger that fires within a second and still go through APScheduler.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from apscheduler.triggers.interval import IntervalTrigger
from helpers import wait_for
from prometheus_client.parser import text_string_to_metric_families

from numsync.app import run_once
from numsync.config import Config, parse_config
from numsync.daemon.locks import RUN_LOCK, DatabaseLock
from numsync.daemon.models import Run
from numsync.errors import ConfigError
from numsync.reporting import ReportContext
from numsync.sandbox.server import EmulatorServer
from numsync.sandbox.vapi import VapiEmulator
from numsync.service import Daemon
from numsync.service.nightly import LATEST, folder_name, post_webhook, prune, write_nightly
from numsync.service.schedule import (
    HEARTBEAT_JOB,
    MADE_UP_REPORT_JOB,
    RECONCILE_JOB,
    REPORT_JOB,
    build_scheduler,
    cron_trigger,
    misfire_grace,
    missed_fire,
)

NUMBERS = [f"+1415555{i:04d}" for i in range(6)]
SECRET_HOOK_PATH = "/services/T000/B000/hook-secret-4711"
CONTRACT_METRICS = {  # family name (as the parser reports it) -> (type, label names)
    "numsync_runs": ("counter", {"mode", "outcome"}),
    "numsync_run_duration_seconds": ("histogram", {"le"}),
    "numsync_last_success_timestamp_seconds": ("gauge", set()),
    "numsync_findings": ("gauge", {"kind", "source"}),
    "numsync_source_numbers": ("gauge", {"source"}),
    "numsync_api_requests": ("counter", {"api", "status"}),
    "numsync_leader": ("gauge", set()),
}


# ---- triggers and job options -------------------------------------------------------------

def test_cron_trigger_reads_day_of_week_as_cron_does() -> None:
    monday = datetime(2025, 6, 2, 12, 0, tzinfo=UTC)
    assert monday.weekday() == 0
    sunday_2am = cron_trigger("0 2 * * 0").get_next_fire_time(None, monday)
    assert sunday_2am == datetime(2025, 6, 8, 2, 0, tzinfo=UTC)  # cron's 0 is Sunday, not Monday
    assert cron_trigger("0 2 * * 7").get_next_fire_time(None, monday) == sunday_2am
    weekdays = cron_trigger("30 6 * * mon-fri").get_next_fire_time(None, datetime(2025, 6, 7, tzinfo=UTC))
    assert weekdays == datetime(2025, 6, 9, 6, 30, tzinfo=UTC)  # Saturday -> Monday
    assert cron_trigger("*/15 * * * *").get_next_fire_time(None, monday + timedelta(minutes=1)) == (
        monday + timedelta(minutes=15))


def test_bad_cron_names_the_key() -> None:
    with pytest.raises(ConfigError, match=r"^schedule\.report_cron: .*minute: 75 is outside 0-59"):
        cron_trigger("75 2 * * *")
    with pytest.raises(ConfigError, match=r"^c\.yaml: schedule\.report_cron: .*expected 5 fields"):
        parse_config('vapi: {api_key: k}\nschedule: {report_cron: "0 2 * *"}\n', origin="c.yaml", env={})


def test_jobs_are_single_instance_coalesced_with_a_real_grace() -> None:
    every = timedelta(minutes=15)
    scheduler = build_scheduler(reconcile=lambda: None, report=lambda: None, heartbeat=lambda: None,
                                every=every, report_trigger=cron_trigger("0 2 * * *"), heartbeat_every=2)
    jobs = {job.id: job for job in scheduler.get_jobs()}
    assert set(jobs) == {RECONCILE_JOB, REPORT_JOB, HEARTBEAT_JOB}
    for job in jobs.values():
        assert job.max_instances == 1
        assert job.coalesce is True
    assert jobs[RECONCILE_JOB].misfire_grace_time == 900
    assert jobs[REPORT_JOB].misfire_grace_time == 3600
    assert misfire_grace(timedelta(hours=6)) == 3600
    assert misfire_grace(timedelta(milliseconds=200)) == 1


def test_runs_missed_while_down_happen_once() -> None:
    calls: list[float] = []
    scheduler = build_scheduler(
        reconcile=lambda: calls.append(time.monotonic()), report=lambda: None, heartbeat=lambda: None,
        every=timedelta(hours=1), report_trigger=cron_trigger("0 2 * * *"), heartbeat_every=60,
        first_run=datetime.now(UTC) - timedelta(hours=3, minutes=30),  # 4 ticks were missed
    )
    scheduler.start()
    try:
        wait_for(lambda: calls, 5, "the missed reconcile")
        job = scheduler.get_job(RECONCILE_JOB)
        assert job.next_run_time > datetime.now(UTC) + timedelta(minutes=5)  # caught up: nothing else due
    finally:
        scheduler.shutdown(wait=True)
    assert len(calls) == 1


def test_a_nightly_report_that_fell_due_unmade_is_owed_within_the_grace() -> None:
    nightly = cron_trigger("0 2 * * *")
    made = datetime(2025, 6, 1, 2, 0, 0, 300_000, tzinfo=UTC)  # last night's, started on time
    today = datetime(2025, 6, 2, 2, 0, tzinfo=UTC)
    assert missed_fire(nightly, made, today + timedelta(minutes=7)) == today  # the pod restarted around 02:00
    assert missed_fire(nightly, made, today + timedelta(minutes=60)) == today  # as late as a paused process
    assert missed_fire(nightly, made, today + timedelta(minutes=61)) is None  # later: the next night's is closer
    assert missed_fire(nightly, made, today - timedelta(minutes=1)) is None  # not due yet
    assert missed_fire(nightly, today, today + timedelta(minutes=7)) is None  # made, started on the second
    assert missed_fire(nightly, today + timedelta(minutes=5), today + timedelta(minutes=7)) is None  # made late
    sundays = cron_trigger("0 2 * * 0")  # 2025-06-01 is a Sunday
    assert missed_fire(sundays, made, today + timedelta(minutes=7)) is None  # nothing was due on Monday
    assert missed_fire(sundays, made - timedelta(days=7), made + timedelta(minutes=7)) == made - timedelta(
        microseconds=300_000)


def test_a_made_up_report_is_one_more_job_that_runs_once() -> None:
    calls: list[str] = []
    scheduler = build_scheduler(
        reconcile=lambda: None, report=lambda: calls.append("report"), heartbeat=lambda: None,
        every=timedelta(hours=1), report_trigger=cron_trigger("0 2 * * *"), heartbeat_every=60,
        make_up_report=True,
    )
    assert {job.id for job in scheduler.get_jobs()} == {RECONCILE_JOB, REPORT_JOB, HEARTBEAT_JOB,
                                                       MADE_UP_REPORT_JOB}
    scheduler.start()
    try:
        wait_for(lambda: calls, 5, "the made-up report")
        wait_for(lambda: scheduler.get_job(MADE_UP_REPORT_JOB) is None, 5, "the made-up job to end")
        assert scheduler.get_job(REPORT_JOB).next_run_time > datetime.now(UTC)  # the nightly keeps its time
    finally:
        scheduler.shutdown(wait=True)
    assert calls == ["report"]


# ---- nightly folders and the webhook ---------------------------------------------------------

def _report(run_id: str, started: str) -> dict[str, Any]:
    return {"schema_version": 1, "run_id": run_id, "mode": "plan", "started_at": started, "finished_at": started,
            "outcome": "in_sync", "vapi": {"numbers": 0}, "sources": [], "summary": {}, "findings": []}


def test_nightly_folders_latest_copy_and_pruning(tmp_path: Path) -> None:
    (tmp_path / "report.json").write_text("{}")  # a reconcile's report: not a nightly folder
    (tmp_path / "keep-me").mkdir()
    written = []
    for day in range(1, 5):
        report = _report(f"{day:08x}-aaaa-bbbb-cccc-dddddddddddd", f"2025-06-0{day}T02:00:00.000Z")
        written.append(write_nightly(report, ReportContext(), tmp_path, ["json", "md"], keep=2))
    assert folder_name(_report("0123abcd-x", "2025-06-04T02:00:00.500Z")) == "20250604T020000Z-0123abcd"
    dated = sorted(p.name for p in tmp_path.iterdir() if p.is_dir() and p.name[0].isdigit())
    assert dated == ["20250603T020000Z-00000003", "20250604T020000Z-00000004"]
    assert {p.name for p in (tmp_path / LATEST).iterdir()} == {"report.json", "report.md"}
    assert json.loads((tmp_path / LATEST / "report.json").read_text())["run_id"].startswith("00000004")
    assert (tmp_path / "keep-me").is_dir() and (tmp_path / "report.json").read_text() == "{}"
    assert [p.name for p in written[-1]] == ["report.json", "report.md"]
    write_nightly(_report("00000005-x", "2025-06-05T02:00:00.000Z"), ReportContext(), tmp_path, ["json"], keep=2)
    assert {p.name for p in (tmp_path / LATEST).iterdir()} == {"report.json"}  # dropped format removed
    assert prune(tmp_path, 1) == [tmp_path / "20250604T020000Z-00000004"]


class Receiver:
    """A webhook endpoint: answers from ``statuses`` in turn (then 200) and keeps the bodies."""

    def __init__(self, statuses: list[int] | None = None) -> None:
        self.statuses = list(statuses or [])
        self.bodies: list[Any] = []
        self.hits = 0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                return

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                outer.hits += 1
                status = outer.statuses.pop(0) if outer.statuses else 200
                if status == 200:
                    outer.bodies.append(json.loads(body))
                self.send_response(status)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}{SECRET_HOOK_PATH}"
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    rec = Receiver()
    yield rec
    rec.close()


def test_webhook_retries_server_errors_then_delivers(receiver: Receiver, capsys: pytest.CaptureFixture[str]) -> None:
    receiver.statuses = [503, 500]
    assert post_webhook(receiver.url, {"text": "hi"}, backoff=0.01) is True
    assert receiver.hits == 3 and receiver.bodies == [{"text": "hi"}]
    receiver.statuses = [400]
    assert post_webhook(receiver.url, {"text": "bad"}, backoff=0.01) is False
    assert receiver.hits == 4  # a 400 is not retried
    dead = receiver.url.replace(str(receiver.server.server_address[1]), "9")  # nothing listens on port 9
    assert post_webhook(dead, {"text": "x"}, backoff=0.01) is False
    out = capsys.readouterr()
    assert "hook-secret-4711" not in out.out + out.err
    assert "report webhook failed" in out.out + out.err


# ---- the whole daemon in a thread ----------------------------------------------------------

@pytest.fixture
def vapi() -> Iterator[tuple[VapiEmulator, EmulatorServer]]:
    emu = VapiEmulator(api_key="test-vapi-key")
    with EmulatorServer(emu) as server:
        yield emu, server


def make_config(tmp_path: Path, db_url: str, vapi_url: str, *, webhook: str | None = None,
                every: str = "1s") -> Config:
    (tmp_path / "trunk.csv").write_text("number\n" + "".join(f"{n}\n" for n in NUMBERS))
    hook = f"  webhook_url: {webhook}\n" if webhook else ""
    text = f"""
database_url: {db_url}
vapi: {{api_key: test-vapi-key, base_url: "{vapi_url}", requests_per_second: 0, backoff_base: 0.01}}
sources:
  - {{name: trunk-a, kind: byo, numbers_file: trunk.csv, vapi_credential_id: cred-a}}
schedule: {{reconcile_every: {every}, apply: true}}
reports:
  dir: {tmp_path / 'reports'}
  formats: [json, md]
  keep_runs: 3
{hook}server: {{host: 127.0.0.1, port: 0}}
"""
    return parse_config(text, origin="numsync.yaml", base_dir=tmp_path, env={})


class Running:
    def __init__(self, daemon: Daemon) -> None:
        self.daemon = daemon
        self.code: int | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        self.code = self.daemon.run()

    def get(self, path: str) -> httpx.Response:
        return httpx.get(f"http://127.0.0.1:{self.daemon.http.port}{path}", timeout=5)

    def stop(self) -> int | None:
        self.daemon.request_stop()
        self.thread.join(timeout=15)
        assert not self.thread.is_alive(), "the daemon did not stop"
        return self.code


def test_daemon_nightly_report_through_the_scheduler(tmp_path: Path, db_url: str, vapi: Any,
                                                     receiver: Receiver, capsys: pytest.CaptureFixture[str]) -> None:
    emu, server = vapi
    cfg = make_config(tmp_path, db_url, server.url, webhook=receiver.url, every="1h")
    trigger = IntervalTrigger(seconds=1, start_date=datetime.now(UTC) + timedelta(seconds=0.5), timezone=UTC)
    running = Running(Daemon(cfg, report_trigger=trigger))
    try:
        wait_for(lambda: len(receiver.bodies) >= 2, 20, "two nightly webhook posts")
        families = {f.name: f for f in text_string_to_metric_families(running.get("/metrics").text)}
        assert running.get("/healthz").status_code == 200
        assert running.get("/readyz").status_code == 200
    finally:
        code = running.stop()
    assert code == 0
    for number in NUMBERS:  # the first (reconcile) run imported them; the nightly plans never write
        assert len(emu.by_number(number)) == 1
    reports = tmp_path / "reports"
    dated = sorted(p for p in reports.iterdir() if p.name[0].isdigit())
    assert 2 <= len(dated) <= 3  # keep_runs: 3
    latest = json.loads((reports / LATEST / "report.json").read_text())
    assert latest["mode"] == "plan"
    assert dated[-1].name.endswith(latest["run_id"][:8])
    assert {p.name for p in dated[-1].iterdir()} == {"report.json", "report.md"}
    assert (reports / "report.json").exists()  # the reconcile's own report, where the CLI puts it
    body = receiver.bodies[-1]
    assert body["blocks"] and "numsync plan" in body["text"]
    assert any(latest["run_id"] in body["text"] for body in receiver.bodies)
    for name, (kind, labels) in CONTRACT_METRICS.items():
        assert families[name].type == kind, name
        assert families[name].samples, name
        for sample in families[name].samples:
            if sample.name.endswith(("_count", "_sum")):
                continue
            assert set(sample.labels) == labels, (name, sample)
    assert families["numsync_leader"].samples[0].value == 1
    assert "hook-secret-4711" not in capsys.readouterr().out


def test_daemon_skips_a_run_while_a_manual_run_holds_the_lock(tmp_path: Path, sqlite_url: str, vapi: Any,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    emu, server = vapi
    cfg = make_config(tmp_path, sqlite_url, server.url)
    seen: list[str] = []

    def logged(text: str) -> bool:
        seen.append(capsys.readouterr().out)
        return text in "".join(seen)

    manual = DatabaseLock(sqlite_url, RUN_LOCK).acquire()  # as `numsync plan` would hold it
    running = Running(Daemon(cfg))
    try:
        wait_for(lambda: logged("scheduled reconcile skipped: another numsync run holds the run lock"), 10,
                 "the skip log line")
        assert emu.records() == []
        manual.release()
        wait_for(lambda: len(emu.records()) == len(NUMBERS), 10, "the imports after the lock was released")
    finally:
        manual.release()
        code = running.stop()
    assert code == 0
    engine = sa.create_engine(sqlite_url)
    with engine.connect() as conn:
        statuses = conn.execute(sa.select(Run.status)).scalars().all()
    engine.dispose()
    assert statuses and "failed" not in statuses


def test_a_run_that_does_not_stop_in_time_is_left_behind(tmp_path: Path, sqlite_url: str, vapi: Any) -> None:
    """The pod's grace period is finite: a run stuck in a slow listing must not hold the exit."""
    emu, server = vapi
    emu.faults.add("latency", method="GET", path=r"phone-number$", delay=3.0, times=1)
    daemon = Daemon(make_config(tmp_path, sqlite_url, server.url), shutdown_grace=0.3)
    running = Running(daemon)

    def statuses() -> list[str]:
        engine = sa.create_engine(sqlite_url)
        try:
            with engine.connect() as conn:
                if not sa.inspect(conn).has_table("runs"):
                    return []
                return list(conn.execute(sa.select(Run.status)).scalars())
        finally:
            engine.dispose()

    wait_for(lambda: statuses() == ["running"], 10, "the run to start listing")
    asked = time.monotonic()
    assert running.stop() == 0
    assert time.monotonic() - asked < 3  # did not wait for the 3 s listing
    assert daemon.abandoned  # run_daemon then leaves with os._exit instead of joining the run's thread
    # Here the thread lives on: let it end (it stops before importing anything) before the emulator goes.
    wait_for(lambda: statuses() and "running" not in statuses(), 15, "the abandoned run to end")
    assert statuses() == ["interrupted"]
    assert emu.records() == []


def test_a_restarted_daemon_makes_up_the_nightly_report_and_compares_it_with_the_last(
        tmp_path: Path, db_url: str, vapi: Any) -> None:
    """The pod that made last night's report is gone, and its emptyDir with it; the new leader
    starts 20 minutes after 02:00, when nobody led."""
    cfg = make_config(tmp_path, db_url, vapi[1].url, every="1h")
    now = datetime.now(UTC)
    last_night = run_once(cfg, mode="plan", write=False, trigger="nightly",
                          clock=lambda: now - timedelta(days=1)).report
    assert not (tmp_path / "reports").exists()  # nothing of it survives but the database
    due = IntervalTrigger(days=1, start_date=now - timedelta(minutes=20), timezone=UTC)
    running = Running(Daemon(cfg, report_trigger=due))
    try:
        latest = tmp_path / "reports" / LATEST / "report.md"
        wait_for(latest.exists, 30, "the made-up nightly report")
    finally:
        assert running.stop() == 0
    report = latest.read_text()
    assert f"Compared with the previous run `{last_night['run_id']}`" in report
    engine = sa.create_engine(db_url)
    try:
        with engine.connect() as conn:
            triggers = conn.execute(sa.select(Run.trigger, Run.mode).order_by(Run.seq)).all()
    finally:
        engine.dispose()
    assert triggers[0] == ("nightly", "plan")
    assert triggers.count(("nightly", "plan")) == 2  # made up once; the next is due tomorrow
    assert ("schedule", "reconcile") in triggers


def test_nothing_is_made_up_without_a_nightly_report_before(tmp_path: Path, sqlite_url: str, vapi: Any) -> None:
    cfg = make_config(tmp_path, sqlite_url, vapi[1].url, every="1h")
    run_once(cfg, mode="plan", write=False, clock=lambda: datetime.now(UTC) - timedelta(days=1))  # a command's
    due = IntervalTrigger(days=1, start_date=datetime.now(UTC) - timedelta(minutes=20), timezone=UTC)
    running = Running(Daemon(cfg, report_trigger=due))
    try:
        scheduler = wait_for(lambda: running.daemon._scheduler, 30, "the daemon to lead")
        assert {job.id for job in scheduler.get_jobs()} == {RECONCILE_JOB, REPORT_JOB, HEARTBEAT_JOB}
    finally:
        assert running.stop() == 0
    engine = sa.create_engine(sqlite_url)
    try:
        with engine.connect() as conn:
            assert conn.execute(sa.select(Run.trigger).order_by(Run.seq)).scalars().all()[0] == "command"
            assert conn.execute(sa.select(sa.func.count()).where(Run.trigger == "nightly")).scalar() == 0
    finally:
        engine.dispose()

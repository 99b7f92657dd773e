"""``numsync daemon`` as real processes: two replicas, SIGKILL, SIGTERM mid-run, a database that
is down at start and then lost, a bad config.

Each test starts ``python -m numsync daemon`` subprocesses against the Vapi emulation in this
process and a CSV (byo) source whose numbers are missing in Vapi, so every reconcile imports.
Nothing sleeps to synchronise: the tests poll /metrics, the runs table or the emulation
until a condition holds, with a deadline.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import selectors
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from helpers import wait_for
from prometheus_client.parser import text_string_to_metric_families

from numsync.daemon.db import upgrade
from numsync.sandbox.server import EmulatorServer
from numsync.sandbox.vapi import VapiEmulator

NUMBERS = [f"+1415555{i:04d}" for i in range(12)]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class DaemonProcess:
    """One ``numsync daemon`` subprocess with its own port and log file."""

    def __init__(self, config: Path, port: int, log: Path) -> None:
        self.port, self.log = port, log
        env = {k: v for k, v in os.environ.items() if k != "NUMSYNC_DATABASE_URL"}
        with log.open("wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "numsync", "daemon", "--config", str(config), "--log-format", "json"],
                stdout=out, stderr=subprocess.STDOUT, env=env,
            )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def get(self, path: str) -> httpx.Response | None:
        try:
            return httpx.get(f"http://127.0.0.1:{self.port}{path}", timeout=2)
        except httpx.HTTPError:
            return None

    def leader(self) -> float | None:
        resp = self.get("/metrics")
        if resp is None:
            return None
        for family in text_string_to_metric_families(resp.text):
            if family.name == "numsync_leader":
                return family.samples[0].value
        return None

    def logs(self) -> str:
        return self.log.read_text(errors="replace")

    def signal(self, sig: int) -> None:
        self.proc.send_signal(sig)

    def wait(self, timeout: float) -> int:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            pytest.fail(f"daemon {self.pid} still running {timeout} s later; log:\n{self.logs()[-3000:]}")

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


@pytest.fixture
def spawn(tmp_path: Path) -> Iterator[Callable[[Path], DaemonProcess]]:
    started: list[DaemonProcess] = []

    def start(config: Path) -> DaemonProcess:
        port = int(config.with_suffix(".port").read_text())
        proc = DaemonProcess(config, port, tmp_path / f"daemon-{len(started)}.log")
        started.append(proc)
        return proc

    yield start
    for proc in started:
        proc.kill()


@pytest.fixture
def vapi() -> Iterator[tuple[VapiEmulator, EmulatorServer]]:
    emu = VapiEmulator(api_key="test-vapi-key")
    with EmulatorServer(emu) as server:
        yield emu, server


def write_config(tmp_path: Path, name: str, db_url: str, vapi_url: str, *, every: str = "1s",
                 numbers: list[str] = NUMBERS, cron: str = "0 2 * * *", concurrency: int = 8) -> Path:
    """A config file (and its port beside it, ``<name>.port``) for one replica."""
    (tmp_path / "trunk.csv").write_text("number\n" + "".join(f"{n}\n" for n in numbers))
    port = free_port()
    path = tmp_path / f"{name}.yaml"
    path.write_text(f"""
database_url: "{db_url}"
vapi: {{api_key: test-vapi-key, base_url: "{vapi_url}", requests_per_second: 0, backoff_base: 0.01,
        max_concurrency: {concurrency}}}
sources:
  - {{name: trunk-a, kind: byo, numbers_file: trunk.csv, vapi_credential_id: cred-a}}
schedule: {{reconcile_every: {every}, apply: true, report_cron: "{cron}"}}
reports: {{dir: "{tmp_path / ('reports-' + name)}", formats: [json]}}
server: {{host: 127.0.0.1, port: {port}}}
""")
    path.with_suffix(".port").write_text(str(port))
    return path


def runs(db_url: str) -> list[dict[str, Any]]:
    engine = sa.create_engine(db_url, poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as conn:
            if not sa.inspect(conn).has_table("runs"):
                return []
            rows = conn.execute(sa.text(
                "SELECT id, status, outcome, started_at, finished_at, holder FROM runs ORDER BY seq")).mappings()
            return [dict(r) for r in rows]
    finally:
        engine.dispose()


def actions(db_url: str, run_id: str) -> dict[str, int]:
    engine = sa.create_engine(db_url, poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as conn:
            rows = conn.execute(sa.text("SELECT state, count(*) FROM actions WHERE run_id = :r GROUP BY state"),
                                {"r": run_id}).all()
        return {state: int(count) for state, count in rows}
    finally:
        engine.dispose()


def assert_no_overlap(rows: list[dict[str, Any]]) -> None:
    done = sorted((r for r in rows if r["finished_at"] is not None), key=lambda r: r["started_at"])
    for before, after in itertools.pairwise(done):
        assert before["finished_at"] <= after["started_at"], f"runs overlap: {before} / {after}"


@pytest.mark.slow
def test_two_replicas_one_leader_and_failover_on_kill(tmp_path: Path, db_url: str, vapi: Any,
                                                      spawn: Callable[[Path], DaemonProcess]) -> None:
    """Runs on SQLite (two processes on one file) and PostgreSQL."""
    emu, server = vapi
    emu.faults.latency = 0.01
    a = spawn(write_config(tmp_path, "a", db_url, server.url))
    b = spawn(write_config(tmp_path, "b", db_url, server.url))
    wait_for(lambda: {a.leader(), b.leader()} == {0.0, 1.0}, 20, "one leader and one standby")
    wait_for(lambda: len([r for r in runs(db_url) if r["status"] == "finished"]) >= 3, 20, "three runs")
    assert sorted([a.leader(), b.leader()]) == [0.0, 1.0]  # still exactly one leader
    leader, standby = (a, b) if a.leader() == 1.0 else (b, a)
    assert {r["holder"].rsplit(":", 1)[1] for r in runs(db_url)} == {str(leader.pid)}
    assert standby.get("/readyz").status_code == 200  # a standby is ready, so it is scraped

    leader.proc.send_signal(signal.SIGKILL)
    leader.wait(10)
    wait_for(lambda: standby.leader() == 1.0, 20, "the standby to take over")
    wait_for(lambda: any(r["holder"].endswith(f":{standby.pid}") and r["status"] == "finished"
                         for r in runs(db_url)), 20, "a run by the new leader")
    rows = runs(db_url)
    assert_no_overlap(rows)
    assert emu.duplicates() == {}
    for number in NUMBERS:
        assert len(emu.by_number(number)) == 1
    standby.signal(signal.SIGTERM)
    assert standby.wait(10) == 0
    assert "standby: another numsync daemon holds the leader lock" in standby.logs()
    assert "test-vapi-key" not in standby.logs() + leader.logs()


@pytest.mark.slow
def test_sigterm_mid_run_exits_0_and_the_next_run_imports_the_rest_once(
        tmp_path: Path, db_url: str, vapi: Any, spawn: Callable[[Path], DaemonProcess]) -> None:
    emu, server = vapi
    emu.faults.latency = 0.1  # an import is a create (and a read of new numbers a second): ~0.7 s for all
    config = write_config(tmp_path, "a", db_url, server.url, every="1h", concurrency=2)
    first = spawn(config)
    wait_for(lambda: len(emu.records()) >= 2, 20, "the first imports")
    first.signal(signal.SIGTERM)
    sent = time.monotonic()
    assert first.wait(10) == 0
    assert time.monotonic() - sent < 10
    imported = len(emu.records())
    assert 2 <= imported < len(NUMBERS), "the run was not cut short"
    cut = runs(db_url)
    assert [r["status"] for r in cut] == ["interrupted"]

    emu.faults.latency = 0.0
    second = spawn(config)
    wait_for(lambda: len(runs(db_url)) >= 2 and runs(db_url)[1]["status"] == "finished", 20, "the next run")
    second.signal(signal.SIGTERM)
    assert second.wait(10) == 0
    second_run = runs(db_url)[1]
    assert second_run["outcome"] == "drift"  # the imported numbers have no assistant yet: 'unrouted'
    assert actions(db_url, second_run["id"]) == {"done": len(NUMBERS) - imported}
    for number in NUMBERS:
        assert len(emu.by_number(number)) == 1, number
    assert emu.duplicates() == {}


def test_bad_report_cron_exits_1_naming_the_key(tmp_path: Path, sqlite_url: str) -> None:
    config = write_config(tmp_path, "a", sqlite_url, "http://127.0.0.1:9", cron="0 25 * * *")
    done = subprocess.run([sys.executable, "-m", "numsync", "daemon", "--config", str(config)],
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert "schedule.report_cron" in lines[0] and "hour: 25 is outside 0-23" in lines[0]


class TcpProxy:
    """A TCP forwarder standing in for the database host, so a test can cut the database off."""

    def __init__(self, port: int, target: tuple[str, int]) -> None:
        self.port, self.target = port, target
        self._listener: socket.socket | None = None
        self._conns: list[socket.socket] = []
        self._lock = threading.Lock()

    def start(self) -> None:
        self._listener = socket.create_server(("127.0.0.1", self.port))
        threading.Thread(target=self._accept, args=(self._listener,), daemon=True).start()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target)
            except OSError:
                client.close()
                continue
            with self._lock:
                if self._listener is not listener:  # cut while this one was being connected
                    client.close()
                    upstream.close()
                    continue
                self._conns += [client, upstream]
            threading.Thread(target=self._pump, args=(client, upstream), daemon=True).start()

    @staticmethod
    def _pump(a: socket.socket, b: socket.socket) -> None:
        sel = selectors.DefaultSelector()
        sel.register(a, selectors.EVENT_READ, b)
        sel.register(b, selectors.EVENT_READ, a)
        try:
            while True:
                for key, _ in sel.select():
                    data = key.fileobj.recv(65536)  # type: ignore[union-attr]
                    if not data:
                        return
                    key.data.sendall(data)
        except OSError:
            return
        finally:
            sel.close()

    def cut(self) -> None:
        """Stop listening and reset every open connection, as a lost network would.

        The accept thread checks, under the same lock, that the listener is still current before
        it keeps a connection, so one accepted just as the cut begins cannot outlive it.
        """
        with self._lock:
            listener, self._listener = self._listener, None
        if listener is not None:
            with contextlib.suppress(OSError):  # shutdown wakes accept(); close() alone would not
                listener.shutdown(socket.SHUT_RDWR)
            listener.close()
        with self._lock:
            for conn in self._conns:
                with contextlib.suppress(OSError):
                    conn.shutdown(socket.SHUT_RDWR)
                conn.close()
            self._conns.clear()


@pytest.mark.slow
@pytest.mark.postgres
def test_postgres_down_at_start_then_lost_mid_leadership(tmp_path: Path, pg_url: str, vapi: Any,
                                                         spawn: Callable[[Path], DaemonProcess]) -> None:
    emu, server = vapi
    emu.faults.latency = 0.1
    upgrade(pg_url)
    real = sa.engine.make_url(pg_url)
    proxy = TcpProxy(free_port(), (real.host or "127.0.0.1", real.port or 5432))
    via_proxy = real.set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False)
    daemon = spawn(write_config(tmp_path, "a", via_proxy, server.url, every="1h", concurrency=2))

    # Down at start: alive but not ready, standing by, retrying with backoff instead of exiting.
    wait_for(lambda: daemon.get("/readyz") is not None, 20, "the HTTP endpoints")
    assert daemon.get("/readyz").status_code == 503
    assert daemon.get("/healthz").status_code == 200
    wait_for(lambda: daemon.logs().count("database unavailable; retrying") >= 2, 20, "two retries")
    assert daemon.proc.poll() is None
    assert daemon.leader() == 0.0

    # The database comes back: the next attempt makes it the leader, and it runs.
    proxy.start()
    try:
        wait_for(lambda: daemon.leader() == 1.0, 20, "leadership once the database is back")
        assert daemon.get("/readyz").status_code in (200, 503)  # cached for ~2 s
        wait_for(lambda: daemon.get("/readyz").status_code == 200, 10, "readiness")
        wait_for(lambda: len(emu.records()) >= 2, 20, "the first imports")

        # Lost mid-run: the lock's session goes with the connection. The run fails, no import
        # follows (at most the two in flight), and the leader exits non-zero to restart as a standby.
        proxy.cut()
        at_cut = len(emu.records())
        assert daemon.wait(15) == 1
    finally:
        proxy.cut()
    assert at_cut <= len(emu.records()) <= at_cut + 2 < len(NUMBERS)
    logs = daemon.logs()
    assert "leadership lost" in logs
    assert "scheduled reconcile failed" in logs
    # It could not even record its end: every connection, even one opened as the cut began, is gone.
    assert [r["status"] for r in runs(pg_url)] == ["running"], logs

"""Listing in forked processes (daemon/workers.py): the same snapshot as threads, failures contained.

The jobs here are real listings against the Vapi emulation and a CSV source, or small generators of
our own; nothing of the SDKs or the database is replaced.
"""

from __future__ import annotations

import ctypes.util
import errno
import functools
import json
import multiprocessing
import os
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
import sqlalchemy.orm

from numsync.adapters.base import SourceRecord, VapiOwner
from numsync.adapters.vapi import VapiClient
from numsync.adapters.vapi_model import to_vapi_number
from numsync.app import run_once
from numsync.config import Config, parse_config
from numsync.daemon.db import make_engine, open_database
from numsync.daemon.models import CarrierRecord, Run, VapiRecord
from numsync.daemon.snapshot import (
    VAPI_LISTING_NICE,
    _aware_ts,
    _carrier_row,
    _sqlite_stamp,
    _vapi_row,
    listing_jobs,
    take_snapshot,
)
from numsync.daemon.workers import (
    Job,
    _packed,
    _unpacked,
    fork_available,
    relayed,
    run_in_processes,
    run_in_threads,
)
from numsync.metrics import Metrics
from numsync.sandbox.server import EmulatorServer
from numsync.sandbox.vapi import VapiEmulator

pytestmark = pytest.mark.skipif(not fork_available(), reason="listing processes are forked (Linux)")


@pytest.fixture
def vapi() -> Iterator[tuple[VapiEmulator, EmulatorServer]]:
    emu = VapiEmulator(api_key="test-vapi-key")
    with EmulatorServer(emu) as server:
        yield emu, server


def config(tmp_path: Path, db_url: str, vapi_url: str, csv: Path, processes: bool) -> Config:
    return parse_config(f"""
database_url: {db_url}
vapi:
  api_key: test-vapi-key
  base_url: {vapi_url}
  requests_per_second: 0
  page_size: 7
sources:
  - name: trunk-a
    kind: byo
    numbers_file: {csv}
    vapi_credential_id: cred-a
reports:
  dir: {tmp_path / 'reports'}
  formats: [json]
performance:
  list_in_processes: {'true' if processes else 'false'}
""", origin="test.yaml", base_dir=tmp_path, env={})


def requests_counted(metrics: Metrics) -> dict[tuple[str, str], float]:
    return {(s.labels["api"], s.labels["status"]): s.value for fam in metrics.registry.collect()
            if fam.name == "numsync_api_requests" for s in fam.samples if s.name.endswith("_total")}


def snapshot_rows(db_url: str, run_id: str) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    engine = make_engine(db_url)
    try:
        with engine.connect() as conn:
            v = VapiRecord.__table__.c
            c = CarrierRecord.__table__.c
            vapi_rows = conn.execute(sa.select(*[col for col in v if col.name not in ("id", "run_id")])
                                     .where(v.run_id == run_id).order_by(v.vapi_id)).all()
            carrier_rows = conn.execute(sa.select(*[col for col in c if col.name not in ("id", "run_id")])
                                        .where(c.run_id == run_id).order_by(c.number)).all()
    finally:
        engine.dispose()
    return [tuple(r) for r in vapi_rows], [tuple(r) for r in carrier_rows]


def test_processes_and_threads_write_the_same_snapshot_and_count_the_same_requests(
        tmp_path: Path, db_url: str, vapi: Any) -> None:
    emu, server = vapi
    for i in range(40):  # six pages of seven: the listing spans several batches and requests
        emu.add("byo-phone-number", number=f"+1415555{i:04d}", credentialId="cred-a",
                assistantId="asst-1" if i % 5 else None, name=f"line {i}")
    emu.add("twilio", number="+14155559999", twilioAccountSid="AC" + "2" * 32, assistantId="asst-1")
    csv = tmp_path / "a.csv"
    csv.write_text("number,label\n" + "".join(f"+1415555{i:04d},l{i}\n" for i in range(3, 45)))
    outcomes = {}
    for processes in (True, False):
        metrics = Metrics()
        before = len(emu.requests)
        out = run_once(config(tmp_path, db_url, server.url, csv, processes), mode="plan", metrics=metrics)
        sent = len(emu.requests) - before
        assert "listing_cpu_seconds" in out.result.stats if processes else "listing_cpu_seconds" not in out.result.stats
        counted = requests_counted(metrics)
        assert sum(counted.values()) == sent == 7  # the probe and six pages, each counted once
        findings = sorted((f["kind"], f["number"] or "", f["source"] or "") for f in out.report["findings"])
        outcomes[processes] = (findings, counted, snapshot_rows(db_url, out.result.run_id))
    assert outcomes[True] == outcomes[False]
    findings, _, (vapi_rows, carrier_rows) = outcomes[True]
    assert len(vapi_rows) == 41 and len(carrier_rows) == 42
    assert ("missing_in_vapi", "+14155550040", "trunk-a") in findings
    assert ("orphaned", "+14155550000", "trunk-a") in findings


class _Trunk:
    """A source of our own (the Source protocol, no SDK): lists a few numbers, then maybe dies."""

    kind = "byo"
    numbers_per_round_trip = 1000

    def __init__(self, name: str, numbers: int, die: bool) -> None:
        self.name, self._numbers, self._die = name, numbers, die

    def owner(self) -> VapiOwner:
        return VapiOwner("byo-phone-number", "credentialId", f"cred-{self.name}")

    def list_numbers(self, expected: int | None = None) -> Iterator[SourceRecord]:
        for i in range(self._numbers):
            yield SourceRecord(number=f"+1212555{i:04d}", e164=f"+1212555{i:04d}", carrier_id=str(i))
        if self._die:
            os._exit(3)  # as the OOM killer or a crashing C extension would end it

    def import_body(self, e164: str) -> dict[str, Any]:
        return {}

    def still_owned(self, numbers: Sequence[str]) -> None:
        pass

    def close(self) -> None:
        pass


def test_a_listing_process_that_dies_fails_its_source_alone_and_leaves_no_rows(
        tmp_path: Path, vapi: Any) -> None:
    emu, server = vapi
    emu.add("vonage", number="+442071838750", credentialId="cred-x")
    url = f"sqlite:///{tmp_path / 'w.db'}"
    engine = open_database(url)
    run_id = str(uuid.uuid4())
    cfg = config(tmp_path, url, server.url, tmp_path / "unused.csv", True)
    client = VapiClient(cfg.vapi)
    try:
        with sa.orm.Session(engine) as session, session.begin():
            session.add(Run(id=run_id, seq=1, mode="plan", started_at=datetime.now(UTC)))
            session.flush()
            snap = take_snapshot(session, run_id, client,
                                 [_Trunk("dying", 4500, die=True), _Trunk("fine", 30, die=False)],  # type: ignore[list-item]
                                 {}, processes=True)
        assert snap.sources["dying"].error == "its listing process ended unexpectedly (exit code 3)"
        assert (snap.sources["dying"].numbers, snap.sources["fine"].numbers, snap.vapi_numbers) == (0, 30, 1)
        assert snap.sources["fine"].error is None and snap.vapi_error is None
        with engine.connect() as conn:
            by_source = dict(conn.execute(sa.select(CarrierRecord.source, sa.func.count())
                                          .group_by(CarrierRecord.source)).all())
        assert by_source == {"fine": 30}  # the 4,000 rows the dying listing had sent are gone
        # the Vapi client still works after a child used (copies of) its connections
        assert client.find_by_number("+442071838750")[0]["credentialId"] == "cred-x"
    finally:
        client.close()
        engine.dispose()


def _pid_job(calls: Any) -> Iterator[tuple[str, Any]]:
    for i in range(3):
        calls("request", str(i))
    yield "rows", [os.getpid()]
    r, _w = os.pipe()
    os.read(r, 1)  # nothing is ever written: the job blocks here until it is killed


def test_relayed_calls_reach_the_parent_in_order_and_an_abandoned_child_is_killed() -> None:
    seen: list[tuple[str, str]] = []
    calls = relayed(lambda api, status: seen.append((api, status)))
    events = run_in_processes([Job("stuck", lambda: _pid_job(calls), repr)])
    tag, kind, payload = next(events)
    assert (tag, kind) == ("stuck", "rows")
    child = payload[0]
    assert child != os.getpid()
    assert seen == [("request", "0"), ("request", "1"), ("request", "2")]  # replayed before the batch
    events.close()  # the caller gives up (its database write failed, say)
    with pytest.raises(ProcessLookupError):
        os.kill(child, 0)  # killed and reaped


def test_threads_run_the_same_jobs_and_report_a_failure_as_text() -> None:
    def job() -> Iterator[tuple[str, Any]]:
        yield "rows", [1, 2]
        raise RuntimeError("boom")

    events = list(run_in_threads([Job("t", job, lambda exc: f"failed: {exc}")]))
    assert events == [("t", "rows", [1, 2]), ("t", "error", "failed: boom")]
    in_processes = list(run_in_processes([Job("p", job, lambda exc: f"failed: {exc}")]))
    assert [e for e in in_processes if e[1] != "cpu"] == [("p", "rows", [1, 2]), ("p", "error", "failed: boom")]


def _priority_job() -> Iterator[tuple[str, Any]]:
    yield "rows", [os.getpriority(os.PRIO_PROCESS, 0)]


def test_a_job_may_take_a_lower_cpu_priority_for_its_process() -> None:
    """As the Vapi listing does (``VAPI_LISTING_NICE``), so the carriers' listings get the cores first;
    the other listings and the parent keep theirs."""
    base = os.getpriority(os.PRIO_PROCESS, 0)
    jobs = [Job("vapi", _priority_job, repr, nice=VAPI_LISTING_NICE), Job("carrier", _priority_job, repr)]
    got = {tag: payload[0] for tag, kind, payload in run_in_processes(jobs) if kind == "rows"}
    assert got == {"vapi": min(19, base + VAPI_LISTING_NICE), "carrier": base}
    assert os.getpriority(os.PRIO_PROCESS, 0) == base
    # in threads (one process) a job's priority cannot be its own: it runs as the others do
    assert [e for e in run_in_threads(jobs[:1]) if e[1] == "rows"] == [("vapi", "rows", [base])]


_FREEZE_PROBE = """
import gc
from numsync.daemon.workers import Job, freeze_heap_for_good, run_in_processes

def job():
    yield "rows", [gc.get_freeze_count()]

def frozen_in_child():
    return next(p[0] for _t, kind, p in run_in_processes([Job("j", job, repr)]) if kind == "rows")

before = gc.get_freeze_count()
in_child = frozen_in_child()
after = gc.get_freeze_count()
freeze_heap_for_good()
for_good = gc.get_freeze_count()
in_child_for_good = frozen_in_child()
print(before, in_child, after, for_good, in_child_for_good, gc.get_freeze_count())
"""


def test_the_heap_is_frozen_for_each_fork_and_thawed_after_unless_frozen_for_good() -> None:
    """Frozen, a child's collector leaves the parent's pages alone; a daemon must get its heap back
    (frozen cycles are never collected), and the CLI's heap, frozen for good, stays frozen."""
    done = subprocess.run([sys.executable, "-c", _FREEZE_PROBE], capture_output=True, text=True, timeout=60,
                          check=True)
    before, in_child, after, for_good, in_child_for_good, at_end = map(int, done.stdout.split())
    assert before == 0 and after == 0
    assert in_child > 1000  # the parent's heap, imports and all
    assert for_good > 1000 and in_child_for_good > 1000  # (refcounting still frees frozen objects)
    assert at_end > 1000  # not thawed


def _siblings_job(all_looked: Any) -> Iterator[tuple[str, Any]]:
    parent = os.getppid()
    with open(f"/proc/{parent}/task/{parent}/children") as f:  # the parent's children, now
        seen = {int(pid) for pid in f.read().split()}
    all_looked.wait(timeout=30)  # none ends (and is reaped) before every one has looked
    yield "rows", [(os.getpid(), seen)]


@pytest.mark.skipif(not os.path.exists(f"/proc/{os.getpid()}/task/{os.getpid()}/children"),
                    reason="needs /proc/<pid>/task/<tid>/children")
def test_where_other_threads_run_no_listing_starts_before_every_listing_process_is_forked() -> None:
    # A listing that ran at once could set this process's other threads working (an emulator in
    # the same process, mid-TLS-handshake) while its siblings were forked, and a sibling could
    # inherit a lock held for good. Each job here looks, first thing, at which of the parent's
    # children exist; all of them must.
    all_looked = multiprocessing.get_context("fork").Barrier(4)
    jobs = [Job(f"j{i}", functools.partial(_siblings_job, all_looked), repr) for i in range(4)]
    release = threading.Event()
    other = threading.Thread(target=release.wait, name="another-thread-of-this-process")
    other.start()
    try:
        events = [e for e in run_in_processes(jobs) if e[1] == "rows"]
    finally:
        release.set()
        other.join()
    started = dict(e[2][0] for e in events)
    assert len(started) == 4
    for pid, seen in started.items():
        assert set(started) <= seen, f"listing {pid} started while only {sorted(seen)} of {sorted(started)} existed"


_ALONE_PROBE = """
import os, select, sys, threading
from numsync.daemon.workers import Job, run_in_processes

started_r, started_w = os.pipe()
forks = []

def before_fork():  # in this process, before each fork
    forks.append(1)
    if len(forks) == 2:  # the first listing is forked, the second not yet: has the first begun?
        wait = 30 if sys.argv[1] == "alone" else 0
        forks.append(bool(select.select([started_r], [], [], wait)[0]))

os.register_at_fork(before=before_fork)

def job():
    os.write(started_w, b"x")
    yield "rows", [os.getpid()]

release = threading.Event()
if sys.argv[1] == "with-a-thread":
    threading.Thread(target=release.wait).start()
listed = [e for e in run_in_processes([Job("first", job, repr), Job("second", job, repr)]) if e[1] == "rows"]
release.set()
print(len(listed), forks[2])
"""


@pytest.mark.parametrize(("threads", "begun"), [("alone", "True"), ("with-a-thread", "False")])
def test_a_listing_starts_before_its_siblings_are_forked_only_where_no_other_thread_runs(
    threads: str, begun: str
) -> None:
    """Each fork costs the parent 2-6 ms, and the first listing need not wait for the others'
    when nothing in the parent could be set working by it (the CLI's case)."""
    done = subprocess.run([sys.executable, "-c", _ALONE_PROBE, threads], capture_output=True, text=True,
                          timeout=60, check=True)
    assert done.stdout.split() == ["2", begun]


def test_the_listings_expected_longest_come_first_and_vapis_last() -> None:
    """For inventories of a like size, the source that brings the fewest numbers per round trip
    lists longest, and its process is forked first; Vapi's listing (1,000 records a page, 8 at a
    time) comes last."""
    sources = [_Trunk("wide", 1, die=False), _Trunk("narrow", 1, die=False), _Trunk("middle", 1, die=False)]
    for src, per_trip in zip(sources, (8000, 400, 1000), strict=True):
        src.numbers_per_round_trip = per_trip
    jobs = listing_jobs(VapiClient.__new__(VapiClient), sources, {}, _sqlite_stamp)
    assert [j.tag for j in jobs] == ["narrow", "middle", "wide", "vapi"]
    assert [j.nice for j in jobs] == [0, 0, 0, VAPI_LISTING_NICE]


def test_snapshot_rows_cross_the_pipe_with_their_values_and_types() -> None:
    """A snapshot job's rows travel as MessagePack (``plain_rows``); each value must arrive as the
    driver would have taken it from the listing's own process: text, None, a bool, an aware datetime."""
    vapi = to_vapi_number({"id": "v1", "provider": "twilio", "number": "+14155550100", "name": "Front \u00fc",
                           "twilioAccountSid": "AC" + "1" * 32, "assistantId": "a", "status": "active",
                           "createdAt": "2026-11-26T20:55:55.628Z", "updatedAt": "2026-11-26T20:55:55.628+02:00"})
    bare = to_vapi_number({"id": "v2", "provider": "byo-phone-number", "sipUri": "sip:a@b.c",
                           "createdAt": "2026-11-26T20:55:55.628Z", "updatedAt": "2026-11-26T20:55:55"})
    carrier = SourceRecord(number="+14155550100", e164="+14155550100", carrier_id="PN1", status="in-use",
                           labels={"country": "US"}, routing="https://x", routed_elsewhere=True)
    rows = [_vapi_row(rec, {("twilio", "AC" + "1" * 32): "tw"}, stamp)
            for rec in (vapi, bare) for stamp in (_aware_ts, _sqlite_stamp)] + [_carrier_row("tw", carrier)]
    kind, payload = _unpacked(*_packed(("rows", rows, []))[:2])
    assert kind == "rows" and payload == rows
    assert [[type(v) for v in row] for row in payload] == [[type(v) for v in row] for row in rows]
    assert [row[-1].utcoffset() for row in payload[:4:2]] == [timedelta(0), timedelta(0)]  # aware, UTC

    def job() -> Iterator[tuple[str, Any]]:
        yield "rows", rows[:2]
        yield "rows", [("text no database holds \ud800", True)]  # msgspec refuses it: pickled instead

    got = [e for e in run_in_processes([Job("p", job, repr, plain_rows=True)]) if e[1] == "rows"]
    assert got == [("p", "rows", rows[:2]), ("p", "rows", [("text no database holds \ud800", True)])]


# ---- where fork is refused ----------------------------------------------------------------------
# A child of the test, run once as it is and once under a seccomp filter that refuses to make a
# process (clone without CLONE_THREAD, fork, vfork: EAGAIN, as when a process limit is reached;
# threads are still made): the kernel refuses the fork, as a locked-down container would.
_FORKLESS_RUN = r'''
import ctypes, errno, json, os, sys
from pathlib import Path

tmp, refuse = Path(sys.argv[1]), sys.argv[2] == "refuse"
fork_errno = None
if refuse:
    lib = ctypes.CDLL(sys.argv[3])

    class Cmp(ctypes.Structure):
        _fields_ = [("arg", ctypes.c_uint), ("op", ctypes.c_int), ("a", ctypes.c_uint64), ("b", ctypes.c_uint64)]

    lib.seccomp_init.restype = ctypes.c_void_p
    lib.seccomp_init.argtypes = [ctypes.c_uint32]
    lib.seccomp_rule_add_array.argtypes = [ctypes.c_void_p, ctypes.c_uint32, ctypes.c_int, ctypes.c_uint,
                                           ctypes.POINTER(Cmp)]
    lib.seccomp_load.argtypes = [ctypes.c_void_p]
    lib.seccomp_syscall_resolve_name.argtypes = [ctypes.c_char_p]
    ctx = lib.seccomp_init(0x7FFF0000)  # allow anything else
    refused = 0x00050000 | errno.EAGAIN
    masked_eq, clone_thread = 7, 0x00010000
    for name, action, cmps in [("clone", refused, [Cmp(0, masked_eq, clone_thread, 0)]), ("fork", refused, []),
                               ("vfork", refused, []), ("clone3", 0x00050000 | errno.ENOSYS, [])]:
        arr = (Cmp * 1)(*cmps)  # clone3 refused outright: glibc then makes threads with clone
        assert lib.seccomp_rule_add_array(ctx, action, lib.seccomp_syscall_resolve_name(name.encode()),
                                          len(cmps), arr) == 0, name
    assert lib.seccomp_load(ctx) == 0
    try:
        os.fork()
    except OSError as exc:
        fork_errno = exc.errno

from numsync.app import run_once
from numsync.config import parse_config
from numsync.sandbox.server import EmulatorServer
from numsync.sandbox.vapi import VapiEmulator

emu = VapiEmulator(api_key="test-vapi-key")
for i in range(30):
    emu.add("byo-phone-number", number=f"+1415555{i:04d}", credentialId="cred-a", assistantId="asst-1")
(tmp / "a.csv").write_text("number\n" + "".join(f"+1415555{i:04d}\n" for i in range(5, 40)))
with EmulatorServer(emu) as server:
    cfg = parse_config(f"""
database_url: sqlite:///{tmp / 'numsync.db'}
vapi: {{api_key: test-vapi-key, base_url: "{server.url}", requests_per_second: 0, page_size: 7}}
sources:
  - {{name: trunk-a, kind: byo, numbers_file: a.csv, vapi_credential_id: cred-a}}
performance: {{list_in_processes: true}}
""", origin="test.yaml", base_dir=tmp, env={})
    out = run_once(cfg, mode="plan", write=False)
findings = sorted((f["kind"], f["number"], f["source"]) for f in out.report["findings"])
print("RESULT " + json.dumps({"fork_errno": fork_errno, "outcome": out.result.outcome, "findings": findings,
                              "in_processes": sorted(out.result.stats.get("listing_cpu_seconds", {}))}))
'''


def _forkless_run(tmp_path: Path, how: str) -> tuple[dict[str, Any], str]:
    script = tmp_path / "run.py"
    script.write_text(_FORKLESS_RUN)
    (tmp_path / how).mkdir()
    argv = [sys.executable, str(script), str(tmp_path / how), how, str(ctypes.util.find_library("seccomp"))]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    result = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    return json.loads(result[-1].removeprefix("RESULT ")), done.stdout + done.stderr


@pytest.mark.skipif(ctypes.util.find_library("seccomp") is None, reason="needs libseccomp to refuse the fork")
def test_where_the_kernel_refuses_to_fork_the_run_lists_in_threads_with_the_same_findings(tmp_path: Path) -> None:
    forked, _ = _forkless_run(tmp_path, "allow")
    refused, output = _forkless_run(tmp_path, "refuse")
    assert forked["fork_errno"] is None and forked["in_processes"] == ["trunk-a", "vapi"]
    assert refused["fork_errno"] == errno.EAGAIN  # the filter works: this child cannot fork
    assert refused["in_processes"] == []  # so it listed in threads
    assert "listing_processes_unavailable" in output and "fallback=threads" in output
    assert refused["outcome"] == forked["outcome"] == "drift"
    assert refused["findings"] == forked["findings"]
    assert {kind for kind, _n, _s in refused["findings"]} == {"missing_in_vapi", "orphaned"}

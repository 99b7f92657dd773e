"""Benchmark: the diff stage alone (judge_sources + compute_findings + the Vapi-collapse check).

Writes one run's snapshot straight into the tables with the snapshot's own bulk writer (no APIs,
no emulators): N carrier numbers over three sources (as bench_plan.py seeds them: Twilio +1415,
Telnyx +1970, Vonage +4420), ~0.99 N Vapi records, and drift of every kind: 1% of the numbers
missing in Vapi (some routed elsewhere), orphans, moved records, duplicates by number and by
sipUri, unrouted, blocked and stuck records, unmanaged records, invalid numbers, a source that
lists a number twice. Then times what run.py does between the snapshot and the plan: the
Vapi-collapse check, ``prepare_diff`` (if the code has it), ``judge_sources`` and
``compute_findings``, and each SQL statement by the function that ran it.

    python bench/bench_diff.py [--n 1000000] [--dbs sqlite,postgres] [--repeat 1] [--history 0] [--ref REV]

``--history K`` first writes K earlier runs' snapshots, as a running service's tables hold them.
``--ref REV`` also runs daemon/diff.py as it was at git revision REV on the same snapshot, in
several judgement set-ups (all ok, one source failed, one suspect, a filtered run), and fails if
any finding differs; use it at a small N to check a rewrite keeps the results exactly the same.
To time another revision as a whole (schema included), install it elsewhere and put it first on
PYTHONPATH. PostgreSQL uses a scratch database ``diffbench`` next to NUMSYNC_TEST_DATABASE_URL's.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import inspect
import json
import subprocess
import sys
import tempfile
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import ModuleType
from typing import Any, cast

import sqlalchemy as sa
from scratch_db import drop_scratch_database, scratch_database
from sqlalchemy.orm import Session, sessionmaker

from numsync.adapters.base import SourceRecord, VapiNumber, country_of
from numsync.daemon import diff, run
from numsync.daemon.db import make_engine
from numsync.daemon.models import CarrierRecord, Run, VapiRecord
from numsync.daemon.snapshot import BATCH, _BulkWriter, _carrier_row, _RunTables, _vapi_row, prune_snapshots

ROOT = Path(__file__).resolve().parent.parent
SID = "AC" + "b" * 32
OTHER_SID = "AC" + "c" * 32
NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
SOURCES = {  # name: (kind, provider, Vapi account)
    "twilio-bench": ("twilio", "twilio", SID),
    "telnyx-bench": ("telnyx", "telnyx", "cred-telnyx"),
    "vonage-bench": ("vonage", "vonage", "cred-vonage"),
}
NAMES = list(SOURCES)
OWNERS = {(provider, account): name for name, (_kind, provider, account) in SOURCES.items()}
SKIP = ("raw",)  # as take_snapshot writes vapi_records


def number_of(i: int) -> str:
    return (f"+1415{i:07d}", f"+1970{i:07d}", f"+4420{i:07d}")[i % 3]


def carrier_rows(n: int) -> Iterator[tuple[str, SourceRecord]]:
    """(source, record) as the carriers' adapters would list them."""
    for i in range(n):
        source = NAMES[i % 3]
        number = number_of(i)
        elsewhere = i % 700 == 0  # a seventh of the missing ones
        if source == "twilio-bench":
            rec = SourceRecord(number, number, f"PN{i:032x}", "in-use",
                               {"friendly_name": f"({number[2:5]}) {number[5:8]}-{number[8:]}"},
                               "https://example.com/voice" if elsewhere else "vapi", elsewhere)
        elif source == "telnyx-bench":
            rec = SourceRecord(number, number, str(2_000_000_000 + i), "active", {"country": "US"},
                               "connection 1", elsewhere)
        else:
            rec = SourceRecord(number[1:], number, number[1:], None, {"country": "GB", "type": "mobile-lvn"},
                               "app app-1", elsewhere)
        yield source, rec
    for k in range(max(3, n // 100_000)):  # a CSV-like source listing a (missing) number twice
        i = 300 * (k + 1)  # i % 3 == 0 and i % 100 == 0: a Twilio number missing in Vapi
        yield "twilio-bench", SourceRecord(number_of(i), number_of(i), f"PNdup{k:029x}", "in-use",
                                           {"friendly_name": "second listing"}, "https://example.org/other", True)
    for k in range(max(5, n // 100_000)):
        yield "vonage-bench", SourceRecord(f"not-a-number-{k}", None, f"bad-{k}", None, {}, None, False)


def _vapi(number: str | None, source: str | None, *, provider: str | None = None,
          account: str | None = None, status: str = "active", routed: bool = True,
          updated: datetime = NOW - timedelta(days=30), sip: str | None = None) -> VapiNumber:
    """One Vapi record as the client reads it; ``source`` names the configured source owning it."""
    if source is not None:
        _, provider, account = SOURCES[source]
    assert provider is not None
    stamp = updated.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
    return VapiNumber(str(uuid.uuid4()), provider, number, sip, status, None, account, routed, True, stamp, stamp)


def vapi_rows(n: int) -> Iterator[VapiNumber]:
    for i in range(n):
        if i % 100 == 0:
            if i % 3 == 0 and i % 50_000 == 0:  # moved: a Twilio number held under Telnyx
                yield _vapi(number_of(i), "telnyx-bench")
            continue  # missing in Vapi
        status = "blocked" if i % 10_009 == 2 else "activating" if i % 20_011 == 3 else "active"
        yield _vapi(number_of(i), NAMES[i % 3], status=status, routed=i % 10_007 != 1,
                    updated=NOW - timedelta(days=2) if status == "activating" else NOW - timedelta(days=30))
        if i % 50_021 == 5:  # duplicate_in_vapi, same source
            yield _vapi(number_of(i), NAMES[i % 3])
        if i % 70_001 == 7:  # duplicate_in_vapi, another source (and moved)
            yield _vapi(number_of(i), NAMES[(i + 1) % 3])
    scale = max(1, n // 100_000)
    for k in range(5 * scale):  # orphaned
        yield _vapi(f"+1415999{k:04d}", "twilio-bench")
    for k in range(2 * scale):  # unmanaged: another Twilio account
        yield _vapi(f"+1212555{k:04d}", None, provider="twilio", account=OTHER_SID)
    for k in range(3):  # SIP records: one pair shares a sipUri, one is unrouted
        yield _vapi(None, None, provider="vapi", sip=f"sip:desk{min(k, 1)}@sip.vapi.ai", routed=k != 2)
    yield _vapi("sip:desk0@sip.vapi.ai", None, provider="byo-phone-number")  # a number as written = a sipUri
    yield _vapi(None, "telnyx-bench", sip="sip:trunk@example.com")  # a source's record without a number
    yield _vapi(None, None, provider="vapi", routed=False)  # neither number nor sipUri


def write_snapshot(
    sessions: sessionmaker[Session], run_id: str, n: int
) -> tuple[dict[str, int], int, dict[str, float]]:
    """One run's snapshot; returns (numbers per source, Vapi records, insert seconds per table)."""
    numbers: dict[str, int] = defaultdict(int)
    seconds = {}
    # Rows are made first, by the snapshot's own row builders, so the timings are the database's
    # insert cost alone.
    with sessions() as s:
        stamp = _BulkWriter(s, cast(sa.Table, VapiRecord.__table__), run_id, skip=SKIP).stamp
        carrier_batches = []
        for source, rec in carrier_rows(n):
            numbers[source] += 1
            carrier_batches.append(_carrier_row(source, rec))
        vapi_batches = [_vapi_row(rec, OWNERS, stamp) for rec in vapi_rows(n)]
    for table, rows in ((CarrierRecord.__table__, carrier_batches), (VapiRecord.__table__, vapi_batches)):
        t = time.monotonic()
        with sessions.begin() as s:  # as take_snapshot writes: on PostgreSQL, the run's partition
            tables = _RunTables(s, run_id)
            writer = _BulkWriter(s, cast(sa.Table, table), run_id, skip=SKIP if table is VapiRecord.__table__ else (),
                                 fresh=tables.table_for(cast(sa.Table, table)))
            for start in range(0, len(rows), BATCH):
                writer.write(rows[start:start + BATCH])
            writer.flush()
            tables.attach(cast(sa.Table, table))
        seconds[f"insert_{table.name}"] = time.monotonic() - t
    return dict(numbers), len(vapi_batches), seconds


def build(sessions: sessionmaker[Session], n: int, history: int) -> tuple[str, dict[str, int], int, dict[str, float]]:
    """Write ``history`` earlier runs' snapshots, then this run's; returns (run_id, numbers, vapi, seconds).

    With history, the tables are in a service's steady state: the snapshots of the last three
    runs kept, older ones deleted by a previous run's prune, and on PostgreSQL all of it vacuumed
    and analyzed, as autovacuum would have left it between runs.
    """
    earlier = [str(uuid.uuid4()) for _ in range(history)]
    run_id = str(uuid.uuid4())
    with sessions.begin() as s:
        if not earlier:
            s.add(Run(id=str(uuid.uuid4()), seq=1, mode="plan", status="finished", started_at=NOW, vapi_numbers=n))
        for seq, rid in enumerate(earlier, start=2):
            s.add(Run(id=rid, seq=seq, mode="plan", status="finished", started_at=NOW, vapi_numbers=n))
        s.add(Run(id=run_id, seq=history + 2, mode="plan", status="running", started_at=NOW))
    for rid in earlier:
        write_snapshot(sessions, rid, n)
    with sessions.begin() as s:
        prune_snapshots(s, earlier[-3:])
    if earlier:
        with sessions() as s:
            conn = s.connection(execution_options={"isolation_level": "AUTOCOMMIT"})
            if conn.dialect.name == "postgresql":
                conn.exec_driver_sql("VACUUM ANALYZE vapi_records, carrier_records")
    numbers, n_vapi, seconds = write_snapshot(sessions, run_id, n)
    return run_id, numbers, n_vapi, seconds


class StatementTimer:
    """Times every statement a session runs, fetch included, under the name of the function that ran it."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)

    def attach(self, session: Session) -> None:
        execute = session.execute

        def timed(*args: Any, **kwargs: Any) -> Any:
            frame = sys._getframe(1)
            caller = frame.f_code.co_name
            if caller == "_lacking" and frame.f_back is not None:  # a helper: name who asked
                caller = f"{frame.f_back.f_code.co_name}/{caller}"
            t = time.monotonic()
            frozen = execute(*args, **kwargs).freeze()
            self.seconds[caller] += time.monotonic() - t
            return frozen()

        session.execute = timed  # type: ignore[method-assign]


def diff_once(module: ModuleType, sessions: sessionmaker[Session], run_id: str,
              listed: dict[str, tuple[int, str | None]], *, selected: frozenset[str] | None = None,
              timer: StatementTimer | None = None) -> tuple[dict[str, Any], list[Any], dict[str, float]]:
    kinds = {name: SOURCES[name][0] for name in listed}
    stages = {}
    scan: dict[str, Any] = {}
    if hasattr(module, "scan_run"):  # the passes over every row, two at a time, as run.py asks them
        t = time.monotonic()
        scan["scan"] = module.scan_run(sessions, run_id, [n for n, (_, err) in listed.items() if err is None])
        stages["scan_run"] = time.monotonic() - t
    with sessions.begin() as s:
        if timer:
            timer.attach(s)
        t = time.monotonic()
        judgements = module.judge_sources(s, run_id, listed, kinds, 0.5, **scan)
        stages["judge_sources"] = time.monotonic() - t
        t = time.monotonic()
        drafts = module.compute_findings(
            s, run_id, judgements=judgements, selected=selected or frozenset(listed), filtered=selected is not None,
            now=NOW, stuck_after=timedelta(hours=1), **scan,
        )
        stages["compute_findings"] = time.monotonic() - t
    return judgements, drafts, stages


def load_reference(rev: str) -> ModuleType:
    """daemon/diff.py as it was at ``rev``, importable next to the current one."""
    text = subprocess.run(["git", "show", f"{rev}:daemon/diff.py"], cwd=ROOT, capture_output=True, text=True,
                          check=True).stdout
    spec = importlib.util.spec_from_loader("numsync.daemon._diff_reference", loader=None)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    module.__package__ = "numsync.daemon"
    sys.modules[spec.name] = module  # dataclasses look their module up
    exec(compile(text, f"{rev}:daemon/diff.py", "exec"), module.__dict__)  # noqa: S102
    return module


def comparable(judgements: dict[str, Any], drafts: list[Any], *, add_country: bool) -> tuple[Any, Any]:
    js = {n: (j.name, j.status, j.numbers, j.error) for n, j in judgements.items()}
    ds = []
    for d in drafts:
        row = {f.name: getattr(d, f.name) for f in dataclasses.fields(d)}
        if add_country and d.kind in ("missing_in_vapi", "routed_elsewhere"):  # the new rule, applied to the old
            labels = dict(row["labels"] or {})
            country = country_of(d.number)
            if country is not None:
                labels.setdefault("country", country)
            row["labels"] = labels
        ds.append(row)
    return js, ds


def check_reference(ref: ModuleType, sessions: sessionmaker[Session], run_id: str, numbers: dict[str, int]) -> None:
    setups: dict[str, dict[str, Any]] = {
        "all ok": {"listed": {k: (v, None) for k, v in numbers.items()}},
        "vonage failed": {"listed": {**{k: (v, None) for k, v in numbers.items()}, "vonage-bench": (0, "boom")}},
        "telnyx empty (suspect)": {"listed": {**{k: (v, None) for k, v in numbers.items()}, "telnyx-bench": (0, None)}},
        "filtered to twilio": {"listed": {"twilio-bench": (numbers["twilio-bench"], None)},
                               "selected": frozenset({"twilio-bench"})},
    }
    for name, setup in setups.items():
        new = comparable(*diff_once(diff, sessions, run_id, setup["listed"], selected=setup.get("selected"))[:2],
                         add_country=False)
        old = comparable(*diff_once(ref, sessions, run_id, setup["listed"], selected=setup.get("selected"))[:2],
                         add_country=True)
        if new != old:
            for a, b in zip(new[1], old[1], strict=False):
                if a != b:
                    print(f"  first difference:\n    new {a}\n    ref {b}")
                    break
            raise SystemExit(f"{name}: the findings differ from the reference "
                             f"({len(new[1])} vs {len(old[1])} drafts; judgements equal: {new[0] == old[0]})")
        kinds: dict[str, int] = defaultdict(int)
        for d in new[1]:
            kinds[d["kind"]] += 1
        print(f"  same as reference, {name}: {dict(sorted(kinds.items()))}")


def bench_db(db: str, n: int, repeat: int, ref: ModuleType | None, history: int) -> dict[str, Any]:
    workdir = Path(tempfile.mkdtemp(prefix="diffbench-"))
    url = scratch_database(db, workdir, "diffbench")
    engine = make_engine(url)
    sessions = sessionmaker(engine)
    try:
        run_id, numbers, n_vapi, seconds = build(sessions, n, history)
        result: dict[str, Any] = {"db": db, "n": n, "history": history, "carrier_rows": sum(numbers.values()),
                                  "vapi_rows": n_vapi,
                                  **{k: round(v, 3) for k, v in seconds.items()}}
        prepare = cast(Callable[..., None] | None, getattr(diff, "prepare_diff", None))
        prepare_s = 0.0
        if prepare is not None:  # what run.py calls right after the snapshot
            t = time.monotonic()
            if "run_id" in inspect.signature(prepare).parameters:
                prepare(sessions, run_id)
            else:  # as the code before 0006 took it
                prepare(sessions)
            prepare_s = time.monotonic() - t
        listed = {k: (v, None) for k, v in numbers.items()}
        for attempt in range(repeat):
            t = time.monotonic()
            suspect = run._vapi_suspect(sessions, run_id, n_vapi, 0.5)
            suspect_s = time.monotonic() - t
            assert suspect is None, suspect
            timer = StatementTimer()
            judgements, drafts, stages = diff_once(diff, sessions, run_id, listed, timer=timer)
            kinds: dict[str, int] = defaultdict(int)
            for d in drafts:
                kinds[d.kind] += 1
            label = "" if repeat == 1 else f" #{attempt + 1}"
            total = prepare_s + suspect_s + sum(stages.values())
            scanned = f"scan_run {stages['scan_run']:.3f}s, " if "scan_run" in stages else ""
            print(f"{db} n={n}{label}: prepare_diff {prepare_s:.3f}s, vapi_suspect {suspect_s:.3f}s, {scanned}"
                  f"judge_sources {stages['judge_sources']:.3f}s, compute_findings {stages['compute_findings']:.3f}s, "
                  f"diff total {total:.3f}s")
            print("  per statement: " + ", ".join(f"{k} {v:.3f}s" for k, v in sorted(timer.seconds.items())))
            result.update(prepare_diff=round(prepare_s, 3), vapi_suspect=round(suspect_s, 3),
                          **{k: round(v, 3) for k, v in stages.items()}, diff_total=round(total, 3),
                          statements={k: round(v, 3) for k, v in timer.seconds.items()},
                          findings=dict(sorted(kinds.items())),
                          judgements={k: j.status for k, j in judgements.items()})
        if ref is not None:
            check_reference(ref, sessions, run_id, numbers)
        return result
    finally:
        engine.dispose()
        drop_scratch_database(db, "diffbench")
        for f in workdir.iterdir():
            f.unlink()
        workdir.rmdir()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--dbs", default="sqlite,postgres")
    ap.add_argument("--repeat", type=int, default=1, help="time the diff this many times on one snapshot")
    ap.add_argument("--ref", help="a git revision whose daemon/diff.py must give the same findings")
    ap.add_argument("--history", type=int, default=0,
                    help="earlier runs' snapshots in the tables (3 live, older ones deleted): a service's steady state")
    ap.add_argument("--json", type=Path, help="append the results as JSON lines to this file")
    args = ap.parse_args()
    ref = load_reference(args.ref) if args.ref else None
    for db in args.dbs.split(","):
        result = bench_db(db, args.n, args.repeat, ref, args.history)
        print(json.dumps(result))
        if args.json:
            with args.json.open("a") as fh:
                fh.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    main()

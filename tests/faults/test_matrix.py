"""The fault matrix: every fault the emulators can inject, on Vapi and on each carrier, in plan and reconcile.

Why a matrix rather than a test per incident: the dangerous failures of a reconciler are not the
loud ones but the quiet ones, a half-read inventory taken for the whole, a create retried blindly,
a lying page that floods the report with orphans. Those depend on *where* a fault lands (the Vapi
listing, the create, one carrier's second page) more than on its kind, so each fault runs against
each target in both modes, and the same invariants are checked every time:

- the fault really happened (a case whose fault never fired proves nothing);
- no duplicate in Vapi (no create of a number Vapi already held, no number on more records than
  the seed put there);
- no import of a number no source owns, none from a failed or suspect source, none at all in plan;
- no orphan flood: no ``orphaned`` finding for a failed or suspect source, and no orphans beyond
  the seeded one (plus numbers a hook released during the run, which really are orphans);
- the journal is complete: no action left ``started``, no ``planned`` action left by a reconcile,
  every record numsync created journaled as ``done`` with its id;
- report.json is written, parses, matches the schema and the run, and holds no secret;
- the exit code follows the contract: 2 (the demo always leaves drift) when retries absorbed the
  fault, 1 when the fault made a source or Vapi fail, with the failure reported on that target.

Worlds are cheap (a fresh sandbox is ~20 ms, the database a copied template), so every case starts
from the demo data, and plan and reconcile run side by side in two worlds of their own: the retry
waits of the two modes overlap, which halves the matrix's wall clock. Cases that break an invariant
today are listed in ``KNOWN_BUGS`` (strict xfail). The table printed at the end of the session
(``conftest.py``) is the matrix.
"""

from __future__ import annotations

import json
import shutil
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import sqlalchemy as sa
import yaml

from numsync.app import RunOutput, run_once
from numsync.config import Config, parse_config
from numsync.daemon.db import make_engine
from numsync.daemon.models import Action
from numsync.sandbox.demo import Sandbox, start_sandbox

from .conftest import (
    MODES,
    PAGE_SIZE,
    TARGETS,
    VAPI_VOICE_URL,
    Matrix,
    MatrixRow,
    World,
    owned_by_source,
    seed_pages,
    source_of_record,
)

SCHEMA = json.loads((Path(__file__).parent.parent / "schemas" / "report.schema.json").read_text())
SEEDED_ORPHANS = frozenset({"+14155551300"})  # the demo's "released last month" Twilio number
ABSORBED_EXIT = 2  # the demo always leaves drift (blocked, orphaned, routed elsewhere, ...)
FOREVER = 10_000  # `times` for faults that never stop within a run (unlike None, it shows they fired)
SOURCE_OF = {"twilio": "twilio-main", "telnyx": "telnyx-main", "vonage": "vonage-main"}
CARRIERS = ("twilio", "telnyx", "vonage")
CREATE = {"method": "POST", "path": r"^/phone-number$"}
VAPI_PAGE_SIZE = 5  # Vapi faults run with small pages, so the demo's records span several


# -- the faults -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Fault:
    """A fault and what the contract expects of each target it applies to.

    ``expect`` per target: ``absorbed`` (retries hide it: exit 2, every source ok), ``fails`` (the
    target fails: exit 1, reported on it) or ``either`` (both are right if reported consistently,
    e.g. a listing that changed under an adapter may be read through or refused).
    """

    name: str
    arm: Callable[[World], None]
    expect: dict[str, str]
    pages: int = 1  # seed the target carrier's listing onto this many pages first
    history: bool = False  # a clean plan first, so the faulty run has a previous run to compare with
    fires_in_plan: bool = True  # False for faults on the create, which a plan never sends
    fires: bool = True  # False only for the control case
    # What an absorbed fault may change in the findings: nothing ("same"), only those of the numbers its
    # hooks touched ("touched"), or anything (Vapi looked empty: "any").
    findings: str = "same"


def everywhere(outcome: str, targets: tuple[str, ...] = TARGETS, **overrides: str) -> dict[str, str]:
    return {t: overrides.get(t, outcome) for t in targets}


def _storm(w: World) -> None:
    # Carriers give up after 4 attempts and Vapi after 6 (max_attempts): each survives this many.
    w.on_listing("status", status=429, times=5 if w.target == "vapi" else 3)


def _churn(release: bool, buy: bool) -> Callable[[World], None]:
    """Between two listing requests a number goes away and/or a new one arrives."""

    def arm(w: World) -> None:
        sb, c = w.sb, w.sb.creds

        def change() -> None:
            if w.target == "vapi":
                if buy:  # created after the listing's bound: the import must find and adopt it
                    w.hook_created.add(sb.vapi.add("twilio", number="+14155551101", twilioAccountSid=c.twilio_sid,
                                                   assistantId=c.assistant)["id"])
                    w.touched.add("+14155551101")
                if release:  # the oldest healthy record, already listed: later offsets shift
                    sb.vapi.delete(sb.vapi.by_number("+14155551000")[0]["id"])
                    w.touched.add("+14155551000")
                return
            if release:  # a healthy number that page 1 already listed
                if w.target == "twilio":
                    sb.twilio.remove_number(c.twilio_sid, gone := "+14156000000")
                elif w.target == "telnyx":  # the newest is first on page 1
                    sb.telnyx.remove_number(gone := f"+1970600{PAGE_SIZE['telnyx'] - 1:04d}")
                else:
                    sb.vonage.remove_number((gone := "+447700901000").lstrip("+"))
                w.released.add(gone)
                w.touched.add(gone)
            if buy:  # missing in Vapi: imported if the listing sees it
                if w.target == "twilio":
                    sb.twilio.add_number(c.twilio_sid, new := "+14156009999", voice_url=VAPI_VOICE_URL)
                elif w.target == "telnyx":
                    sb.telnyx.add_number(new := "+19706009999", connection_id=c.telnyx_connection)
                else:
                    sb.vonage.add_number((new := "+447700909999").lstrip("+"), country="GB", app_id=c.vonage_app)
                w.touched.add(new)

        w.after_listing_request(2 if w.target == "vapi" else 1, change)  # Vapi: after the probe and page 1

    return arm


def _paging(name: str) -> Callable[[World], None]:
    def arm(w: World) -> None:
        w.emu.paging_fault = name  # type: ignore[attr-defined]
        w.stateful = True

    return arm


def _empty(w: World) -> None:
    w.on_listing("empty", times=FOREVER)


CHURN = everywhere("absorbed", twilio="either", telnyx="either", vonage="either")
FAULTS: list[Fault] = [
    Fault("none (control)", lambda w: None, everywhere("absorbed"), fires=False),
    Fault("latency 0.4s", lambda w: w.on_any("latency", delay=0.4, times=2), everywhere("absorbed")),
    Fault("429 + Retry-After: 1", lambda w: w.on_listing("status", status=429, retry_after="1"),
          everywhere("absorbed")),
    Fault("429 storm, no Retry-After", _storm, everywhere("absorbed")),
    Fault("500", lambda w: w.on_listing("status", status=500), everywhere("absorbed")),
    Fault("502", lambda w: w.on_listing("status", status=502), everywhere("absorbed")),
    Fault("503", lambda w: w.on_listing("status", status=503), everywhere("absorbed")),
    Fault("connection reset", lambda w: w.on_listing("reset"), everywhere("absorbed")),
    Fault("read timeout (hang > timeout)", lambda w: w.on_listing("hang", delay=1.5), everywhere("absorbed")),
    Fault("create ok, answer lost", lambda w: w.on_any("timeout_after", delay=1.5, **CREATE),
          {"vapi": "absorbed"}, fires_in_plan=False),
    Fault("create 429 + Retry-After", lambda w: w.on_any("status", status=429, retry_after="1", **CREATE),
          {"vapi": "absorbed"}, fires_in_plan=False),
    Fault("page 2 fails once", lambda w: w.on_listing("status", status=503, after=1), everywhere("absorbed"),
          pages=2),
    Fault("page 2 unreadable for good", lambda w: w.on_listing("truncated_json", after=1, times=FOREVER),
          everywhere("fails"), pages=2),
    Fault("churn: release listed", _churn(release=True, buy=False), CHURN, pages=2, findings="touched"),
    Fault("churn: buy new", _churn(release=False, buy=True), CHURN, pages=2, findings="touched"),
    Fault("churn: release + buy", _churn(release=True, buy=True), CHURN, pages=2, findings="touched"),
    Fault("outage (all 503)", lambda w: w.on_any("status", status=503, times=FOREVER), everywhere("fails")),
    Fault("empty inventory", _empty, everywhere("fails", vapi="either"), history=True, findings="any"),
    Fault("empty answer once", lambda w: w.on_listing("empty"), everywhere("fails"), history=True,
          findings="any"),  # Vapi looks empty after a run that saw records: suspect, nothing judged
    Fault("truncated JSON", lambda w: w.on_listing("truncated_json"), everywhere("fails")),
    Fault("malformed JSON", lambda w: w.on_listing("malformed_json"), everywhere("fails")),
    Fault("wrong content type", lambda w: w.on_listing("wrong_content_type"), everywhere("either")),
    Fault("HTML error page (502)", lambda w: w.on_listing("html", status=502), everywhere("absorbed")),
    Fault("paging: loop", _paging("loop"), everywhere("fails", ("twilio", "vonage")), pages=3),
    Fault("paging: repeat", _paging("repeat"), {"twilio": "fails"}),
    Fault("paging: missing key", _paging("missing_key"), {"twilio": "fails"}),
    Fault("paging: HTML 200", _paging("html"), everywhere("fails", CARRIERS)),
    Fault("paging: no meta", _paging("no_meta"), {"telnyx": "fails"}),
    Fault("paging: stuck page", _paging("stuck"), {"telnyx": "fails"}, pages=2),
    Fault("paging: endless", _paging("endless"), {"telnyx": "fails"}),
    Fault("paging: count too high", _paging("count_high"), {"vonage": "fails"}),
    Fault("paging: numbers dropped", _paging("drop_numbers"), {"vonage": "fails"}),
]

# Cases that break an invariant today: each is a bug described in the reason (xfail is strict, so a
# fix turns them red until the entry is removed).
KNOWN_BUGS: dict[tuple[str, str], str] = {}

CASES = [
    pytest.param(fault, target, id=f"{fault.name}-{target}",
                 marks=[pytest.mark.xfail(strict=True, reason=KNOWN_BUGS[(fault.name, target)])]
                 if (fault.name, target) in KNOWN_BUGS else [])
    for fault in FAULTS for target in TARGETS if target in fault.expect
]


# -- the run and its checks -------------------------------------------------------------------------
def matrix_config(sb: Sandbox, db_url: str, reports: Path, target: str) -> Config:
    """The sandbox's config with 1 s timeouts, fast Vapi retries and (for Vapi faults) small pages."""
    text = sb.config_text(database_url=db_url, reports_dir=str(reports), with_broken_source=False)
    data = yaml.safe_load(text)
    data["vapi"].update(timeout=1, backoff_base=0.01, requests_per_second=0, max_retry_after=1,
                        page_size=VAPI_PAGE_SIZE if target == "vapi" else 1000)
    for src in data["sources"]:
        src["timeout"] = 1
    data["reports"]["formats"] = ["json"]
    return parse_config(yaml.safe_dump(data), origin="matrix.yaml", env={})


def journal(db_url: str) -> list[tuple[str, str, str, str | None]]:
    """Every action in the database: (run id, number, state, Vapi id)."""
    engine = make_engine(db_url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(sa.select(Action.run_id, Action.number, Action.state, Action.vapi_id)).all()
    finally:
        engine.dispose()
    return [(r, n, s, v) for r, n, s, v in rows]


def e164(number: Any) -> str:
    return "+" + str(number or "").lstrip("+")


FindingKey = tuple[str, str | None, str | None]


def findings_of(report: dict[str, Any]) -> set[FindingKey]:
    return {(f["kind"], f["number"], f["source"]) for f in report["findings"]}


@pytest.fixture(scope="session")
def baseline(sqlite_template: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, set[FindingKey]]:
    """The findings of each mode with no fault at all: what an absorbed fault must leave unchanged."""
    found = {}
    for mode in MODES:
        tmp = tmp_path_factory.mktemp(f"baseline-{mode}")
        shutil.copyfile(sqlite_template, tmp / "numsync.db")
        sb = start_sandbox(workdir=tmp / "sandbox")
        try:
            config = matrix_config(sb, f"sqlite:///{tmp / 'numsync.db'}", tmp / "reports", "twilio")
            found[mode] = findings_of(run_once(config, mode=mode, write=False).report)
        finally:
            sb.stop()
    return found


@dataclass
class Run:
    """One mode of a case: its own sandbox, database and reports, and what the run returned."""

    mode: str
    world: World
    config: Config
    row: MatrixRow
    owned_before: dict[str, set[str]] = field(default_factory=dict)
    before: list[dict[str, Any]] = field(default_factory=list)
    out: RunOutput | None = None


def run_mode(fault: Fault, run: Run) -> None:
    """Arm the fault and run numsync once (in a worker thread: the two modes overlap their waits)."""
    sb = run.world.sb
    if fault.history:
        assert run_once(run.config, mode="plan", write=False).result.exit_code == ABSORBED_EXIT
    run.owned_before = owned_by_source(sb)
    run.before = sb.vapi.records()
    fault.arm(run.world)
    t0 = time.monotonic()
    try:
        run.out = run_once(run.config, mode=run.mode)
    finally:
        run.row.seconds = time.monotonic() - t0
        for emu in (sb.vapi, sb.twilio, sb.telnyx, sb.vonage):  # the checks read state through no fault
            emu.faults.clear()
            emu.after_request.clear()
    run.row.exit_code = run.out.result.exit_code


@pytest.mark.parametrize(("fault", "target"), CASES)
def test_fault(fault: Fault, target: str, sandboxes: Callable[[str], Sandbox], fresh_sqlite: Callable[[str], str],
               tmp_path: Path, fault_matrix: Matrix, baseline: dict[str, set[FindingKey]]) -> None:
    """Plan and reconcile under the fault, side by side in separate worlds; then every invariant on each."""
    fault_matrix.declare([f.name for f in FAULTS])
    runs = []
    for mode in MODES:
        sb = sandboxes(mode)
        if fault.pages > 1 and target in PAGE_SIZE:
            seed_pages(sb, target, fault.pages)
        config = matrix_config(sb, fresh_sqlite(mode), tmp_path / f"reports-{mode}", target)
        runs.append(Run(mode, World(sb, target), config, fault_matrix.record(MatrixRow(fault.name, target, mode))))
    try:
        with ThreadPoolExecutor(max_workers=len(runs), thread_name_prefix="matrix") as pool:
            futures = [pool.submit(run_mode, fault, run) for run in runs]
        for future in futures:
            future.result()
    finally:
        fault_matrix.case_done()

    failures = []
    known = KNOWN_BUGS.get((fault.name, target))
    for run in runs:
        assert run.out is not None
        try:
            fires = run.mode == "reconcile" or fault.fires_in_plan
            assert run.world.fired() == (fires and fault.fires), "the fault did not fire as expected"
            check_run(fault, run, baseline[run.mode])
        except AssertionError as exc:
            run.row.verdict = "known" if known else "FAIL"
            run.row.note = ("known bug; " if known else "") + " ".join(str(exc).split())[:150]
            failures.append(f"{run.mode}: {exc}")
        else:
            run.row.verdict = "ok"
    assert not failures, "\n".join(failures)


def check_run(fault: Fault, run: Run, baseline: set[FindingKey]) -> None:
    """Every invariant of the module docstring, on one finished run (AssertionError names the first broken)."""
    assert run.out is not None
    w, mode, out, config, before = run.world, run.mode, run.out, run.config, run.before
    sb, target, report, result = w.sb, w.target, out.report, out.result
    statuses = {s["name"]: s["status"] for s in report["sources"]}
    bad_sources = {name for name, status in statuses.items() if status != "ok"}
    vapi_failed = (result.error or "").startswith("Vapi")

    # The exit code, and the failure reported where the fault was.
    expected = fault.expect[target]
    outcome = "fails" if result.exit_code == 1 else "absorbed"
    if expected != "either":
        assert outcome == expected, f"expected the fault to be {expected}, got exit {result.exit_code} ({result.error})"
    if outcome == "absorbed":
        assert result.exit_code == ABSORBED_EXIT, result.error
        assert not bad_sources and not vapi_failed, result.error
    elif target == "vapi":
        assert vapi_failed, f"exit 1 without Vapi reported as failed: {result.error}"
        assert report["findings"] == [], "nothing may be judged when Vapi could not be listed"
    else:
        assert bad_sources == {SOURCE_OF[target]}, f"source statuses {statuses}: expected only {target} failed"
        assert any(f["kind"] == "source_unavailable" and f["source"] == SOURCE_OF[target] for f in report["findings"])

    # What the run found: an absorbed fault changes nothing; a failed source changes nothing of the others.
    found = findings_of(report)
    if outcome == "absorbed" and fault.findings != "any":
        changed = {f for f in found ^ baseline if fault.findings == "same" or f[1] not in w.touched}
        assert not changed, f"findings changed: lost {sorted(baseline - found)}, new {sorted(found - baseline)}"
    elif outcome == "fails" and target != "vapi":
        for name in set(statuses) - bad_sources:
            mine, usual = {f for f in found if f[2] == name}, {f for f in baseline if f[2] == name}
            assert mine == usual, f"{name} (ok) lost {sorted(usual - mine)}, gained {sorted(mine - usual)}"

    # No duplicate in Vapi: no create of a number it held, no number on more records than seeded.
    after = sb.vapi.records()
    assert sb.vapi.duplicate_creates == [], f"{len(sb.vapi.duplicate_creates)} creates of numbers Vapi held"
    seeded = Counter(e164(r["number"]) for r in before if r.get("number"))
    now = Counter(e164(r["number"]) for r in after if r.get("number"))
    grown = {n: c for n, c in now.items() if c > max(seeded.get(n, 0), 1)}
    assert not grown, f"numbers on more Vapi records than before: {grown}"

    # No import of a number no source owns, none from a failed source, none at all in plan.
    owned_after = owned_by_source(sb)
    before_ids = {r["id"] for r in before}
    imported = [r for r in after if r["id"] not in before_ids and r["id"] not in w.hook_created]
    if mode == "plan":
        assert not imported and not sb.vapi.requests_to("POST", r"^/phone-number"), "plan wrote to Vapi"
    for record in imported:
        source, number = source_of_record(sb, record), e164(record.get("number"))
        assert source is not None, f"imported {number} under an account no source covers"
        assert number in run.owned_before[source] | owned_after[source], f"imported {number}, not owned by {source}"
        assert source not in bad_sources, f"imported {number} from {source}, which was {statuses[source]}"

    # No orphan flood.
    orphans = [f for f in report["findings"] if f["kind"] == "orphaned"]
    assert all(f["source"] not in bad_sources for f in orphans), f"orphans of a failed source: {orphans}"
    unexpected = {f["number"] for f in orphans} - SEEDED_ORPHANS - w.released
    assert not unexpected, f"orphaned findings for numbers their source still owns: {sorted(unexpected)}"

    # The journal is complete: nothing in flight, every record we created journaled as done, every
    # done action pointing at a Vapi record that holds its number.
    actions = journal(config.database_url)
    assert not [a for a in actions if a[2] == "started"], f"actions left started: {actions}"
    mine = [a for a in actions if a[0] == result.run_id]
    if mode == "reconcile":
        assert not [a for a in mine if a[2] == "planned"], f"reconcile left planned actions: {mine}"
    done = {vapi_id: number for _, number, state, vapi_id in mine if state == "done"}
    assert {r["id"] for r in imported} <= set(done), "a record numsync created is not journaled as done"
    by_id = {r["id"]: r for r in after}
    for vapi_id, number in done.items():
        held = by_id.get(vapi_id or "", {}).get("number")
        assert held is not None and e164(held) == number, f"the done import of {number} points at {vapi_id}"

    # The report: written, readable, valid, about this run, free of secrets.
    paths = [p for p in out.paths if p.name == "report.json"]
    assert paths and paths[0].is_file(), "report.json not written"
    text = paths[0].read_text()
    written = json.loads(text)
    jsonschema.validate(written, SCHEMA)
    assert (written["run_id"], written["mode"], written["outcome"]) == (result.run_id, mode, result.outcome)
    c = sb.creds
    for secret in (c.vapi_key, c.twilio_token, c.telnyx_key, c.vonage_secret):
        assert secret not in text, "a secret reached report.json"

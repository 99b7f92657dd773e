"""Shared pieces of the fault tests: a fresh sandbox per case, a pre-migrated SQLite template, the table.

Why a fresh sandbox per case rather than one per module: the emulators hold state that a case
changes (imports land in Vapi, hooks add and release numbers, a `hang` leaves a server thread
asleep), and ``start_sandbox`` costs about 20 ms, far less than resetting four emulators by hand
and trusting that nothing leaked. The SQLite schema is migrated once per session and copied, so a
case pays for a file copy instead of an Alembic upgrade. Both fixtures are factories because a
matrix case runs plan and reconcile side by side, each in a world of its own.

The matrix table is printed by ``pytest_terminal_summary`` from rows the cases record, so it shows
what each fault did to each target (exit codes per mode, how long the slowest run took) even when
some cases failed.

``World`` is a case's handle on its sandbox: it arms rules and hooks on the target and remembers
what they did (whether a rule fired, which numbers a hook added or released), because the checks
must tell a number that numsync imported from one a hook created, and a true orphan from a false one.
"""

from __future__ import annotations

import re
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from numsync.daemon.db import upgrade
from numsync.sandbox.demo import Sandbox, start_sandbox
from numsync.sandbox.server import Emulator, Request, Response
from numsync.sandbox.server import Fault as Rule

TARGETS = ("vapi", "twilio", "telnyx", "vonage")
MODES = ("plan", "reconcile")
VAPI_VOICE_URL = "https://api.vapi.ai/twilio/inbound_call"
LIST_PATH = {
    "vapi": r"^/v2/phone-number$",
    "twilio": r"/IncomingPhoneNumbers\.json$",
    "telnyx": r"^/v2/phone_numbers$",
    "vonage": r"^/account/numbers$",
}
PAGE_SIZE = {"twilio": 1000, "telnyx": 250, "vonage": 100}  # the carrier adapters' page sizes


@dataclass
class MatrixRow:
    """One case of the matrix: what ran, how it ended, and whether its invariants held."""

    fault: str
    target: str
    mode: str
    exit_code: int | None = None
    seconds: float = 0.0
    verdict: str = "FAIL"  # "ok" once every invariant held; "known" for a known bug (xfail)
    note: str = ""


@dataclass
class Matrix:
    """The rows recorded during the session, in the order the faults were declared."""

    rows: list[MatrixRow] = field(default_factory=list)
    fault_order: list[str] = field(default_factory=list)
    started: float | None = None  # monotonic time of the first case, and of the end of the last
    finished: float | None = None

    def record(self, row: MatrixRow) -> MatrixRow:
        if self.started is None:
            self.started = time.monotonic()
        self.rows.append(row)
        return row

    def case_done(self) -> None:
        self.finished = time.monotonic()

    def declare(self, faults: list[str]) -> None:
        for name in faults:
            if name not in self.fault_order:
                self.fault_order.append(name)

    def render(self) -> list[str]:
        """fault x target -> 'plan exit/reconcile exit slowest-seconds', '!' marking a failed case."""
        cells: dict[tuple[str, str], dict[str, MatrixRow]] = {}
        for row in self.rows:
            cells.setdefault((row.fault, row.target), {})[row.mode] = row
        faults = [f for f in self.fault_order if any(k[0] == f for k in cells)]
        faults += sorted({k[0] for k in cells} - set(faults))
        width = max([len("fault"), *(len(f) for f in faults)])
        header = f"{'fault':<{width}} | " + " | ".join(f"{t:<16}" for t in TARGETS)
        lines = [header, "-" * len(header)]
        for fault in faults:
            parts = []
            for target in TARGETS:
                by_mode = cells.get((fault, target))
                if not by_mode:
                    parts.append(f"{'n/a':<16}")
                    continue
                codes = []
                for mode in MODES:
                    row = by_mode.get(mode)
                    if row is None:
                        codes.append("-")
                    else:
                        code = "?" if row.exit_code is None else str(row.exit_code)
                        codes.append(code + {"ok": "", "known": "x"}.get(row.verdict, "!"))
                slowest = max(r.seconds for r in by_mode.values())
                parts.append(f"{'/'.join(codes) + f' {slowest:.1f}s':<16}")
            lines.append(f"{fault:<{width}} | " + " | ".join(parts))
        total = sum(r.seconds for r in self.rows)
        failed = [r for r in self.rows if r.verdict != "ok"]
        lines.append("cells: plan/reconcile exit codes and the slower of the two runs; '!' = an invariant "
                     "broken or a wrong exit code, 'x' = a known bug (xfail).")
        wall = (self.finished or 0.0) - (self.started or 0.0)
        lines.append(f"{len(self.rows)} runs, {total:.1f}s inside numsync, {wall:.1f}s wall clock for the matrix, "
                     f"{len(failed)} not ok.")
        notes = [f"  {r.fault} / {r.target} / {r.mode}: {r.note}" for r in self.rows if r.note]
        if notes:
            lines.append("notes:")
            lines.extend(notes)
        return lines


_MATRIX = pytest.StashKey[Matrix]()


@pytest.fixture(scope="session")
def fault_matrix(request: pytest.FixtureRequest) -> Matrix:
    """The session's matrix; its table is printed at the end of the run."""
    config = request.config
    if _MATRIX not in config.stash:
        config.stash[_MATRIX] = Matrix()
    return config.stash[_MATRIX]


_CRASH_SEED = pytest.StashKey[int]()


def note_crash_seed(config: pytest.Config, seed: int) -> None:
    """Remember the crash test's seed, so the summary says how to replay its kill points."""
    config.stash[_CRASH_SEED] = seed


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter, exitstatus: int,
                            config: pytest.Config) -> None:
    matrix = config.stash.get(_MATRIX, None)
    if matrix is not None and matrix.rows:
        terminalreporter.section("fault matrix")
        for line in matrix.render():
            terminalreporter.write_line(line)
    seed = config.stash.get(_CRASH_SEED, None)
    if seed is not None:
        terminalreporter.write_line(f"crash-safety kill points drawn from NUMSYNC_CRASH_SEED={seed}")


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A SQLite database at the current migration, migrated once for the whole session."""
    path = tmp_path_factory.mktemp("db-template") / "numsync.db"
    upgrade(f"sqlite:///{path}")
    return path


@pytest.fixture
def fresh_sqlite(sqlite_template: Path, tmp_path: Path) -> Callable[[str], str]:
    """Migrated SQLite databases of this case's own (copies of the template), one per name."""

    def make(name: str) -> str:
        path = tmp_path / f"{name}.db"
        shutil.copyfile(sqlite_template, path)
        return f"sqlite:///{path}"

    return make


@pytest.fixture
def sandboxes(tmp_path: Path) -> Iterator[Callable[[str], Sandbox]]:
    """Fresh sandboxes (the four emulations with the demo data), one per name, all stopped at the end."""
    started: list[Sandbox] = []

    def start(name: str) -> Sandbox:
        sb = start_sandbox(workdir=tmp_path / f"sandbox-{name}")
        started.append(sb)
        return sb

    yield start
    for sb in started:
        for emu in (sb.vapi, sb.twilio, sb.telnyx, sb.vonage):
            emu.after_request.clear()
            emu.faults.clear()
    # Each server's shutdown waits for its 50 ms poll: stopping them in parallel costs one poll.
    stoppers = [threading.Thread(target=server.stop) for sb in started for server in sb.servers.values()]
    for thread in stoppers:
        thread.start()
    for thread in stoppers:
        thread.join()


# -- a case's world: what the matrix arms and hooks, and what it reads back ------------------------
@dataclass
class World:
    """The sandbox of one case, the rules armed on it, and what its hooks did to it."""

    sb: Sandbox
    target: str
    rules: list[tuple[Rule, int]] = field(default_factory=list)  # (rule, its times when armed)
    hooks_ran: int = 0
    hook_created: set[str] = field(default_factory=set)  # Vapi ids created by a hook, not by numsync
    released: set[str] = field(default_factory=set)  # numbers a hook took from a carrier mid-run
    touched: set[str] = field(default_factory=set)  # every number a hook added or removed anywhere
    stateful: bool = False  # a paging fault: the emulator misbehaves as long as it is set

    @property
    def emu(self) -> Emulator:
        return getattr(self.sb, self.target)  # type: ignore[no-any-return]

    def on_listing(self, kind: str, **kw: Any) -> None:
        """A rule on the target's listing requests only (GET for Vapi: its creates are left alone)."""
        self.on_any(kind, method="GET", path=LIST_PATH[self.target], **kw)

    def on_any(self, kind: str, **kw: Any) -> None:
        rule = self.emu.faults.add(kind, **kw)
        self.rules.append((rule, rule.times or 0))

    def after_listing_request(self, nth: int, change: Callable[[], None]) -> None:
        """Run ``change`` once, right after the target answered its ``nth`` listing request."""
        seen = 0

        def hook(req: Request, resp: Response) -> None:
            nonlocal seen
            if req.method == "GET" and re.search(LIST_PATH[self.target], req.path):
                seen += 1
                if seen == nth:
                    change()
                    self.hooks_ran += 1

        self.emu.after_request.append(hook)

    def fired(self) -> bool:
        return self.stateful or self.hooks_ran > 0 or any(rule.times != times for rule, times in self.rules)


def seed_pages(sb: Sandbox, target: str, pages: int) -> None:
    """Healthy numbers (owned at the carrier, imported in Vapi) until the listing spans ``pages`` pages."""
    c = sb.creds
    for i in range(PAGE_SIZE[target] * (pages - 1)):
        if target == "twilio":
            number = f"+1415600{i:04d}"
            sb.twilio.add_number(c.twilio_sid, number, voice_url=VAPI_VOICE_URL)
            sb.vapi.add("twilio", number=number, twilioAccountSid=c.twilio_sid, assistantId=c.assistant)
        elif target == "telnyx":
            number = f"+1970600{i:04d}"
            sb.telnyx.add_number(number, connection_id=c.telnyx_connection, connection_name="vapi-sip")
            sb.vapi.add("telnyx", number=number, credentialId=c.telnyx_credential, assistantId=c.assistant)
        else:
            msisdn = f"44770090{1000 + i:04d}"
            sb.vonage.add_number(msisdn, country="GB", app_id=c.vonage_app)
            sb.vapi.add("vonage", number="+" + msisdn, credentialId=c.vonage_credential, assistantId=c.assistant)


def owned_by_source(sb: Sandbox) -> dict[str, set[str]]:
    """Which numbers each source owns right now (E.164), straight from the emulators' state."""
    trunk = [line.split(",")[0] for line in sb.trunk_csv.read_text().splitlines()[1:]]
    return {
        "twilio-main": {n["phone_number"] for n in sb.twilio.numbers(sb.creds.twilio_sid)},
        "telnyx-main": {n["phone_number"] for n in sb.telnyx.numbers()},
        "vonage-main": {"+" + n["msisdn"] for n in sb.vonage.numbers()},
        "trunk-demo": {n for n in trunk if n.startswith("+")},
    }


def source_of_record(sb: Sandbox, record: dict[str, Any]) -> str | None:
    c = sb.creds
    return {
        ("twilio", c.twilio_sid): "twilio-main",
        ("telnyx", c.telnyx_credential): "telnyx-main",
        ("vonage", c.vonage_credential): "vonage-main",
        ("byo-phone-number", c.trunk_credential): "trunk-demo",
    }.get((record.get("provider"), record.get("twilioAccountSid") or record.get("credentialId")))

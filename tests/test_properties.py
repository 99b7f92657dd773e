"""Property tests: random inventories on both sides, the engine's findings against a reference model.

Why: the example tests (test_engine.py) pin a few hand-picked states, but the contract's rules
interact in ways a few examples do not cover: ownership by (provider, account), comparison in
E.164 whatever form a carrier returns, 'moved' and 'unmanaged' numbers that must not be imported
again, suspect sources, a shared number imported once by the first source. Here hypothesis draws
both sides from a small pool of numbers (so collisions are frequent), a plain-Python model written
from INTERFACE.md (not from daemon/diff.py) says what the findings must be, and the real engine
runs against the emulations over real sockets: Twilio through the twilio SDK, Vonage through the
vonage SDK over TLS (its numbers come as digits without '+'), SIP trunks from CSV files.

Where the contract leaves a corner open, the model reads it as follows: a number held in Vapi
under any account (another source's, an uncovered one, Vapi's own) is not missing; a suspect
source's numbers are neither reported missing nor invalid (nothing is imported from it) and its
Vapi records are judged neither orphaned nor moved; 'moved' means another configured source lists
the number, suspect or not (a regression test at the end pins that case); a duplicate's source
is the records' common source, else null.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from numsync.app import run_once
from numsync.config import Config, parse_config
from numsync.sandbox.server import EmulatorServer
from numsync.sandbox.twilio import TwilioEmulator
from numsync.sandbox.vapi import VapiEmulator
from numsync.sandbox.vonage import VonageEmulator, make_tls

VAPI_KEY = "prop-vapi-key"
SID = "AC" + "5" * 32
TOKEN = "prop-twilio-token"
OTHER_SID = "AC" + "6" * 32
VONAGE_KEY, VONAGE_SECRET = "prop-vonage-key", "prop-vonage-secret"

SOURCES = ("trunk-a", "trunk-b", "twilio-main", "vonage-main")
# A small pool, so that sources and Vapi keep colliding on the same numbers.
POOL = ("+14155550101", "+14155550102", "+14155550103", "+16505550104", "+16505550105",
        "+442071234567", "+442071234568")
# Texts no reading turns into an E.164 number (no '+', unknown country code, too short/long).
INVALID = ("not-a-number", "12", "+1 415", "555-0100", "+999 1234", "+1 415-555-01001234567")
TWILIO_ROUTES = {  # routing at Twilio -> (add_number kwargs, routed elsewhere per the contract)
    "vapi": ({"voice_url": "https://api.vapi.ai/twilio/inbound_call"}, False),
    "none": ({}, False),
    "url": ({"voice_url": "https://example.com/voice"}, True),
    "trunk": ({"trunk_sid": "TK" + "a" * 32}, True),
    "app": ({"voice_application_sid": "AP" + "b" * 32}, True),
}
# Who a Vapi record belongs to: its provider and account field. Only the first four are sources.
OWNERS: dict[str, tuple[str, dict[str, str]]] = {
    "trunk-a": ("byo-phone-number", {"credentialId": "cred-a"}),
    "trunk-b": ("byo-phone-number", {"credentialId": "cred-b"}),
    "twilio-main": ("twilio", {"twilioAccountSid": SID, "twilioAuthToken": TOKEN}),
    "vonage-main": ("vonage", {"credentialId": "cred-vonage"}),
    "twilio-other": ("twilio", {"twilioAccountSid": OTHER_SID, "twilioAuthToken": "other-token"}),
    "byo-other": ("byo-phone-number", {"credentialId": "cred-other"}),
    "telnyx-other": ("telnyx", {"credentialId": "cred-telnyx"}),
    "vonage-on-cred-a": ("vonage", {"credentialId": "cred-a"}),  # trunk-a's credential, wrong provider
    "vapi": ("vapi", {}),
}
# Numbers no source ever lists: Vapi records of them are orphaned (or unmanaged).
UNOWNED = ("+13125550190", "+13125550191", "+13125550192")
SIP_URIS = ("sip:alpha@sip.vapi.ai", "sip:beta@sip.vapi.ai")
ROUTES = {
    "assistant": {"assistantId": "asst-1"},
    "squad": {"squadId": "squad-1"},
    "workflow": {"workflowId": "wf-1"},
    "server": {"server": {"url": "https://example.com/hook"}},
    "server-without-url": {"server": {"timeoutSeconds": 20}},
    "none": {},
}
STATUSES = ("active", "blocked", "activating-old", "activating-fresh")

Finding = tuple[str, str | None, str | None, str]  # kind, number, source, action


def csv_form(e164: str, style: int) -> str:
    """One way people write the number in a trunk's CSV."""
    cc, nat = ("1", e164[2:]) if e164.startswith("+1") else ("44", e164[3:])
    forms = (
        e164,
        f"+{cc} {nat[:3]}-{nat[3:6]}-{nat[6:]}",
        f"+{cc} ({nat[:3]}) {nat[3:6]} {nat[6:]}",
        f"+{cc}.{nat[:3]}.{nat[3:6]}.{nat[6:]}",
        f"  {e164} ",
    )
    return forms[style % len(forms)]


@dataclass(frozen=True)
class Settings:
    enabled: bool
    take_over: bool
    assistant: bool
    exclude_uk: bool


@dataclass(frozen=True)
class VapiSeed:
    owner: str
    number: str | None  # E.164, or None for a SIP record
    sip: str | None
    digits_only: bool  # stored without '+' (as Vonage numbers may be)
    status: str
    route: str

    @property
    def source(self) -> str | None:
        return self.owner if self.owner in SOURCES else None

    @property
    def provider(self) -> str:
        return OWNERS[self.owner][0]

    @property
    def routed(self) -> bool:
        return self.route not in ("none", "server-without-url")


@dataclass(frozen=True)
class Scenario:
    order: tuple[str, ...]
    csv: dict[str, list[tuple[str, str | None]]]  # source -> [(raw text, E.164 or None)]
    twilio: dict[str, str]  # E.164 -> routing kind
    vonage: list[str]  # E.164
    vapi: list[VapiSeed]
    settings: dict[str, Settings]


# -- strategies -------------------------------------------------------------------------------------
_valid_row = st.builds(lambda n, s: (csv_form(n, s), n), st.sampled_from(POOL), st.integers(0, 4))
_invalid_row = st.sampled_from(INVALID).map(lambda s: (s, None))
_csv_rows = st.lists(st.one_of(_valid_row, _valid_row, _valid_row, _invalid_row), max_size=6)
# Sources are drawn more often than the others, so a source sometimes holds 5+ Vapi records and
# the orphan-fraction rule gets exercised.
_owner = st.sampled_from([*SOURCES, *SOURCES, *SOURCES, *OWNERS])


@st.composite
def vapi_seeds(draw: st.DrawFn, owners: st.SearchStrategy[str] = _owner) -> VapiSeed:
    owner = draw(owners)
    sip_only = owner == "vapi" and draw(st.booleans())
    number = None if sip_only else draw(st.sampled_from(POOL + UNOWNED))
    return VapiSeed(
        owner=owner,
        number=number,
        sip=draw(st.sampled_from(SIP_URIS)) if sip_only else None,
        digits_only=owner in ("vonage-main", "vonage-on-cred-a") and draw(st.booleans()),
        status=draw(st.sampled_from(STATUSES)),
        route=draw(st.sampled_from(list(ROUTES))),
    )

# Now and then one source holds 5-6 records in Vapi, so the orphan-fraction rule gets its turn.
_crowd = st.one_of(st.just([]), st.sampled_from(SOURCES).flatmap(
    lambda s: st.lists(vapi_seeds(st.just(s)), min_size=5, max_size=6)))


@st.composite
def scenarios(draw: st.DrawFn) -> Scenario:
    return Scenario(
        order=tuple(draw(st.permutations(SOURCES))),
        csv={s: draw(_csv_rows) for s in ("trunk-a", "trunk-b")},
        twilio=draw(st.dictionaries(st.sampled_from(POOL), st.sampled_from(list(TWILIO_ROUTES)), max_size=4)),
        vonage=draw(st.lists(st.sampled_from(POOL), unique=True, max_size=4)),
        vapi=draw(st.lists(vapi_seeds(), max_size=8)) + draw(_crowd),
        settings={s: Settings(enabled=draw(st.sampled_from([True, True, True, False])),
                              take_over=draw(st.booleans()), assistant=draw(st.booleans()),
                              exclude_uk=draw(st.sampled_from([False, False, True])))
                  for s in SOURCES},
    )


# -- the reference model ----------------------------------------------------------------------------
def inventories(sc: Scenario) -> dict[str, list[tuple[str, str | None, bool]]]:
    """Each source's rows as (raw text, E.164 or None, routed elsewhere)."""
    return {
        "trunk-a": [(raw, e164, False) for raw, e164 in sc.csv["trunk-a"]],
        "trunk-b": [(raw, e164, False) for raw, e164 in sc.csv["trunk-b"]],
        "twilio-main": [(n, n, TWILIO_ROUTES[r][1]) for n, r in sc.twilio.items()],
        "vonage-main": [(n.lstrip("+"), n, False) for n in sc.vonage],  # without routes_to_vapi: never elsewhere
    }


def suspect_sources(sc: Scenario, vapi: list[VapiSeed]) -> set[str]:
    """Contract: empty inventory while Vapi holds records of it, or (5+ records) orphaning too many."""
    inv = inventories(sc)
    owned = {s: {k for _, k, _ in rows if k} for s, rows in inv.items()}
    out = set()
    for s in SOURCES:
        held = [r for r in vapi if r.source == s]
        if not inv[s] and held:
            out.add(s)
        elif len(held) >= 5:
            # An orphan is a record no source owns (one another source owns would be 'moved').
            orphans = [r for r in held if not any(r.number in owned[t] for t in SOURCES)]
            if len(orphans) / len(held) > 0.5:
                out.add(s)
    return out


def expected_findings(sc: Scenario, vapi: list[VapiSeed]) -> set[Finding]:
    """The findings INTERFACE.md prescribes, as (kind, number, source, action)."""
    inv = inventories(sc)
    owned = {s: {k for _, k, _ in rows if k} for s, rows in inv.items()}
    suspect = suspect_sources(sc, vapi)
    ok = [s for s in sc.order if s not in suspect]  # config order decides who imports a shared number
    out: set[Finding] = {("source_unavailable", None, s, "none") for s in suspect}
    in_vapi = {r.number for r in vapi if r.number}
    taken: set[str] = set()
    for s in ok:
        st_ = sc.settings[s]
        out |= {("invalid_number", raw.strip(), s, "none") for raw, key, _ in inv[s] if key is None}
        # Held in Vapi under any account (this source, another, an uncovered one, Vapi's own):
        # not missing, since importing it again would duplicate it.
        for key in sorted(owned[s] - in_vapi):
            elsewhere = any(e for _, k, e in inv[s] if k == key)
            importable = (st_.enabled and (st_.take_over or not elsewhere)
                          and not (st_.exclude_uk and key.startswith("+44")) and key not in taken)
            if importable:
                taken.add(key)
            out.add(("routed_elsewhere" if elsewhere else "missing_in_vapi", key, s,
                     "import" if importable else "none"))
    for r in vapi:
        label = r.number or r.sip
        # Records of a suspect source are judged neither orphaned nor moved (its inventory is not
        # trusted); the owner that makes a record 'moved' is any other source that lists the number.
        if r.source in ok and r.number and r.number not in owned[r.source]:
            moved = any(r.number in owned[t] for t in SOURCES if t != r.source)
            out.add(("moved" if moved else "orphaned", r.number, r.source, "none"))
        if r.source is None and r.provider != "vapi":
            out.add(("unmanaged", label, None, "none"))
        if r.status == "blocked":
            out.add(("blocked", label, r.source, "none"))
        if r.status == "activating-old":
            out.add(("stuck_activating", label, r.source, "none"))
        if not r.routed:
            out.add(("unrouted", label, r.source, "none"))
    groups: dict[str, list[VapiSeed]] = {}
    for r in vapi:
        groups.setdefault(r.number or r.sip or "", []).append(r)
    for label, group in groups.items():
        if len(group) > 1:
            # The source is the records' common source, null when they differ or have none.
            owners = {r.source for r in group}
            out.add(("duplicate_in_vapi", label, owners.pop() if len(owners) == 1 else None, "none"))
    return out


def expected_outcome(findings: set[Finding]) -> str:
    if any(f[0] == "source_unavailable" for f in findings):
        return "error"
    return "drift" if any(f[0] != "unmanaged" for f in findings) else "in_sync"


# -- the emulations (one server each for the module; seeded afresh per example) ---------------------
@dataclass
class Rig:
    vapi: VapiEmulator
    vapi_url: str
    twilio: TwilioEmulator
    twilio_url: str
    vonage: VonageEmulator
    vonage_url: str
    ca: Path


@pytest.fixture(scope="module")
def rig(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rig]:
    ctx, ca = make_tls(tmp_path_factory.mktemp("prop-tls"))
    vapi = VapiEmulator(api_key=VAPI_KEY)
    twilio = TwilioEmulator(accounts={SID: TOKEN})
    vonage = VonageEmulator(api_key=VONAGE_KEY, api_secret=VONAGE_SECRET)
    with EmulatorServer(vapi) as vs, EmulatorServer(twilio) as ts, EmulatorServer(vonage, ssl_context=ctx) as ns:
        yield Rig(vapi, vs.url, twilio, ts.url, vonage, ns.url, ca)


def reset_vapi(emu: VapiEmulator) -> None:
    for rec in emu.records():
        emu.delete(rec["id"])
    with emu.lock:
        emu.requests.clear()
        emu.duplicate_creates.clear()
        emu.after_request.clear()
    emu.faults.clear()


def seed(rig: Rig, sc: Scenario, workdir: Path) -> None:
    reset_vapi(rig.vapi)
    rig.twilio.reset()
    rig.vonage.reset()
    now = datetime.now(UTC)
    for rec in sc.vapi:
        provider, account = OWNERS[rec.owner]
        fields: dict[str, Any] = {**account, **ROUTES[rec.route]}
        if rec.number:
            fields["number"] = rec.number.lstrip("+") if rec.digits_only else rec.number
        if rec.sip:
            fields["sipUri"] = rec.sip
        if rec.status.startswith("activating"):
            fields["status"] = "activating"
            age = timedelta(hours=3) if rec.status == "activating-old" else timedelta(minutes=10)
            fields["updatedAt"] = now - age
        else:
            fields["status"] = rec.status
        rig.vapi.add(provider, **fields)
    for number, route in sc.twilio.items():
        rig.twilio.add_number(SID, number, **TWILIO_ROUTES[route][0])
    for number in sc.vonage:
        rig.vonage.add_number(number.lstrip("+"))
    for name in ("trunk-a", "trunk-b"):
        rows = "".join(f"{raw},row {i}\n" for i, (raw, _) in enumerate(sc.csv[name]))
        (workdir / f"{name}.csv").write_text("number,label\n" + rows)


def make_config(rig: Rig, sc: Scenario, workdir: Path) -> Config:
    blocks = {
        "trunk-a": f"kind: byo\n    numbers_file: {workdir / 'trunk-a.csv'}\n    vapi_credential_id: cred-a",
        "trunk-b": f"kind: byo\n    numbers_file: {workdir / 'trunk-b.csv'}\n    vapi_credential_id: cred-b",
        "twilio-main": f"kind: twilio\n    account_sid: {SID}\n    auth_token: {TOKEN}\n"
                       f"    base_url: {rig.twilio_url}\n    timeout: 5",
        "vonage-main": f"kind: vonage\n    api_key: {VONAGE_KEY}\n    api_secret: {VONAGE_SECRET}\n"
                       f"    vapi_credential_id: cred-vonage\n    base_url: {rig.vonage_url}\n"
                       f"    ca_bundle: {rig.ca}\n    timeout: 5",
    }
    sources = ""
    for name in sc.order:
        s = sc.settings[name]
        imp = f"      enabled: {str(s.enabled).lower()}\n      take_over: {str(s.take_over).lower()}\n"
        if s.assistant:
            imp += "      assistant_id: asst-imported\n"
        if s.exclude_uk:
            imp += "      exclude: ['+44*']\n"
        sources += f"  - name: {name}\n    {blocks[name]}\n    import:\n{imp}"
    text = f"""
database_url: sqlite:///{workdir / 'numsync.db'}
vapi:
  api_key: {VAPI_KEY}
  base_url: {rig.vapi_url}
  page_size: 3
  backoff_base: 0.01
  requests_per_second: 0
sources:
{sources}
policy:
  max_orphan_fraction: 0.5
  stuck_activating_after: 1h
"""
    return parse_config(text, origin="prop.yaml", env={})


def findings_of(report: dict[str, Any]) -> set[Finding]:
    return {(f["kind"], f["number"], f["source"], f["action"]) for f in report["findings"]}


def writes_to_vapi(emu: VapiEmulator) -> int:
    return sum(len(emu.requests_to(m, r"^/phone-number")) for m in ("POST", "PATCH", "DELETE"))


PROPS = settings(max_examples=30, deadline=None, derandomize=True, database=None,
                 suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


@PROPS
@given(sc=scenarios())
def test_plan_matches_model_and_reconcile_converges(rig: Rig, sc: Scenario) -> None:
    with tempfile.TemporaryDirectory(prefix="numsync-prop-") as tmp:
        workdir = Path(tmp)
        seed(rig, sc, workdir)
        cfg = make_config(rig, sc, workdir)
        inv = inventories(sc)
        owned = {s: {k for _, k, _ in rows if k} for s, rows in inv.items()}

        # 1. The plan's findings are exactly the model's, and nothing is written to Vapi.
        plan = run_once(cfg, mode="plan", write=False)
        expected = expected_findings(sc, sc.vapi)
        for kind in sorted({f[0] for f in expected}):
            event(f"finding {kind}")
        assert findings_of(plan.report) == expected
        assert plan.result.outcome == expected_outcome(expected)
        suspect = suspect_sources(sc, sc.vapi)
        assert {s["name"]: s["status"] for s in plan.report["sources"]} == {
            s: "suspect" if s in suspect else "ok" for s in SOURCES}
        assert plan.report["vapi"]["numbers"] == len(sc.vapi)
        assert writes_to_vapi(rig.vapi) == 0
        imports = {(f[1], f[2]) for f in expected if f[3] == "import"}
        for f in plan.report["findings"]:
            assert f["action_status"] == ("planned" if f["action"] == "import" else "none"), f
        # The import plan names only numbers the importing source owns, each number once.
        assert all(number in owned[source] for number, source in imports)
        assert len({n for n, _ in imports}) == len(imports)

        # 2. Reconcile imports exactly the planned numbers, each once, under the owning source.
        before = {r["id"] for r in rig.vapi.records()}
        rec = run_once(cfg, mode="reconcile", write=False)
        assert all(f["action_status"] == "done" for f in rec.report["findings"] if f["action"] == "import")
        created = [r for r in rig.vapi.records() if r["id"] not in before]
        got = sorted((r["number"], r["provider"], r.get("credentialId") or r.get("twilioAccountSid"))
                     for r in created)
        want = sorted((n, OWNERS[s][0], next(iter(OWNERS[s][1].values()))) for n, s in imports)
        assert got == want
        for number, _ in imports:
            assert len(rig.vapi.by_number(number)) == 1, number

        # 3. A second plan converged: nothing left to import, and again exactly the model's findings.
        after = sc.vapi + [VapiSeed(owner=s, number=n, sip=None, digits_only=False, status="active",
                                    route="assistant" if sc.settings[s].assistant else "none")
                           for n, s in imports]
        again = run_once(cfg, mode="plan", write=False)
        assert not [f for f in again.report["findings"] if f["action_status"] == "planned"]
        assert findings_of(again.report) == expected_findings(sc, after)

        # 4. Reconcile is idempotent: a second one sends Vapi no write at all.
        writes = writes_to_vapi(rig.vapi)
        run_once(cfg, mode="reconcile", write=False)
        assert writes_to_vapi(rig.vapi) == writes
        # No duplicate was created: Vapi holds exactly the duplicates that were seeded.
        seeded: dict[str, int] = {}
        for r in sc.vapi:
            if r.number:
                seeded[r.number.lstrip("+")] = seeded.get(r.number.lstrip("+"), 0) + 1
        assert {k: len(ids) for k, ids in rig.vapi.duplicates().items()} == {k: c for k, c in seeded.items() if c > 1}


def test_model_reads_contract_examples() -> None:
    """The model itself, on the contract's own corner cases, so a wrong model cannot pass silently."""
    base = Scenario(order=SOURCES, csv={"trunk-a": [("+1 415-555-0101", "+14155550101"), ("12", None)],
                                        "trunk-b": [("+14155550101", "+14155550101")]},
                    twilio={"+16505550104": "url"}, vonage=["+442071234567"], vapi=[],
                    settings={s: Settings(True, False, False, False) for s in SOURCES})
    found = expected_findings(base, [])
    assert ("missing_in_vapi", "+14155550101", "trunk-a", "import") in found
    assert ("missing_in_vapi", "+14155550101", "trunk-b", "none") in found  # trunk-a imports it
    assert ("routed_elsewhere", "+16505550104", "twilio-main", "none") in found
    assert ("invalid_number", "12", "trunk-a", "none") in found
    held = [VapiSeed("byo-other", "+442071234567", None, False, "active", "assistant")]
    found = expected_findings(base, held)
    assert ("unmanaged", "+442071234567", None, "none") in found
    assert not [f for f in found if f[1] == "+442071234567" and f[0] == "missing_in_vapi"]
    empty = replace(base, csv={"trunk-a": [], "trunk-b": []})
    held = [VapiSeed("trunk-a", "+14155550101", None, False, "active", "assistant")]
    assert ("source_unavailable", None, "trunk-a", "none") in expected_findings(empty, held)


def test_record_whose_owner_is_suspect_is_moved_not_orphaned(rig: Rig, tmp_path: Path) -> None:
    # trunk-b is suspect (5 of its 6 Vapi records are numbers nobody lists), but it does list
    # +14155550102, which Vapi holds under trunk-a: another configured source owns it -> 'moved'.
    crowd = [VapiSeed("trunk-b", n, None, False, "active", "assistant")
             for n in (*UNOWNED, UNOWNED[0], UNOWNED[1], "+14155550102")]
    held = VapiSeed("trunk-a", "+14155550102", None, False, "active", "assistant")
    sc = Scenario(order=SOURCES, csv={"trunk-a": [("+14155550101", "+14155550101")],
                                      "trunk-b": [("+14155550102", "+14155550102")]},
                  twilio={}, vonage=[], vapi=[*crowd, held],
                  settings={s: Settings(True, False, True, False) for s in SOURCES})
    assert suspect_sources(sc, sc.vapi) == {"trunk-b"}
    seed(rig, sc, tmp_path)
    found = findings_of(run_once(make_config(rig, sc, tmp_path), mode="plan", write=False).report)
    assert ("moved", "+14155550102", "trunk-a", "none") in found
    assert ("orphaned", "+14155550102", "trunk-a", "none") not in found

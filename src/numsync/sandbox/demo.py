"""The sandbox: all four emulations at once, seeded with demo data, and the demo that uses them.

`numsync sandbox` serves them until stopped and prints a config that points at them;
`numsync demo` starts them in-process, runs plan then reconcile against them and writes the
reports, so a new user sees every finding kind with nothing installed but the package.
"""

from __future__ import annotations

import shutil
import signal
import tempfile
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from .server import EmulatorServer
from .telnyx import TelnyxEmulator
from .twilio import TwilioEmulator
from .vapi import VapiEmulator
from .vonage import VonageEmulator, make_tls

__all__ = ["DEMO", "Credentials", "Sandbox", "run_demo", "run_sandbox_forever", "seed_demo", "start_sandbox"]


@dataclass(frozen=True)
class Credentials:
    """Sandbox-only credentials. They open nothing but the emulations on this machine."""

    vapi_key: str = "sandbox-vapi-key"
    twilio_sid: str = "AC" + "5a" * 16
    twilio_token: str = "sandbox-twilio-token"  # noqa: S105 - a sandbox credential
    twilio_legacy_sid: str = "AC" + "6b" * 16
    twilio_other_sid: str = "AC" + "7c" * 16
    telnyx_key: str = "sandbox-telnyx-key"
    telnyx_credential: str = "cred-telnyx-demo"
    telnyx_connection: str = "1293384261075731499"
    vonage_key: str = "sandboxkey"
    vonage_secret: str = "sandbox-vonage-secret"  # noqa: S105 - a sandbox credential
    vonage_credential: str = "cred-vonage-demo"
    vonage_app: str = "aaaaaaaa-bbbb-4ccc-8ddd-0123456789ab"
    trunk_credential: str = "cred-trunk-demo"
    assistant: str = "asst-demo-receptionist"


DEMO = Credentials()


@dataclass
class Sandbox:
    vapi: VapiEmulator
    twilio: TwilioEmulator
    telnyx: TelnyxEmulator
    vonage: VonageEmulator
    servers: dict[str, EmulatorServer]
    workdir: Path
    ca_file: Path
    trunk_csv: Path
    creds: Credentials = DEMO
    _tmp: tempfile.TemporaryDirectory[str] | None = field(default=None, repr=False)

    def url(self, name: str) -> str:
        return self.servers[name].url

    def config_text(self, *, database_url: str = "sqlite:///numsync.db", reports_dir: str = "./reports",
                    with_broken_source: bool = True) -> str:
        """A complete numsync.yaml for this sandbox (sandbox credentials only)."""
        c = self.creds
        broken = f"""
  - name: twilio-legacy              # wrong credentials on purpose: shows a failed source
    kind: twilio
    account_sid: {c.twilio_legacy_sid}
    auth_token: not-the-right-token
    base_url: {self.url('twilio')}
    timeout: 5
""" if with_broken_source else ""
        return f"""# numsync config for the sandbox (`numsync sandbox`); every credential here is a sandbox one.
database_url: {database_url}
vapi:
  api_key: {c.vapi_key}
  base_url: {self.url('vapi')}
sources:
  - name: twilio-main
    kind: twilio
    account_sid: {c.twilio_sid}
    auth_token: {c.twilio_token}
    base_url: {self.url('twilio')}
    timeout: 5
    import:
      assistant_id: {c.assistant}
  - name: telnyx-main
    kind: telnyx
    api_key: {c.telnyx_key}
    vapi_credential_id: {c.telnyx_credential}
    base_url: {self.url('telnyx')}
    routes_to_vapi: ["{c.telnyx_connection}"]
    timeout: 5
    import:
      assistant_id: {c.assistant}
  - name: vonage-main
    kind: vonage
    api_key: {c.vonage_key}
    api_secret: {c.vonage_secret}
    vapi_credential_id: {c.vonage_credential}
    base_url: {self.url('vonage')}
    ca_bundle: {self.ca_file}
    timeout: 5
    import:
      assistant_id: {c.assistant}
  - name: trunk-demo
    kind: byo
    numbers_file: {self.trunk_csv}
    vapi_credential_id: {c.trunk_credential}
    import:
      assistant_id: {c.assistant}
      exclude: ["+1415555019*"]
{broken}policy:
  max_imports_per_run: 100
  stuck_activating_after: 1h
reports:
  dir: {reports_dir}
  formats: [json, md, html, csv]
"""

    def stop(self) -> None:
        for server in self.servers.values():
            server.stop()
        if self._tmp is not None:
            self._tmp.cleanup()


def start_sandbox(*, workdir: Path | None = None, port: int = 0, host: str = "127.0.0.1", seed: bool = True,
                  latency: float = 0.0, creds: Credentials = DEMO) -> Sandbox:
    """Start the four emulations (Vapi on ``port``, then Twilio, Telnyx and Vonage on the next ports)."""
    tmp = None
    if workdir is None:
        tmp = tempfile.TemporaryDirectory(prefix="numsync-sandbox-")
        workdir = Path(tmp.name)
    workdir.mkdir(parents=True, exist_ok=True)
    ssl_ctx, ca_file = make_tls(workdir)
    vapi = VapiEmulator(api_key=creds.vapi_key)
    twilio = TwilioEmulator(accounts={creds.twilio_sid: creds.twilio_token,
                                      creds.twilio_legacy_sid: "the-real-legacy-token"})
    telnyx = TelnyxEmulator(api_key=creds.telnyx_key)
    vonage = VonageEmulator(api_key=creds.vonage_key, api_secret=creds.vonage_secret)
    emulators: list[tuple[str, Any, Any]] = [("vapi", vapi, None), ("twilio", twilio, None),
                                              ("telnyx", telnyx, None), ("vonage", vonage, ssl_ctx)]
    servers: dict[str, EmulatorServer] = {}
    try:
        for i, (name, emu, ctx) in enumerate(emulators):
            emu.faults.latency = latency
            servers[name] = EmulatorServer(emu, host=host, port=port + i if port else 0, ssl_context=ctx).start()
    except OSError:
        for server in servers.values():
            server.stop()
        raise
    sandbox = Sandbox(vapi, twilio, telnyx, vonage, servers, workdir, ca_file, workdir / "trunk-demo.csv", creds, tmp)
    if seed:
        seed_demo(sandbox)
    else:
        sandbox.trunk_csv.write_text("number,site\n")
    return sandbox


def seed_demo(sb: Sandbox, now: datetime | None = None) -> None:
    """A few dozen numbers over all four source kinds that between them show every finding kind."""
    now = now or datetime.now(UTC)
    c = sb.creds
    vapi_url = "https://api.vapi.ai/twilio/inbound_call"
    a = c.assistant

    def vapi_add(provider: str, **fields: Any) -> None:
        sb.vapi.add(provider, **fields)

    # Twilio: six healthy, three missing, two routed elsewhere, one orphaned, one blocked, one unrouted.
    for i in range(6):
        n = f"+1415555{1000 + i}"
        sb.twilio.add_number(c.twilio_sid, n, friendly_name=f"sales {i}", voice_url=vapi_url)
        vapi_add("twilio", number=n, twilioAccountSid=c.twilio_sid, twilioAuthToken=c.twilio_token,
                 name=f"sales {i}", assistantId=a)
    for i in range(3):
        sb.twilio.add_number(c.twilio_sid, f"+1415555{1100 + i}", friendly_name=f"support {i}")
    sb.twilio.add_number(c.twilio_sid, "+14155551200", friendly_name="old IVR",
                         voice_url="https://ivr.example.com/answer")
    sb.twilio.add_number(c.twilio_sid, "+14155551201", friendly_name="SIP trunk line",
                         trunk_sid="TK" + "0" * 32)
    vapi_add("twilio", number="+14155551300", twilioAccountSid=c.twilio_sid, name="released last month",
             assistantId=a)
    sb.twilio.add_number(c.twilio_sid, "+14155551301", voice_url=vapi_url)
    vapi_add("twilio", number="+14155551301", twilioAccountSid=c.twilio_sid, status="blocked", assistantId=a)
    sb.twilio.add_number(c.twilio_sid, "+14155551302", voice_url=vapi_url)
    vapi_add("twilio", number="+14155551302", twilioAccountSid=c.twilio_sid, name="nobody answers")
    # A Twilio account no source covers: unmanaged.
    vapi_add("twilio", number="+12125550100", twilioAccountSid=c.twilio_other_sid, assistantId=a)

    # Telnyx: four healthy, one missing, one routed to another connection, one stuck activating.
    for i in range(4):
        n = f"+1970555{2000 + i}"
        sb.telnyx.add_number(n, connection_id=c.telnyx_connection, connection_name="vapi-sip", tags=["prod"])
        vapi_add("telnyx", number=n, credentialId=c.telnyx_credential, assistantId=a)
    sb.telnyx.add_number("+19705552100", connection_id=c.telnyx_connection, connection_name="vapi-sip")
    sb.telnyx.add_number("+19705552101", connection_id="1293384261075739999", connection_name="call-center")
    sb.telnyx.add_number("+19705552200", connection_id=c.telnyx_connection)
    stale = (now - timedelta(hours=3)).strftime("%Y-%m-%dT%H:%M:%S.000Z")
    vapi_add("telnyx", number="+19705552200", credentialId=c.telnyx_credential, status="activating",
             updatedAt=stale, assistantId=a)

    # Vonage (numbers without '+'): three healthy (one stored without '+' in Vapi), one missing, one invalid.
    for i in range(3):
        msisdn = f"4477009000{10 + i}"
        sb.vonage.add_number(msisdn, country="GB", app_id=c.vonage_app)
        vapi_add("vonage", number=msisdn if i == 0 else "+" + msisdn, credentialId=c.vonage_credential,
                 assistantId=a)
    sb.vonage.add_number("447700900020", country="GB", app_id=c.vonage_app)
    sb.vonage.add_number("12345", country="US")

    # SIP trunk (CSV): two healthy, one missing, one excluded by the import filter, one invalid,
    # one that Vapi holds under the Telnyx credential (moved), and a duplicate in Vapi.
    rows = ["+14155550180", "+14155550181", "+14155550182", "+14155550190", "not-a-number", "+14155550183"]
    sb.trunk_csv.write_text("number,site\n" + "".join(f"{n},hq-{i}\n" for i, n in enumerate(rows)))
    vapi_add("byo-phone-number", number="+14155550180", credentialId=c.trunk_credential, assistantId=a)
    vapi_add("byo-phone-number", number="+14155550181", credentialId=c.trunk_credential, assistantId=a)
    vapi_add("byo-phone-number", number="+14155550181", credentialId=c.trunk_credential, assistantId=a,
             name="imported twice")
    vapi_add("telnyx", number="+14155550183", credentialId=c.telnyx_credential, assistantId=a)
    # A free Vapi SIP number: belongs to no source, healthy.
    vapi_add("vapi", sipUri="sip:demo-frontdesk@sip.vapi.ai", assistantId=a)


def run_sandbox_forever(*, port: int = 0, host: str = "127.0.0.1", write_config: Path | None = None,
                        latency: float = 0.0) -> None:
    sb = start_sandbox(port=port, host=host, latency=latency)
    try:
        text = sb.config_text()
        print(text, flush=True)
        if write_config is not None:
            write_config.write_text(text)
            print(f"# config written to {write_config}", flush=True)
        print("# sandbox running; Ctrl-C to stop", flush=True)
        done = threading.Event()
        signal.signal(signal.SIGTERM, lambda *_: done.set())
        signal.signal(signal.SIGINT, lambda *_: done.set())
        done.wait()
    finally:
        sb.stop()


def run_demo(directory: Path) -> int:
    """Sandbox, plan, reconcile, reports; prints a summary. Exits 0 when the pipeline ran end to end."""
    from numsync.app import run_once
    from numsync.cli_output import summary_table
    from numsync.config import parse_config

    directory = directory.resolve()
    if directory.exists():
        for stale in ("numsync.db", "numsync.db-wal", "numsync.db-shm", "plan", "reconcile", "sandbox"):
            target = directory / stale
            if target.is_dir():
                shutil.rmtree(target)
            elif target.exists():
                target.unlink()
    directory.mkdir(parents=True, exist_ok=True)
    sb = start_sandbox(workdir=directory / "sandbox")
    try:
        text = sb.config_text(database_url=f"sqlite:///{directory / 'numsync.db'}",
                              reports_dir=str(directory / "reports"))
        (directory / "numsync.yaml").write_text(text)
        config = parse_config(text, origin=str(directory / "numsync.yaml"), base_dir=directory, env={})
        print("numsync demo: sandbox up (Vapi, Twilio, Telnyx, Vonage emulations on 127.0.0.1)\n")
        plan = run_once(config, mode="plan", report_dir=directory / "plan")
        print("== numsync plan ==")
        print(summary_table(plan.report))
        print(f"exit status would be {plan.result.exit_code}\n")
        rec = run_once(config, mode="reconcile", report_dir=directory / "reconcile")
        print("== numsync reconcile ==")
        print(summary_table(rec.report))
        print(f"exit status would be {rec.result.exit_code}\n")
        imported = [f["number"] for f in rec.report["findings"] if f["action_status"] == "done"]
        print(f"imported into Vapi: {', '.join(imported) or 'nothing'}")
        print("twilio-legacy has wrong credentials on purpose: it shows how a failed source is reported")
        print("(source_unavailable, exit status 1) while every other source is still reconciled.")
        print(f"\nopen {directory / 'reconcile' / 'report.html'} in a browser for the full report")
        print(f"config used: {directory / 'numsync.yaml'}")
        for path in [*plan.paths, *rec.paths]:
            print(f"report: {path}")
        return 0
    finally:
        sb.stop()

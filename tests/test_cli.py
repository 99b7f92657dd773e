"""The `numsync` command as a user runs it: a real process, real sandbox, real database.

Bad input must give exit 1 and one line naming the problem; good input the contract's exit codes.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from numsync.daemon.db import make_engine
from numsync.daemon.locks import RUN_LOCK, DatabaseLock
from numsync.sandbox.demo import Credentials, Sandbox, start_sandbox


def numsync(*args: str, cwd: Path, env: dict[str, str] | None = None,
            timeout: float = 120) -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("NUMSYNC_")}
    full_env.update(env or {})
    return subprocess.run([sys.executable, "-m", "numsync", *args], cwd=cwd, env=full_env, capture_output=True,
                          text=True, timeout=timeout, check=False)


def error_line(proc: subprocess.CompletedProcess[str]) -> str:
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("numsync: error:")]
    assert len(lines) == 1, proc.stderr
    return lines[0]


@pytest.fixture
def sandbox(tmp_path: Path) -> Iterator[Sandbox]:
    sb = start_sandbox(workdir=tmp_path / "sandbox")
    yield sb
    sb.stop()


def write_config(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "numsync.yaml"
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    ("text", "env", "expected"),
    [
        ("vapi: {api_key: x}\nsources: [{name: a, kind: byo, numbers_file: a.csv, vapi_credential_id: c, "
         "e164_chek: true}]\n", {}, "sources[0].e164_chek: unknown key (did you mean 'e164_check'?)"),
        ("vapi:\n  api_key: ${VAPI_KEY_NOT_SET}\n", {},
         "vapi.api_key: environment variable VAPI_KEY_NOT_SET is not set"),
        ("vapi: {api_key: x\n", {}, "malformed YAML"),
        ("vapi: {api_key: x}\nsources:\n  - {name: a, kind: byo, numbers_file: a.csv, vapi_credential_id: c}\n"
         "  - {name: a, kind: byo, numbers_file: b.csv, vapi_credential_id: d}\n", {},
         "sources[1].name: 'a' is already the name of sources[0]"),
        ("vapi: {api_key: x}\nschedule: {reconcile_every: often}\n", {}, "schedule.reconcile_every:"),
        ("vapi: {api_key: x}\nsources: [{name: Bad_Name, kind: byo, numbers_file: a.csv, vapi_credential_id: c}]\n",
         {}, "sources[0].name:"),
        ("{}\n", {}, "vapi: required key is missing"),
    ],
)
def test_bad_config_is_one_line_naming_the_key(tmp_path: Path, text: str, env: dict[str, str],
                                               expected: str) -> None:
    path = write_config(tmp_path, text)
    proc = numsync("plan", "--config", str(path), cwd=tmp_path, env=env)
    assert proc.returncode == 1
    line = error_line(proc)
    assert str(path) in line
    assert expected in line
    assert "Traceback" not in proc.stderr


def test_missing_config_file(tmp_path: Path) -> None:
    proc = numsync("plan", cwd=tmp_path)
    assert proc.returncode == 1
    assert "numsync.yaml: config file not found" in error_line(proc)


def test_plan_reconcile_report_exit_codes(tmp_path: Path, sandbox: Sandbox) -> None:
    cfg = write_config(tmp_path, sandbox.config_text(database_url=f"sqlite:///{tmp_path / 'db.sqlite'}",
                                                     reports_dir=str(tmp_path / "reports"),
                                                     with_broken_source=False))
    plan = numsync("plan", "--config", str(cfg), "--log-format", "json", cwd=tmp_path)
    assert plan.returncode == 2, plan.stderr
    report = json.loads((tmp_path / "reports" / "report.json").read_text())
    assert report["mode"] == "plan"
    assert report["outcome"] == "drift"
    # every log line is JSON and every line of the run carries its run_id
    run_lines = [json.loads(ln) for ln in plan.stderr.splitlines() if ln.startswith("{")]
    assert run_lines
    assert all(ln.get("run_id") == report["run_id"] for ln in run_lines if ln["event"].startswith("run "))

    only = numsync("plan", "--config", str(cfg), "--source", "trunk-demo", "--format", "json",
                   "--report-dir", str(tmp_path / "only"), cwd=tmp_path)
    assert only.returncode == 2
    only_report = json.loads((tmp_path / "only" / "report.json").read_text())
    assert [s["name"] for s in only_report["sources"]] == ["trunk-demo"]
    assert {f["source"] for f in only_report["findings"]} <= {"trunk-demo", None}
    assert not (tmp_path / "only" / "report.html").exists()

    rec = numsync("reconcile", "--config", str(cfg), cwd=tmp_path)
    assert rec.returncode == 2, rec.stderr  # orphaned, blocked, ... remain: drift, not error
    after = json.loads((tmp_path / "reports" / "report.json").read_text())
    assert not [f for f in after["findings"] if f["kind"] == "missing_in_vapi" and f["action_status"] == "planned"]

    again = numsync("report", "--config", str(cfg), "--run", report["run_id"][:8], "--report-dir",
                    str(tmp_path / "rerender"), cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert json.loads((tmp_path / "rerender" / "report.json").read_text()) == report

    bad = numsync("plan", "--config", str(cfg), "--source", "nope", cwd=tmp_path)
    assert bad.returncode == 1
    assert "--source nope: no source has that name" in error_line(bad)


def test_report_without_runs_exits_1(tmp_path: Path) -> None:
    cfg = write_config(tmp_path, f"database_url: sqlite:///{tmp_path / 'e.db'}\nvapi: {{api_key: x}}\n")
    proc = numsync("report", "--config", str(cfg), cwd=tmp_path)
    assert proc.returncode == 1
    assert "no run is stored yet" in error_line(proc)


def test_vapi_401_is_one_clear_line(tmp_path: Path, sandbox: Sandbox) -> None:
    text = sandbox.config_text(database_url=f"sqlite:///{tmp_path / 'db.sqlite'}",
                               reports_dir=str(tmp_path / "r"), with_broken_source=False)
    text = text.replace("api_key: sandbox-vapi-key", "api_key: wrong-vapi-key-123456")
    proc = numsync("plan", "--config", str(write_config(tmp_path, text)), cwd=tmp_path)
    assert proc.returncode == 1
    assert "Vapi rejected the API key" in proc.stderr
    assert "wrong-vapi-key-123456" not in proc.stderr + proc.stdout
    report = json.loads((tmp_path / "r" / "report.json").read_text())
    assert report["outcome"] == "error"


def test_lock_held_exits_75(tmp_path: Path, sandbox: Sandbox) -> None:
    db = f"sqlite:///{tmp_path / 'db.sqlite'}"
    cfg = write_config(tmp_path, sandbox.config_text(database_url=db, reports_dir=str(tmp_path / "r")))
    with DatabaseLock(db, RUN_LOCK):
        proc = numsync("reconcile", "--config", str(cfg), cwd=tmp_path)
    assert proc.returncode == 75
    assert "holds the lock" in error_line(proc)


def test_database_errors(tmp_path: Path, pg_url: str) -> None:
    cfg = write_config(tmp_path, "vapi: {api_key: x}\n")
    unreachable = numsync("plan", "--config", str(cfg), cwd=tmp_path,
                          env={"NUMSYNC_DATABASE_URL": "postgresql+psycopg://postgres:pw@127.0.0.1:1/none"})
    assert unreachable.returncode == 1
    line = error_line(unreachable)
    assert "cannot use the database at postgresql+psycopg://postgres:***@127.0.0.1:1/none" in line
    assert ":pw@" not in unreachable.stderr

    empty = numsync("plan", "--config", str(cfg), cwd=tmp_path, env={"NUMSYNC_DATABASE_URL": pg_url})
    assert empty.returncode == 1
    assert "run `numsync db upgrade`" in error_line(empty)

    up = numsync("db", "upgrade", "--config", str(cfg), cwd=tmp_path, env={"NUMSYNC_DATABASE_URL": pg_url})
    assert up.returncode == 0, up.stderr
    engine = make_engine(pg_url)
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE alembic_version SET version_num = '9999_future'"))
    engine.dispose()
    newer = numsync("plan", "--config", str(cfg), cwd=tmp_path, env={"NUMSYNC_DATABASE_URL": pg_url})
    assert newer.returncode == 1
    assert "9999_future, which this numsync does not know" in error_line(newer)


def test_secrets_never_leave(tmp_path: Path) -> None:
    """Recognisable secrets in every credential: none may appear in any output, report or row."""
    creds = Credentials(vapi_key="VAPIKEY-s3cr3t-4711", twilio_token="TWILIOTOKEN-s3cr3t-4712",
                        telnyx_key="TELNYXKEY-s3cr3t-4713", vonage_secret="VONAGESECRET-s3cr3t-4714")
    sb = start_sandbox(workdir=tmp_path / "sandbox", creds=creds)
    try:
        db = tmp_path / "db.sqlite"
        cfg = write_config(tmp_path, sb.config_text(database_url=f"sqlite:///{db}",
                                                    reports_dir=str(tmp_path / "reports")))
        outputs = []
        for cmd in ("plan", "reconcile"):
            for fmt in ("json", "console"):
                proc = numsync(cmd, "--config", str(cfg), "-v", "--log-format", fmt, cwd=tmp_path)
                assert proc.returncode in (1, 2), proc.stderr
                outputs += [proc.stdout, proc.stderr]
        # Twilio records echo the auth token in Vapi's responses: the emulation must really send it...
        assert any("TWILIOTOKEN" in json.dumps(r) for r in sb.vapi.records())
    finally:
        sb.stop()
    haystack = "\n".join(outputs)
    for path in (tmp_path / "reports").iterdir():
        haystack += path.read_text()
    engine = make_engine(f"sqlite:///{db}")
    with engine.connect() as conn:
        for table in sa.inspect(conn).get_table_names():
            for row in conn.execute(sa.text(f'SELECT * FROM "{table}"')):
                haystack += repr(tuple(row))
    engine.dispose()
    assert "+14155551100" in haystack  # the haystack really holds the runs' data
    for secret in ("VAPIKEY", "TWILIOTOKEN", "TELNYXKEY", "VONAGESECRET", "s3cr3t"):
        assert secret not in haystack

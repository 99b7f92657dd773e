"""The config loader and the secret-handling pieces that back it (redaction, the log pipeline)."""

from __future__ import annotations

import io
import json
import logging
from datetime import timedelta
from pathlib import Path

import pytest
import structlog

from numsync.config import load_config, parse_config, parse_duration
from numsync.errors import ConfigError
from numsync.logs import configure_logging, redact_event
from numsync.redaction import REDACTED, SECRETS, redact_mapping

EXAMPLE = Path(__file__).resolve().parents[1] / "config" / "numsync.example.yaml"


def test_example_config_loads() -> None:
    env = {"VAPI_API_KEY": "k" * 10, "TWILIO_ACCOUNT_SID": "AC" + "0" * 32, "TWILIO_AUTH_TOKEN": "t" * 10,
           "VAPI_ASSISTANT_ID": "asst"}
    cfg = load_config(EXAMPLE, env=env)
    assert cfg.sources[0].name == "twilio-main"
    assert cfg.schedule.reconcile_every == timedelta(minutes=15)
    assert "k" * 10 not in repr(cfg)  # secrets never print
    assert cfg.vapi.api_key.get_secret_value() == "k" * 10


@pytest.mark.parametrize(("text", "seconds"), [("15m", 900), ("1h30m", 5400), ("90s", 90), ("2d", 172800),
                                               (30, 30), ("500ms", 0.5)])
def test_durations(text: object, seconds: float) -> None:
    assert parse_duration(text).total_seconds() == seconds


@pytest.mark.parametrize("text", ["", "15", "1x", "m15", "-5m", True, "15m garbage"])
def test_bad_durations(text: object) -> None:
    with pytest.raises(ValueError):
        parse_duration(text)


def test_env_override_and_relative_paths(tmp_path: Path) -> None:
    (tmp_path / "cfg").mkdir()
    path = tmp_path / "cfg" / "numsync.yaml"
    path.write_text("vapi: {api_key: x}\nsources:\n  - {name: t, kind: byo, numbers_file: t.csv, "
                    "vapi_credential_id: c}\n")
    cfg = load_config(path, env={"NUMSYNC_DATABASE_URL": "sqlite:///other.db"})
    assert cfg.database_url == "sqlite:///other.db"
    assert cfg.sources[0].numbers_file == tmp_path / "cfg" / "t.csv"  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("vapi: {api_key: x}\nsources: [{name: t, kind: twilio, account_sid: AC1}]\n",
         "sources[0]: twilio needs auth_token"),
        ("vapi: {api_key: x}\nsources: [{name: v, kind: vonage, api_key: a, api_secret: b, "
         "vapi_credential_id: c, base_url: 'http://127.0.0.1:1'}]\n",
         "sources[0].base_url: the Vonage SDK only speaks https"),
        ("vapi: {api_key: x}\nsources: [{name: t, kind: byo, numbers_file: a, vapi_credential_id: c, "
         "import: {assistant_id: a, squad_id: b}}]\n", "at most one of assistant_id / squad_id / workflow_id"),
        ("vapi: {api_key: x}\nsources: [{name: t, kind: byo, numbers_file: a, vapi_credential_id: c, "
         "import: {name: '{nope}'}}]\n", "unknown placeholder"),
        ("vapi: {api_key: x}\nreports: {formats: [pdf]}\n", "reports.formats[0]"),
        ("vapi: {api_key: x}\npolicy: {max_orphan_fraction: 2}\n", "policy.max_orphan_fraction"),
        ("- a\n- b\n", "expected a mapping"),
    ],
)
def test_semantic_errors_name_the_key(text: str, fragment: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(text, origin="n.yaml", env={})
    assert fragment in str(info.value)
    assert str(info.value).startswith("n.yaml: ")


def test_numeric_route_ids_are_read_as_text() -> None:
    cfg = parse_config("vapi: {api_key: x}\nsources: [{name: t, kind: telnyx, api_key: k, vapi_credential_id: c, "
                       "routes_to_vapi: [1293384261075731499]}]\n", env={})
    assert cfg.sources[0].routes_to_vapi == ["1293384261075731499"]


def test_redact_mapping_drops_secret_fields_deeply() -> None:
    record = {"id": "1", "twilioAuthToken": "s", "credentialId": "keep", "server": {"url": "u", "secret": "s",
              "headers": {"Authorization": "Bearer s"}}, "authentication": {"username": "u", "password": "p"}}
    assert redact_mapping(record) == {"id": "1", "credentialId": "keep", "server": {"url": "u"},
                                      "authentication": {"username": "u"}}


def test_log_pipeline_masks_secret_values_and_keys() -> None:
    SECRETS.add(["hunter2-secret-value"])
    try:
        event = redact_event(None, "info", {"event": "calling with hunter2-secret-value", "api_key": "x",
                                            "nested": {"token": "y", "ok": ["hunter2-secret-value"]}})
        assert event == {"event": f"calling with {REDACTED}", "api_key": REDACTED,
                         "nested": {"token": REDACTED, "ok": [REDACTED]}}
        stream = io.StringIO()
        configure_logging(fmt="json", stream=stream)
        structlog.contextvars.bind_contextvars(run_id="run-1")
        logging.getLogger("numsync.test").warning("library line with %s", "hunter2-secret-value")
        structlog.get_logger("numsync.test").info("ours", auth_token="hunter2-secret-value")
        try:
            raise RuntimeError("boom hunter2-secret-value")
        except RuntimeError:
            structlog.get_logger("numsync.test").exception("failed")
        lines = [json.loads(ln) for ln in stream.getvalue().splitlines()]
        assert [ln["event"] for ln in lines] == [f"library line with {REDACTED}", "ours", "failed"]
        assert all(ln["run_id"] == "run-1" for ln in lines)
        assert "hunter2" not in stream.getvalue()
    finally:
        SECRETS.clear()
        logging.getLogger().handlers.clear()

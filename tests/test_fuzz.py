"""Fuzz: whatever reaches numsync from outside, only numsync's own errors may come out.

Why: every caller maps ``NumsyncError`` to one line and an exit status (the CLI) or to a failed
source with the others still reconciled (the engine). Any other exception is a traceback for the
user and, inside a listing, a crash instead of a ``source_unavailable``. So hypothesis feeds
arbitrary and near-valid input to each door: the config loader (YAML text, config-shaped dicts),
the CSV source (arbitrary bytes), and every adapter's JSON (an emulator that answers whatever
hypothesis scripts, over real sockets, to the real SDKs), and the CLI as a subprocess.

Bugs found and not yet fixed go in ``KNOWN_BUGS`` (an exception matching one is recorded as a
hypothesis event instead of failing the fuzz test) with a strict-xfail reproduction; the ones found
so far are fixed, and their reproductions stay below as regression tests.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from hypothesis import HealthCheck, event, example, given, note, settings
from hypothesis import strategies as st

from numsync.adapters.base import SourceRecord, decode_direct
from numsync.adapters.byo import ByoSource
from numsync.adapters.http_util import loads
from numsync.adapters.telnyx import _PAGE as TELNYX_PAGE
from numsync.adapters.telnyx import TelnyxSource
from numsync.adapters.twilio import TwilioSource
from numsync.adapters.vapi import VapiClient
from numsync.adapters.vapi_model import read_listing_page, to_vapi_number
from numsync.adapters.vonage import VonageSource
from numsync.app import run_once
from numsync.config import (
    ByoSourceConfig,
    TelnyxSourceConfig,
    TwilioSourceConfig,
    VapiConfig,
    VonageSourceConfig,
    parse_config,
    schema,
)
from numsync.errors import ConfigError, NumsyncError, ProtocolError
from numsync.sandbox.server import Emulator, EmulatorServer, Request, Response
from numsync.sandbox.vonage import make_tls

ORIGIN = "fuzz.yaml"
SECRET = "fuzz-s3cret-value"
E164 = re.compile(r"^\+[1-9]\d{1,17}$")
FUZZ = settings(max_examples=60, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
FUZZ_HTTP = settings(FUZZ, max_examples=40)  # each example is a few real HTTP exchanges


# -- known bugs -------------------------------------------------------------------------------------
# (name, exception class, the function it is raised in: the innermost frame; '*' for any)
KNOWN_BUGS: tuple[tuple[str, type[BaseException], str], ...] = ()  # all fixed; add new ones here


def known_bug(exc: BaseException) -> str | None:
    """The KNOWN_BUGS entry an unexpected exception matches, by class and raising function."""
    frames = traceback.extract_tb(exc.__traceback__)
    innermost = frames[-1].name if frames else ""
    return next((name for name, cls, where in KNOWN_BUGS if isinstance(exc, cls) and where in ("*", innermost)),
                None)


def only_numsync_errors(call: Callable[[], Any], check: Callable[[NumsyncError], None] | None = None) -> Any:
    """Run ``call``: a NumsyncError passes ``check``, a known bug is an event, anything else fails."""
    try:
        return call()
    except NumsyncError as exc:
        if check is not None:
            check(exc)
        event(f"raised {type(exc).__name__}")
        return None
    except Exception as exc:
        bug = known_bug(exc)
        if bug is None:
            raise
        event(f"known bug {bug}")
        note(f"known bug {bug}: {type(exc).__name__}: {exc}")
        return None


# -- 1. the config loader ---------------------------------------------------------------------------
def _keys(*models: Any) -> list[str]:
    """The keys a config section accepts, read from the schema so the fuzz follows it."""
    return sorted({f.alias or n for m in models for n, f in m.model_fields.items()})


VAPI_KEYS, IMPORT_KEYS = _keys(schema.VapiConfig), _keys(schema.ImportSettings)
SOURCE_KEYS = _keys(schema.TwilioSourceConfig, schema.TelnyxSourceConfig, schema.VonageSourceConfig,
                    schema.ByoSourceConfig)
SECTION_KEYS = {"policy": _keys(schema.PolicyConfig), "schedule": _keys(schema.ScheduleConfig),
                "reports": _keys(schema.ReportsConfig), "server": _keys(schema.ServerConfig)}
ALL_KEYS = sorted({k for keys in (_keys(schema.Config), VAPI_KEYS, SOURCE_KEYS, IMPORT_KEYS, *SECTION_KEYS.values())
                   for k in keys})
SECRET_KEYS = {"api_key", "auth_token", "api_secret"}
WORDS = [
    "15m", "1h30m", "90s", "0s", "-5m", "2d", "0 2 * * *", "*/5 * * * 1-5", "0 0 31 2 *", "61 * * * *",
    "twilio", "telnyx", "vonage", "byo", "sip", "trunk-a", "Bad Name", "a" * 70, "AC" + "1" * 32, "AC123",
    "https://api.vapi.ai", "http://127.0.0.1:9", "ftp://x", "sqlite:///x.db", "postgresql+psycopg://u@h/db",
    "${NUMSYNC_FUZZ_VAR}", "${UNSET_VAR}", "${", "$(x)", "{source} {number}", "{label}", "{nope}",
    "{number!r}", "{0}", "{}", "{number:>5}", "{number.real}", "+1*", "[", "US", "us", "json", "md", "xml",
    "cred-a", "numbers.csv", "/nonexistent/ca.pem", "", " ", "null", "true", "no", "0x10", "1e3",
]
scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**40), 2**40), st.sampled_from([10**30, -(10**30)]),
    st.floats(allow_nan=True, allow_infinity=True), st.sampled_from(WORDS), st.text(max_size=12),
)
values = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                       st.dictionaries(st.text(max_size=6), inner, max_size=3)),
                      max_leaves=8)
secret_values = st.sampled_from([SECRET, "${FUZZ_SECRET}", 5, None, [SECRET], {"v": SECRET}])


def section(keys: list[str]) -> st.SearchStrategy[Any]:
    key = st.one_of(st.sampled_from(keys), st.sampled_from(keys), st.text(max_size=8))
    return st.one_of(st.dictionaries(key, values, max_size=len(keys)), values)


def _fill(keys: list[str], extra: dict[str, st.SearchStrategy[Any]] | None = None) -> st.SearchStrategy[Any]:
    optional = {k: (secret_values if k in SECRET_KEYS else values) for k in keys}
    optional.update(extra or {})
    return st.fixed_dictionaries({}, optional=optional)


source_dicts = st.one_of(
    _fill(SOURCE_KEYS, {"name": st.one_of(st.sampled_from(["trunk-a", "trunk-b", "Bad Name"]), values),
                        "kind": st.one_of(st.sampled_from(["twilio", "telnyx", "vonage", "byo"]), values),
                        "import": st.one_of(_fill(IMPORT_KEYS), values)}),
    values,
)
config_dicts = st.fixed_dictionaries({}, optional={
    "database_url": values,
    "vapi": st.one_of(_fill(VAPI_KEYS), values),
    "sources": st.one_of(st.lists(source_dicts, max_size=3), values),
    **{name: st.one_of(_fill(keys), section(keys)) for name, keys in SECTION_KEYS.items()},
    "unknown_top": values,
})
yaml_lines = st.lists(
    st.tuples(st.integers(0, 3), st.booleans(), st.sampled_from([*ALL_KEYS, "- ", "?", "&a", "*a", "!!str"]),
              st.one_of(st.sampled_from(WORDS), st.text(max_size=8))),
    max_size=14,
).map(lambda rows: "".join(f"{'  ' * i}{'- ' if dash else ''}{key}: {val}\n" for i, dash, key, val in rows))
ENV = {"NUMSYNC_FUZZ_VAR": "from-env", "FUZZ_SECRET": SECRET}


def _parse(text: str) -> Any:
    return parse_config(text, origin=ORIGIN, env=ENV)


def _config_error_is_clean(exc: NumsyncError) -> None:
    assert isinstance(exc, ConfigError), exc
    assert str(exc).startswith(f"{ORIGIN}: "), str(exc)
    assert SECRET not in str(exc)
    assert "\n" not in str(exc).strip() or "malformed YAML" in str(exc)


@FUZZ
@given(text=st.one_of(st.text(max_size=200), yaml_lines))
@example(text="vapi: {api_key: x}\nsources:\n  - name: a\n    kind: byo\n")
@example(text="\x00\ufeff: [")
def test_config_text_raises_only_config_errors(text: str) -> None:
    only_numsync_errors(lambda: _parse(text), _config_error_is_clean)


@FUZZ
@given(raw=config_dicts)
def test_config_dicts_raise_only_config_errors(raw: dict[str, Any]) -> None:
    text = yaml.safe_dump(raw, allow_unicode=True)
    cfg = only_numsync_errors(lambda: _parse(text), _config_error_is_clean)
    if cfg is not None:
        event("valid config")
        assert SECRET not in repr(cfg)  # secrets are SecretStr: masked in repr


# -- 2. the CSV source -------------------------------------------------------------------------------
cells = st.one_of(st.sampled_from(["+14155550100", "+1 415-555-0101", "not-a-number", "", " ", '"', '""',
                                   "a,b", "\x00", "\r", "\n", "\ufeff", "١٤١٥٥٥٥٠١٠٠", "+४४", "+" + "9" * 300]),
                  st.text(max_size=10))
csv_text = st.tuples(
    st.sampled_from(["number", "Number ", "NUMBER,label", "label,number", "num", "", "number,number", '"number"']),
    st.lists(st.lists(cells, max_size=4).map(",".join), max_size=6),
    st.sampled_from(["\n", "\r\n", "\r"]),
).map(lambda t: t[0] + t[2] + t[2].join(t[1]))
csv_bytes = st.one_of(
    csv_text.map(lambda s: s.encode("utf-8", "surrogatepass")),
    csv_text.map(lambda s: b"\xef\xbb\xbf" + s.encode("utf-8", "surrogatepass")),
    st.binary(max_size=200),
    st.tuples(csv_text, st.binary(max_size=8)).map(lambda t: t[0].encode("utf-8", "surrogatepass") + t[1]),
)


@FUZZ
@given(data=csv_bytes, region=st.sampled_from([None, "US", "GB"]))
def test_byo_csv_raises_only_numsync_errors(data: bytes, region: str | None) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "numbers.csv"
        path.write_bytes(data)
        cfg = ByoSourceConfig(name="trunk-f", kind="byo", numbers_file=path, vapi_credential_id="cred-f",
                              default_region=region)
        records = only_numsync_errors(lambda: list(ByoSource(cfg).list_numbers()))
    for rec in records or []:
        assert isinstance(rec, SourceRecord) and isinstance(rec.number, str)
        assert rec.e164 is None or E164.match(rec.e164), rec


# -- 3. the JSON the adapters parse --------------------------------------------------------------------
any_text = st.text(st.characters(exclude_categories=()))  # lone surrogates too, as JSON can spell them
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | any_text,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(any_text, inner, max_size=4),
    max_leaves=12,
)


def _marked(value: Any) -> Any:
    """The reference, written out plainly: JSON joins a high and a low surrogate into one
    character; any other surrogate, and U+0000, read as U+FFFD."""
    if isinstance(value, str):
        joined = value.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "replace")
        return "".join("\ufffd" if ch == "\0" else ch for ch in joined)
    if isinstance(value, dict):
        return {_marked(k): _marked(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_marked(v) for v in value]
    return value


@given(value=json_values, encoding=st.sampled_from(["utf-8", "utf-16", "text"]))
@example(value={"name": "front\0desk", "\0": ["\0", "\ud800", "\ud83d\ude00", "\udfff\ud800"]}, encoding="utf-8")
def test_json_reads_back_with_unstorable_characters_marked(value: Any, encoding: str) -> None:
    """What the adapters read never holds U+0000 (PostgreSQL's text can't store it) or a lone
    surrogate (no database's can), and holds everything else exactly, whichever decoder reads
    the body."""
    text = json.dumps(value)
    assert loads(text if encoding == "text" else text.encode(encoding)) == _marked(value)


class ScriptedEmulator(Emulator):
    """Answers every GET with the next scripted response; the last one repeats."""

    name = "scripted"

    def __init__(self) -> None:
        super().__init__()
        self.script: list[Response] = [Response()]
        self._next = 0
        self.route("GET", r"/.*", self._answer)

    def load(self, script: list[Response]) -> None:
        with self.lock:
            self.script, self._next = list(script), 0
            self.requests.clear()

    def _answer(self, req: Request) -> Response:
        with self.lock:
            resp = self.script[min(self._next, len(self.script) - 1)]
            self._next += 1
        return Response(status=resp.status, body=resp.body, headers=dict(resp.headers),
                        content_type=resp.content_type)


@dataclass
class Servers:
    plain: ScriptedEmulator
    plain_url: str
    tls: ScriptedEmulator
    tls_url: str
    ca: Path


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Servers]:
    ctx, ca = make_tls(tmp_path_factory.mktemp("fuzz-tls"))
    plain, tls = ScriptedEmulator(), ScriptedEmulator()
    with EmulatorServer(plain) as ps, EmulatorServer(tls, ssl_context=ctx) as ts:
        yield Servers(plain, ps.url, tls, ts.url, ca)


BIG = st.sampled_from([10**30, 10**400, 1e308])  # numbers no sane API sends, but JSON allows
junk = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-1000, 1000), st.floats(), st.text(max_size=10), BIG),
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=5), inner, max_size=3)),
    max_leaves=6,
)


def maybe(valid: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """Mostly the valid value, sometimes anything."""
    return st.one_of(valid, valid, valid, junk)


def shaped(required: dict[str, st.SearchStrategy[Any]],
           optional: dict[str, st.SearchStrategy[Any]]) -> st.SearchStrategy[dict[str, Any]]:
    """A record or envelope whose fields are mostly right, sometimes wrong or missing."""
    return st.fixed_dictionaries({k: maybe(v) for k, v in required.items()},
                                 optional={**{k: maybe(v) for k, v in optional.items()}, "extra": junk})


numbers = st.one_of(st.sampled_from(["+14155550100", "+442071234567", "14155550101", "+1 415 555 0102"]),
                    st.text(max_size=12))
stamps = st.sampled_from(["2024-01-01T00:00:00.000Z", "2024-02-29T12:00:00+00:00", "2024-01-01", "yesterday"])
vapi_records = shaped(
    {"id": st.uuids().map(str), "provider": st.sampled_from(["twilio", "telnyx", "vonage", "vapi", "byo-phone-number"]),
     "createdAt": stamps},
    {"updatedAt": stamps, "number": numbers, "status": st.sampled_from(["active", "blocked", "activating"]),
     "name": st.text(max_size=45), "sipUri": st.just("sip:a@sip.vapi.ai"), "assistantId": st.just("asst-1"),
     "server": st.fixed_dictionaries({"url": st.text(max_size=10)}), "credentialId": st.just("cred-a"),
     "twilioAccountSid": st.just("AC" + "1" * 32), "twilioAuthToken": st.just(SECRET),
     "numberE164CheckEnabled": st.booleans()},
)
vapi_pages = shaped({"results": st.lists(vapi_records, max_size=4),
                     "metadata": shaped({"totalItems": st.integers(0, 25)}, {"itemsPerPage": st.integers(0, 10)})},
                    {})
twilio_records = shaped(
    {"sid": st.integers(0, 99).map(lambda i: f"PN{i:032x}"), "phone_number": numbers},
    {"account_sid": st.just("AC" + "1" * 32), "voice_url": st.sampled_from(["", "https://api.vapi.ai/x", "::"]),
     "trunk_sid": st.just("TK1"), "voice_application_sid": st.just("AP1"), "friendly_name": st.text(max_size=8),
     "status": st.just("in-use"), "capabilities": st.just({"voice": True}),
     "date_created": st.sampled_from(["Mon, 01 Jan 2024 00:00:00 +0000", "garbage"])},
)
twilio_pages = shaped(
    {"incoming_phone_numbers": st.lists(twilio_records, max_size=4),
     "next_page_uri": st.one_of(st.none(), st.integers(0, 3).map(
         lambda i: f"/2010-04-01/Accounts/{'AC' + '1' * 32}/IncomingPhoneNumbers.json?PageSize=5&Page=1"
                   f"&PageToken=PAPN{i:032x}"))},
    {"page": st.integers(0, 3), "page_size": st.integers(1, 5), "uri": st.just("/x"), "start": st.just(0)},
)
vonage_records = shaped(
    {"msisdn": st.one_of(st.sampled_from(["14155550100", "442071234567"]), st.text(max_size=12))},
    {"country": st.just("US"), "type": st.just("landline"), "features": st.just(["VOICE"]),
     "voiceCallbackType": st.sampled_from(["app", "sip", ""]), "voiceCallbackValue": st.text(max_size=6),
     "app_id": st.text(max_size=6)},
)
vonage_pages = shaped({"count": st.integers(0, 12)}, {"numbers": st.lists(vonage_records, max_size=5)})
telnyx_records = shaped(
    {"id": st.integers(0, 99).map(str), "phone_number": numbers},
    {"status": st.just("active"), "connection_id": st.just("111"), "tags": st.lists(st.text(max_size=3)),
     "country_iso_alpha2": st.just("US"), "customer_reference": st.text(max_size=4)},
)
telnyx_pages = shaped(
    {"data": st.lists(telnyx_records, max_size=4),
     "meta": shaped({"page_number": st.integers(0, 3), "total_pages": st.integers(0, 3),
                     "total_results": st.integers(0, 12)}, {"page_size": st.integers(1, 5)})},
    {},
)


def _responses(envelopes: st.SearchStrategy[Any]) -> st.SearchStrategy[Response]:
    def encode(value: Any) -> bytes:
        return json.dumps(value).encode()

    bodies = st.one_of(
        envelopes.map(encode), envelopes.map(encode), envelopes.map(encode),
        junk.map(encode),
        st.tuples(envelopes.map(encode), st.floats(0, 1)).map(lambda t: t[0][: int(len(t[0]) * t[1])]),
        st.binary(max_size=40),
    )
    return st.builds(
        Response,
        status=st.sampled_from([200] * 8 + [201, 204, 301, 400, 401, 403, 404, 409, 422, 429, 500, 502, 503]),
        body=bodies,
        headers=st.one_of(st.just({}), st.sampled_from(["0", "1", "-5", "soon", "1e9"]).map(
            lambda v: {"Retry-After": v})),
        content_type=st.sampled_from(["application/json; charset=utf-8"] * 4 + [
            "application/json", "application/problem+json", "text/plain", "text/html", ""]),
    )


def _scripts(envelopes: st.SearchStrategy[Any]) -> st.SearchStrategy[list[Response]]:
    return st.lists(_responses(envelopes), min_size=1, max_size=3)


def _check_records(records: list[Any] | None) -> None:
    for rec in records or []:
        assert isinstance(rec, SourceRecord) and isinstance(rec.number, str) and isinstance(rec.carrier_id, str)
        assert rec.e164 is None or E164.match(rec.e164), rec


@FUZZ_HTTP
@given(script=_scripts(vapi_pages))
def test_vapi_listing_raises_only_numsync_errors(servers: Servers, script: list[Response]) -> None:
    servers.plain.load(script)
    cfg = VapiConfig(api_key="k", base_url=servers.plain_url, page_size=10, max_attempts=2, backoff_base=0,
                     max_retry_after=0, requests_per_second=0, max_concurrency=2, timeout=5)
    with VapiClient(cfg) as client:
        listed = only_numsync_errors(lambda: list(client.iter_records(transform=to_vapi_number)))
        servers.plain.load(script)
        read = only_numsync_errors(lambda: list(client.iter_numbers()))  # the snapshot's listing
    for out in (listed, read):
        for rec in out or []:
            assert isinstance(rec.id, str) and isinstance(rec.provider, str)
            assert SECRET not in repr(rec)  # Vapi echoes secrets; the client drops them


GOOD = {"id": "7f8e5a52-2b1f-4c3e-9d6a-1a2b3c4d5e6f", "provider": "byo-phone-number",
        "createdAt": "2024-01-01T00:00:00.000Z", "updatedAt": "2024-01-01T00:00:00.000Z",
        "number": "+14155550100", "credentialId": "cred-f", "status": "active", "assistantId": "asst-1"}


# The direct listing reader against the general one: valid pages (which it must read itself),
# and near-valid ones (which it must read alike or hand over).
_clean_text = st.text(alphabet=st.characters(blacklist_characters="\0"), max_size=20)
_valid_vapi_records = st.fixed_dictionaries(
    {"id": st.uuids().map(str), "createdAt": st.sampled_from(["2024-01-01T00:00:00.000Z", "2024-02-29T12:00:00+00:00"]),
     "provider": st.sampled_from(["twilio", "telnyx", "vonage", "vapi", "byo-phone-number"])},
    optional={"updatedAt": st.sampled_from(["2024-01-01T00:00:00.000Z", "2024-01-01", None]),
              "number": st.one_of(st.none(), st.sampled_from(["+14155550100", " +14155550101 ", "", "  "]),
                                  _clean_text),
              "status": st.sampled_from(["active", "blocked", "activating", None]),
              "name": st.one_of(st.none(), _clean_text),
              "sipUri": st.sampled_from(["sip:a@sip.vapi.ai", "", None]),
              "assistantId": st.sampled_from(["asst-1", "", None, 0, 1, [], {"a": 1}]),
              "squadId": st.sampled_from(["squad-1", None]), "workflowId": st.sampled_from(["wf-1", None]),
              "server": st.one_of(st.none(), st.fixed_dictionaries(
                  {}, optional={"url": st.sampled_from(["", "https://x", None]), "headers": st.just({"a": SECRET})})),
              "credentialId": st.sampled_from(["cred-a", None]),
              "twilioAccountSid": st.sampled_from(["AC" + "1" * 32, None]),
              "twilioAuthToken": st.just(SECRET), "numberE164CheckEnabled": st.sampled_from([True, False, None, 0]),
              "orgId": _clean_text, "smsEnabled": st.booleans()},
)
_valid_vapi_pages = st.fixed_dictionaries(
    {"results": st.lists(_valid_vapi_records, max_size=5), "metadata": st.fixed_dictionaries(
        {"totalItems": st.integers(0, 10**8)}, optional={"itemsPerPage": st.integers(0, 10)})})


def _read_both(body: bytes) -> tuple[Any, Any]:
    """(the direct reader's answer, the general reader's numbers and total or its ProtocolError)."""
    response = httpx.Response(200, content=body, headers={"content-type": "application/json; charset=utf-8"})
    with VapiClient(VapiConfig(api_key="k", base_url="http://127.0.0.1:9")) as client:  # sends nothing
        try:
            records, total = client._read_page(response, 1)
            general: Any = ([to_vapi_number(r) for r in records], total)
        except ProtocolError as exc:
            general = exc
    return read_listing_page(body), general


@settings(FUZZ, max_examples=150)
@given(page=_valid_vapi_pages, ascii_only=st.booleans())
def test_the_direct_listing_reader_reads_every_valid_page_as_the_general_one(page: Any, ascii_only: bool) -> None:
    direct, general = _read_both(json.dumps(page, ensure_ascii=ascii_only).encode())
    assert direct is not None, "a valid page went the slow way"
    assert direct == general


@settings(FUZZ, max_examples=300)
@given(page=vapi_pages, ascii_only=st.booleans())
@example(page={"results": [{**GOOD, "name": "front\0desk"}], "metadata": {"totalItems": 1}}, ascii_only=True)
@example(page={"results": [{**GOOD, "name": "\ud800"}], "metadata": {"totalItems": 1}}, ascii_only=True)
@example(page={"results": [{**GOOD, "id": "x" * 65}], "metadata": {"totalItems": 1}}, ascii_only=True)
@example(page={"results": [{**GOOD, "id": ""}], "metadata": {"totalItems": 1}}, ascii_only=True)
@example(page={"results": [], "metadata": {"totalItems": 2.0}}, ascii_only=True)
@example(page={"results": [], "metadata": {"totalItems": True}}, ascii_only=True)
@example(page={"results": [], "metadata": {"totalItems": -1}}, ascii_only=True)
@example(page={"results": [{**GOOD, "assistantId": None, "server": {"url": 10**30}}], "metadata": {"totalItems": 1}},
         ascii_only=True)
@example(page={"results": [{**GOOD, "assistantId": None, "server": "https://x"}], "metadata": {"totalItems": 1}},
         ascii_only=True)
def test_the_direct_listing_reader_reads_any_page_as_the_general_one_or_hands_it_over(page: Any,
                                                                                     ascii_only: bool) -> None:
    direct, general = _read_both(json.dumps(page, ensure_ascii=ascii_only).encode())
    event("direct" if direct is not None else "handed over")
    if direct is not None:
        assert direct == general


_valid_telnyx_records = st.fixed_dictionaries(
    {"id": st.integers(0, 10**18).map(str), "phone_number": st.sampled_from(["+14155550100", "+442071234567", ""])},
    optional={"status": st.sampled_from(["active", "pending", None]), "record_type": st.just("phone_number"),
              "connection_id": st.sampled_from(["111", "", None]), "connection_name": st.sampled_from(["x", None]),
              "tags": st.lists(_clean_text, max_size=3), "country_iso_alpha2": st.sampled_from(["US", None]),
              "customer_reference": st.one_of(st.none(), _clean_text), "purchased_at": st.just("2024-01-01T00:00:00Z"),
              "emergency_enabled": st.booleans()},
)
_valid_telnyx_pages = st.integers(1, 3).flatmap(lambda n: st.fixed_dictionaries({
    "data": st.lists(_valid_telnyx_records, max_size=5),
    "meta": st.fixed_dictionaries({"page_number": st.just(n), "total_pages": st.integers(0, 10**8),
                                   "total_results": st.integers(0, 10**8)}, optional={"page_size": st.integers(1, 5)}),
}))


def _telnyx_reads(body: bytes, page: int) -> tuple[Any, Any]:
    """(the direct page reader's records and paging numbers, the general one's), each as the
    SourceRecords the listing makes of them, or the ProtocolError's text."""
    src = TelnyxSource(TelnyxSourceConfig(name="t", kind="telnyx", api_key="k", vapi_credential_id="c",
                                          base_url="http://127.0.0.1:9"))  # sends nothing
    headers = httpx.Headers({"content-type": "application/json"})
    out = []
    try:
        for parse in (src._parse_page, src._parse_page_general):
            try:
                data, numbers = parse(body, headers, page)
                out.append(([src._record(item) for item in data], numbers))
            except ProtocolError as exc:
                out.append(str(exc))
    finally:
        src.close()
    return out[0], out[1]


@settings(FUZZ, max_examples=150)
@given(page=_valid_telnyx_pages, ascii_only=st.booleans())
def test_the_telnyx_direct_page_reader_reads_every_valid_page_as_the_general_one(page: Any, ascii_only: bool) -> None:
    body = json.dumps(page, ensure_ascii=ascii_only).encode()
    assert decode_direct(TELNYX_PAGE, body) is not None, "a valid page went the slow way"
    direct, general = _telnyx_reads(body, page["meta"]["page_number"])
    assert direct == general


@settings(FUZZ, max_examples=300)
@given(page=telnyx_pages, number=st.integers(0, 3), ascii_only=st.booleans())
@example(page={"data": [{"id": "1", "phone_number": "+1415555\0"}], "meta": {"page_number": 1, "total_pages": 1,
                                                                            "total_results": 1}},
         number=1, ascii_only=True)
@example(page={"data": [{"id": "1", "phone_number": "\udc00"}], "meta": {"page_number": 1, "total_pages": 1,
                                                                         "total_results": 1}},
         number=1, ascii_only=True)
@example(page={"data": [], "meta": {"page_number": 1.0, "total_pages": 1, "total_results": 0}},
         number=1, ascii_only=True)
@example(page={"data": [], "meta": {"page_number": 1, "total_pages": 10**9, "total_results": 0}},
         number=1, ascii_only=True)
@example(page={"data": [], "meta": {"page_number": 1, "total_pages": 1, "total_results": -1}},
         number=1, ascii_only=True)
@example(page={"data": [], "meta": {"page_number": 1, "total_pages": 1, "total_results": True}},
         number=1, ascii_only=True)
@example(page={"data": [], "meta": {"page_number": 1, "total_pages": 1, "total_results": "3"}},
         number=1, ascii_only=True)
@example(page={"data": [{"id": "0"}, {"id": 10**30, "connection_id": 5}], "meta": {"page_number": 0, "total_pages": 0,
                                                                             "total_results": 0}},
         number=0, ascii_only=False)  # orjson reads 10**30 as 1e+30, msgspec as the integer
@example(page={"data": [{"id": "1", "connection_id": 10**30}],
               "meta": {"page_number": 1, "total_pages": 1, "total_results": 1}}, number=1, ascii_only=True)
@example(page={"data": [{"id": "1", "tags": [10**30]}],
               "meta": {"page_number": 1, "total_pages": 1, "total_results": 1}}, number=1, ascii_only=True)
@example(page={"data": [{"id": 10**30, "tags": [1e400]}], "meta": {"page_number": 1, "total_pages": 1,
                                                                  "total_results": True}},
         number=1, ascii_only=True)
def test_the_telnyx_direct_page_reader_reads_any_page_as_the_general_one(page: Any, number: int,
                                                                         ascii_only: bool) -> None:
    direct, general = _telnyx_reads(json.dumps(page, ensure_ascii=ascii_only).encode(), number)
    assert direct == general


_valid_twilio_records = st.fixed_dictionaries(
    {"sid": st.integers(0, 99).map(lambda i: f"PN{i:032x}"), "phone_number": st.sampled_from(["+14155550100", "+1"])},
    optional={"account_sid": st.just("AC" + "1" * 32), "status": st.sampled_from(["in-use", None]),
              "voice_url": st.sampled_from(["", "https://api.vapi.ai/twilio/inbound_call", "https://x", None]),
              "voice_application_sid": st.sampled_from(["AP1", "", None]), "trunk_sid": st.sampled_from(["TK1", None]),
              "friendly_name": st.one_of(st.none(), _clean_text), "capabilities": st.just({"voice": True}),
              "date_created": st.just("Mon, 01 Jan 2024 00:00:00 +0000"), "beta": st.booleans()},
)
_valid_twilio_pages = st.fixed_dictionaries(
    {"incoming_phone_numbers": st.lists(_valid_twilio_records, max_size=5)},
    optional={"next_page_uri": st.sampled_from([None, "", "/2010-04-01/Accounts/AC1/IncomingPhoneNumbers.json?Page=1"
                                                "&PageToken=PA1"]),
              "page": st.integers(0, 3), "page_size": st.integers(1, 5), "uri": st.just("/x"), "start": st.just(0),
              "end": st.just(0), "first_page_uri": st.just("/x"), "previous_page_uri": st.none()},
)


def _twilio_reads(text: str) -> tuple[Any, Any]:
    """What the listing makes of one page (its records and the next page's URL, or the error),
    read by the direct reader and by ``Page``'s reading of the whole body."""
    from twilio.http.response import Response as TwilioResponse

    from numsync.adapters.twilio import _RecordsPage

    class Whole(_RecordsPage):
        @classmethod
        def process_response(cls, response: Any) -> Any:
            return loads(response.text)

    src = TwilioSource(TwilioSourceConfig(name="t", kind="twilio", account_sid="AC" + "1" * 32, auth_token=SECRET))
    out = []
    try:
        for page_class in (_RecordsPage, Whole):
            try:
                page = page_class(src._client.api.v2010, TwilioResponse(200, text), {})
                out.append(([src._record(item, {}) for item in page], page.next_page_url))
            except Exception as exc:
                out.append(f"{type(exc).__name__}: {exc}")
    finally:
        src.close()
    return out[0], out[1]


@settings(FUZZ, max_examples=150)
@given(page=_valid_twilio_pages, ascii_only=st.booleans())
def test_the_twilio_direct_page_reader_reads_every_valid_page_as_page_does(page: Any, ascii_only: bool) -> None:
    from numsync.adapters.twilio import _LISTING

    text = json.dumps(page, ensure_ascii=ascii_only)
    _LISTING.decode(text)  # a valid page is read directly (this raises if not)
    direct, whole = _twilio_reads(text)
    assert direct == whole


@settings(FUZZ, max_examples=300)
@given(page=twilio_pages, ascii_only=st.booleans())
@example(page={"incoming_phone_numbers": [{"sid": "PN1", "phone_number": "+1415\0"}]}, ascii_only=True)
@example(page={"incoming_phone_numbers": [{"sid": "PN1", "phone_number": "\ud800"}]}, ascii_only=True)
@example(page={"incoming_phone_numbers": [], "meta": {"key": "incoming_phone_numbers"}}, ascii_only=True)
@example(page={"incoming_phone_numbers": [], "other": []}, ascii_only=True)
@example(page={"incoming_phone_numbers": "PN1"}, ascii_only=True)
@example(page={"incoming_phone_numbers": [{"sid": "PN1", "phone_number": "+1", "status": 10**30}]}, ascii_only=True)
@example(page={"incoming_phone_numbers": [5, {"sid": "PN1", "phone_number": "+1"}]}, ascii_only=True)
def test_the_twilio_direct_page_reader_reads_any_page_as_page_does(page: Any, ascii_only: bool) -> None:
    direct, whole = _twilio_reads(json.dumps(page, ensure_ascii=ascii_only))
    assert direct == whole


def _carrier(kind: str, servers: Servers, **over: Any) -> tuple[ScriptedEmulator, Any]:
    """A carrier source pointed at the scripted emulator, with retries that never wait."""
    opts: dict[str, Any] = {"max_attempts": 2, "backoff_base": 0, "max_retry_after": 0, "sleep": lambda _s: None,
                            "page_size": 5}
    common = {"name": f"{kind}-f", "kind": kind, "timeout": 5, "base_url": servers.plain_url}
    if kind == "twilio":
        cfg: Any = TwilioSourceConfig(**common, account_sid="AC" + "1" * 32, auth_token=SECRET)
        return servers.plain, TwilioSource(cfg, **{**opts, "max_pages": 20, **over})
    if kind == "telnyx":
        cfg = TelnyxSourceConfig(**common, api_key=SECRET, vapi_credential_id="cred-t")
        return servers.plain, TelnyxSource(cfg, **{**opts, "max_backoff": 0, "concurrency": 2, **over})
    cfg = VonageSourceConfig(**{**common, "base_url": servers.tls_url}, api_key="key-f", api_secret=SECRET,
                             vapi_credential_id="cred-v", ca_bundle=servers.ca)
    return servers.tls, VonageSource(cfg, **{**opts, "concurrency": 2, **over})


CARRIER_PAGES = {"twilio": twilio_pages, "telnyx": telnyx_pages, "vonage": vonage_pages}


@pytest.mark.parametrize("kind", list(CARRIER_PAGES))
@FUZZ_HTTP
@given(data=st.data())
def test_carrier_listing_raises_only_numsync_errors(servers: Servers, kind: str, data: st.DataObject) -> None:
    emu, src = _carrier(kind, servers)
    emu.load(data.draw(_scripts(CARRIER_PAGES[kind]), label="script"))
    try:
        _check_records(only_numsync_errors(lambda: list(src.list_numbers()), _no_secret))
    finally:
        src.close()


def _no_secret(exc: NumsyncError) -> None:
    assert SECRET not in str(exc)


# -- 4. the engine, fed Vapi records with fields of the wrong type -----------------------------------

def _vapi_envelope(records: list[dict[str, Any]]) -> bytes:
    return json.dumps({"results": records, "metadata": {"totalItems": len(records)}}).encode()


@pytest.mark.parametrize("field", [
    pytest.param({"number": 5}, id="number-int"),
    pytest.param({"assistantId": {"x": 1}}, id="assistantId-object"),
    pytest.param({"server": "https://example.com"}, id="server-string"),
    pytest.param({"status": True}, id="status-bool"),
    pytest.param({"status": None}, id="status-null"),
    pytest.param({"status": {"a": 1}}, id="status-object"),
    pytest.param({"name": 5}, id="name-int"),
    pytest.param({"name": ["x"]}, id="name-list"),
    pytest.param({"sipUri": ["sip:x"]}, id="sipUri-list"),
    pytest.param({"credentialId": ["cred-f"]}, id="credentialId-list"),
    pytest.param({"updatedAt": 5}, id="updatedAt-int"),
    pytest.param({"number": "   "}, id="number-blank"),
])
def test_engine_survives_wrong_typed_vapi_fields(servers: Servers, tmp_path: Path, field: dict[str, Any]) -> None:
    servers.plain.load([Response(body=_vapi_envelope([{**GOOD, **field}]))])
    (tmp_path / "n.csv").write_text("number\n+14155550100\n")
    cfg = parse_config(f"""
database_url: sqlite:///{tmp_path / 'db.sqlite'}
vapi: {{api_key: k, base_url: {servers.plain_url}, max_attempts: 1, requests_per_second: 0}}
sources:
  - {{name: trunk-f, kind: byo, numbers_file: {tmp_path / 'n.csv'}, vapi_credential_id: cred-f}}
""", origin=ORIGIN, env={})
    try:
        out = run_once(cfg, mode="plan", write=False)
    except NumsyncError:
        return  # refusing the answer is fine; crashing is not
    for finding in out.report["findings"]:
        assert finding["number"] is None or (isinstance(finding["number"], str) and finding["number"].strip())


# -- 5. regressions: one minimal reproduction per bug this fuzzing found (all fixed) -----------------
@pytest.mark.parametrize("text", [
    pytest.param("? [a, b]\n: 1\n", id="unhashable-key"),
    pytest.param("vapi: {api_key: k}\nsources: 5\n", id="sources-int"),
    pytest.param("vapi: {api_key: k}\nreports: {dir: 2024-13-01}\n", id="date-like-value"),
    pytest.param("vapi: {api_key: k}\nserver: {port: !!float abc}\n", id="bad-float-tag"),
    pytest.param("vapi: &a {api_key: k, x: [*a]}\n", id="recursive-alias"),
    pytest.param("[" * 3000 + "]" * 3000, id="deep-nesting"),
    pytest.param("vapi: {api_key: k}\npolicy: {stuck_activating_after: 9999999999d}\n", id="huge-duration"),
    pytest.param("vapi: {api_key: k}\nsources:\n  - {name: a, kind: byo, numbers_file: n.csv, "
                 "vapi_credential_id: c, import: {name: '{number.real}'}}\n", id="template-attribute"),
])
def test_config_known_bugs_raise_config_errors(text: str) -> None:
    with pytest.raises(ConfigError, match=f"^{re.escape(ORIGIN)}: "):
        _parse(text)


def test_vapi_absurd_total_is_a_protocol_error(servers: Servers) -> None:
    servers.plain.load([Response(body=json.dumps({"results": [GOOD], "metadata": {"totalItems": 10**30}}).encode())])
    cfg = VapiConfig(api_key="k", base_url=servers.plain_url, max_attempts=1, requests_per_second=0)
    with VapiClient(cfg) as client, pytest.raises(NumsyncError):
        list(client.iter_records())


def test_telnyx_absurd_meta_is_a_protocol_error(servers: Servers) -> None:
    body = {"data": [{"id": "1", "phone_number": "+14155550100"}],
            "meta": {"page_number": 1, "total_pages": 10**400, "total_results": 1}}
    _absurd_listing_fails_cleanly(servers, "telnyx", body)


def test_vonage_absurd_count_is_a_protocol_error(servers: Servers) -> None:
    body = {"count": 10**400, "numbers": [{"msisdn": "14155550100", "country": "US", "type": "landline",
                                            "features": ["VOICE"]}]}
    _absurd_listing_fails_cleanly(servers, "vonage", body)


def _absurd_listing_fails_cleanly(servers: Servers, kind: str, body: dict[str, Any]) -> None:
    emu, src = _carrier(kind, servers, max_attempts=1, page_size=1)
    emu.load([Response(body=json.dumps(body).encode())])
    try:
        with pytest.raises(NumsyncError):
            list(src.list_numbers())
    finally:
        src.close()


def test_name_template_that_would_fail_at_run_time_is_refused_at_load(tmp_path: Path) -> None:
    """'{label[0]}' formats with label='l' but not with label='' (a CSV without labels): refuse it up front."""
    with pytest.raises(ConfigError, match=r"sources\[0\]\.import\.name: unknown placeholder"):
        parse_config(f"""
vapi: {{api_key: k}}
sources:
  - name: trunk-f
    kind: byo
    numbers_file: {tmp_path / 'n.csv'}
    vapi_credential_id: cred-f
    import: {{name: '{{label[0]}} {{number}}'}}
""", origin=ORIGIN, env={})


# -- 6. the CLI: a fuzzed config never ends in a traceback ------------------------------------------
_BASE_CONFIG = {
    "database_url": "sqlite:///{dir}/db.sqlite",
    "vapi": {"api_key": "k", "base_url": "http://127.0.0.1:9", "max_attempts": 1, "timeout": 2},
    "sources": [{"name": "trunk-a", "kind": "byo", "numbers_file": "numbers.csv", "vapi_credential_id": "c"}],
    "reports": {"dir": "{dir}/reports", "formats": ["json"]},
}


@settings(max_examples=3, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(changes=st.dictionaries(st.sampled_from(["database_url", "sources", "policy", "schedule", "reports",
                                                "server", "unknown"]), values, min_size=1, max_size=2),
       garbage=st.one_of(st.just(""), st.text(max_size=30)))
def test_cli_plan_with_fuzzed_config_prints_no_traceback(changes: dict[str, Any], garbage: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        raw = json.loads(json.dumps(_BASE_CONFIG).replace("{dir}", tmp))
        raw.update(changes)  # 'vapi' is never touched: it points at a closed local port
        path = Path(tmp) / "numsync.yaml"
        text = yaml.safe_dump(raw, allow_unicode=True) + garbage
        try:
            _parse(text)
        except NumsyncError:
            pass
        except Exception as exc:  # a known loader bug (pinned by its xfail test) would end in a traceback
            if known_bug(exc) is None:
                raise
            event(f"known bug {known_bug(exc)}")
            return
        path.write_text(text)
        (Path(tmp) / "numbers.csv").write_text("number\n+14155550100\n")
        env = {k: v for k, v in os.environ.items() if not k.startswith("NUMSYNC_")}
        # Nothing may leave the machine, whatever the config says.
        env.update(HTTP_PROXY="http://127.0.0.1:9", HTTPS_PROXY="http://127.0.0.1:9", NO_PROXY="127.0.0.1,localhost")
        proc = subprocess.run([sys.executable, "-m", "numsync", "plan", "--config", str(path), "--log-format", "json"],
                              capture_output=True, text=True, timeout=60, env=env, cwd=tmp)
    output = proc.stdout + proc.stderr
    note(output[-2000:])
    assert proc.returncode in (0, 1, 2), output
    assert "Traceback" not in output
    # JSON logs render a traceback as a dict of frames: the CLI's catch-all line is the sure sign.
    assert "unexpected error" not in output and '"frames"' not in output

"""The Twilio source against the Twilio emulation, over a real socket, with the real twilio SDK.

Nothing here patches the SDK: the adapter reaches the emulator through ``cfg.base_url`` (the SDK's
``http_client`` extension point), so these tests exercise the same code path as production. The
adapter's ``sleep`` is injected so retry waits are recorded instead of slept.
"""

from __future__ import annotations

import base64
import http.client
import importlib
import inspect
import itertools
import json
import os
import ssl
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import certifi
import phonenumbers
import pytest
import requests
import trustme
import urllib3.exceptions
from hypothesis import given, settings
from hypothesis import strategies as st
from twilio.base.exceptions import TwilioException, TwilioRestException
from twilio.http.response import Response as TwilioResponse

from numsync.adapters.base import Source, VapiOwner, country_of, to_e164
from numsync.adapters.http_util import verify_context
from numsync.adapters.twilio import TwilioSource, _TwilioHttp, build, combined_ca_bundle, routing_of
from numsync.config import TwilioSourceConfig
from numsync.errors import (
    AdapterError,
    AuthError,
    ConfigError,
    NotFoundError,
    PermanentError,
    ProtocolError,
    TransientError,
)
from numsync.sandbox.server import EmulatorServer, Request, Response, json_response
from numsync.sandbox.twilio import TwilioEmulator

AC = "AC" + "1" * 32
AC2 = "AC" + "2" * 32
TOKEN = "tok-s3cret-1234567890"
TOKEN2 = "other-s3cret-0987654321"
SK = "SK" + "3" * 32
SK_SECRET = "sk-s3cret-abcdef"
LIST_PATH = f"/2010-04-01/Accounts/{AC}/IncomingPhoneNumbers.json"
VAPI_URL = "https://api.vapi.ai/twilio/inbound_call"


@pytest.fixture(scope="module")
def server() -> Iterator[EmulatorServer]:
    # one server per module: stopping one costs half a second (serve_forever's poll interval)
    emulator = TwilioEmulator({AC: TOKEN, AC2: TOKEN2}, api_keys={SK: (SK_SECRET, AC)})
    with EmulatorServer(emulator) as srv:
        yield srv


@pytest.fixture
def emu(server: EmulatorServer) -> TwilioEmulator:
    emulator = server.emulator
    assert isinstance(emulator, TwilioEmulator)
    emulator.reset()
    return emulator


class Harness:
    """Builds sources against the server and records what the adapter reported and slept."""

    def __init__(self, server: EmulatorServer) -> None:
        self.server = server
        self.calls: list[tuple[str, str]] = []
        self.sleeps: list[float] = []
        self._sources: list[TwilioSource] = []

    def source(self, *, cfg: dict[str, Any] | None = None, **kwargs: Any) -> TwilioSource:
        fields: dict[str, Any] = {"name": "tw-main", "kind": "twilio", "account_sid": AC, "auth_token": TOKEN,
                                  "base_url": self.server.url, "timeout": 5}
        fields.update(cfg or {})
        kwargs.setdefault("backoff_base", 0.1)
        kwargs.setdefault("sleep", self.sleeps.append)
        src = build(TwilioSourceConfig.model_validate(fields),
                    on_request=lambda api, status: self.calls.append((api, status)), **kwargs)
        self._sources.append(src)
        return src

    def close(self) -> None:
        for src in self._sources:
            src.close()


@pytest.fixture
def h(server: EmulatorServer) -> Iterator[Harness]:
    harness = Harness(server)
    yield harness
    harness.close()


@pytest.fixture
def isolated() -> Iterator[tuple[TwilioEmulator, Harness]]:
    """A server of its own, for faults that finish server-side after the client moved on.

    A reset or hung request is logged after the client saw it fail, and hooks run after the
    answer is sent: on the shared server either could leak into the next test.
    """
    emulator = TwilioEmulator({AC: TOKEN})
    with EmulatorServer(emulator) as srv:
        harness = Harness(srv)
        yield emulator, harness
        harness.close()


def seed(emu: TwilioEmulator, count: int, account: str = AC) -> list[dict[str, Any]]:
    return [emu.add_number(account, f"+1415555{i:04d}", voice_url=VAPI_URL) for i in range(count)]


def queries(emu: TwilioEmulator) -> list[dict[str, list[str]]]:
    return [q for _m, _p, q, _s in emu.requests_to("GET", r"IncomingPhoneNumbers\.json$")]


# -- paging and normalisation ---------------------------------------------------------------------
def test_pages_follow_page_token_with_exact_wire_requests(emu: TwilioEmulator, h: Harness) -> None:
    seeded = seed(emu, 7)
    src = h.source(page_size=3)
    records = list(src.list_numbers())
    assert [r.carrier_id for r in records] == [n["sid"] for n in seeded]
    assert queries(emu) == [
        {"PageSize": ["3"]},
        {"PageSize": ["3"], "Page": ["1"], "PageToken": [f"PA{seeded[2]['sid']}"]},
        {"PageSize": ["3"], "Page": ["2"], "PageToken": [f"PA{seeded[5]['sid']}"]},
    ]
    assert h.calls == [("twilio", "200")] * 3
    assert isinstance(src, Source)


def test_default_page_size_is_the_documented_maximum(emu: TwilioEmulator, h: Harness) -> None:
    seed(emu, 3)
    assert len(list(h.source().list_numbers())) == 3
    assert queries(emu) == [{"PageSize": ["1000"]}]


def test_listing_is_lazy_one_page_at_a_time(emu: TwilioEmulator, h: Harness) -> None:
    seed(emu, 5)
    stream = h.source(page_size=2).list_numbers()
    first = next(stream)
    assert first.number == "+14155550000"
    assert len(queries(emu)) == 1  # the second page is not fetched before it is needed
    assert len(list(stream)) == 4


def test_records_are_normalised(emu: TwilioEmulator, h: Harness) -> None:
    emu.add_number(AC, "+14155550100", friendly_name="Support", voice_url=VAPI_URL)
    emu.add_number(AC, "+442071838750", voice_url="https://eu.vapi.ai/twilio/inbound_call", status="pending")
    emu.add_number(AC, "+14155550102", voice_url="https://user:pa55@hooks.example.com/voice?key=k3y")
    emu.add_number(AC, "+14155550103", voice_url="https://vapi.ai.evil.example/voice")
    emu.add_number(AC, "+14155550104", voice_application_sid="AP" + "4" * 32, voice_url=VAPI_URL)
    emu.add_number(AC, "+14155550105", trunk_sid="TK" + "5" * 32, voice_url=VAPI_URL)
    emu.add_number(AC, "+14155550106")
    emu.add_number(AC, "12345")
    emu.add_number(AC, "+1415555010", voice_url="https://notvapi.ai/x")
    got = {r.number: r for r in h.source().list_numbers()}

    first = got["+14155550100"]
    assert (first.e164, first.status, first.routing, first.routed_elsewhere) == (
        "+14155550100", "in-use", f"voice_url {VAPI_URL}", False)
    assert first.carrier_id.startswith("PN")
    # Twilio records carry no country: the planner works it out where an import's name shows it
    assert dict(first.labels) == {"friendly_name": "Support"}
    uk = got["+442071838750"]
    assert (uk.e164, uk.status, uk.routed_elsewhere) == ("+442071838750", "pending", False)
    assert got["+14155550102"].routing == "voice_url https://hooks.example.com/voice"  # no credentials shown
    assert got["+14155550102"].routed_elsewhere is True
    assert got["+14155550103"].routed_elsewhere is True
    app, trunk = got["+14155550104"], got["+14155550105"]
    assert (app.routing, app.routed_elsewhere) == ("app AP" + "4" * 32, True)
    assert (trunk.routing, trunk.routed_elsewhere) == ("trunk TK" + "5" * 32, True)
    assert (got["+14155550106"].routing, got["+14155550106"].routed_elsewhere) == (None, False)
    assert dict(got["+14155550106"].labels)["friendly_name"] == "(415) 555-0106"
    assert got["12345"].e164 is None
    assert (got["+1415555010"].e164, got["+1415555010"].routed_elsewhere) == (None, True)


def _country_by_parsing(e164: str) -> str | None:
    """What the adapter used to do (and what country_of must still answer): parse, then look up."""
    try:
        region = phonenumbers.region_code_for_number(phonenumbers.parse(e164))
    except phonenumbers.NumberParseException:
        return None
    return region if region and region.isalpha() and region != "ZZ" else None


@pytest.mark.parametrize("raw", [
    "+14155550100", "+14165550100", "+18095550100", "+12425550100", "+14150000005",  # US, CA, DO, BS, invalid
    "+442071838750", "+447624123456", "+441481123456", "+441534123456",  # GB, IM, GG, JE
    "+390669812345", "+39066981234", "+393123456789", "+3900012345", "+79123456789", "+77012345678",
    "+80012345678", "+882345678901", "+5978123456", "+262262123456", "+262269612345", "+61891621234",
])
def test_country_of_answers_what_parsing_the_number_again_would(raw: str) -> None:
    e164 = to_e164(raw)
    assert e164 is not None
    assert country_of(e164) == _country_by_parsing(e164)


def test_country_of_agrees_with_phonenumbers_on_every_region_sharing_a_calling_code() -> None:
    checked = 0
    for code, regions in phonenumbers.COUNTRY_CODE_TO_REGION_CODE.items():
        if len(regions) < 2:
            continue
        for region in regions:
            for kind in phonenumbers.PhoneNumberType.values():
                example = phonenumbers.example_number_for_type(region, kind)
                if example is None:
                    continue
                e164 = to_e164(phonenumbers.format_number(example, phonenumbers.PhoneNumberFormat.E164))
                if e164 is None:
                    continue
                for variant in (e164, e164[:-1] + str((int(e164[-1]) + 5) % 10), e164 + "0"):
                    assert country_of(variant) == _country_by_parsing(variant), (code, region, variant)
                    checked += 1
    assert checked > 300


@settings(max_examples=200, deadline=None)
@given(st.from_regex(r"\+[0-9]{1,4}[018]{0,3}[0-9]{1,12}", fullmatch=True))
def test_country_of_matches_parsing_for_any_plus_and_digits(raw: str) -> None:
    # to_e164's output is the contract, but any '+digits' text must get parse's answer too
    assert country_of(raw) == _country_by_parsing(raw)
    e164 = to_e164(raw)
    if e164 is not None:
        assert country_of(e164) == _country_by_parsing(e164)


def test_records_are_read_without_an_sdk_instance_each(emu: TwilioEmulator, h: Harness) -> None:
    # raw dicts from the SDK's page: nothing else is read from them than the documented fields
    emu.add_number(AC, "+14155550100", friendly_name="", voice_url=VAPI_URL, status="in-use")
    emu.update_number(AC, "+14155550100", status=None)
    (rec,) = list(h.source().list_numbers())
    assert (rec.status, dict(rec.labels)) == (None, {})  # an empty friendly_name is no label


def test_a_record_that_is_not_an_object_is_a_protocol_error() -> None:
    class Garbled(TwilioEmulator):
        def _list(self, req: Request, account_sid: str) -> Response:
            return json_response({"incoming_phone_numbers": ["+14155550100"], "next_page_uri": None, "page": 0})

    with EmulatorServer(Garbled({AC: TOKEN})) as srv:
        harness = Harness(srv)
        try:
            with pytest.raises(ProtocolError, match="not an object"):
                list(harness.source().list_numbers())
        finally:
            harness.close()


@pytest.mark.parametrize(
    ("voice_url", "app", "trunk", "listed", "expected"),
    [
        ("https://api.vapi.ai/x", "", None, [], ("voice_url https://api.vapi.ai/x", False)),
        ("https://VAPI.AI/x", "", None, [], ("voice_url https://vapi.ai/x", False)),
        ("https://xvapi.ai/x", "", None, [], ("voice_url https://xvapi.ai/x", True)),
        ("not a url", "", None, [], ("voice_url (unreadable)", True)),
        ("", "", None, [], (None, False)),
        (None, None, None, [], (None, False)),
        ("", "APx", None, ["APx"], ("app APx", False)),
        ("https://api.vapi.ai/x", "", "TKv", ["TKv"], ("trunk TKv", False)),
        ("https://sip.example.com/x", "", None, ["sip.example.com"],
         ("voice_url https://sip.example.com/x", False)),
    ],
)
def test_routing_rules(voice_url: str | None, app: str | None, trunk: str | None, listed: list[str],
                       expected: tuple[str | None, bool]) -> None:
    assert routing_of(voice_url, app, trunk, listed) == expected


def test_api_key_credentials_list_the_configured_account(emu: TwilioEmulator, h: Harness) -> None:
    seed(emu, 2)
    seed(emu, 1, account=AC2)
    src = h.source(cfg={"auth_token": None, "api_key": SK, "api_secret": SK_SECRET})
    assert [r.number for r in src.list_numbers()] == ["+14155550000", "+14155550001"]
    assert emu.requests[0][1] == LIST_PATH


def test_empty_inventory_gives_zero_records(emu: TwilioEmulator, h: Harness) -> None:
    seed(emu, 4)
    emu.faults.add("empty", path="IncomingPhoneNumbers")
    assert list(h.source().list_numbers()) == []
    emu.empty_inventory = True
    assert list(h.source(page_size=2).list_numbers()) == []


def test_number_deleted_between_pages_neither_duplicates_nor_skips(
    isolated: tuple[TwilioEmulator, Harness],
) -> None:
    # a server of its own: hooks run after the answer is sent, so on a shared server a previous
    # test's last request could still reach this test's hook
    emu, h = isolated
    seeded = seed(emu, 6)

    def delete_token_record(req: Any, resp: Any) -> None:  # the last record of page 1 goes away
        if "PageToken" not in req.query:
            emu.remove_number(AC, seeded[2]["phone_number"])

    emu.after_request.append(delete_token_record)
    numbers = [r.number for r in h.source(page_size=3).list_numbers()]
    assert numbers == [n["phone_number"] for n in seeded]


# -- auth and client errors -----------------------------------------------------------------------
def test_wrong_token_is_an_auth_error_without_the_secret(emu: TwilioEmulator, h: Harness) -> None:
    seed(emu, 1)
    src = h.source(cfg={"auth_token": "wrong-s3cret-token"})
    with pytest.raises(AuthError) as info:
        list(src.list_numbers())
    err = info.value
    assert str(err) == "Twilio rejected the credentials for source tw-main"
    assert (err.status, err.api, err.operation) == (401, "tw-main", "list_numbers")
    assert "wrong-s3cret-token" not in repr(err) + str(err.__cause__) + repr(err.__cause__)
    assert h.calls == [("twilio", "401")]  # never retried


def test_api_key_of_another_account_is_rejected(emu: TwilioEmulator, h: Harness) -> None:
    src = h.source(cfg={"account_sid": AC2, "auth_token": None, "api_key": SK, "api_secret": SK_SECRET})
    with pytest.raises(AuthError, match=r"^Twilio rejected the credentials for source tw-main$"):
        list(src.list_numbers())


def test_unknown_path_is_not_found(h: Harness, server: EmulatorServer) -> None:
    src = h.source(cfg={"base_url": server.url + "/nowhere"})
    with pytest.raises(NotFoundError) as info:
        list(src.list_numbers())
    assert info.value.status == 404
    assert "code 20404" in str(info.value)


def test_bad_request_is_permanent_and_html_4xx_is_protocol(emu: TwilioEmulator, h: Harness) -> None:
    emu.faults.add("status", status=400)
    with pytest.raises(PermanentError) as info:
        list(h.source().list_numbers())
    assert type(info.value) is PermanentError
    assert "code 20001" in str(info.value)
    emu.faults.add("html", status=409)
    with pytest.raises(ProtocolError, match="not JSON"):
        list(h.source().list_numbers())


# -- retries --------------------------------------------------------------------------------------
@pytest.mark.parametrize(("retry_after", "slept"), [("7", 7.0), ("3600", 60.0)])
def test_429_honours_retry_after_capped(
    emu: TwilioEmulator, h: Harness, retry_after: str, slept: float
) -> None:
    seed(emu, 2)
    emu.faults.add("status", status=429, retry_after=retry_after)
    assert len(list(h.source().list_numbers())) == 2
    assert h.sleeps == [slept]
    assert h.calls == [("twilio", "429"), ("twilio", "200")]


@pytest.mark.parametrize(
    "fault",
    [
        {"kind": "status", "status": 500},
        {"kind": "status", "status": 503},
        {"kind": "html", "status": 502},  # a proxy's error page
    ],
    ids=["500", "503", "html-502"],
)
def test_mid_listing_failure_is_retried_at_the_failed_page(
    emu: TwilioEmulator, h: Harness, fault: dict[str, Any]
) -> None:
    seeded = seed(emu, 7)
    emu.faults.add(path="IncomingPhoneNumbers", after=1, **fault)  # page 1 succeeds, page 2 fails once
    records = list(h.source(page_size=3).list_numbers())
    assert [r.number for r in records] == [n["phone_number"] for n in seeded]  # no duplicates, no misses
    tokens = [q.get("PageToken", [""])[0] for q in queries(emu)]
    page2 = f"PA{seeded[2]['sid']}"
    assert tokens == ["", page2, page2, f"PA{seeded[5]['sid']}"]
    assert len(h.sleeps) == 1
    assert h.calls[1][1] == str(fault["status"])


@pytest.mark.parametrize("fault", [{"kind": "reset"}, {"kind": "hang", "delay": 3.0}], ids=["reset", "timeout"])
def test_mid_listing_reset_or_timeout_is_retried_at_the_failed_page(
    isolated: tuple[TwilioEmulator, Harness], fault: dict[str, Any]
) -> None:
    emu, h = isolated
    seeded = seed(emu, 7)
    emu.faults.add(path="IncomingPhoneNumbers", after=1, **fault)  # a hang lasts far beyond the 0.3 s timeout
    records = list(h.source(page_size=3, cfg={"timeout": 0.3}).list_numbers())
    assert [r.number for r in records] == [n["phone_number"] for n in seeded]
    assert h.calls == [("twilio", "200"), ("twilio", "error"), ("twilio", "200"), ("twilio", "200")]
    answered = [q.get("PageToken", [""])[0] for _m, _p, q, status in emu.requests if status == 200]
    assert answered == ["", f"PA{seeded[2]['sid']}", f"PA{seeded[5]['sid']}"]


def test_persistent_5xx_gives_up_with_a_transient_error(emu: TwilioEmulator, h: Harness) -> None:
    emu.faults.add("status", status=500, times=None)
    with pytest.raises(TransientError) as info:
        list(h.source(max_attempts=4).list_numbers())
    err = info.value
    assert err.status == 500
    assert "gave up after 4 attempts" in str(err)
    assert "code 20500" in str(err)
    assert TOKEN not in str(err)
    assert len(h.calls) == 4
    assert len(h.sleeps) == 3
    for n, delay in enumerate(h.sleeps):  # exponential with jitter in [0.5, 1] x base * 2^n
        assert 0.05 * 2**n <= delay <= 0.1 * 2**n


def test_persistent_429_carries_retry_after(emu: TwilioEmulator, h: Harness) -> None:
    emu.faults.add("status", status=429, retry_after="5", times=None)
    with pytest.raises(TransientError) as info:
        list(h.source(max_attempts=2).list_numbers())
    assert (info.value.status, info.value.retry_after) == (429, 5.0)


def test_timeout_is_applied_to_every_request(isolated: tuple[TwilioEmulator, Harness]) -> None:
    emu, h = isolated
    emu.faults.add("hang", delay=2.0)
    started = time.monotonic()
    with pytest.raises(TransientError, match="timed out"):
        list(h.source(max_attempts=1, cfg={"timeout": 0.2}).list_numbers())
    assert time.monotonic() - started < 1.5
    assert h.calls == [("twilio", "error")]


# -- unreadable answers and broken paging ---------------------------------------------------------
@pytest.mark.parametrize("kind", ["malformed_json", "truncated_json"])
def test_garbage_json_is_a_protocol_error_and_not_retried(emu: TwilioEmulator, h: Harness, kind: str) -> None:
    seed(emu, 5)
    emu.faults.add(kind, path="IncomingPhoneNumbers", after=1)
    with pytest.raises(ProtocolError):
        list(h.source(page_size=2).list_numbers())
    assert len(queries(emu)) == 2


@pytest.mark.parametrize("paging_fault", ["html", "missing_key"])
def test_unreadable_200_pages_are_protocol_errors(emu: TwilioEmulator, h: Harness, paging_fault: str) -> None:
    seed(emu, 2)
    emu.paging_fault = paging_fault
    with pytest.raises(ProtocolError):
        list(h.source().list_numbers())
    assert len(queries(emu)) == 1


@pytest.mark.parametrize("bad", [{"phone_number": 14155550000}, {"sid": None}, {"voice_url": 42}])
def test_malformed_records_are_protocol_errors(emu: TwilioEmulator, h: Harness, bad: dict[str, Any]) -> None:
    record = emu.add_number(AC, "+14155550000")
    emu.update_number(AC, record["sid"], **bad)
    with pytest.raises(ProtocolError):
        list(h.source().list_numbers())


@pytest.mark.parametrize("paging_fault", ["loop", "repeat"])
def test_paging_loops_are_detected_and_terminate(emu: TwilioEmulator, h: Harness, paging_fault: str) -> None:
    seed(emu, 7)
    emu.paging_fault = paging_fault
    with pytest.raises(ProtocolError, match="paging loop"):
        list(itertools.islice(h.source(page_size=3).list_numbers(), 1000))  # islice: fail, never hang
    assert len(queries(emu)) <= 2


def test_page_count_guard_stops_a_runaway_listing(emu: TwilioEmulator, h: Harness) -> None:
    seed(emu, 7)
    with pytest.raises(ProtocolError, match="more than 2 pages"):
        list(h.source(page_size=3, max_pages=2).list_numbers())


# -- base_url, TLS and the CA bundle --------------------------------------------------------------
def test_regional_twilio_urls_are_rebased_too(emu: TwilioEmulator, server: EmulatorServer) -> None:
    seed(emu, 1)
    seen: list[str] = []
    client = _TwilioHttp(base_url=server.url, timeout=5, verify=None, on_request=lambda a, s: seen.append(s))
    try:
        resp = client.request("GET", f"https://api.dublin.ie1.twilio.com{LIST_PATH}", auth=(AC, TOKEN))
    finally:
        client.close()
    assert resp.status_code == 200
    assert json.loads(resp.text)["incoming_phone_numbers"][0]["phone_number"] == "+14155550000"
    assert seen == ["200"]


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> tuple[ssl.SSLContext, Path]:
    ca = trustme.CA()
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(ctx)
    ca_path = tmp_path_factory.mktemp("ca") / "corp-ca.pem"
    ca.cert_pem.write_to_path(str(ca_path))
    return ctx, ca_path


def test_ca_bundle_is_added_to_the_trust_store(emu: TwilioEmulator, tls: tuple[ssl.SSLContext, Path]) -> None:
    ctx, ca_path = tls
    seed(emu, 2)
    with EmulatorServer(emu, ssl_context=ctx) as srv:
        h = Harness(srv)
        try:
            src = h.source(cfg={"ca_bundle": str(ca_path)})
            bundle = src._ca_file
            assert bundle is not None
            assert [r.number for r in src.list_numbers()] == ["+14155550000", "+14155550001"]
            # verified against the CA alone, which signed it: the whole bundle was never needed
            session = src._http.session
            assert session is not None
            (pool,) = session.get_adapter(srv.url).poolmanager.pools._container.values()
            assert pool.conn_kw["ssl_context"] is verify_context(ca_path)
            with pytest.raises(PermanentError, match="not trusted"):  # without it: refused, not retried
                list(h.source().list_numbers())
            assert len(h.sleeps) == 0
        finally:
            h.close()
        assert not os.path.exists(bundle)  # close() removes the temporary bundle


def test_without_ca_bundle_connections_share_one_context_of_certifi(
    emu: TwilioEmulator, tls: tuple[ssl.SSLContext, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """requests, told ``verify=True``, names certifi's file on every new connection and urllib3
    reads it again (13-45 ms of CPU each): the source names it once, for one shared context."""
    for name in ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE"):
        monkeypatch.delenv(name, raising=False)
    seed(emu, 2)
    with EmulatorServer(emu, ssl_context=tls[0]) as srv:
        h = Harness(srv)
        try:
            src = h.source()
            with pytest.raises(PermanentError, match="not trusted"):  # certifi does not know the sandbox
                list(src.list_numbers())
            session = src._http.session
            assert session is not None
            (pool,) = session.get_adapter(srv.url).poolmanager.pools._container.values()
            assert pool.conn_kw["ssl_context"] is verify_context(requests.utils.DEFAULT_CA_BUNDLE_PATH)
            assert pool.ca_certs is None
        finally:
            h.close()


def test_combined_bundle_keeps_the_existing_trust_store(
    tmp_path: Path, tls: tuple[ssl.SSLContext, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    _ctx, ca_path = tls
    existing = tmp_path / "system.pem"
    existing.write_text("-----BEGIN CERTIFICATE-----\nSYSTEM\n-----END CERTIFICATE-----\n")
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(existing))
    path = combined_ca_bundle(ca_path)
    try:
        text = Path(path).read_text()
    finally:
        os.unlink(path)
    assert text.startswith(existing.read_text())
    assert ca_path.read_text().strip() in text


def test_plain_http_reads_no_ca_bundle(
    tmp_path: Path, emu: TwilioEmulator, h: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    # http needs no trust store. Reading one anyway took OpenSSL's locks in a forked listing,
    # which hung when the parent had forked it while another thread held them.
    garbage = tmp_path / "unreadable.pem"
    garbage.write_text("-----BEGIN CERTIFICATE-----\nnot base64 at all\n-----END CERTIFICATE-----\n")
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(garbage))
    seed(emu, 2)
    assert [r.number for r in h.source().list_numbers()] == ["+14155550000", "+14155550001"]


def test_combined_bundle_falls_back_to_certifi_and_rejects_a_missing_file(
    tmp_path: Path, tls: tuple[ssl.SSLContext, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("REQUESTS_CA_BUNDLE", raising=False)
    monkeypatch.delenv("CURL_CA_BUNDLE", raising=False)
    path = combined_ca_bundle(tls[1])
    try:
        assert Path(path).read_bytes().startswith(Path(certifi.where()).read_bytes().rstrip(b"\n"))
    finally:
        os.unlink(path)
    with pytest.raises(ConfigError, match="ca_bundle"):
        combined_ca_bundle(tmp_path / "missing.pem")


# -- the translation boundary ---------------------------------------------------------------------
def _exception_classes() -> list[type[BaseException]]:
    modules = ["twilio.base.exceptions", "twilio.base.obsolete", "twilio.jwt", "twilio.twiml",
               "requests.exceptions", "urllib3.exceptions", "http.client"]
    found: list[type[BaseException]] = []
    for name in modules:
        module = importlib.import_module(name)
        for _attr, cls in inspect.getmembers(module, inspect.isclass):
            if (issubclass(cls, Exception) and not issubclass(cls, Warning)
                    and cls.__module__ == module.__name__):
                found.append(cls)
    return found


def test_every_sdk_exception_is_mapped(h: Harness) -> None:
    src = h.source()
    classes = _exception_classes()
    assert TwilioRestException in classes
    assert requests.exceptions.ReadTimeout in classes
    assert urllib3.exceptions.ProtocolError in classes
    assert http.client.IncompleteRead in classes
    for cls in classes:
        exc = cls.__new__(cls)
        exc.args = ("boom",)
        with pytest.raises(AdapterError) as info, src.translate_errors():
            raise exc
        assert info.value.__cause__ is exc, cls


@pytest.mark.parametrize(
    ("status", "expected"),
    [(401, AuthError), (403, AuthError), (404, NotFoundError), (408, TransientError), (429, TransientError),
     (500, TransientError), (502, TransientError), (400, PermanentError), (409, PermanentError)],
)
def test_list_path_exception_mapping_by_status(h: Harness, status: int, expected: type[AdapterError]) -> None:
    src = h.source()
    body = json.dumps({"code": 20000 + status, "message": "m", "status": status})
    with pytest.raises(expected) as info, src.translate_errors():
        raise TwilioException("Unable to fetch page", TwilioResponse(status, body, {"Retry-After": "3"}))
    assert type(info.value) is expected
    assert info.value.status == status
    with pytest.raises(expected), src.translate_errors():
        raise TwilioRestException(status, "https://api.twilio.com/x", msg="m", code=20000 + status)


# -- import body and ownership --------------------------------------------------------------------
def test_import_body_and_owner_with_auth_token(h: Harness) -> None:
    src = h.source(cfg={"import": {"sms_enabled": True}})
    assert src.owner() == VapiOwner("twilio", "twilioAccountSid", AC)
    assert src.import_body("+14155550100") == {
        "provider": "twilio", "number": "+14155550100", "twilioAccountSid": AC, "twilioAuthToken": TOKEN,
        "smsEnabled": True,
    }
    assert TOKEN not in repr(src)


def test_import_body_with_api_key(h: Harness) -> None:
    src = h.source(cfg={"auth_token": None, "api_key": SK, "api_secret": SK_SECRET})
    assert src.import_body("+14155550100") == {
        "provider": "twilio", "number": "+14155550100", "twilioAccountSid": AC, "twilioApiKey": SK,
        "twilioApiSecret": SK_SECRET, "smsEnabled": False,
    }


# -- the emulation on its own ---------------------------------------------------------------------
def _get(server: EmulatorServer, path: str, user: str = AC, password: str = TOKEN) -> tuple[int, Any]:
    auth = base64.b64encode(f"{user}:{password}".encode()).decode()
    resp = requests.get(server.url + path, headers={"Authorization": f"Basic {auth}"}, timeout=5)
    return resp.status_code, resp.json()


def test_emulator_401_body_is_twilios(server: EmulatorServer) -> None:
    status, body = _get(server, LIST_PATH, password="nope")
    assert (status, body) == (401, {"code": 20003, "message": "Authenticate",
                                    "more_info": "https://www.twilio.com/docs/errors/20003", "status": 401})


def test_emulator_envelope_cap_and_previous_page(emu: TwilioEmulator, server: EmulatorServer) -> None:
    seeded = seed(emu, 5)
    status, body = _get(server, LIST_PATH + "?PageSize=5000")
    assert status == 200
    assert body["page_size"] == 1000
    assert {k for k in body if k != "incoming_phone_numbers"} == {
        "end", "first_page_uri", "next_page_uri", "page", "page_size", "previous_page_uri", "start", "uri"}
    status, body = _get(server, LIST_PATH + f"?PageSize=2&Page=1&PageToken=PA{seeded[1]['sid']}")
    assert [n["sid"] for n in body["incoming_phone_numbers"]] == [seeded[2]["sid"], seeded[3]["sid"]]
    assert (body["start"], body["end"], body["page"]) == (2, 3, 1)
    assert body["next_page_uri"].endswith(f"PageSize=2&Page=2&PageToken=PA{seeded[3]['sid']}")
    status, prev = _get(server, body["previous_page_uri"])
    assert [n["sid"] for n in prev["incoming_phone_numbers"]] == [seeded[0]["sid"], seeded[1]["sid"]]
    status, filtered = _get(server, LIST_PATH + "?PhoneNumber=555000*")
    assert [n["phone_number"] for n in filtered["incoming_phone_numbers"]] == [
        "+14155550000", "+14155550001", "+14155550002", "+14155550003", "+14155550004"]


def test_emulator_pages_are_plain_json_and_follow_updates(emu: TwilioEmulator, server: EmulatorServer) -> None:
    seeded = seed(emu, 3)
    auth = base64.b64encode(f"{AC}:{TOKEN}".encode()).decode()
    resp = requests.get(server.url + LIST_PATH, headers={"Authorization": f"Basic {auth}"}, timeout=5)
    body = resp.json()
    assert resp.content == json.dumps(body).encode()  # byte for byte what json.dumps would send
    assert [n["sid"] for n in body["incoming_phone_numbers"]] == [n["sid"] for n in seeded]
    emu.update_number(AC, seeded[1]["sid"], voice_url="https://elsewhere.example/voice")  # cached JSON goes
    emu.remove_number(AC, seeded[0]["sid"])
    _status, again = _get(server, LIST_PATH)
    assert [n["voice_url"] for n in again["incoming_phone_numbers"]] == ["https://elsewhere.example/voice",
                                                                         VAPI_URL]


def test_emulator_state_holds_no_secret_and_scales(emu: TwilioEmulator) -> None:
    for i in range(10_000):
        emu.add_number(AC, f"+1212{i:07d}")
    assert emu.remove_number(AC, "+12120000005") is True
    assert emu.remove_number(AC, "+12120000005") is False
    assert len(emu.numbers(AC)) == 9_999
    state = json.dumps(emu.dump_state())
    assert TOKEN not in state
    assert SK_SECRET not in state

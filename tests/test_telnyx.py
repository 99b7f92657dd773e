"""The Telnyx source against the Telnyx emulation: the real SDK, real sockets, injected faults.

These tests pin what the engine relies on: every owned number arrives exactly once, normalised;
failures surface as the right ``numsync.errors`` class without secrets; and no misbehaving server
(garbage, broken paging) can make the adapter loop or silently return a partial inventory.
"""

from __future__ import annotations

import email.utils
import inspect
import logging
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import telnyx
import telnyx._exceptions
import trustme
from pydantic import SecretStr

from numsync.adapters import telnyx as adapter
from numsync.adapters.base import Source, SourceRecord, VapiOwner
from numsync.adapters.registry import build_source
from numsync.config import TelnyxSourceConfig
from numsync.errors import (
    AdapterError,
    AuthError,
    NotFoundError,
    PermanentError,
    ProtocolError,
    TransientError,
)
from numsync.sandbox.server import EmulatorServer
from numsync.sandbox.telnyx import TelnyxEmulator

KEY = "KEY-telnyx-s3cr3t-0123456789"
WRONG_KEY = "KEY-wrong-s3cr3t-9876543210"
LIST_PATH = r"^/v2/phone_numbers$"


@pytest.fixture(scope="module")
def shared() -> Iterator[tuple[TelnyxEmulator, EmulatorServer]]:
    """One served emulator for the module (starting and stopping a server costs ~0.5 s each)."""
    emulator = TelnyxEmulator(api_key=KEY)
    with EmulatorServer(emulator) as srv:
        yield emulator, srv


@pytest.fixture
def emu(shared: tuple[TelnyxEmulator, EmulatorServer]) -> TelnyxEmulator:
    shared[0].reset()
    return shared[0]


@pytest.fixture
def server(shared: tuple[TelnyxEmulator, EmulatorServer], emu: TelnyxEmulator) -> EmulatorServer:
    return shared[1]


def seed(emu: TelnyxEmulator, count: int) -> list[str]:
    numbers = [f"+1415555{i:04d}" for i in range(count)]
    for n in numbers:
        emu.add_number(n, connection_id="111", connection_name="vapi-sip")
    return numbers


def config(base_url: str | None, **kw: Any) -> TelnyxSourceConfig:
    fields: dict[str, Any] = {
        "name": "telnyx-main", "kind": "telnyx", "api_key": KEY, "vapi_credential_id": "cred-telnyx",
        "base_url": base_url, "timeout": 2.0,
    }
    fields.update(kw)
    return TelnyxSourceConfig.model_validate(fields)


class Sleeps(list[float]):
    """Records the adapter's waits instead of sleeping them (the retries stay instantaneous)."""

    def __call__(self, seconds: float) -> None:
        self.append(seconds)


def make_source(srv: EmulatorServer | None, sleeps: Sleeps | None = None, calls: list | None = None,
                *, concurrency: int = 4, page_size: int = adapter.PAGE_SIZE, **kw: Any) -> adapter.TelnyxSource:
    cfg = config(srv.url if srv else None, **kw)
    on_request = (lambda kind, status: calls.append((kind, status))) if calls is not None else None
    return adapter.TelnyxSource(cfg, on_request=on_request, max_attempts=4, backoff_base=0.001,
                                concurrency=concurrency, page_size=page_size,
                                sleep=sleeps if sleeps is not None else Sleeps())


def pages_asked(emu: TelnyxEmulator) -> list[tuple[str | None, str | None, int]]:
    return [(q.get("page[number]", [None])[-1], q.get("page[size]", [None])[-1], status)
            for _, _, q, status in emu.requests_to("GET", LIST_PATH)]


# -- paging and normalisation ----------------------------------------------------------------------
def test_lists_every_number_over_several_pages_with_the_exact_wire_requests(emu, server):
    numbers = seed(emu, 600)
    calls: list[tuple[str, str]] = []
    source = make_source(server, calls=calls)
    got = [r.e164 for r in source.list_numbers()]
    source.close()
    assert got == numbers[::-1]  # Telnyx's default order: created_at descending
    assert pages_asked(emu) == [("1", "250", 200), ("2", "250", 200), ("3", "250", 200)]
    assert calls == [("telnyx", "200")] * 3


def test_records_are_normalised_and_routing_judged_against_routes_to_vapi(emu, server):
    emu.add_number("+14155550100", id="1001", connection_id=111, connection_name="vapi-sip",
                   tags=["vapi", "prod"], customer_reference="cust-1")
    emu.add_number("+442071234567", id="1002", connection_id="222", status="port-pending")
    emu.add_number("+14155550102", id="1003")
    emu.add_number("+1415", id="1004", connection_id="222", connection_name="legacy-pbx")
    source = make_source(server, routes_to_vapi=["111"])
    got = {r.carrier_id: r for r in source.list_numbers()}
    assert got == {
        "1001": SourceRecord("+14155550100", "+14155550100", "1001", "active",
                             {"tags": "vapi,prod", "country": "US", "customer_reference": "cust-1"},
                             "connection 111 (vapi-sip)", False),
        "1002": SourceRecord("+442071234567", "+442071234567", "1002", "port-pending", {"country": "GB"},
                             "connection 222", True),
        "1003": SourceRecord("+14155550102", "+14155550102", "1003", "active", {"country": "US"},
                             "no connection", False),
        "1004": SourceRecord("+1415", None, "1004", "active", {"country": "US"},
                             "connection 222 (legacy-pbx)", True),
    }


def test_without_routes_to_vapi_no_number_is_routed_elsewhere(emu, server):
    emu.add_number("+14155550100", connection_id="222", connection_name="legacy-pbx")
    emu.add_number("+14155550101")
    records = list(make_source(server).list_numbers())
    assert [r.routed_elsewhere for r in records] == [False, False]
    assert records[1].routing == "connection 222 (legacy-pbx)"


def test_empty_inventory_gives_zero_records(emu, server):
    seed(emu, 3)
    emu.faults.add("empty")
    assert list(make_source(server).list_numbers()) == []
    assert pages_asked(emu) == [("1", "250", 200)]


def test_a_number_released_between_two_pages_ends_the_listing_cleanly(emu, server):
    numbers = seed(emu, 260)

    def release_one(req, resp):
        if req.arg("page[number]") == "1":
            emu.after_request.clear()
            emu.remove_number(numbers[0])

    emu.after_request.append(release_one)
    # Offset paging cannot tell a harmless release (on a page not yet served) from one that hides a
    # number (on a page already served): a moving total fails the listing instead of guessing.
    with pytest.raises(ProtocolError, match="changed while it was listed"):
        list(make_source(server, concurrency=1).list_numbers())
    assert len(pages_asked(emu)) == 2  # nothing is asked twice


# -- errors ----------------------------------------------------------------------------------------
def test_wrong_key_is_an_auth_error_with_the_exact_message_and_no_secret(emu, server):
    source = make_source(server, api_key=WRONG_KEY)
    with pytest.raises(AuthError) as info:
        list(source.list_numbers())
    err = info.value
    assert str(err) == "Telnyx rejected the credentials for source telnyx-main"
    assert (err.api, err.operation, err.status) == ("telnyx-main", "list_numbers", 401)
    assert isinstance(err.__cause__, telnyx.AuthenticationError)
    for text in (str(err), repr(err), repr(err.args)):
        assert WRONG_KEY not in text
        assert KEY not in text
    assert pages_asked(emu) == [("1", "250", 401)]  # never retried


def test_forbidden_is_an_auth_error_too(emu, server):
    emu.faults.add("status", status=403)
    with pytest.raises(AuthError, match=r"^Telnyx rejected the credentials for source telnyx-main$"):
        list(make_source(server).list_numbers())


def test_429_waits_for_retry_after_then_completes(emu, server):
    numbers = seed(emu, 3)
    emu.faults.add("status", status=429, retry_after="7")
    sleeps = Sleeps()
    calls: list[tuple[str, str]] = []
    got = [r.e164 for r in make_source(server, sleeps, calls).list_numbers()]
    assert got == numbers[::-1]
    assert sleeps == [7.0]
    assert calls == [("telnyx", "429"), ("telnyx", "200")]


def test_a_redirect_is_reported_not_followed(emu, server):
    # One host per source, as numsync's other clients (the SDK's own httpx client follows them):
    # the page the Location names would have answered.
    seed(emu, 3)
    emu.faults.add("status", status=302, path=LIST_PATH, location=f"{server.url}/v2/phone_numbers?page[number]=1")
    with pytest.raises(PermanentError, match=r"^Telnyx answered 302 for source telnyx-main"):
        list(make_source(server).list_numbers())
    assert pages_asked(emu) == [("1", "250", 302)]


def test_retry_after_is_capped_at_60_seconds(emu, server):
    seed(emu, 1)
    emu.faults.add("status", status=429, retry_after="3600")
    sleeps = Sleeps()
    assert len(list(make_source(server, sleeps).list_numbers())) == 1
    assert sleeps == [60.0]


@pytest.mark.parametrize(("kind", "extra", "seen"), [
    ("status", {"status": 500}, 500),
    ("status", {"status": 503}, 503),
    ("reset", {}, 0),
    ("html", {"status": 502}, 502),
])
def test_transient_failures_are_retried_and_the_listing_completes(emu, server, kind, extra, seen):
    numbers = seed(emu, 5)
    emu.faults.add(kind, path=LIST_PATH, **extra)
    calls: list[tuple[str, str]] = []
    sleeps = Sleeps()
    got = [r.e164 for r in make_source(server, sleeps, calls).list_numbers()]
    assert got == numbers[::-1]
    assert calls == [("telnyx", str(seen) if seen else "error"), ("telnyx", "200")]
    assert pages_asked(emu) == [("1", "250", seen), ("1", "250", 200)]
    assert len(sleeps) == 1
    assert 0 < sleeps[0] <= 0.001


def test_a_page_that_times_out_is_retried_within_cfg_timeout():
    emulator = TelnyxEmulator(api_key=KEY)  # its own server: the hung handler outlives the test
    numbers = seed(emulator, 2)
    emulator.faults.add("hang", path=LIST_PATH, delay=3.0)
    calls: list[tuple[str, str]] = []
    with EmulatorServer(emulator) as srv:
        started = time.monotonic()
        got = [r.e164 for r in make_source(srv, None, calls, timeout=0.2).list_numbers()]
        elapsed = time.monotonic() - started
    assert got == numbers[::-1]
    assert calls == [("telnyx", "error"), ("telnyx", "200")]
    assert elapsed < 2.0  # the first attempt gave up after cfg.timeout, long before the server's 3 s


def test_a_page_that_fails_mid_listing_is_retried_alone(emu, server):
    numbers = seed(emu, 600)
    emu.faults.add("status", status=500, path=LIST_PATH, after=1, times=2)
    got = [r.e164 for r in make_source(server, concurrency=1).list_numbers()]
    assert got == numbers[::-1]  # complete, no duplicates
    assert [(p, s) for p, _, s in pages_asked(emu)] == [("1", 200), ("2", 500), ("2", 500), ("2", 200),
                                                        ("3", 200)]


def test_pages_fetched_together_are_retried_alone_and_yielded_in_order(emu, server):
    numbers = seed(emu, 1000)  # 4 pages: 2, 3 and 4 are in flight together
    emu.faults.add("status", status=500, path=LIST_PATH, after=1, times=2)
    got = [r.e164 for r in make_source(server).list_numbers()]
    assert got == numbers[::-1]
    asked = [(p, s) for p, _, s in pages_asked(emu)]
    assert asked[0] == ("1", 200)
    assert sorted(s for _, s in asked) == [200] * 4 + [500] * 2  # two failures, each page read once
    for page in ("2", "3", "4"):
        statuses = [s for p, s in asked if p == page]
        assert statuses[-1] == 200 and statuses.count(200) == 1, (page, statuses)


def test_a_slow_page_does_not_reorder_the_listing():
    released = threading.Event()

    others_answered: set[str] = set()

    class SlowPage2(TelnyxEmulator):
        def _list(self, req: Any) -> Any:
            if req.arg("page[number]") == "2":
                released.wait(5)  # page 2 answers only after pages 3, 4 and 5 did
            return super()._list(req)

    def answered(req: Any, _resp: Any) -> None:
        with emulator.lock:
            others_answered.add(req.arg("page[number]") or "")
            if {"3", "4", "5"} <= others_answered:
                released.set()

    emulator = SlowPage2(api_key=KEY)
    numbers = seed(emulator, 50)
    emulator.after_request.append(answered)
    with EmulatorServer(emulator) as srv:
        got = [r.e164 for r in make_source(srv, page_size=10, concurrency=4).list_numbers()]
    assert got == numbers[::-1]
    answered = [p for p, _, _ in pages_asked(emulator)]  # the log is in the order of the answers
    assert answered[0] == "1" and answered[-1] == "2" and sorted(answered) == ["1", "2", "3", "4", "5"]


def test_read_ahead_is_bounded_and_an_abandoned_listing_stops_asking(emu, server):
    seed(emu, 200)  # 20 pages of 10
    stream = make_source(server, page_size=10, concurrency=2).list_numbers()
    for _ in range(11):  # page 1, and the first number of page 2
        next(stream)
    stream.close()  # waits for the pages in flight: nothing is asked for after this
    asked = [int(p) for p, _, _ in pages_asked(emu)]
    assert sorted(asked) == list(range(1, len(asked) + 1))  # no page asked twice, none skipped
    assert len(asked) <= 2 + 2 * 2  # never more than 2 x concurrency pages ahead of the one being read


def test_concurrency_and_page_size_are_checked():
    with pytest.raises(ValueError, match="concurrency"):
        make_source(None, concurrency=0)
    with pytest.raises(ValueError, match="page_size"):
        make_source(None, page_size=251)


def test_retry_after_forms_are_read():
    future = email.utils.format_datetime(datetime.now(UTC) + timedelta(seconds=30), usegmt=True)
    assert adapter._retry_after(httpx.Headers({"retry-after-ms": "1500"})) == 1.5
    assert adapter._retry_after(httpx.Headers({"retry-after": "2"})) == 2.0
    assert 25 < (adapter._retry_after(httpx.Headers({"retry-after": future})) or 0) <= 30
    assert adapter._retry_after(httpx.Headers({"retry-after": "soon"})) is None
    assert adapter._retry_after(httpx.Headers()) is None


def test_persistent_5xx_gives_up_with_a_transient_error(emu, server):
    seed(emu, 3)
    emu.faults.add("status", status=503, times=None)
    with pytest.raises(TransientError) as info:
        list(make_source(server).list_numbers())
    assert info.value.status == 503
    assert str(info.value).startswith("Telnyx answered 503 for source telnyx-main")
    assert KEY not in str(info.value)
    assert len(pages_asked(emu)) == 4  # max_attempts


def test_retries_log_no_secret(emu, server, caplog):
    seed(emu, 1)
    emu.faults.add("status", status=429, retry_after="1")
    with caplog.at_level(logging.DEBUG):
        list(make_source(server).list_numbers())
    assert "retry" in caplog.text
    assert KEY not in caplog.text


@pytest.mark.parametrize("kind", ["malformed_json", "truncated_json"])
def test_garbage_json_is_a_protocol_error_and_not_retried(emu, server, kind):
    seed(emu, 3)
    emu.faults.add(kind, path=LIST_PATH)
    with pytest.raises(ProtocolError, match="page 1 is not JSON"):
        list(make_source(server).list_numbers())
    assert len(pages_asked(emu)) == 1


def test_json_labelled_text_plain_is_still_read(emu, server):
    seed(emu, 2)
    emu.faults.add("wrong_content_type", path=LIST_PATH)
    assert len(list(make_source(server).list_numbers())) == 2


@pytest.mark.parametrize(("fault", "message", "requests"), [
    ("no_meta", "page 1 has no paging 'meta'", {1}),
    # page 1 promised 3 pages, so pages 2 and 3 are asked for together; page 2 is read first
    ("stuck", "asked for page 2, got page 1", {2, 3}),
    ("endless", "page 4 repeats the previous page", {4}),  # each page promises just one more
    ("html", r"page 1 is not JSON \(text/html\)", {1}),
])
def test_broken_paging_is_a_protocol_error_and_terminates(emu, server, fault, message, requests):
    seed(emu, 600)
    emu.paging_fault = fault
    with pytest.raises(ProtocolError, match=message):
        list(make_source(server).list_numbers())
    assert len(pages_asked(emu)) in requests


def test_more_numbers_than_total_results_is_a_protocol_error(emu, server):
    seed(emu, 260)
    emu.paging_fault = "endless"

    def grow_after_page_2(req, resp):  # with "endless", page 3 then repeats a page one record longer
        if req.arg("page[number]") == "2":
            emu.after_request.clear()
            emu.add_number("+14155559999")

    emu.after_request.append(grow_after_page_2)
    with pytest.raises(ProtocolError, match="total_results"):
        list(make_source(server).list_numbers())


def test_the_emulation_refuses_pages_larger_than_250_like_telnyx(emu, server):
    resp = httpx.get(f"{server.url}/v2/phone_numbers", params={"page[size]": "251"},
                     headers={"Authorization": f"Bearer {KEY}"})
    assert resp.status_code == 400
    assert resp.json()["errors"][0]["code"] == "10015"
    client = telnyx.Telnyx(api_key=KEY, base_url=f"{server.url}/v2", max_retries=0)
    with pytest.raises(telnyx.BadRequestError):
        client.phone_numbers.list(page_size=1000)
    client.close()


def test_the_emulation_answers_401_with_telnyx_error_body(emu, server):
    resp = httpx.get(f"{server.url}/v2/phone_numbers", headers={"Authorization": "Bearer nope"})
    assert resp.status_code == 401
    assert resp.json()["errors"][0] | {"meta": None} == {
        "code": "10009", "title": "Authentication failed",
        "detail": "Could not understand the provided credentials.", "meta": None,
    }


def _instance(cls: type[Exception]) -> Exception:
    """One instance of an SDK exception class, built from its constructor's signature."""
    req = httpx.Request("GET", "https://api.telnyx.com/v2/phone_numbers")
    if issubclass(cls, telnyx.APIStatusError):
        status = getattr(cls, "status_code", None)
        status = status if isinstance(status, int) else (500 if cls is telnyx.InternalServerError else 418)
        body = {"errors": [{"code": "1", "title": "t", "detail": "d"}]}
        resp = httpx.Response(status, request=req, json=body, headers={"retry-after": "2"})
        return cls("boom", response=resp, body=body)
    if issubclass(cls, telnyx.APIResponseValidationError):
        return cls(httpx.Response(200, request=req), None)
    if issubclass(cls, telnyx.APIConnectionError):
        return cls(request=req)
    if issubclass(cls, telnyx.APIError):
        return cls("boom", req, body=None)
    try:
        params = inspect.signature(cls).parameters
    except ValueError:  # Exception's own __init__: no signature to read
        return cls("boom")
    kwargs = {n: [] for n, p in params.items() if p.kind is p.KEYWORD_ONLY and p.default is p.empty}
    return cls("boom", **kwargs)


def _sdk_exception_classes() -> list[type[Exception]]:
    found: dict[str, type[Exception]] = {}
    for module in (telnyx._exceptions, telnyx):
        for obj in list(vars(module).values()):
            if isinstance(obj, type) and issubclass(obj, Exception) and obj.__module__.startswith("telnyx"):
                found[obj.__qualname__] = obj
    return list(found.values())


def test_every_sdk_exception_is_mapped_into_the_numsync_tree():
    classes = _sdk_exception_classes()
    assert len(classes) >= 17
    source = adapter.TelnyxSource(config(None))
    for cls in classes:
        exc = _instance(cls)
        with pytest.raises(AdapterError) as info, source._translate("list_numbers"):
            raise exc
        mapped = info.value
        assert mapped.__cause__ is exc, cls
        status = getattr(exc, "status_code", None) if isinstance(exc, telnyx.APIStatusError) else None
        if status in (401, 403):
            expected: type[AdapterError] = AuthError
        elif status == 404:
            expected = NotFoundError
        elif status in (408, 409, 429) or (status or 0) >= 500 or isinstance(exc, telnyx.APIConnectionError):
            expected = TransientError
        elif isinstance(exc, telnyx.APIResponseValidationError):
            expected = ProtocolError
        else:
            expected = PermanentError
        assert isinstance(mapped, expected), (cls, type(mapped))
        if status == 429:
            assert mapped.retry_after == 2.0
    source.close()


# -- configuration: base_url, ca_bundle, timeout, factory ------------------------------------------
def test_base_url_defaults_to_telnyx_and_keeps_the_v2_prefix():
    assert str(adapter.TelnyxSource(config(None))._client.base_url) == "https://api.telnyx.com/v2/"
    assert str(adapter.TelnyxSource(config("https://proxy.example:8443/v2"))._client.base_url) == (
        "https://proxy.example:8443/v2/")


@pytest.fixture(scope="module")
def tls(tmp_path_factory) -> tuple[ssl.SSLContext, Path]:
    ca = trustme.CA()
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server_ctx)
    ca_file = tmp_path_factory.mktemp("ca") / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    return server_ctx, ca_file


def test_ca_bundle_is_added_to_the_trust_store(emu, tls):
    server_ctx, ca_file = tls
    numbers = seed(emu, 2)
    with EmulatorServer(emu, ssl_context=server_ctx) as srv:
        assert srv.url.startswith("https://")
        got = [r.e164 for r in make_source(srv, ca_bundle=ca_file).list_numbers()]
        assert got == numbers[::-1]
        with pytest.raises(PermanentError, match="TLS certificate is not trusted") as info:
            list(make_source(srv).list_numbers())
        assert not isinstance(info.value, TransientError)  # a certificate does not heal on retry
    ctx = adapter.ssl_context_with_extra_ca(ca_file)
    subjects = [dict(x[0] for x in c["subject"]).get("organizationName") or "" for c in ctx.get_ca_certs()]
    assert any(s.startswith("trustme") for s in subjects)
    assert len(subjects) > 1


_LISTING_IN_A_FRESH_PROCESS = """
import sys
from numsync.adapters.telnyx import TelnyxSource
from numsync.config import TelnyxSourceConfig
from numsync.sandbox.server import EmulatorServer
from numsync.sandbox.telnyx import TelnyxEmulator
emulator = TelnyxEmulator(api_key="k")
emulator.add_number("+14155550100")
with EmulatorServer(emulator) as srv:
    cfg = TelnyxSourceConfig(kind="telnyx", name="t", api_key="k", vapi_credential_id="c", base_url=srv.url)
    source = TelnyxSource(cfg)
    print(len(list(source.list_numbers())), sorted(m for m in sys.modules if m.startswith("telnyx.resources")))
    source.close()
"""


def test_listing_does_not_import_every_sdk_resource():
    # client.phone_numbers would import all of telnyx.resources: ~0.5 s of CPU under the plan's GIL
    done = subprocess.run([sys.executable, "-c", _LISTING_IN_A_FRESH_PROCESS], capture_output=True, text=True,
                          timeout=60, check=True)
    assert done.stdout.split() == ["1", "[]"]


def test_build_gives_a_source_the_registry_can_serve(emu, server):
    seed(emu, 1)
    calls: list[tuple[str, str]] = []
    cfg = config(server.url, api_key=SecretStr(KEY), routes_to_vapi=["111"])
    source = build_source(cfg, on_request=lambda k, s: calls.append((k, s)))
    assert isinstance(source, adapter.TelnyxSource)
    assert isinstance(source, Source)
    assert (source.name, source.kind) == ("telnyx-main", "telnyx")
    assert source.owner() == VapiOwner("telnyx", "credentialId", "cred-telnyx")
    assert source.import_body("+14155550100") == {
        "provider": "telnyx", "number": "+14155550100", "credentialId": "cred-telnyx"}
    assert len(list(source.list_numbers())) == 1
    assert calls == [("telnyx", "200")]
    source.close()


# -- the emulation's Python API --------------------------------------------------------------------
def test_emulation_state_api(emu):
    rec = emu.add_number("+14155550100", connection_id=5, tags=["a"])
    assert rec["id"].isdigit()
    assert rec["connection_id"] == "5"
    assert rec["country_iso_alpha2"] == "US"
    assert {"created_at", "updated_at", "purchased_at", "record_type"} <= set(rec)
    with pytest.raises(ValueError, match="already"):
        emu.add_number("+14155550100")
    assert emu.update_number("+14155550100", connection_id=None)["connection_id"] is None
    with pytest.raises(ValueError, match="cannot set id"):
        emu.update_number("+14155550100", id="9")
    rec["tags"].append("mutated")
    assert emu.numbers()[0]["tags"] == ["a"]
    assert emu.remove_number("+14155550100")["phone_number"] == "+14155550100"
    assert emu.numbers() == []
    assert emu.dump_state() == {"numbers": [], "paging_fault": None}
    with pytest.raises(KeyError):
        emu.remove_number("+14155550100")


# -- lookups of single numbers (the engine's recheck of numbers that look orphaned) ------------
def test_still_owned_asks_for_each_number_by_its_digits_and_matches_it_exactly(emu, server):
    seed(emu, 3)  # +14155550000 .. +14155550002
    emu.add_number("+141555500001", connection_id="111")  # holds +14155550000's digits: not that number
    calls: list[tuple[str, str]] = []
    source = make_source(server, calls=calls)
    asked = ["+14155550001", "+14155559999", "+1415555000"]
    assert source.still_owned(asked) == {"+14155550001"}
    source.close()
    # digits only (Telnyx returns nothing for a filter with other characters), one request each
    assert [q.get("filter[phone_number]") for _, _, q, _ in emu.requests_to("GET", LIST_PATH)] == [
        ["14155550001"], ["14155559999"], ["1415555000"]]
    assert calls == [("telnyx", "200")] * 3


def test_a_lookup_that_keeps_failing_raises_the_adapters_error(emu, server):
    seed(emu, 1)
    emu.faults.add("status", path=LIST_PATH, status=503, times=10)
    source = make_source(server)
    with pytest.raises(TransientError):
        source.still_owned(["+14155550000"])
    source.close()

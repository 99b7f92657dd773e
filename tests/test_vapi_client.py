"""The Vapi client against the Vapi emulation on a real socket.

The listing test is the one the issue asks for: records are deleted from a page already served,
or created, while the client pages; every record that existed throughout must come back exactly
once, in both sort orders. The same mutations are shown to break a naive offset loop, so the test
has teeth. The rest pins the client's promises: retries only where safe, creates never retried
(a lost answer is InDoubtError), secrets never returned, errors typed, limits honoured.
"""

from __future__ import annotations

import json
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import trustme

from numsync.adapters.http_util import httpx_tls_verify
from numsync.adapters.vapi import MAX_ROUNDS, VapiClient, parse_retry_after, redact_record
from numsync.config import VapiConfig
from numsync.errors import (
    AuthError,
    InDoubtError,
    NotFoundError,
    PermanentError,
    ProtocolError,
    TransientError,
)
from numsync.sandbox.server import EmulatorServer, Request, Response
from numsync.sandbox.vapi import VapiEmulator

KEY = "sandbox-vapi-key-0123456789"
T0 = datetime(2024, 1, 1, tzinfo=UTC)
TLS = ssl.create_default_context()
LIST = r"^/v2/phone-number$"


@pytest.fixture
def emulator() -> VapiEmulator:
    return VapiEmulator(api_key=KEY)


@pytest.fixture
def server(emulator: VapiEmulator) -> Iterator[EmulatorServer]:
    with EmulatorServer(emulator) as srv:
        yield srv


class Seen:
    """The on_request callback: what the client reported, per HTTP request."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []
        self._lock = threading.Lock()

    def __call__(self, api: str, status: str) -> None:
        with self._lock:
            self.calls.append((api, status))

    @property
    def statuses(self) -> list[str]:
        return [status for _, status in self.calls]


@pytest.fixture
def seen() -> Seen:
    return Seen()


@pytest.fixture
def make_client(server: EmulatorServer, seen: Seen) -> Iterator[Callable[..., VapiClient]]:
    clients: list[VapiClient] = []

    def make(**overrides: Any) -> VapiClient:
        settings: dict[str, Any] = {"api_key": KEY, "base_url": server.url, "backoff_base": 0.01,
                                    "requests_per_second": 0, "timeout": 5, **overrides}
        client = VapiClient(VapiConfig(**settings), on_request=seen)
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.close()


def seed(emulator: VapiEmulator, count: int) -> set[str]:
    return {emulator.add("telnyx", number=f"+1970{i:07d}", credentialId="cred-telnyx",
                         created_at=T0 + timedelta(seconds=i))["id"] for i in range(count)}


class Mutation:
    """An after_request hook that changes the inventory once, right after the Nth list request.

    ``delete`` removes 20 records of the page that request just served; ``create`` adds 20.
    """

    def __init__(self, emulator: VapiEmulator, kind: str, at_request: int) -> None:
        self.emulator, self.kind, self.at_request = emulator, kind, at_request
        self.count = 0
        self.fired = False
        self.deleted: set[str] = set()
        self.created: set[str] = set()
        self._lock = threading.Lock()
        emulator.after_request.append(self)

    def __call__(self, req: Request, resp: Response) -> None:
        if req.method != "GET" or req.path != "/v2/phone-number":
            return
        with self._lock:
            self.count += 1
            if self.count != self.at_request or self.fired:
                return
            self.fired = True
            if self.kind == "delete":
                served = [r["id"] for r in json.loads(resp.body)["results"]]
                for rid in served[:20]:
                    self.emulator.delete(rid)
                    self.deleted.add(rid)
            else:
                for i in range(20):
                    self.created.add(self.emulator.add("vonage", number=f"4477009{i:05d}", credentialId="c")["id"])


# -- the listing ----------------------------------------------------------------------------------
@pytest.mark.parametrize("order", ["ASC", "DESC"])
@pytest.mark.parametrize(("kind", "at_request"), [("delete", 6), ("create", 15)])
def test_listing_returns_every_record_once_while_records_come_and_go(
    emulator: VapiEmulator, make_client: Callable[..., VapiClient], order: str, kind: str, at_request: int
) -> None:
    seeded = seed(emulator, 5000)
    mutation = Mutation(emulator, kind, at_request)
    client = make_client(page_size=100, max_concurrency=4)
    progress: list[tuple[int, int]] = []

    ids = [r["id"] for r in client.iter_records(sort_order=order, progress=lambda d, t: progress.append((d, t)))]

    assert mutation.fired and len(emulator.records()) == 5000 - len(mutation.deleted) + len(mutation.created)
    assert len(mutation.deleted | mutation.created) == 20
    assert len(ids) == len(set(ids)), "a record was returned twice"
    survivors = seeded - mutation.deleted
    missing = survivors - set(ids)
    assert not missing, f"{len(missing)} records that existed throughout were not returned"
    assert set(ids) <= seeded | mutation.created
    assert progress[-1][0] == len(ids)
    if kind == "delete":  # pages served before and after the deletion disagreed, and were re-fetched
        assert client.stats.rounds >= 2 and client.stats.refetched_pages > 0
    else:  # creations fall outside the createdAt bound: nothing to re-fetch
        assert client.stats.rounds == 1 and client.stats.requests == 51


def naive_offset_listing(url: str, order: str, page_size: int) -> list[str]:
    """What a client without the createdAt bound and the consistency check would do."""
    ids: list[str] = []
    page = 1
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {KEY}"}, verify=TLS) as http:
        while True:
            params = {"page": page, "limit": page_size, "sortOrder": order}
            body = http.get("/v2/phone-number", params=params).json()
            ids += [r["id"] for r in body["results"]]
            if not body["metadata"]["hasNextPage"]:
                return ids
            page += 1


# Creations at the end of an ASC listing do not shift the pages still to come: the naive loop
# only breaks in these three cases, and the test above covers all four.
@pytest.mark.parametrize(("kind", "order"), [("delete", "ASC"), ("delete", "DESC"), ("create", "DESC")])
def test_the_same_mutations_break_a_naive_offset_loop(
    emulator: VapiEmulator, server: EmulatorServer, kind: str, order: str
) -> None:
    seeded = seed(emulator, 5000)
    mutation = Mutation(emulator, kind, 6)
    ids = naive_offset_listing(server.url, order, 100)
    assert mutation.fired
    missed = (seeded - mutation.deleted) - set(ids)
    duplicated = len(ids) - len(set(ids))
    assert missed or duplicated


def test_deletions_that_never_stop_fall_back_to_a_keyset_scan(
    emulator: VapiEmulator, make_client: Callable[..., VapiClient]
) -> None:
    seeded = seed(emulator, 300)
    # 120 records share one createdAt: the keyset scan must step through a full page of one timestamp.
    tied = {emulator.add("vonage", number=f"4477009{i:05d}", credentialId="c", created_at=T0 + timedelta(days=1))["id"]
            for i in range(120)}
    doomed = sorted(seeded)
    deleted: set[str] = set()

    def delete_one(req: Request, resp: Response) -> None:
        if req.path == "/v2/phone-number" and doomed:
            rid = doomed.pop()
            emulator.delete(rid)
            deleted.add(rid)

    emulator.after_request.append(delete_one)
    client = make_client(page_size=50, max_concurrency=3)
    ids = [r["id"] for r in client.iter_records(sort_order="DESC")]
    assert client.stats.keyset_fallbacks == 1 and client.stats.rounds == MAX_ROUNDS
    assert len(ids) == len(set(ids))
    assert (seeded | tied) - deleted <= set(ids) <= seeded | tied
    assert deleted


def test_an_empty_inventory_lists_nothing(emulator: VapiEmulator, make_client: Callable[..., VapiClient]) -> None:
    progress: list[tuple[int, int]] = []
    assert list(make_client().iter_records(progress=lambda d, t: progress.append((d, t)))) == []
    assert progress == [(0, 0)]
    seed(emulator, 3)
    emulator.faults.add("empty", path=LIST)
    assert list(make_client().iter_records()) == []


def test_transform_and_progress(emulator: VapiEmulator, make_client: Callable[..., VapiClient],
                                seen: Seen) -> None:
    seeded = seed(emulator, 250)
    progress: list[tuple[int, int]] = []
    client = make_client(page_size=100)
    numbers = list(client.iter_records(transform=lambda r: r["number"],
                                       progress=lambda d, t: progress.append((d, t))))
    assert numbers == [f"+1970{i:07d}" for i in range(250)]  # ASC by createdAt
    assert progress == [(100, 250), (200, 250), (250, 250)]
    assert len(seeded) == 250
    assert seen.calls == [("vapi", "200")] * 4 and client.stats.requests == 4 and client.stats.pages == 4


# -- retries --------------------------------------------------------------------------------------
def test_retry_after_is_honoured(emulator: VapiEmulator, make_client: Callable[..., VapiClient]) -> None:
    rid = emulator.add("vapi", sipUri="sip:a@x")["id"]
    emulator.faults.add("status", status=429, retry_after="1")
    client = make_client()
    started = time.monotonic()
    assert client.get(rid)["id"] == rid
    assert time.monotonic() - started >= 0.95
    assert len(emulator.requests_to("GET", "^/phone-number/")) >= 2 and client.stats.retries == 1


def test_retry_after_is_capped(emulator: VapiEmulator, make_client: Callable[..., VapiClient]) -> None:
    rid = emulator.add("vapi", sipUri="sip:a@x")["id"]
    later = format_datetime(datetime.now(UTC) + timedelta(hours=1), usegmt=True)
    emulator.faults.add("status", status=503, retry_after=later)
    started = time.monotonic()
    assert make_client(max_retry_after=0.2).get(rid)["id"] == rid
    assert time.monotonic() - started < 5


def test_server_errors_are_retried_then_succeed(
    emulator: VapiEmulator, make_client: Callable[..., VapiClient], seen: Seen
) -> None:
    rid = emulator.add("vapi", sipUri="sip:a@x")["id"]
    for status in (500, 502, 503):
        emulator.faults.add("status", status=status)
    emulator.faults.add("html", status=502)
    client = make_client()
    assert client.get(rid)["id"] == rid
    assert seen.statuses == ["500", "502", "503", "502", "200"] and client.stats.retries == 4


def test_connection_reset_and_timeout_are_retried(
    emulator: VapiEmulator, make_client: Callable[..., VapiClient], seen: Seen
) -> None:
    seed(emulator, 5)
    emulator.faults.add("reset", path=LIST)
    emulator.faults.add("hang", path=LIST, delay=1.0)
    client = make_client(timeout=0.3)
    assert len(list(client.iter_records())) == 5
    assert seen.statuses == ["error", "error", "200", "200"]


def test_gives_up_after_max_attempts(emulator: VapiEmulator, make_client: Callable[..., VapiClient]) -> None:
    emulator.faults.add("status", status=503, times=None)
    with pytest.raises(TransientError) as caught:
        list(make_client(max_attempts=3).iter_records())
    assert caught.value.status == 503 and "gave up after 3 attempts" in str(caught.value)
    assert len(emulator.requests_to("GET", LIST)) == 3


# -- create is never retried ----------------------------------------------------------------------
BODY = {"provider": "telnyx", "number": "+19705550100", "credentialId": "cred-telnyx"}


@pytest.mark.parametrize(("status", "error"), [(500, InDoubtError), (502, InDoubtError), (503, TransientError),
                                               (429, TransientError)])
def test_create_is_never_retried(
    emulator: VapiEmulator, make_client: Callable[..., VapiClient], status: int, error: type[Exception]
) -> None:
    emulator.faults.add("status", method="POST", status=status, retry_after="0")
    with pytest.raises(error) as caught:
        make_client().create(BODY)
    assert len(emulator.requests_to("POST", "^/phone-number$")) == 1
    assert isinstance(caught.value, InDoubtError) is (error is InDoubtError)


@pytest.mark.parametrize("kind", ["timeout_after", "reset_after"])
def test_a_lost_create_answer_is_in_doubt(
    emulator: VapiEmulator, make_client: Callable[..., VapiClient], kind: str
) -> None:
    emulator.faults.add(kind, method="POST", delay=1.0)
    with pytest.raises(InDoubtError) as caught:
        make_client(timeout=0.3).create(BODY)
    assert "may have happened" in str(caught.value)
    # It did happen, exactly once: a retried create would have made a second record.
    assert [r["number"] for r in emulator.by_number("+19705550100")] == ["+19705550100"]
    assert emulator.duplicate_creates == []


def test_a_create_that_could_not_connect_is_not_in_doubt(emulator: VapiEmulator) -> None:
    with EmulatorServer(emulator) as closed:
        url = closed.url
    client = VapiClient(VapiConfig(api_key=KEY, base_url=url, timeout=1))
    with client, pytest.raises(TransientError) as caught:
        client.create(BODY)
    assert not isinstance(caught.value, InDoubtError)


# -- errors ---------------------------------------------------------------------------------------
def test_a_wrong_key_is_an_auth_error_without_the_key(make_client: Callable[..., VapiClient]) -> None:
    wrong = "wrong-key-9876543210"
    with pytest.raises(AuthError) as caught:
        list(make_client(api_key=wrong).iter_records())
    assert str(caught.value) == "Vapi rejected the API key" and caught.value.status == 401
    assert wrong not in repr(caught.value.args) and KEY not in str(caught.value)


def test_not_found_and_refusals(emulator: VapiEmulator, make_client: Callable[..., VapiClient]) -> None:
    client = make_client()
    with pytest.raises(NotFoundError):
        client.get("00000000-0000-4000-8000-000000000000")
    with pytest.raises(PermanentError) as caught:
        client.create({**BODY, "color": "red", "name": "x" * 41})
    assert caught.value.status == 400
    assert "property color should not exist; name must be shorter than or equal to 40" in str(caught.value)
    assert len(emulator.requests_to("POST", "^/phone-number$")) == 1


@pytest.mark.parametrize(("fault", "options"), [("malformed_json", {}), ("truncated_json", {}),
                                                ("wrong_content_type", {}), ("html", {"status": 400})])
def test_unreadable_answers_are_protocol_errors(
    emulator: VapiEmulator, make_client: Callable[..., VapiClient], fault: str, options: dict[str, Any]
) -> None:
    seed(emulator, 3)
    emulator.faults.add(fault, path=LIST, **options)
    with pytest.raises(ProtocolError):
        list(make_client().iter_records())


def test_an_html_page_with_200_is_a_protocol_error() -> None:
    # A single-response edge case (a captive portal answering 200): httpx's MockTransport.
    page = httpx.Response(200, html="<html><body>Please log in</body></html>")
    transport = httpx.MockTransport(lambda request: page)
    client = VapiClient(VapiConfig(api_key=KEY, base_url="https://api.vapi.ai"), transport=transport)
    with client, pytest.raises(ProtocolError) as caught:
        client.get("00000000-0000-4000-8000-000000000000")
    assert "text/html" in str(caught.value)


@pytest.mark.parametrize("body", [{"results": []}, {"metadata": {"totalItems": 1}}, [], {"results": [],
                                  "metadata": {"totalItems": "many"}}])
def test_a_page_without_results_or_metadata_is_a_protocol_error(body: Any) -> None:
    transport = httpx.MockTransport(lambda request: httpx.Response(200, json=body))
    client = VapiClient(VapiConfig(api_key=KEY, base_url="https://api.vapi.ai"), transport=transport)
    with client, pytest.raises(ProtocolError) as caught:
        list(client.iter_records())
    assert "probe page" in str(caught.value)


def test_a_record_without_provider_is_named(emulator: VapiEmulator, make_client: Callable[..., VapiClient]) -> None:
    seed(emulator, 16)
    broken = emulator.add(None, number="+19705559999", created_at=T0 + timedelta(seconds=16))
    seed_more = [emulator.add("vapi", sipUri=f"sip:{i}@x", created_at=T0 + timedelta(seconds=17 + i))
                 for i in range(13)]
    assert len(seed_more) == 13
    with pytest.raises(ProtocolError) as caught:
        list(make_client(page_size=10, max_concurrency=1).iter_records(sort_order="ASC"))
    assert str(caught.value) == f"Vapi record 7 on page 2 (id {broken['id'][:8]}...) has no 'provider'"


# -- secrets --------------------------------------------------------------------------------------
def test_redact_record_removes_every_secret() -> None:
    record = {
        "id": "r1", "provider": "twilio", "twilioAccountSid": "AC1", "twilioAuthToken": "t0k",
        "twilioApiKey": "SK1", "twilioApiSecret": "s3c", "credentialId": "cred-1",
        "server": {"url": "https://hook", "headers": {"X-Custom": "bearer-ish"}, "credentialId": "c2"},
        "authentication": {"username": "u" * 20, "password": "p" * 20},
        "hooks": [{"on": "call.ringing", "do": [{"type": "transfer", "destination": {
            "type": "sip", "sipUri": "sip:a@b", "sipHeaders": {"X-Api-Key": "k", "Authorization": "Basic x"}}}]}],
    }
    before = json.dumps(record)
    clean = redact_record(record)
    assert json.dumps(record) == before  # a copy: the input is untouched
    text = json.dumps(clean)
    for secret in ("t0k", "SK1", "s3c", "bearer-ish", "p" * 20, '"k"', "Basic x"):
        assert secret not in text
    assert clean["twilioAccountSid"] == "AC1" and clean["credentialId"] == "cred-1"
    assert clean["server"] == {"url": "https://hook", "credentialId": "c2"}
    assert clean["authentication"] == {"username": "u" * 20}


def test_no_method_returns_a_secret(emulator: VapiEmulator, make_client: Callable[..., VapiClient]) -> None:
    body = {"provider": "twilio", "number": "+14155550100", "twilioAccountSid": "AC1",
            "twilioApiKey": "SK-secret-key", "twilioApiSecret": "api-secret-value"}
    client = make_client()
    created = client.create(body)
    assert emulator.by_number("+14155550100")[0]["twilioApiSecret"] == "api-secret-value"  # Vapi echoes it
    rid = created["id"]
    answers = [created, client.get(rid), *client.iter_records(), *client.search("4155550100"),
               *client.find_by_number("+14155550100"), client.update(rid, {"name": "n"}), client.delete(rid)]
    assert len(answers) == 7
    for answer in answers:
        assert not {"twilioAuthToken", "twilioApiKey", "twilioApiSecret"} & set(answer)
        assert "secret" not in json.dumps(answer)


# -- lookups --------------------------------------------------------------------------------------
def test_find_by_number_matches_exactly_in_any_stored_form(
    emulator: VapiEmulator, make_client: Callable[..., VapiClient]
) -> None:
    vonage = emulator.add("vonage", number="14155550100", credentialId="c")["id"]
    twilio = emulator.add("twilio", number="+14155550100", twilioAccountSid="AC1")["id"]
    emulator.add("twilio", number="+141555501001", twilioAccountSid="AC1")  # contains the digits
    emulator.add("vapi", sipUri="sip:14155550100@x")  # so does this SIP URI
    for i in range(1, 6):
        emulator.add("telnyx", number=f"+1415555010{i}", credentialId="c")
    client = make_client(page_size=2)
    assert {r["id"] for r in client.find_by_number("+14155550100")} == {vonage, twilio}
    assert len(client.search("415555010")) == 9  # all pages of the search
    assert client.find_by_number("+19995550000") == []


def test_created_since_walks_on_past_records_created_during_the_walk(
    emulator: VapiEmulator, make_client: Callable[..., VapiClient]
) -> None:
    old = seed(emulator, 5)  # T0 .. T0+4s
    client = make_client(page_size=2)
    assert client.listing_bound is None
    listed = {r["id"] for r in client.iter_records()}
    assert listed == old
    assert client.listing_bound == T0 + timedelta(seconds=4, milliseconds=1)
    newer = {emulator.add("vonage", number=f"4477009000{i}", credentialId="c",
                          created_at=T0 + timedelta(seconds=10 + i))["id"] for i in range(3)}
    during: set[str] = set()

    def grow(req: Request, _resp: Response) -> None:
        if "createdAtGe" in req.query and not during:  # after the first page of the walk
            during.add(emulator.add("twilio", number="+1 (415) 555-0199", twilioAccountSid="AC1")["id"])

    emulator.after_request.append(grow)
    walked = list(client.created_since(T0 + timedelta(seconds=3)))
    ids = [rid for rid, _, _ in walked]
    assert len(ids) == len(set(ids))
    assert set(ids) == {*(r["id"] for r in emulator.records()
                          if datetime.fromisoformat(r["createdAt"]) >= T0 + timedelta(seconds=3))}
    assert newer | during <= set(ids) and len(ids) == 2 + 3 + 1
    assert [when for _, _, when in walked] == sorted(when for _, _, when in walked)
    numbers = {rid: number for rid, number, _ in walked}
    assert numbers[next(iter(during))] == "+14155550199"  # as E.164, whatever form Vapi holds
    assert {numbers[rid] for rid in newer} == {f"+4477009000{i}" for i in range(3)}
    assert len(list(client.created_since(None))) == len(emulator.records())


# -- limits ---------------------------------------------------------------------------------------
def test_rate_limit_spaces_requests(emulator: VapiEmulator, make_client: Callable[..., VapiClient]) -> None:
    seed(emulator, 50)
    arrivals: list[float] = []
    emulator.after_request.append(lambda req, resp: arrivals.append(time.monotonic()))
    client = make_client(requests_per_second=20, page_size=10, max_concurrency=4)
    started = time.monotonic()
    assert len(list(client.iter_records())) == 50
    assert client.stats.requests == 6
    assert time.monotonic() - started >= 5 / 20 * 0.95  # six requests, 50 ms apart at least


@pytest.mark.parametrize("limit", [2, 4])
def test_the_api_never_sees_more_than_max_concurrency(
    emulator: VapiEmulator, make_client: Callable[..., VapiClient], limit: int
) -> None:
    seed(emulator, 200)
    emulator.service_time = 0.03  # each request spends 30 ms inside the API
    assert len(list(make_client(page_size=10, max_concurrency=limit).iter_records())) == 200
    assert emulator.peak_in_flight <= limit
    assert emulator.peak_in_flight >= 2  # the pages really were fetched concurrently


def test_concurrent_callers_share_the_limit(emulator: VapiEmulator, make_client: Callable[..., VapiClient]) -> None:
    ids = [emulator.add("vapi", sipUri=f"sip:{i}@x")["id"] for i in range(8)]
    emulator.service_time = 0.03
    client = make_client(max_concurrency=2)
    threads = [threading.Thread(target=client.get, args=(rid,)) for rid in ids]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert emulator.peak_in_flight == 2 and client.stats.requests == 8


# -- TLS ------------------------------------------------------------------------------------------
def test_ca_bundle_is_trusted_in_addition_to_the_system_store(emulator: VapiEmulator, tmp_path: Path) -> None:
    ca = trustme.CA()
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server_context)
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    emulator.add("vapi", sipUri="sip:a@x")
    with EmulatorServer(emulator, ssl_context=server_context) as tls_server:
        trusted = VapiClient(VapiConfig(api_key=KEY, base_url=tls_server.url, ca_bundle=ca_file))
        untrusted = VapiClient(VapiConfig(api_key=KEY, base_url=tls_server.url, max_attempts=1))
        with trusted, untrusted:
            assert len(list(trusted.iter_records())) == 1
            with pytest.raises(PermanentError) as caught:
                list(untrusted.iter_records())
    assert "ca_bundle" in str(caught.value)


def test_a_client_of_an_http_url_reads_no_trust_store_and_would_trust_no_certificate(
        emulator: VapiEmulator, tmp_path: Path) -> None:
    # httpx reads its trust store when a client is made (22 ms of OpenSSL's CPU for certifi's); a
    # client of an http:// URL follows no redirect and never needs one. Its context trusts no CA,
    # so a TLS connection made with it fails instead of going unverified.
    ca = trustme.CA()
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server_context)
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    plain = httpx_tls_verify("http://127.0.0.1:9", None, owner="vapi")
    assert plain.cert_store_stats()["x509_ca"] == 0
    assert (plain.verify_mode, plain.check_hostname) == (ssl.CERT_REQUIRED, True)
    assert httpx_tls_verify("https://api.vapi.ai", None, owner="vapi").cert_store_stats()["x509_ca"] > 100
    given = httpx_tls_verify("http://127.0.0.1:9", ca_file, owner="vapi")  # asked for: read whatever the URL
    assert given.cert_store_stats()["x509_ca"] > 100
    emulator.add("vapi", sipUri="sip:a@x")
    with EmulatorServer(emulator, ssl_context=server_context) as tls_server:
        with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
            httpx.get(tls_server.url, verify=plain)
        with httpx.Client(verify=given) as client:
            assert client.get(f"{tls_server.url}/v2/phone-number", headers={"Authorization": f"Bearer {KEY}"}
                              ).status_code == 200
    with VapiClient(VapiConfig(api_key=KEY, base_url="http://127.0.0.1:9")) as client:
        assert client._verify is plain  # one per process


def test_parse_retry_after() -> None:
    assert parse_retry_after("2") == 2.0
    assert parse_retry_after("0.5") == 0.5
    assert parse_retry_after(None) is None and parse_retry_after("soon") is None
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0
    soon = format_datetime(datetime.now(UTC) + timedelta(seconds=30), usegmt=True)
    assert 25 <= (parse_retry_after(soon) or 0) <= 30

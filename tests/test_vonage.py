"""The Vonage adapter against the Vonage emulation over real TLS sockets, with the real SDK.

Nothing is mocked: the SDK speaks HTTPS to ``VonageEmulator`` (a trustme CA, trusted through the
source's ``ca_bundle``), faults are injected in the emulator, and the assertions look at what the
adapter yielded and at the exact requests the emulator received. Retry sleeps are recorded by an
injected ``sleep`` instead of slept, so the tests check the backoff decisions and stay fast.
"""

from __future__ import annotations

import base64
import gc
import hashlib
import importlib.metadata
import inspect
import json
import logging
import os
import subprocess
import sys
import threading
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import certifi
import pydantic
import pytest
import requests
import requests.exceptions as rex
import trustme
import vonage_http_client.errors as vhe
import vonage_numbers.errors as vne
import vonage_utils.errors as vue
from helpers import wait_for

from numsync.adapters import http_util
from numsync.adapters.base import Source, VapiOwner
from numsync.adapters.http_util import verify_context
from numsync.adapters.vonage import EXCEPTION_MAP, VonageSource, _session_of, build, translate_exception
from numsync.config import VonageSourceConfig
from numsync.errors import (
    AuthError,
    ConfigError,
    NotFoundError,
    PermanentError,
    ProtocolError,
    TransientError,
)
from numsync.sandbox.server import EmulatorServer, Request
from numsync.sandbox.vonage import VonageEmulator, make_tls

KEY = "sandbox-vonage-key"
SECRET = "sandbox-vonage-secret"
PATH = "/account/numbers"


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, Path]:
    return make_tls(tmp_path_factory.mktemp("vonage-tls"))


@pytest.fixture(scope="module")
def shared_server(tls: tuple[Any, Path]) -> Iterator[EmulatorServer]:
    # one server for the module (stopping one costs 0.5 s); each test gets it reset
    with EmulatorServer(VonageEmulator(api_key=KEY, api_secret=SECRET), ssl_context=tls[0]) as srv:
        yield srv


@pytest.fixture
def server(shared_server: EmulatorServer) -> EmulatorServer:
    assert isinstance(shared_server.emulator, VonageEmulator)
    shared_server.emulator.reset()
    return shared_server


@pytest.fixture
def emu(server: EmulatorServer) -> VonageEmulator:
    assert isinstance(server.emulator, VonageEmulator)
    return server.emulator


class Harness:
    """Builds sources pointed at the server and records their on_request calls and sleeps."""

    def __init__(self, server: EmulatorServer, ca: Path) -> None:
        self.server, self.ca = server, ca
        self.calls: list[tuple[str, str]] = []
        self.sleeps: list[float] = []
        self.sources: list[VonageSource] = []

    def config(self, **over: Any) -> VonageSourceConfig:
        fields: dict[str, Any] = {
            "kind": "vonage", "name": "vonage-main", "api_key": KEY, "api_secret": SECRET,
            "vapi_credential_id": "cred-vonage", "base_url": self.server.url, "ca_bundle": self.ca,
            "timeout": 5,
        }
        fields.update(over)
        return VonageSourceConfig(**fields)

    def source(self, cfg: VonageSourceConfig | None = None, **kw: Any) -> VonageSource:
        opts: dict[str, Any] = {"page_size": 3, "max_attempts": 3, "backoff_base": 0.01,
                                "sleep": self.sleeps.append, "on_request": self._record}
        opts.update(kw)
        src = VonageSource(cfg or self.config(), **opts)
        self.sources.append(src)
        return src

    def _record(self, api: str, status: str) -> None:
        self.calls.append((api, status))


@pytest.fixture
def h(server: EmulatorServer, tls: tuple[Any, Path]) -> Iterator[Harness]:
    harness = Harness(server, tls[1])
    yield harness
    for src in harness.sources:
        src.close()


def seed(emu: VonageEmulator, n: int) -> list[str]:
    return [emu.add_number(f"1201555{i:04d}")["msisdn"] for i in range(n)]


def indices(emu: VonageEmulator) -> list[str]:
    return [q["index"][0] for _m, _p, q, _s in emu.requests_to("GET", PATH)]


# -- the SDK, without its facade -----------------------------------------------------------------
def test_the_adapter_does_not_import_the_vonage_facade() -> None:
    # the facade imports fourteen other APIs (~0.15 s of CPU); the HTTP layer and Numbers suffice
    code = "import sys, numsync.adapters.vonage; print('vonage' in sys.modules, 'vonage_voice' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert done.stdout.split() == ["False", "False"]


def test_requests_carry_the_sdk_user_agent(emu: VonageEmulator, h: Harness) -> None:
    seed(emu, 1)
    agents: list[str | None] = []
    emu.after_request.append(lambda req, _resp: agents.append(req.headers.get("user-agent")))
    assert len(list(h.source().list_numbers())) == 1
    wait_for(lambda: agents, 5, "the emulation's after_request hook (it runs after the answer is sent)")
    assert agents and (agents[0] or "").startswith(f"vonage-python-sdk/{importlib.metadata.version('vonage')} ")


# -- paging ------------------------------------------------------------------------------------
def test_pages_follow_the_count_with_exact_wire_requests(emu: VonageEmulator, h: Harness) -> None:
    numbers = seed(emu, 8)
    records = list(h.source().list_numbers())
    assert [r.number for r in records] == numbers  # page order kept although pages 2-3 ran concurrently
    queries = sorted((q for _m, _p, q, _s in emu.requests_to("GET", PATH)), key=lambda q: q["index"])
    assert queries == [{"size": ["3"], "index": [str(i)]} for i in (1, 2, 3)]
    assert h.calls == [("vonage", "200")] * 3


def _held_page_1(emu: VonageEmulator) -> list[bool]:
    """Hold page 1's request until page 2's has arrived (5 s at most); says, per listing, whether
    it did: page 2 was asked for before page 1 was answered."""
    arrived = threading.Event()
    said: list[bool] = []

    def hold(req: Request) -> None:
        if req.arg("index") == "2":
            arrived.set()
        elif req.arg("index") == "1":
            said.append(arrived.wait(5))

    emu.before_request.append(hold)
    return said


def test_a_known_count_asks_for_the_first_rounds_pages_before_page_1_is_answered(
    emu: VonageEmulator, h: Harness
) -> None:
    numbers = seed(emu, 8)
    said = _held_page_1(emu)
    records = list(h.source().list_numbers(expected=8))
    assert [r.number for r in records] == numbers
    assert said == [True]
    assert sorted(indices(emu)) == ["1", "2", "3"]  # nothing past the count
    assert h.calls == [("vonage", "200")] * 3


@pytest.mark.parametrize("past_end", [None, "bare_past_end"])
def test_a_count_that_has_fallen_since_costs_only_empty_pages(
    emu: VonageEmulator, h: Harness, past_end: str | None
) -> None:
    """Pages past the last answer ``{"count": N}`` here, and were reported to answer ``{}``."""
    numbers = seed(emu, 4)
    emu.paging_fault = past_end
    records = list(h.source().list_numbers(expected=12))  # four pages' worth: pages 3 and 4 are empty
    assert [r.number for r in records] == numbers
    assert sorted(indices(emu)) == ["1", "2", "3", "4"]


def test_a_count_that_has_grown_since_is_listed_whole(emu: VonageEmulator, h: Harness) -> None:
    numbers = seed(emu, 14)
    records = list(h.source().list_numbers(expected=3))  # one page's worth: page 1 alone, then the rest
    assert [r.number for r in records] == numbers
    assert sorted(indices(emu), key=int) == ["1", "2", "3", "4", "5"]


def test_one_full_page_makes_one_request_and_close_allows_reuse(emu: VonageEmulator, h: Harness) -> None:
    seed(emu, 3)
    src = h.source()
    assert len(list(src.list_numbers())) == 3
    assert indices(emu) == ["1"]
    src.close()
    assert len(list(src.list_numbers())) == 3


def test_sequential_paging_with_concurrency_one(emu: VonageEmulator, h: Harness) -> None:
    seed(emu, 7)
    records = list(h.source(concurrency=1).list_numbers())
    assert len(records) == 7
    assert indices(emu) == ["1", "2", "3"]


def test_five_thousand_numbers_stream_complete(emu: VonageEmulator, h: Harness) -> None:
    numbers = seed(emu, 5_000)
    got = [r.carrier_id for r in h.source(page_size=100).list_numbers()]
    assert got == numbers
    assert len(emu.requests_to("GET", PATH)) == 50


@pytest.mark.parametrize("kind", ["empty", None])
def test_empty_inventory_gives_no_records(emu: VonageEmulator, h: Harness, kind: str | None) -> None:
    if kind:
        seed(emu, 5)
        emu.faults.add(kind, path=PATH)
    assert list(h.source().list_numbers()) == []
    assert indices(emu) == ["1"]


# -- normalisation -----------------------------------------------------------------------------
VAPI_APP = "aaaaaaaa-bbbb-cccc-dddd-0123456789ab"
OTHER_APP = "99999999-bbbb-cccc-dddd-0123456789ab"


def seed_routing(emu: VonageEmulator) -> None:
    emu.add_number("447700900000", country="GB", app_id=VAPI_APP)
    emu.add_number("12015550100", app_id=OTHER_APP)
    emu.add_number("12015550101", voice_callback_type="app", voice_callback_value=OTHER_APP)
    sip_uri = "sip:+12015550102@sip.example.com"
    emu.add_number("12015550102", voice_callback_type="sip", voice_callback_value=sip_uri)
    emu.add_number("12015550103", voice_callback_type="tel", voice_callback_value="14155550100")
    emu.add_number("12015550104")
    emu.add_number("12", country="ZZ")  # not a possible number


def test_records_normalised_and_judged_against_routes_to_vapi(emu: VonageEmulator, h: Harness) -> None:
    seed_routing(emu)
    recs = {r.number: r for r in h.source(h.config(routes_to_vapi=[VAPI_APP]), page_size=100).list_numbers()}
    gb = recs["447700900000"]
    assert (gb.e164, gb.carrier_id, gb.status) == ("+447700900000", "447700900000", None)
    assert dict(gb.labels) == {"country": "GB", "type": "landline"}
    assert (gb.routing, gb.routed_elsewhere) == (f"app {VAPI_APP}", False)
    assert (recs["12015550100"].routing, recs["12015550100"].routed_elsewhere) == (f"app {OTHER_APP}", True)
    assert (recs["12015550101"].routing, recs["12015550101"].routed_elsewhere) == (f"app {OTHER_APP}", True)
    sip = recs["12015550102"]
    assert (sip.routing, sip.routed_elsewhere) == ("sip sip:+12015550102@sip.example.com", True)
    assert (recs["12015550103"].routing, recs["12015550103"].routed_elsewhere) == ("tel 14155550100", True)
    assert (recs["12015550104"].routing, recs["12015550104"].routed_elsewhere) == (None, False)
    assert recs["12015550104"].e164 == "+12015550104"
    assert recs["12"].e164 is None
    assert recs["12"].carrier_id == "12"


def test_nothing_is_routed_elsewhere_without_routes_to_vapi(emu: VonageEmulator, h: Harness) -> None:
    seed_routing(emu)
    recs = list(h.source(page_size=100).list_numbers())
    assert len(recs) == 7
    assert not any(r.routed_elsewhere for r in recs)
    assert {r.routing for r in recs} >= {f"app {OTHER_APP}", "tel 14155550100"}


def test_owner_import_body_and_protocol(h: Harness) -> None:
    src = h.source()
    assert isinstance(src, Source)
    assert src.kind == "vonage"
    assert src.name == "vonage-main"
    assert src.owner() == VapiOwner("vonage", "credentialId", "cred-vonage")
    body = {"provider": "vonage", "number": "+447700900000", "credentialId": "cred-vonage"}
    assert src.import_body("+447700900000") == body
    assert src.import_body("447700900000") == body
    assert isinstance(build(h.config()), VonageSource)


# -- auth and secrets --------------------------------------------------------------------------
def test_wrong_credentials_raise_auth_error_without_secrets(
    emu: VonageEmulator, h: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    seed(emu, 2)
    bad_secret = "not-the-right-secret-42"
    caplog.set_level(logging.DEBUG, logger="vonage")
    with pytest.raises(AuthError) as info:
        list(h.source(h.config(api_secret=bad_secret)).list_numbers())
    assert str(info.value) == "Vonage rejected the credentials for source vonage-main"
    assert info.value.status == 401
    assert info.value.api == "vonage-main"
    assert indices(emu) == ["1"]  # never retried
    assert h.calls == [("vonage", "401")]
    assert "Invalid credentials supplied" in caplog.text  # the SDK's WARNING with the body was logged
    basic = base64.b64encode(f"{KEY}:{bad_secret}".encode()).decode()
    for leak in (bad_secret, basic):
        assert leak not in caplog.text
        assert leak not in repr(info.value)
        assert leak not in str(info.value.__cause__)


def test_sdk_debug_log_masks_the_authorization_header(
    emu: VonageEmulator, h: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    seed(emu, 7)
    caplog.set_level(logging.DEBUG, logger="vonage")
    assert len(list(h.source(concurrency=1).list_numbers())) == 7
    basic = base64.b64encode(f"{KEY}:{SECRET}".encode()).decode()
    assert "'Authorization': '[redacted]'" in caplog.text  # reused client: the header was in the line
    assert basic not in caplog.text
    assert SECRET not in caplog.text


@pytest.mark.parametrize("line", [
    "headers: {'Accept': 'application/json', 'Authorization': 'Basic c2VjcmV0LXZhbHVl'}",
    "Authorization: Basic c2VjcmV0LXZhbHVl",
    "https://rest.nexmo.com/account/numbers?api_key=k&api_secret=c2VjcmV0LXZhbHVl&index=1",
    "data: {'api_key': 'k', 'api_secret': 'c2VjcmV0LXZhbHVl'}",
])
def test_log_filter_masks_every_credential_shape(
    h: Harness, caplog: pytest.LogCaptureFixture, line: str
) -> None:
    h.source()  # installs the filter
    caplog.set_level(logging.DEBUG, logger="vonage")
    logging.getLogger("vonage").debug("request %s", line)
    assert "c2VjcmV0LXZhbHVl" not in caplog.text
    assert "[redacted]" in caplog.text


def test_legacy_query_parameter_auth_and_401_body(server: EmulatorServer, tls: tuple[Any, Path]) -> None:
    url, ca = server.url + PATH, str(tls[1])
    ok = requests.get(url, params={"api_key": KEY, "api_secret": SECRET}, verify=ca, timeout=5)
    assert ok.status_code == 200
    assert ok.json() == {"count": 0}
    bad = requests.get(url, auth=(KEY, "wrong"), verify=ca, timeout=5)
    body = bad.json()
    assert bad.status_code == 401
    assert body["type"] == "https://developer.nexmo.com/api-errors#unauthorized"
    assert body["title"] == "Invalid credentials supplied"
    assert body["detail"] == "You did not provide correct credentials."
    assert body["instance"]


# -- retries -----------------------------------------------------------------------------------
def test_429_retry_after_is_honoured_and_capped(emu: VonageEmulator, h: Harness) -> None:
    numbers = seed(emu, 7)
    emu.faults.add("status", path=PATH, status=429, retry_after="7", after=1)
    emu.faults.add("status", path=PATH, status=429, retry_after="3600", after=1)
    got = [r.number for r in h.source(concurrency=1).list_numbers()]
    assert got == numbers
    assert indices(emu) == ["1", "2", "2", "2", "3"]
    assert h.sleeps == [7.0, 60.0]
    assert [s for _a, s in h.calls] == ["200", "429", "429", "200", "200"]


def test_mid_listing_500_and_reset_resume_at_the_failed_page(emu: VonageEmulator, h: Harness) -> None:
    numbers = seed(emu, 10)
    emu.faults.add("status", path=PATH, status=500, after=1)
    emu.faults.add("reset", path=PATH, after=2)
    emu.faults.add("html", path=PATH, status=502, after=3)  # a proxy's 502 page is transient too
    got = [r.number for r in h.source(concurrency=1, max_attempts=4).list_numbers()]
    assert got == numbers  # no duplicates, no misses
    # each fault waits for its own count of requests it saw: the 500 hits page 2, the reset page 3,
    # the 502 page 4; every retry asks for the page that failed, never page 1 again
    assert indices(emu) == ["1", "2", "2", "3", "3", "4", "4"]
    assert [s for _a, s in h.calls] == ["200", "500", "200", "error", "200", "502", "200"]
    assert len(h.sleeps) == 3
    assert all(0 < s <= 0.01 for s in h.sleeps)


def test_concurrent_pages_with_faults_are_complete(emu: VonageEmulator, h: Harness) -> None:
    numbers = seed(emu, 30)
    emu.faults.add("status", path=PATH, status=503, after=2, times=2)
    emu.faults.add("reset", path=PATH, after=5)
    got = [r.number for r in h.source(concurrency=4, max_attempts=4).list_numbers()]
    assert got == numbers
    assert sorted(set(indices(emu)), key=int) == [str(i) for i in range(1, 11)]
    assert len(indices(emu)) == 13
    assert len(h.calls) == 13  # on_request once per HTTP request, failed ones included
    assert sorted(s for _a, s in h.calls) == ["200"] * 10 + ["503", "503", "error"]


def test_stopping_early_fetches_only_a_bounded_look_ahead(emu: VonageEmulator, h: Harness) -> None:
    seed(emu, 60)  # 20 pages of 3
    it = h.source(concurrency=2).list_numbers()
    first = [next(it) for _ in range(4)]
    it.close()
    assert [r.number for r in first] == ["1201555" + f"{i:04d}" for i in range(4)]
    assert len(indices(emu)) <= 1 + 2 * 2  # page 1, then at most twice the pool size ahead


def test_read_timeout_is_retried(tls: tuple[Any, Path]) -> None:
    # its own server: the hung handler logs its request after the test has moved on
    emu = VonageEmulator(api_key=KEY, api_secret=SECRET)
    numbers = seed(emu, 4)
    emu.faults.add("hang", path=PATH, delay=1.5, after=1)
    with EmulatorServer(emu, ssl_context=tls[0]) as srv:
        h = Harness(srv, tls[1])
        src = h.source(h.config(timeout=0.5), concurrency=1)  # rounded up to the SDK's whole second
        got = [r.number for r in src.list_numbers()]
        src.close()
    assert got == numbers
    assert [s for _a, s in h.calls] == ["200", "error", "200"]


def test_persistent_5xx_raises_transient_error(emu: VonageEmulator, h: Harness) -> None:
    seed(emu, 2)
    emu.faults.add("status", path=PATH, status=500, times=None)
    with pytest.raises(TransientError) as info:
        list(h.source().list_numbers())
    assert info.value.status == 500
    assert "Internal Error" in str(info.value)
    assert len(indices(emu)) == 3
    assert len(h.sleeps) == 2


def test_persistent_429_keeps_retry_after(emu: VonageEmulator, h: Harness) -> None:
    emu.faults.add("status", path=PATH, status=429, retry_after="2", times=None)
    with pytest.raises(TransientError) as info:
        list(h.source(max_attempts=2).list_numbers())
    assert (info.value.status, info.value.retry_after) == (429, 2.0)
    assert h.sleeps == [2.0]


# -- garbage and broken paging -------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["malformed_json", "truncated_json"])
def test_garbage_json_is_a_protocol_error(emu: VonageEmulator, h: Harness, kind: str) -> None:
    seed(emu, 7)
    emu.faults.add(kind, path=PATH, after=1)
    with pytest.raises(ProtocolError):
        list(h.source(concurrency=1).list_numbers())
    assert indices(emu)[:2] == ["1", "2"]
    assert indices(emu).count("2") == 1  # not retried (page 3 may have been fetched ahead)
    assert {s for _a, s in h.calls} == {"200"}


def test_html_page_with_200_is_a_protocol_error(emu: VonageEmulator, h: Harness) -> None:
    seed(emu, 2)
    emu.paging_fault = "html"
    with pytest.raises(ProtocolError):
        list(h.source().list_numbers())
    assert indices(emu) == ["1"]


def test_count_claiming_more_pages_than_exist(emu: VonageEmulator, h: Harness) -> None:
    seed(emu, 6)
    emu.paging_fault = "count_high"
    got: list[str] = []
    with pytest.raises(ProtocolError, match="held 0 numbers where its count of 12 promised 3"):
        got.extend(r.number for r in h.source(concurrency=1).list_numbers())
    assert len(got) == 6
    assert indices(emu)[:3] == ["1", "2", "3"]
    assert len(indices(emu)) <= 4  # never beyond the pages the count allows


def test_index_loop_terminates_with_protocol_error(emu: VonageEmulator, h: Harness) -> None:
    seed(emu, 9)
    emu.paging_fault = "loop"
    with pytest.raises(ProtocolError, match="repeated"):
        list(h.source(concurrency=2).list_numbers())
    assert len(indices(emu)) <= 3  # bounded by the count, never endless


def test_count_changing_while_listing(emu: VonageEmulator, h: Harness) -> None:
    seed(emu, 7)
    emu.after_request.append(lambda req, resp: req.arg("index") == "1" and emu.remove_number("12015550000"))
    with pytest.raises(ProtocolError, match="changed from 7 to 6"):
        list(h.source(concurrency=1).list_numbers())


def test_missing_numbers_key_with_a_count_is_not_an_empty_account(emu: VonageEmulator, h: Harness) -> None:
    seed(emu, 2)
    emu.paging_fault = "drop_numbers"
    with pytest.raises(ProtocolError, match="held 0 numbers where its count of 2 promised 2"):
        list(h.source().list_numbers())


# -- TLS and base_url ----------------------------------------------------------------------------
def test_ca_bundle_adds_to_the_trust_store_without_touching_the_environment(
    emu: VonageEmulator, h: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    seed(emu, 2)
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", certifi.where())  # would replace a session's verify
    before = dict(os.environ)
    src = h.source()
    assert len(list(src.list_numbers())) == 2
    assert dict(os.environ) == before
    bundle = src._bundle
    assert bundle is not None
    text = bundle.read_text()
    assert text.startswith(Path(certifi.where()).read_text().rstrip("\n"))
    assert h.ca.read_text() in text
    src.close()
    src.close()  # idempotent
    assert bundle.exists()  # a closed source may list again
    h.sources.remove(src)
    del src
    gc.collect()
    assert not bundle.exists()


def _pools(src: VonageSource, url: str) -> list[Any]:
    return [pool for client in src._clients
            for pool in _session_of(client).get_adapter(url).poolmanager.pools._container.values()]


def _lists_through_one_context(src: VonageSource, context: Any, url: str, numbers: int) -> None:
    """List with several connections; each must verify through ``context``, never naming a CA file
    (urllib3 would read it into the context again), and the context must not have read more."""
    stats = context.cert_store_stats()
    assert len(list(src.list_numbers())) == numbers
    pools = _pools(src, url)
    assert len(src._clients) > 1 and len(pools) == len(src._clients)
    for pool in pools:
        assert pool.conn_kw["ssl_context"] is context
        assert pool.ca_certs is None and pool.ca_cert_dir is None
    assert context.cert_store_stats() == stats


def test_every_connection_verifies_with_the_one_context_that_read_the_ca_bundle_alone(
    emu: VonageEmulator, h: Harness
) -> None:
    """urllib3 reads a CA file named on a pool into the context again for each new connection
    (~45 ms): the CA must be read once, when the source is built, and never named on a pool. The
    sandbox's CA verifies its certificate alone, so the whole bundle (certifi's 120 CAs and it,
    20 ms) is never read."""
    seed(emu, 30)
    src = h.source(concurrency=4)
    assert src._bundle is not None
    context = verify_context(h.ca)
    _lists_through_one_context(src, context, h.server.url, 30)
    assert verify_context(h.ca) is context
    again = h.source(concurrency=4)  # as the daemon's next run builds it: another bundle, the same CA
    assert again._bundle is not None and again._bundle != src._bundle
    _lists_through_one_context(again, context, h.server.url, 30)
    whole = hashlib.sha256(src._bundle.read_bytes()).digest()
    assert whole not in http_util._contexts_by_content


def _another_ca(tmp_path: Path) -> Path:
    path = tmp_path / "another-ca.pem"
    trustme.CA(organization_name="not the sandbox").cert_pem.write_to_path(str(path))
    return path


def test_a_certificate_the_ca_bundle_alone_does_not_verify_is_verified_against_the_whole_bundle(
    emu: VonageEmulator, h: Harness, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """ca_bundle adds to the usual trust store: here that store (REQUESTS_CA_BUNDLE) is what knows
    the sandbox, and the configured CA is another. Each connection's first handshake fails against
    that CA alone; it is made again against the whole bundle, and no request is sent twice."""
    store = tmp_path / "store.pem"
    store.write_text(Path(certifi.where()).read_text() + h.ca.read_text())
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(store))
    msisdns = seed(emu, 30)
    src = h.source(h.config(ca_bundle=_another_ca(tmp_path)), concurrency=4)
    assert src._bundle is not None
    assert sorted(r.number for r in src.list_numbers()) == sorted(msisdns)
    assert sorted(indices(emu), key=int) == [str(i) for i in range(1, 11)]  # each page asked once
    assert h.calls == [("vonage", "200")] * 10
    assert str(src._bundle) in http_util._whole_bundle_needed
    whole = verify_context(src._bundle)
    assert any(pool.conn_kw["ssl_context"] is whole for pool in _pools(src, h.server.url))


def test_a_certificate_neither_the_ca_bundle_nor_the_trust_store_verifies_is_not_trusted(
    emu: VonageEmulator, h: Harness, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    for name in ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE"):  # requests' own default then: certifi
        monkeypatch.delenv(name, raising=False)
    seed(emu, 2)
    src = h.source(h.config(ca_bundle=_another_ca(tmp_path)))
    with pytest.raises(PermanentError, match="not trusted"):
        list(src.list_numbers())
    assert h.calls == [("vonage", "error")]
    assert indices(emu) == []  # no handshake succeeded, so no request was ever sent


def test_without_ca_bundle_the_sandbox_is_not_trusted(
    emu: VonageEmulator, h: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE"):  # requests' own default then: certifi
        monkeypatch.delenv(name, raising=False)
    seed(emu, 2)
    src = h.source(h.config(ca_bundle=None))
    with pytest.raises(PermanentError, match="not trusted") as info:
        list(src.list_numbers())
    assert not isinstance(info.value, TransientError)
    assert h.calls == [("vonage", "error")]
    # it verified against certifi, as requests does, through the one context that read it
    (pool,) = _pools(src, h.server.url)
    assert pool.conn_kw["ssl_context"] is verify_context(requests.utils.DEFAULT_CA_BUNDLE_PATH)


def test_without_ca_bundle_every_connection_verifies_with_one_context_of_the_environments_store(
    emu: VonageEmulator, h: Harness, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Without a bundle of ours, requests named the trust store's file on each new connection and
    urllib3 read it again: four or five times at the start of every listing. It is read once, when
    the source is built, into the context every connection shares."""
    store = tmp_path / "store.pem"
    store.write_text(Path(certifi.where()).read_text() + h.ca.read_text())
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(store))
    seed(emu, 30)
    src = h.source(h.config(ca_bundle=None), concurrency=4)
    _lists_through_one_context(src, verify_context(store), h.server.url, 30)


def test_unreadable_ca_bundle_is_a_config_error(h: Harness, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="ca_bundle"):
        h.source(h.config(ca_bundle=tmp_path / "missing.pem"))
    (tmp_path / "empty.pem").write_text("nothing here")
    with pytest.raises(ConfigError, match="no PEM"):
        h.source(h.config(ca_bundle=tmp_path / "empty.pem"))


def test_base_url_host_and_port_are_used(emu: VonageEmulator, h: Harness) -> None:
    seed(emu, 1)
    cfg = h.config(base_url=f"https://localhost:{h.server.port}")  # the certificate also names localhost
    assert [r.number for r in h.source(cfg).list_numbers()] == ["12015550000"]
    assert len(indices(emu)) == 1


# -- error mapping -------------------------------------------------------------------------------
def _error_classes(module: types.ModuleType) -> list[type[BaseException]]:
    return [
        obj for _n, obj in inspect.getmembers(module, inspect.isclass)
        if issubclass(obj, Exception) and not issubclass(obj, Warning) and obj.__module__ == module.__name__
    ]


SDK_ERROR_MODULES = [vue, vhe, vne, rex]


def test_every_sdk_exception_class_is_mapped() -> None:
    found = [cls for mod in SDK_ERROR_MODULES for cls in _error_classes(mod)]
    assert len(found) > 25
    unmapped = [f"{c.__module__}.{c.__name__}" for c in found if c not in EXCEPTION_MAP]
    assert unmapped == []
    assert pydantic.ValidationError in EXCEPTION_MAP


def _response(status: int, body: bytes = b'{"title": "Nope"}', headers: dict[str, str] | None = None) -> Any:
    resp = requests.Response()
    resp.status_code, resp._content, resp.url = status, body, "https://rest.nexmo.com/account/numbers"
    resp.headers.update(headers or {})
    return resp


def _instance(cls: type[BaseException]) -> BaseException:
    if issubclass(cls, vhe.HttpRequestError):
        status = {vhe.AuthenticationError: 401, vhe.ForbiddenError: 403, vhe.NotFoundError: 404,
                  vhe.RateLimitedError: 429, vhe.ServerError: 500}.get(cls, 502)
        return cls(_response(status))
    if cls is rex.HTTPError:
        return cls("boom", response=_response(502))
    if cls is rex.JSONDecodeError:
        return cls("Expecting value", "x", 0)
    if cls is pydantic.ValidationError:
        try:
            pydantic.TypeAdapter(int).validate_python("x")
        except pydantic.ValidationError as exc:
            return exc
    return cls("boom")


@pytest.mark.parametrize("cls", [c for mod in SDK_ERROR_MODULES for c in _error_classes(mod)],
                         ids=lambda c: c.__name__)
def test_each_sdk_exception_translates_without_secrets(cls: type[BaseException]) -> None:
    err = translate_exception(_instance(cls), source="vonage-main", operation="list numbers page 1")
    assert err.api == "vonage-main"
    assert err.operation == "list numbers page 1"
    assert SECRET not in str(err)
    assert "vonage-main" in str(err)
    expected = {"auth": AuthError, "not_found": NotFoundError, "transient": TransientError,
                "protocol": ProtocolError, "permanent": PermanentError, "tls": TransientError,
                "status": TransientError}[EXCEPTION_MAP[cls]]  # "status" instances above are 5xx/429
    assert isinstance(err, expected)


@pytest.mark.parametrize(("status", "expected"), [
    (400, PermanentError), (401, AuthError), (403, AuthError), (404, NotFoundError), (408, TransientError),
    (429, TransientError), (301, ProtocolError), (502, TransientError), (503, TransientError),
])
def test_http_status_mapping(status: int, expected: type[Exception]) -> None:
    err = translate_exception(vhe.HttpRequestError(_response(status, headers={"Retry-After": "3"})),
                              source="s", operation="op")
    assert type(err) is expected
    assert err.status == status
    if expected is TransientError:
        assert err.retry_after == 3.0


# -- the emulation itself ------------------------------------------------------------------------
def _get(server: EmulatorServer, ca: Path, **params: Any) -> requests.Response:
    return requests.get(server.url + PATH, params=params, auth=(KEY, SECRET), verify=str(ca), timeout=5)


def test_emulator_filters_and_validation(
    emu: VonageEmulator, server: EmulatorServer, tls: tuple[Any, Path]
) -> None:
    emu.add_number("447700900000", country="GB", app_id=VAPI_APP)
    emu.add_number("12015550100")
    emu.add_number("12015550177", app_id=OTHER_APP)
    ca = tls[1]

    def msisdns(**params: Any) -> list[str]:
        resp = _get(server, ca, **params)
        assert resp.status_code == 200
        return [n["msisdn"] for n in resp.json().get("numbers", [])]

    assert msisdns(pattern="1201", search_pattern=0) == ["12015550100", "12015550177"]
    assert msisdns(pattern="0090", search_pattern=1) == ["447700900000"]
    assert msisdns(pattern="77", search_pattern=2) == ["12015550177"]
    assert msisdns(country="GB") == ["447700900000"]
    assert msisdns(application_id=OTHER_APP) == ["12015550177"]
    assert msisdns(has_application="True") == ["447700900000", "12015550177"]
    assert msisdns(has_application="False") == ["12015550100"]
    assert msisdns(size=1, index=2) == ["12015550100"]
    assert _get(server, ca).json()["count"] == 3
    for bad in ({"size": 101}, {"index": 0}, {"size": "x"}, {"pattern": "1", "search_pattern": 7}):
        resp = _get(server, ca, **bad)
        assert resp.status_code == 400
        assert resp.json()["type"].endswith("#bad-request")
    record = emu.numbers()[0]
    assert record["voiceCallbackType"] == "app"
    assert record["voiceCallbackValue"] == VAPI_APP
    assert record["app_id"] == VAPI_APP
    assert "+" not in record["msisdn"]
    assert emu.remove_number("12015550100")
    assert not emu.remove_number("12015550100")
    assert emu.dump_state()["count"] == 2


def test_emulator_error_bodies_are_problem_details(emu: VonageEmulator, server: EmulatorServer,
                                                   tls: tuple[Any, Path]) -> None:
    emu.faults.add("status", path=PATH, status=429, retry_after="1")
    emu.faults.add("status", path=PATH, status=500)
    throttled, failed = _get(server, tls[1]), _get(server, tls[1])
    assert throttled.status_code == 429
    assert throttled.headers["Retry-After"] == "1"
    assert throttled.json()["type"] == "https://developer.nexmo.com/api-errors#throttled"
    assert failed.status_code == 500
    assert failed.json()["title"] == "Internal Error"


def test_emulator_pages_a_hundred_thousand_numbers_by_slicing(emu: VonageEmulator) -> None:
    for i in range(100_000):
        emu.add_number(f"1201{i:07d}")
    auth = {"authorization": "Basic " + base64.b64encode(f"{KEY}:{SECRET}".encode()).decode()}
    resp = emu.dispatch(Request("GET", PATH, {"size": ["100"], "index": ["1000"]}, auth, b""))
    body = json.loads(resp.body)
    assert body["count"] == 100_000
    assert body["numbers"][-1]["msisdn"] == "12010099999"


# -- lookups of single numbers (the engine's recheck of numbers that look orphaned) ------------
def test_still_owned_asks_for_each_number_by_pattern_and_matches_it_exactly(emu: VonageEmulator, h: Harness) -> None:
    seed(emu, 3)  # 12015550000 .. 12015550002
    emu.add_number("120155500001")  # starts with 12015550000's digits: not that number
    assert h.source().still_owned(["+12015550001", "+12015559999", "+1201555000"]) == {"+12015550001"}
    queries = [q for _m, _p, q, _s in emu.requests_to("GET", PATH)]
    assert [(q["pattern"], q["search_pattern"], q["index"]) for q in queries] == [
        (["12015550001"], ["0"], ["1"]), (["12015559999"], ["0"], ["1"]), (["1201555000"], ["0"], ["1"])]
    assert h.calls == [("vonage", "200")] * 3


def test_a_lookup_is_retried_and_one_that_keeps_failing_raises(emu: VonageEmulator, h: Harness) -> None:
    seed(emu, 1)
    emu.faults.add("status", path=PATH, status=500)
    assert h.source().still_owned(["+12015550000"]) == {"+12015550000"}
    emu.faults.add("status", path=PATH, status=503, times=None)
    with pytest.raises(TransientError):
        h.source().still_owned(["+12015550000"])

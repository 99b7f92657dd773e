"""Contract test of the Vapi emulation against Vapi's published OpenAPI description.

numsync's Vapi client is only as well tested as the emulation it runs against is faithful, so
every response shape here is validated with jsonschema against the schemas of the spec's own
operations (``tests/fixtures/vapi-openapi.yml``), and the request bodies used are validated
against the spec's request schemas first: a test cannot pass by sending what Vapi would not take.
"""

from __future__ import annotations

import copy
import json
import re
import ssl
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http import HTTPStatus
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from numsync.sandbox.server import EmulatorServer, Request
from numsync.sandbox.vapi import INVALID_KEY, VapiEmulator

SPEC_PATH = Path(__file__).parent / "fixtures" / "vapi-openapi.yml"
KEY = "sandbox-vapi-key"
ISO_MS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
T0 = datetime(2024, 1, 1, tzinfo=UTC)
TLS = ssl.create_default_context()  # built once: httpx would load the CA store for every client

BODIES: dict[str, dict[str, Any]] = {
    "twilio": {"provider": "twilio", "number": "+14155550100", "twilioAccountSid": "AC" + "z" * 32,
               "twilioAuthToken": "twilio-secret-token", "name": "support line", "smsEnabled": False},
    "telnyx": {"provider": "telnyx", "number": "+19705550000", "credentialId": "cred-telnyx",
               "assistantId": "asst-1"},
    "vonage": {"provider": "vonage", "number": "447700900000", "credentialId": "cred-vonage"},
    "byo-phone-number": {"provider": "byo-phone-number", "number": "+4930123456", "credentialId": "cred-trunk",
                         "numberE164CheckEnabled": True, "server": {"url": "https://example.com/hook"}},
    "vapi": {"provider": "vapi", "sipUri": "sip:support@example.sip.vapi.ai", "name": "sip line"},
}


def _nullable_to_jsonschema(node: Any) -> Any:
    """OpenAPI 3.0 ``nullable: true`` is not JSON Schema: turn it into a type that allows null."""
    if isinstance(node, dict):
        out = {k: _nullable_to_jsonschema(v) for k, v in node.items() if k != "nullable"}
        if node.get("nullable") is True and "type" in out:
            out["type"] = [out["type"], "null"]
        return out
    if isinstance(node, list):
        return [_nullable_to_jsonschema(v) for v in node]
    return node


@pytest.fixture(scope="module")
def spec() -> dict[str, Any]:
    return _nullable_to_jsonschema(yaml.safe_load(SPEC_PATH.read_text()))  # type: ignore[no-any-return]


def _validator(spec: dict[str, Any], schema: dict[str, Any]) -> jsonschema.Draft7Validator:
    # '#/components/schemas/X' resolves against the root: carry the components along.
    root = {"allOf": [schema], "components": spec["components"]}
    return jsonschema.Draft7Validator(root, format_checker=jsonschema.FormatChecker())


def response_schema(spec: dict[str, Any], method: str, path: str, status: str) -> jsonschema.Draft7Validator:
    op = spec["paths"][path][method.lower()]
    return _validator(spec, op["responses"][status]["content"]["application/json"]["schema"])


def request_schema(spec: dict[str, Any], method: str, path: str) -> jsonschema.Draft7Validator:
    op = spec["paths"][path][method.lower()]
    return _validator(spec, op["requestBody"]["content"]["application/json"]["schema"])


@pytest.fixture
def emulator() -> VapiEmulator:
    return VapiEmulator(api_key=KEY)


@pytest.fixture
def api(emulator: VapiEmulator) -> Iterator[httpx.Client]:
    with EmulatorServer(emulator) as server, httpx.Client(
        base_url=server.url, headers={"Authorization": f"Bearer {KEY}"}, timeout=10, verify=TLS
    ) as client:
        yield client


def assert_envelope(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"statusCode", "message", "error"}
    assert body["statusCode"] == status
    assert body["error"] == HTTPStatus(status).phrase
    assert isinstance(body["message"], str) or all(isinstance(m, str) for m in body["message"])
    return body


def messages(body: dict[str, Any]) -> str:
    message = body["message"]
    return "; ".join(message) if isinstance(message, list) else message


def seed(emulator: VapiEmulator, count: int, **extra: Any) -> list[dict[str, Any]]:
    return [emulator.add("telnyx", number=f"+1970555{i:04d}", credentialId="cred-telnyx", name=f"Line {i}",
                         created_at=T0 + timedelta(minutes=i), **extra) for i in range(count)]


# -- shapes against the spec ----------------------------------------------------------------------
@pytest.mark.parametrize("provider", list(BODIES))
def test_create_and_get_each_provider_match_the_spec(
    spec: dict[str, Any], api: httpx.Client, provider: str
) -> None:
    body = BODIES[provider]
    request_schema(spec, "POST", "/phone-number").validate(body)
    created = api.post("/phone-number", json=body)
    assert created.status_code == 201, created.text
    record = created.json()
    response_schema(spec, "POST", "/phone-number", "201").validate(record)
    assert uuid.UUID(record["id"]).version == 4
    assert record["provider"] == provider and record["status"] == "active"
    assert ISO_MS.match(record["createdAt"]) and record["updatedAt"] == record["createdAt"]
    for key, value in body.items():
        assert record[key] == value
    fetched = api.get(f"/phone-number/{record['id']}")
    assert fetched.status_code == 200
    response_schema(spec, "GET", "/phone-number/{id}", "200").validate(fetched.json())
    assert fetched.json() == record


def test_twilio_records_echo_the_secrets_like_vapi(api: httpx.Client) -> None:
    body = {**BODIES["twilio"], "twilioApiKey": "SK-key", "twilioApiSecret": "api-secret"}
    record = api.post("/phone-number", json=body).json()
    listed = api.get("/v2/phone-number").json()["results"][0]
    for shown in (record, listed):
        assert shown["twilioAuthToken"] == "twilio-secret-token"
        assert shown["twilioApiSecret"] == "api-secret"


def _dto(provider: str) -> str:
    name = {"twilio": "Twilio", "telnyx": "Telnyx", "vonage": "Vonage", "vapi": "Vapi", "byo-phone-number": "Byo"}
    return name[provider]


# (provider, field) for every field the spec's create DTOs require, besides the discriminator.
REQUIRED = [
    (provider, field_name)
    for provider in BODIES
    for field_name in yaml.safe_load(SPEC_PATH.read_text())["components"]["schemas"][
        f"Create{_dto(provider)}PhoneNumberDTO"].get("required", [])
    if field_name != "provider"
]


def test_the_required_fields_are_those_of_the_spec() -> None:
    assert sorted(REQUIRED) == sorted([
        ("twilio", "number"), ("twilio", "twilioAccountSid"), ("telnyx", "number"), ("telnyx", "credentialId"),
        ("vonage", "number"), ("vonage", "credentialId"), ("byo-phone-number", "credentialId"),
    ])


@pytest.mark.parametrize(("provider", "field_name"), REQUIRED)
def test_required_fields_of_the_spec_are_required(
    spec: dict[str, Any], api: httpx.Client, provider: str, field_name: str
) -> None:
    body = dict(BODIES[provider])
    del body[field_name]
    with pytest.raises(jsonschema.ValidationError):
        request_schema(spec, "POST", "/phone-number").validate(body)
    response = api.post("/phone-number", json=body)
    assert field_name in messages(assert_envelope(response, 400))


def test_v2_listing_matches_the_spec(spec: dict[str, Any], api: httpx.Client, emulator: VapiEmulator) -> None:
    for provider, body in BODIES.items():
        emulator.add(provider, **{k: v for k, v in body.items() if k != "provider"})
    emulator.add("vapi", sipUri="sip:nonumber@example.sip.vapi.ai", status="activating")
    emulator.add("twilio", number="+14155550101", twilioAccountSid="AC" + "z" * 32, status="blocked",
                 hooks=[{"on": "call.ringing", "do": [{"type": "say", "exact": "hello"}]}])
    response = api.get("/v2/phone-number", params={"limit": 4})
    assert response.status_code == 200
    page = response.json()
    response_schema(spec, "GET", "/v2/phone-number", "200").validate(page)
    assert page["metadata"] == {"itemsPerPage": 4, "totalItems": 7, "currentPage": 1, "totalPages": 2,
                                "hasNextPage": True, "sortOrder": "DESC"}
    assert [r["provider"] for r in page["results"]] == ["twilio", "vapi", "vapi", "byo-phone-number"]
    rest = api.get("/v2/phone-number", params={"limit": 4, "page": 2}).json()
    response_schema(spec, "GET", "/v2/phone-number", "200").validate(rest)
    assert len(rest["results"]) == 3 and rest["metadata"]["hasNextPage"] is False


def test_v1_listing_is_a_bare_array_of_100_by_default(
    spec: dict[str, Any], api: httpx.Client, emulator: VapiEmulator
) -> None:
    records = seed(emulator, 105)
    response = api.get("/phone-number")
    assert response.status_code == 200
    listed = response.json()
    response_schema(spec, "GET", "/phone-number", "200").validate(listed)
    assert [r["id"] for r in listed] == [r["id"] for r in reversed(records)][:100]
    limited = api.get("/phone-number", params={"limit": 3, "createdAtLt": records[50]["createdAt"]}).json()
    assert [r["id"] for r in limited] == [records[49]["id"], records[48]["id"], records[47]["id"]]


def test_update_and_delete_match_the_spec(spec: dict[str, Any], api: httpx.Client) -> None:
    record = api.post("/phone-number", json=BODIES["telnyx"]).json()
    patch = {"name": "renamed", "assistantId": "asst-2"}
    # The spec's PATCH oneOf cannot tell its DTOs apart (none has 'provider'): use the telnyx one.
    _validator(spec, {"$ref": "#/components/schemas/UpdateTelnyxPhoneNumberDTO"}).validate(patch)
    updated = api.patch(f"/phone-number/{record['id']}", json=patch)
    assert updated.status_code == 200, updated.text
    response_schema(spec, "PATCH", "/phone-number/{id}", "200").validate(updated.json())
    assert updated.json()["name"] == "renamed" and updated.json()["createdAt"] == record["createdAt"]
    assert updated.json()["updatedAt"] >= record["updatedAt"]
    deleted = api.delete(f"/phone-number/{record['id']}")
    assert deleted.status_code == 200
    response_schema(spec, "DELETE", "/phone-number/{id}", "200").validate(deleted.json())
    assert deleted.json()["name"] == "renamed"
    for method in ("GET", "PATCH", "DELETE"):
        response = api.request(method, f"/phone-number/{record['id']}", json=patch if method == "PATCH" else None)
        assert "not found" in messages(assert_envelope(response, 404))


def test_update_rejects_fields_of_another_provider(api: httpx.Client) -> None:
    record = api.post("/phone-number", json=BODIES["vapi"]).json()
    response = api.patch(f"/phone-number/{record['id']}", json={"credentialId": "x"})
    assert "property credentialId should not exist" in messages(assert_envelope(response, 400))
    response = api.patch(f"/phone-number/{record['id']}", json={"provider": "twilio"})
    assert "provider" in messages(assert_envelope(response, 400))


# -- paging, sorting, filters ---------------------------------------------------------------------
@pytest.mark.parametrize("order", ["ASC", "DESC"])
def test_v2_pages_are_slices_of_one_deterministic_order(
    api: httpx.Client, emulator: VapiEmulator, order: str
) -> None:
    records = seed(emulator, 25)
    # Two records with the same createdAt: the id breaks the tie, so paging stays deterministic.
    twin = emulator.add("vonage", number="447700900999", credentialId="c", created_at=records[10]["createdAt"])
    expected = sorted([*records, twin], key=lambda r: (r["createdAt"], r["id"]), reverse=order == "DESC")
    seen = []
    for page in (1, 2, 3):
        body = api.get("/v2/phone-number", params={"limit": 10, "page": page, "sortOrder": order}).json()
        assert body["metadata"]["totalPages"] == 3 and body["metadata"]["sortOrder"] == order
        assert body["metadata"]["hasNextPage"] is (page < 3)
        seen += [r["id"] for r in body["results"]]
    assert seen == [r["id"] for r in expected]
    beyond = api.get("/v2/phone-number", params={"limit": 10, "page": 4}).json()
    assert beyond["results"] == [] and beyond["metadata"]["totalItems"] == 26


def test_created_at_filters_are_exact_at_the_boundaries(api: httpx.Client, emulator: VapiEmulator) -> None:
    records = seed(emulator, 10)
    at = records[5]["createdAt"]

    def ids(**params: Any) -> list[str]:
        body = api.get("/v2/phone-number", params={"sortOrder": "ASC", **params}).json()
        assert body["metadata"]["totalItems"] == len(body["results"])
        return [r["id"] for r in body["results"]]

    all_ids = [r["id"] for r in records]
    assert ids(createdAtGe=at) == all_ids[5:]
    assert ids(createdAtGt=at) == all_ids[6:]
    assert ids(createdAtLe=at) == all_ids[:6]
    assert ids(createdAtLt=at) == all_ids[:5]
    assert ids(createdAtGt=records[2]["createdAt"], createdAtLt=records[4]["createdAt"]) == [all_ids[3]]
    # Other ISO 8601 spellings of the same moment select the same records.
    assert ids(createdAtLe=(T0 + timedelta(minutes=5)).isoformat()) == all_ids[:6]


def test_updated_at_filters_and_search(api: httpx.Client, emulator: VapiEmulator) -> None:
    old = emulator.add("twilio", number="+14155550100", twilioAccountSid="AC" + "z" * 32, name="Sales Desk",
                       created_at=T0, updated_at=T0)
    new = emulator.add("telnyx", number="+19705550100", credentialId="c", name="support",
                       created_at=T0 + timedelta(hours=1), updated_at=T0 + timedelta(days=2))
    sip = emulator.add("vapi", sipUri="sip:SALES-bot@example.sip.vapi.ai", created_at=T0 + timedelta(hours=2),
                       updated_at=T0 + timedelta(days=1))

    def ids(**params: Any) -> set[str]:
        body = api.get("/v2/phone-number", params=params).json()
        assert body["metadata"]["totalItems"] == len(body["results"])
        return {r["id"] for r in body["results"]}

    assert ids(updatedAtGt=(T0 + timedelta(days=1)).isoformat()) == {new["id"]}
    assert ids(updatedAtGe=sip["updatedAt"]) == {new["id"], sip["id"]}
    assert ids(updatedAtLt=sip["updatedAt"]) == {old["id"]}
    assert ids(updatedAtLe=sip["updatedAt"]) == {old["id"], sip["id"]}
    assert ids(search="sales") == {old["id"], sip["id"]}  # name and SIP URI, any case
    assert ids(search="9705550") == {new["id"]}  # part of a number
    assert ids(search="sales", updatedAtGt=T0.isoformat()) == {sip["id"]}
    paged = api.get("/v2/phone-number", params={"search": "s", "limit": 1, "page": 2}).json()
    assert paged["metadata"]["totalItems"] == 3 and len(paged["results"]) == 1


def test_created_at_is_strictly_increasing_even_within_one_millisecond(api: httpx.Client) -> None:
    frozen = datetime(2025, 6, 1, 12, 0, 0, 123456, tzinfo=UTC)
    emulator = VapiEmulator(api_key=KEY, clock=lambda: frozen)
    stamps = [emulator.add("vapi", sipUri=f"sip:{i}@x")["createdAt"] for i in range(3)]
    assert stamps == ["2025-06-01T12:00:00.123Z", "2025-06-01T12:00:00.124Z", "2025-06-01T12:00:00.125Z"]


# -- validation and errors ------------------------------------------------------------------------
INVALID_REQUESTS = [
    ("POST", "/phone-number", None, {"provider": "plivo", "number": "+14155550100"}, "provider must be one of"),
    ("POST", "/phone-number", None, {"number": "+14155550100"}, "provider must be one of"),
    ("POST", "/phone-number", None, {**BODIES["telnyx"], "color": "red"}, "property color should not exist"),
    ("POST", "/phone-number", None, {**BODIES["telnyx"], "name": "x" * 41}, "name must be shorter than or equal"),
    ("POST", "/phone-number", None, {**BODIES["telnyx"], "number": 14155550100}, "number must be a string"),
    ("POST", "/phone-number", None, {**BODIES["byo-phone-number"], "number": "12"}, "longer than or equal to 3"),
    ("POST", "/phone-number", None, {**BODIES["byo-phone-number"], "number": "x" * 41}, "shorter than or equal"),
    ("POST", "/phone-number", None, {**BODIES["byo-phone-number"], "number": "4930123"}, "E.164"),
    ("POST", "/phone-number", None, {k: v for k, v in BODIES["twilio"].items() if k != "twilioAuthToken"},
     "twilioAuthToken or twilioApiKey and twilioApiSecret"),
    ("POST", "/phone-number", None, {**BODIES["vapi"], "numberDesiredAreaCode": "4155"}, "numberDesiredAreaCode"),
    ("POST", "/phone-number", None, [BODIES["vapi"]], "body must be an object"),
    ("GET", "/v2/phone-number", {"limit": "-1"}, None, "limit must not be less than 0"),
    ("GET", "/v2/phone-number", {"limit": "1001"}, None, "limit must not be greater than 1000"),
    ("GET", "/v2/phone-number", {"limit": "ten"}, None, "limit must be a number"),
    ("GET", "/phone-number", {"limit": "1001"}, None, "limit must not be greater than 1000"),
    ("GET", "/v2/phone-number", {"page": "0"}, None, "page must not be less than 1"),
    ("GET", "/v2/phone-number", {"sortOrder": "asc"}, None, "sortOrder must be one of the following values"),
    ("GET", "/v2/phone-number", {"search": "x" * 101}, None, "search must be shorter than or equal to 100"),
    ("GET", "/v2/phone-number", {"createdAtGt": "yesterday"}, None, "createdAtGt must be a valid ISO 8601"),
    ("GET", "/phone-number", {"updatedAtLe": "2024-13-01"}, None, "updatedAtLe must be a valid ISO 8601"),
    ("GET", "/v2/phone-number", {"cursor": "abc"}, None, "property cursor should not exist"),
    ("GET", "/phone-number", {"page": "2"}, None, "property page should not exist"),
    ("GET", "/phone-number/not-a-uuid", None, None, "uuid is expected"),
]


@pytest.mark.parametrize(("method", "path", "params", "body", "expected"), INVALID_REQUESTS)
def test_invalid_requests_get_nestjs_style_400s(
    api: httpx.Client, method: str, path: str, params: dict[str, str] | None, body: Any, expected: str
) -> None:
    response = api.request(method, path, params=params, json=body)
    assert expected in messages(assert_envelope(response, 400))


def test_a_body_that_is_not_json_is_a_400(api: httpx.Client) -> None:
    response = api.post("/phone-number", content=b'{"provider": ', headers={"Content-Type": "application/json"})
    assert "JSON" in messages(assert_envelope(response, 400))


def test_limit_bounds_are_inclusive(api: httpx.Client, emulator: VapiEmulator) -> None:
    seed(emulator, 3)
    zero = api.get("/v2/phone-number", params={"limit": 0}).json()
    assert zero["results"] == [] and zero["metadata"]["totalItems"] == 3
    assert len(api.get("/v2/phone-number", params={"limit": 1000}).json()["results"]) == 3


@pytest.mark.parametrize("header", [None, "Bearer wrong-key", f"Basic {KEY}", KEY])
def test_bad_credentials_get_vapis_401(emulator: VapiEmulator, header: str | None) -> None:
    with EmulatorServer(emulator) as server:
        headers = {"Authorization": header} if header else {}
        response = httpx.get(f"{server.url}/v2/phone-number", headers=headers, verify=TLS)
        ok = httpx.get(f"{server.url}/v2/phone-number", headers={"Authorization": f"Bearer {KEY}"}, verify=TLS)
    assert response.json() == {"statusCode": 401, "message": INVALID_KEY, "error": "Unauthorized"}
    assert response.status_code == 401 and ok.status_code == 200


def test_duplicate_numbers_are_allowed_and_recorded(api: httpx.Client, emulator: VapiEmulator) -> None:
    first = api.post("/phone-number", json=BODIES["vonage"]).json()
    second = api.post("/phone-number", json={**BODIES["vonage"], "number": "+447700900000"})
    assert second.status_code == 201
    assert emulator.duplicate_creates == [
        {"number": "+447700900000", "id": second.json()["id"], "existing": [first["id"]]}
    ]
    assert emulator.duplicates() == {"447700900000": [first["id"], second.json()["id"]]}
    assert {r["id"] for r in emulator.by_number("+447700900000")} == {first["id"], second.json()["id"]}


@pytest.mark.parametrize(("status", "error"), [(429, "Too Many Requests"), (500, "Internal Server Error"),
                                               (503, "Service Unavailable")])
def test_injected_errors_use_vapis_envelope(
    api: httpx.Client, emulator: VapiEmulator, status: int, error: str
) -> None:
    emulator.faults.add("status", status=status, retry_after="3")
    response = api.get("/v2/phone-number")
    assert assert_envelope(response, status)["error"] == error
    assert response.headers["Retry-After"] == "3"
    assert api.get("/v2/phone-number").status_code == 200  # the fault hit once


def test_empty_fault_lists_nothing(api: httpx.Client, emulator: VapiEmulator) -> None:
    seed(emulator, 3)
    emulator.faults.add("empty", times=2)
    v2 = api.get("/v2/phone-number").json()
    assert v2["results"] == [] and v2["metadata"]["totalItems"] == 0
    assert api.get("/phone-number").json() == []
    assert len(api.get("/phone-number").json()) == 3


def test_python_api_and_control_state(api: httpx.Client, emulator: VapiEmulator) -> None:
    sip = emulator.add("vapi", sipUri="sip:only@example.sip.vapi.ai", assistantId="a1", status="blocked")
    assert "number" not in sip and sip["status"] == "blocked" and sip["assistantId"] == "a1"
    copy.deepcopy(sip)["status"] = "active"
    assert emulator.records()[0]["status"] == "blocked"  # callers get copies
    state = api.get("/_sandbox/state").json()
    assert [r["id"] for r in state["records"]] == [sip["id"]] and state["duplicateCreates"] == []
    assert emulator.delete(sip["id"])["id"] == sip["id"]
    assert api.get(f"/phone-number/{sip['id']}").status_code == 404
    with pytest.raises(KeyError):
        emulator.delete(sip["id"])


_TEXT = st.text(alphabet="aAbB12+:\x1f", max_size=4)
_NEEDLE = st.text(alphabet="ab12+:\x1f", min_size=1, max_size=3)  # short, so that most of them match


@settings(max_examples=150, deadline=None, derandomize=True, database=None)
@given(steps=st.lists(st.tuples(st.sampled_from(["add", "update", "delete", "search"]), _TEXT, _TEXT, _NEEDLE),
                      max_size=40),
       threshold_records=st.integers(0, 30))
def test_search_and_number_lookup_answer_what_checking_every_record_would(
        steps: list[tuple[str, str, str, str]], threshold_records: int) -> None:
    # The emulation searches one prebuilt string, with records changed since it was built
    # checked aside; whatever the changes, it must answer as checking each record would.
    emu = VapiEmulator(api_key=KEY)
    for i in range(threshold_records):
        emu.add("byo-phone-number", number=f"+1415{i:07d}", name=f"Line {i} ab", credentialId="c")
    auth = {"authorization": f"Bearer {KEY}"}
    for op, name, number, needle in steps:
        live = emu.records()
        if op == "add":
            emu.add("byo-phone-number", number=(number or None) if len(name) % 2 else f"+1415555010{len(number) % 3}",
                    name=name or None, sipUri=needle or None, credentialId="c")
        elif op == "update" and live:
            rec = live[len(name) % len(live)]
            patch = {"name": name[:40], "number": f"+1415555010{len(number) % 3}"} if number else {"name": name[:40]}
            req = Request("PATCH", f"/phone-number/{rec['id']}", {}, auth, json.dumps(patch).encode())
            assert emu.dispatch(req).status == 200
        elif op == "delete" and live:
            emu.delete(live[len(number) % len(live)]["id"])
        else:
            req = Request("GET", "/v2/phone-number", {"search": [needle], "limit": ["1000"], "sortOrder": ["ASC"]},
                          auth, b"")
            got = [r["id"] for r in json.loads(emu.dispatch(req).body)["results"]]
            want = [r["id"] for r in emu.records()
                    if any(needle.lower() in str(r.get(f) or "").lower() for f in ("name", "number", "sipUri"))]
            assert got == want
            for lookup in (number, f"1415555010{len(needle) % 3}"):  # and the duplicate check's index
                key = lookup.replace(" ", "").lstrip("+")
                held = [r["id"] for r in emu.records()
                        if key and str(r.get("number") or "").replace(" ", "").lstrip("+") == key]
                assert [r["id"] for r in emu.by_number(lookup)] == held


def test_search_never_matches_across_two_fields_or_two_records() -> None:
    emu = VapiEmulator(api_key=KEY)
    a = emu.add("byo-phone-number", number="+14155550100", name="Desk 1", credentialId="c")
    emu.add("byo-phone-number", number="+19705550122", name="Desk 2", credentialId="c")
    auth = {"authorization": f"Bearer {KEY}"}

    def ids(needle: str) -> list[str]:
        req = Request("GET", "/v2/phone-number", {"search": [needle], "limit": ["100"]}, auth, b"")
        return [r["id"] for r in json.loads(emu.dispatch(req).body)["results"]]

    assert ids("0100") == [a["id"]]  # builds the search text
    assert ids("11") == []  # "Desk 1" then "+1415...": a 1 and a 1, but in two fields
    assert ids("0019") == []  # the end of one record's number and the start of the next one's
    assert ids("1 +1") == []

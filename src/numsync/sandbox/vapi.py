"""An emulation of Vapi's Phone Numbers API, faithful where numsync's correctness depends on it.

numsync must list every Vapi record exactly once while the inventory changes under it, never
retry a create blindly, and never leak the Twilio secrets that Vapi echoes back. Each of those
is only testable against something that behaves like Vapi: offset paging that *does* shift
when records are created or deleted, ``createdAt`` filters, NestJS-style 400s, the
``{statusCode, message, error}`` envelope, duplicate numbers allowed, and ``twilioAuthToken``
present in responses. The shapes follow the public OpenAPI description
(``TwilioPhoneNumber``, ``TelnyxPhoneNumber``, ``VonagePhoneNumber``, ``VapiPhoneNumber``,
``ByoPhoneNumber``, ``PhoneNumberPaginatedResponse``); ``tests/test_vapi_emulation.py`` checks
them against a copy of that spec.

The listing must stay fast for 100,000 records (the benchmark): records are kept in a list
sorted by ``(createdAt, id)``, ``createdAt`` bounds are found with ``bisect``, and each
record's JSON is encoded once and reused until the record changes.
"""

from __future__ import annotations

import bisect
import itertools
import json
import math
import re
import threading
import uuid
from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta
from http import HTTPStatus
from typing import Any

from .server import Emulator, Request, Response, json_array_body, json_response

__all__ = ["DEFAULT_ORG_ID", "PROVIDERS", "VapiEmulator"]

DEFAULT_ORG_ID = "11111111-1111-4111-8111-111111111111"
PROVIDERS = ("twilio", "telnyx", "vonage", "vapi", "byo-phone-number")
INVALID_KEY = (
    "Invalid Key. Hot tip, you may be using the private key instead of the public key, or vice versa."
)

_MAX_ID = "\U0010ffff"  # sorts after every id: the upper sentinel for bisect on (createdAt, id)
_UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$", re.I)
_E164 = re.compile(r"^\+[1-9]\d{1,14}$")
_ALNUM = re.compile(r"^\+?[a-zA-Z0-9]+$")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

# Field kinds of the spec's DTOs: (json type, min length, max length).
_Kind = tuple[str, int | None, int | None]
_STR = ("string", None, None)
_BOOL = ("boolean", None, None)
_OBJ = ("object", None, None)
_ARR = ("array", None, None)
_COMMON: dict[str, _Kind] = {
    "name": ("string", None, 40),
    "assistantId": _STR,
    "workflowId": _STR,
    "squadId": _STR,
    "server": _OBJ,
    "fallbackDestination": _OBJ,
    "hooks": _ARR,
}
_UPDATE_FIELDS: dict[str, dict[str, _Kind]] = {
    "twilio": {**_COMMON, "smsEnabled": _BOOL, "number": _STR, "twilioAccountSid": _STR,
               "twilioAuthToken": _STR, "twilioApiKey": _STR, "twilioApiSecret": _STR},
    "telnyx": {**_COMMON, "number": _STR, "credentialId": _STR},
    "vonage": {**_COMMON, "number": _STR, "credentialId": _STR},
    "byo-phone-number": {**_COMMON, "numberE164CheckEnabled": _BOOL, "number": ("string", 3, 40),
                         "credentialId": _STR},
    "vapi": {**_COMMON, "sipUri": _STR, "authentication": _OBJ},
}
_CREATE_FIELDS = {
    provider: {"provider": _STR, **fields, **({"numberDesiredAreaCode": ("string", 3, 3)}
                                               if provider == "vapi" else {})}
    for provider, fields in _UPDATE_FIELDS.items()
}
_REQUIRED = {
    "twilio": ("number", "twilioAccountSid"),
    "telnyx": ("number", "credentialId"),
    "vonage": ("number", "credentialId"),
    "byo-phone-number": ("credentialId",),
    "vapi": (),
}
_DATE_FILTERS = tuple(f"{f}{op}" for f in ("createdAt", "updatedAt") for op in ("Gt", "Lt", "Ge", "Le"))
_V1_PARAMS = frozenset(("limit", *_DATE_FILTERS))
_V2_PARAMS = frozenset(("limit", "page", "sortOrder", "sortBy", "search", *_DATE_FILTERS))
_JSON_TYPES: dict[str, type] = {"string": str, "boolean": bool, "object": dict, "array": list}


class _NotFound(Exception):  # internal control flow, rendered as a 404
    pass


class _Invalid(Exception):  # internal control flow, rendered as a 400
    def __init__(self, messages: list[str] | str) -> None:
        super().__init__(messages)
        self.messages = messages


def _iso(us: int) -> str:
    """Vapi's timestamp form: ISO 8601 in UTC with milliseconds and 'Z'."""
    moment = _EPOCH + timedelta(microseconds=us)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def _to_us(moment: datetime) -> int:
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    delta = moment - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def _parse_iso(text: str) -> int | None:
    """Microseconds since the epoch, or None when the text is not an ISO 8601 date(-time)."""
    try:
        return _to_us(datetime.fromisoformat(text.strip()))
    except (ValueError, TypeError, OverflowError):
        return None


def _moment_us(value: Any) -> int:
    """A test's created_at/updated_at override: a datetime or an ISO string, cut to milliseconds."""
    us = _to_us(value) if isinstance(value, datetime) else _parse_iso(str(value))
    if us is None:
        raise ValueError(f"not an ISO 8601 date-time: {value!r}")
    return us - us % 1000


def _number_key(number: Any) -> str:
    return str(number or "").replace(" ", "").lstrip("+")


class VapiEmulator(Emulator):
    """Vapi's ``/phone-number`` and ``/v2/phone-number`` over in-memory records.

    ``clock`` returns the current datetime (UTC); new records get a ``createdAt`` strictly
    greater than every earlier one, even within one millisecond, so ``createdAtLe=<newest>``
    reliably excludes records created later (the property numsync's listing relies on).
    ``service_time`` makes every API request spend that long inside the API, and
    ``peak_in_flight`` records how many requests the API was handling at once.
    """

    name = "vapi"

    def __init__(
        self,
        api_key: str = "sandbox-vapi-key",
        org_id: str = DEFAULT_ORG_ID,
        *,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        super().__init__()
        self.api_key = api_key
        self.org_id = org_id
        self.clock: Callable[[], datetime] = clock or (lambda: datetime.now(UTC))
        self._records: dict[str, dict[str, Any]] = {}
        self._created_us: dict[str, int] = {}
        self._order: list[tuple[int, str]] = []  # sorted by (createdAt, id)
        self._encoded: dict[str, bytes] = {}
        self._search = _SearchIndex()
        self._by_key: dict[str, set[str]] = {}  # _number_key -> ids: a create checks it for duplicates
        self._last_us = 0
        self.duplicate_creates: list[dict[str, Any]] = []
        self.service_time = 0.0
        self.in_flight = 0
        self.peak_in_flight = 0
        self.route("POST", r"/phone-number", self._create)
        self.route("GET", r"/phone-number", self._list_v1)
        self.route("GET", r"/v2/phone-number", self._list_v2)
        self.route("GET", r"/phone-number/([^/]+)", self._get)
        self.route("PATCH", r"/phone-number/([^/]+)", self._update)
        self.route("DELETE", r"/phone-number/([^/]+)", self._delete)

    # -- Python API for tests, the demo and the benchmark ----------------------------------------
    def add(self, provider: str | None, **fields: Any) -> dict[str, Any]:
        """Insert a record without validation (tests seed anything), filling Vapi's defaults.

        ``created_at`` / ``updated_at`` (datetime or ISO text) override the timestamps; any
        other keyword becomes a record field as written (``status``, ``assistantId``, ...).
        ``provider=None`` makes a record without one (a broken answer, for client tests).
        """
        created = fields.pop("created_at", fields.pop("createdAt", None))
        updated = fields.pop("updated_at", fields.pop("updatedAt", None))
        with self.lock:
            created_us = _moment_us(created) if created is not None else self._next_created_us()
            self._last_us = max(self._last_us, created_us)
            updated_us = _moment_us(updated) if updated is not None else created_us
            record: dict[str, Any] = {"id": fields.pop("id", None) or str(uuid.uuid4()), "orgId": self.org_id}
            if provider is not None:
                record["provider"] = provider
            if provider == "twilio":
                record["smsEnabled"] = True
            elif provider == "byo-phone-number":
                record["numberE164CheckEnabled"] = True
            record.update(fields)
            record["createdAt"] = _iso(created_us)
            record["updatedAt"] = _iso(updated_us)
            record.setdefault("status", "active")
            if record["id"] in self._records:
                raise ValueError(f"duplicate id {record['id']}")
            self._records[record["id"]] = record
            self._created_us[record["id"]] = created_us
            bisect.insort(self._order, (created_us, record["id"]))
            self._encoded[record["id"]] = json.dumps(record).encode()  # listings reuse it
            self._search.touch(record["id"], record)
            self._index_number(record["id"], None, record.get("number"))
            return dict(record)

    def delete(self, record_id: str) -> dict[str, Any]:
        """Remove a record (KeyError when unknown) and return it."""
        with self.lock:
            record = self._records.pop(record_id)
            created_us = self._created_us.pop(record_id)
            index = bisect.bisect_left(self._order, (created_us, record_id))
            del self._order[index]
            self._encoded.pop(record_id, None)
            self._search.touch(record_id, None)
            self._index_number(record_id, record.get("number"), None)
            return record

    def records(self) -> list[dict[str, Any]]:
        """Copies of every record, oldest first."""
        with self.lock:
            return [dict(self._records[rid]) for _, rid in self._order]

    def by_number(self, number: str) -> list[dict[str, Any]]:
        """Copies of the records holding ``number`` (a leading '+' is not significant)."""
        key = _number_key(number)
        with self.lock:
            return [dict(self._records[rid]) for rid in self._oldest_first(self._by_key.get(key, ()))] if key else []

    def duplicates(self) -> dict[str, list[str]]:
        """Numbers held by two or more records, with their ids (what numsync must never cause)."""
        with self.lock:
            return {key: self._oldest_first(ids) for key, ids in self._by_key.items() if len(ids) > 1}

    def dump_state(self) -> Any:
        return {"orgId": self.org_id, "records": self.records(),
                "duplicateCreates": list(self.duplicate_creates)}

    def _next_created_us(self) -> int:
        now_us = _to_us(self.clock())
        now_us -= now_us % 1000
        return max(now_us, self._last_us + 1000)

    # -- the Emulator contract --------------------------------------------------------------------
    def error_response(self, status: int, message: Any) -> Response:
        try:
            error = HTTPStatus(status).phrase
        except ValueError:
            error = "Error"
        return json_response({"statusCode": status, "message": message, "error": error}, status)

    def check_auth(self, req: Request) -> Response | None:
        if req.headers.get("authorization", "") != f"Bearer {self.api_key}":
            return json_response({"statusCode": 401, "message": INVALID_KEY, "error": "Unauthorized"}, 401)
        return None

    def dispatch(self, req: Request) -> Response:
        with self.lock:
            self.in_flight += 1
            self.peak_in_flight = max(self.peak_in_flight, self.in_flight)
        try:
            if self.service_time:
                threading.Event().wait(self.service_time)  # work inside the API; yields like real I/O
            try:
                return super().dispatch(req)
            except _Invalid as exc:
                return self.error_response(400, exc.messages)
            except _NotFound:
                return self.error_response(404, "Phone number not found")
        finally:
            with self.lock:
                self.in_flight -= 1

    # -- handlers ---------------------------------------------------------------------------------
    def _create(self, req: Request) -> Response:
        body = self._json_body(req)
        provider = body.get("provider")
        if provider not in _CREATE_FIELDS:
            raise _Invalid([f"provider must be one of the following values: {', '.join(PROVIDERS)}"])
        problems = self._check_fields(body, _CREATE_FIELDS[provider])
        problems += [f"{name} should not be empty" for name in _REQUIRED[provider] if name not in body]
        if provider == "twilio" and "twilioAuthToken" not in body and not (
            "twilioApiKey" in body and "twilioApiSecret" in body
        ):
            problems.append("twilioAuthToken or twilioApiKey and twilioApiSecret must be provided")
        problems += self._check_byo_number(provider, body)
        if problems:
            raise _Invalid(problems)
        fields = {k: v for k, v in body.items() if k != "provider"}
        if provider == "vapi" and "number" not in fields and "sipUri" not in fields:
            area = fields.get("numberDesiredAreaCode") or "415"
            fields["number"] = f"+1{area}555{len(self._records) % 10_000:04d}"
        with self.lock:
            existing = [r["id"] for r in self.by_number(fields["number"])] if fields.get("number") else []
            record = self.add(provider, **fields)
            if existing:
                self.duplicate_creates.append({"number": fields["number"], "id": record["id"],
                                               "existing": existing})
        return json_response(record, 201)

    def _list_v1(self, req: Request) -> Response:
        self._check_params(req, _V1_PARAMS)
        limit = self._int_param(req, "limit", 100, 0, 1000)
        with self.lock:
            lo, hi, keys = self._filtered(req)
            if keys is None:
                keys = self._order[lo:hi]
            chosen = [] if self.empty_inventory or not limit else keys[-limit:][::-1]
            body = b"[" + b",".join(self._encode(rid) for _, rid in chosen) + b"]"
        return Response(status=200, body=body)

    def _list_v2(self, req: Request) -> Response:
        self._check_params(req, _V2_PARAMS)
        limit = self._int_param(req, "limit", 100, 0, 1000)
        page = self._int_param(req, "page", 1, 1, None)
        sort_order = req.arg("sortOrder", "DESC")
        problems = []
        if sort_order not in ("ASC", "DESC"):
            problems.append("sortOrder must be one of the following values: ASC, DESC")
        if req.arg("sortBy") not in (None, "createdAt", "duration", "cost"):
            problems.append("sortBy must be one of the following values: createdAt, duration, cost")
        if len(req.arg("search") or "") > 100:
            problems.append("search must be shorter than or equal to 100 characters")
        if problems:
            raise _Invalid(problems)
        with self.lock:
            lo, hi, keys = self._filtered(req)
            total = 0 if self.empty_inventory else (hi - lo if keys is None else len(keys))
            start = (page - 1) * limit
            stop = min(start + limit, total)
            if start >= stop:
                chosen: list[tuple[int, str]] = []
            elif keys is not None:
                chosen = keys[start:stop] if sort_order == "ASC" else keys[total - stop:total - start][::-1]
            elif sort_order == "ASC":
                chosen = self._order[lo + start:lo + stop]
            else:
                chosen = self._order[hi - stop:hi - start][::-1]
            encoded, encode = self._encoded, self._encode
            results = [encoded.get(rid) or encode(rid) for _, rid in chosen]
        meta: dict[str, Any] = {
            "itemsPerPage": limit,
            "totalItems": total,
            "currentPage": page,
            "totalPages": math.ceil(total / limit) if limit else 0,
            "hasNextPage": page * limit < total if limit else False,
            "sortOrder": sort_order,
        }
        for bound in ("createdAtLe", "createdAtGe"):
            if req.arg(bound):
                meta[bound] = _iso(_parse_iso(req.arg(bound) or "") or 0)
        body = json_array_body(b'{"results":', results, b",", b',"metadata":' + json.dumps(meta).encode() + b"}")
        return Response(status=200, body=body)

    def _get(self, req: Request, record_id: str) -> Response:
        self._check_params(req, frozenset())
        with self.lock:
            return Response(status=200, body=self._encode(self._find(record_id)["id"]))

    def _update(self, req: Request, record_id: str) -> Response:
        body = self._json_body(req)
        with self.lock:
            record = self._find(record_id)
            provider = record["provider"]
            fields = dict(body)
            problems = []
            if "provider" in fields and fields.pop("provider") != provider:
                problems.append(f"provider cannot be changed from {provider}")
            problems += self._check_fields(fields, _UPDATE_FIELDS[provider])
            merged = {**record, **fields}
            before = record.get("number")
            touched = "number" in fields or "numberE164CheckEnabled" in fields
            problems += self._check_byo_number(provider, merged if touched else {})
            if problems:
                raise _Invalid(problems)
            record.update(fields)
            now_us = _to_us(self.clock())
            record["updatedAt"] = _iso(max(now_us - now_us % 1000, self._created_us[record_id]))
            self._encoded.pop(record_id, None)
            self._search.touch(record_id, record)
            self._index_number(record_id, before, record.get("number"))
            return json_response(dict(record))

    def _delete(self, req: Request, record_id: str) -> Response:
        with self.lock:
            self._find(record_id)
            return json_response(self.delete(record_id))

    # -- helpers ----------------------------------------------------------------------------------
    def _oldest_first(self, ids: Iterable[str]) -> list[str]:
        return [rid for _, rid in sorted((self._created_us[rid], rid) for rid in ids)]

    def _index_number(self, record_id: str, old: Any, new: Any) -> None:
        if (old_key := _number_key(old)) and (ids := self._by_key.get(old_key)) is not None:
            ids.discard(record_id)
            if not ids:
                del self._by_key[old_key]
        if new_key := _number_key(new):
            self._by_key.setdefault(new_key, set()).add(record_id)

    def _encode(self, record_id: str) -> bytes:
        encoded = self._encoded.get(record_id)
        if encoded is None:
            encoded = self._encoded[record_id] = json.dumps(self._records[record_id]).encode()
        return encoded

    def _find(self, record_id: str) -> dict[str, Any]:
        if not _UUID.match(record_id):
            raise _Invalid("Validation failed (uuid is expected)")
        record = self._records.get(record_id)
        if record is None:
            raise _NotFound
        return record

    @staticmethod
    def _json_body(req: Request) -> dict[str, Any]:
        try:
            body = json.loads(req.body or b"")
        except (ValueError, UnicodeDecodeError) as exc:
            raise _Invalid(f"Unexpected token in JSON at position {getattr(exc, 'pos', 0)}") from None
        if not isinstance(body, dict):
            raise _Invalid(["body must be an object"])
        return body

    @staticmethod
    def _check_fields(body: dict[str, Any], allowed: dict[str, _Kind]) -> list[str]:
        problems = []
        for name, value in body.items():
            spec = allowed.get(name)
            if spec is None:
                problems.append(f"property {name} should not exist")
                continue
            kind, min_len, max_len = spec
            if not isinstance(value, _JSON_TYPES[kind]):
                problems.append(f"{name} must be a{'n' if kind[0] in 'ao' else ''} {kind}")
                continue
            if max_len is not None and len(value) > max_len:  # type: ignore[arg-type]
                problems.append(f"{name} must be shorter than or equal to {max_len} characters")
            if min_len is not None and len(value) < min_len:  # type: ignore[arg-type]
                problems.append(f"{name} must be longer than or equal to {min_len} characters")
        return problems

    @staticmethod
    def _check_byo_number(provider: str, body: dict[str, Any]) -> list[str]:
        number = body.get("number")
        if provider != "byo-phone-number" or not isinstance(number, str) or not 3 <= len(number) <= 40:
            return []
        if body.get("numberE164CheckEnabled", True) is not False:
            return [] if _E164.match(number) else [
                "number must be a valid E.164 phone number (or set numberE164CheckEnabled to false)"]
        return [] if _ALNUM.match(number) else ["number must only contain alphanumeric characters"]

    @staticmethod
    def _check_params(req: Request, allowed: frozenset[str]) -> None:
        unknown = [f"property {name} should not exist" for name in req.query if name not in allowed]
        if unknown:
            raise _Invalid(unknown)

    @staticmethod
    def _int_param(req: Request, name: str, default: int, low: int, high: int | None) -> int:
        text = req.arg(name)
        if text is None:
            return default
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        if not math.isfinite(value) or value != int(value):
            raise _Invalid([f"{name} must be a number conforming to the specified constraints"])
        if value < low:
            raise _Invalid([f"{name} must not be less than {low}"])
        if high is not None and value > high:
            raise _Invalid([f"{name} must not be greater than {high}"])
        return int(value)

    def _filtered(self, req: Request) -> tuple[int, int, list[tuple[int, str]] | None]:
        """The (createdAt, id) keys the query selects: a [lo, hi) slice of the order, or a list.

        createdAt bounds cost two bisections; only ``search`` and updatedAt bounds scan.
        """
        bounds: dict[str, int] = {}
        problems = []
        for name in _DATE_FILTERS:
            text = req.arg(name)
            if text is None:
                continue
            parsed = _parse_iso(text)
            if parsed is None:
                problems.append(f"{name} must be a valid ISO 8601 date string")
            else:
                bounds[name] = parsed
        if problems:
            raise _Invalid(problems)
        with self.lock:
            order = self._order
            lo, hi = 0, len(order)
            if "createdAtGe" in bounds:
                lo = max(lo, bisect.bisect_left(order, (bounds["createdAtGe"], "")))
            if "createdAtGt" in bounds:
                lo = max(lo, bisect.bisect_right(order, (bounds["createdAtGt"], _MAX_ID)))
            if "createdAtLe" in bounds:
                hi = min(hi, bisect.bisect_right(order, (bounds["createdAtLe"], _MAX_ID)))
            if "createdAtLt" in bounds:
                hi = min(hi, bisect.bisect_left(order, (bounds["createdAtLt"], "")))
            hi = max(lo, hi)
            search = (req.arg("search") or "").lower()
            updated = {k: v for k, v in bounds.items() if k.startswith("updatedAt")}
            if not search and not updated:
                return lo, hi, None
            if search and lo < hi and (found := self._search.find(search, self._records)) is not None:
                first, last = order[lo], order[hi - 1]
                matched = sorted(key for rid in found if first <= (key := (self._created_us[rid], rid)) <= last)
                keys = [key for key in matched if self._matches(self._records[key[1]], "", updated)]
            else:
                keys = [key for key in order[lo:hi] if self._matches(self._records[key[1]], search, updated)]
            return lo, hi, keys

    @staticmethod
    def _matches(record: dict[str, Any], search: str, updated: dict[str, int]) -> bool:
        if search and not any(search in str(record.get(f) or "").lower() for f in _SEARCHED):
            return False
        if updated:
            at = _parse_iso(record["updatedAt"]) or 0
            checks = {"updatedAtGt": at > updated.get("updatedAtGt", at - 1),
                      "updatedAtGe": at >= updated.get("updatedAtGe", at),
                      "updatedAtLt": at < updated.get("updatedAtLt", at + 1),
                      "updatedAtLe": at <= updated.get("updatedAtLe", at)}
            return all(checks.values())
        return True


_SEARCHED = ("name", "number", "sipUri")  # what ``search`` matches, partially and ignoring case
_FIELD, _RECORD = "\x1f", "\x1e"  # separators in the search text; a search holding one is scanned
_NOT_DIGITS = re.compile(r"[^0-9]+")


def _search_text(record: dict[str, Any]) -> str:
    return _FIELD.join(str(record.get(f) or "") for f in _SEARCHED).lower()


class _SearchIndex:
    """The searched fields of every record, lowercased, in one string that ``str.find`` scans.

    A number lookup (``search=`` with its digits: numsync's in-doubt creates and journal
    recovery, and any client checking before it writes) checked each record in Python, about a
    second per search at a million records; one ``find`` over the string takes milliseconds, and
    a search of digits scans only the records' digits, a third of the text. Records added,
    changed or deleted since the strings were built are kept aside with their own text and
    checked one by one, until there are enough to build again.
    """

    def __init__(self) -> None:
        self._texts: dict[bool, tuple[str, list[int]]] = {}  # digits only? -> (text, record starts)
        self._ids: list[str] = []
        self._changed: dict[str, str | None] = {}  # id -> its text now (None: deleted)
        self._built = False

    def touch(self, record_id: str, record: dict[str, Any] | None) -> None:
        if self._built:  # else the first search builds from every record as it is then
            self._changed[record_id] = _search_text(record) if record is not None else None

    def find(self, needle: str, records: dict[str, dict[str, Any]]) -> set[str] | None:
        """Ids of the records whose searched fields contain ``needle`` (lowercase); None: scan instead."""
        if _FIELD in needle or _RECORD in needle:
            return None
        if not self._built or len(self._changed) > max(2_000, len(records) // 50):
            self._build(records)
        text, starts = self._texts[needle.isascii() and needle.isdigit()]
        found: set[str] = set()
        at = text.find(needle)
        while at != -1:
            i = bisect.bisect_right(starts, at) - 1
            found.add(self._ids[i])
            at = text.find(needle, starts[i + 1]) if i + 1 < len(starts) else -1  # once per record
        found.difference_update(self._changed)
        found.update(rid for rid, now in self._changed.items() if now is not None and needle in now)
        return found

    def _build(self, records: dict[str, dict[str, Any]]) -> None:
        self._ids = list(records)
        texts = [_search_text(records[rid]) for rid in self._ids]
        digits = [_NOT_DIGITS.sub(_FIELD, t) for t in texts]  # a run of digits stays whole
        for only_digits, parts in ((False, texts), (True, digits)):
            starts = list(itertools.accumulate((len(t) + 1 for t in parts[:-1]), initial=0))
            self._texts[only_digits] = (_RECORD.join(parts), starts)
        self._changed.clear()
        self._built = True

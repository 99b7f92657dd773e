"""An emulation of Twilio's IncomingPhoneNumbers list, faithful enough for the real twilio SDK.

The Twilio adapter is tested by pointing the unmodified ``twilio`` package at this server, so
what matters here is the wire: the path, HTTP Basic auth with an auth token or an API key, the
``PageSize``/``Page``/``PageToken`` query, the envelope with a *relative* ``next_page_uri`` that
carries ``PageToken=PA<sid of the last record>``, and Twilio's error body
``{"code", "message", "more_info", "status"}`` (401 is code 20003, 404 20404, 429 20429,
500 20500). Records are kept sorted by sid, so a page is one bisect and one slice however many
numbers are seeded, and a PageToken still works after its record was deleted, as at Twilio.
Each record's JSON is encoded when it is stored or changed and reused by every page: a page of
1,000 records is 1.4 MB, and encoding it per request put ~10 ms of emulation time on every page
of a listing that is sequential by nature (the benchmark's latency is meant to be the only wait).
"""

from __future__ import annotations

import base64
import binascii
import bisect
import fnmatch
import itertools
import json
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

from numsync.sandbox.server import Emulator, Request, Response, json_array_body, json_response

__all__ = ["TwilioEmulator"]

API_VERSION = "2010-04-01"
DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 1000
_DATE = "Mon, 01 Jan 2024 00:00:00 +0000"

# status -> (Twilio error code, canonical message); the codes the real API sends for these.
_ERRORS: dict[int, tuple[int, str]] = {
    400: (20001, "Invalid parameter"),
    401: (20003, "Authenticate"),
    403: (20403, "Forbidden"),
    404: (20404, "The requested resource was not found"),
    405: (20004, "Method not allowed"),
    429: (20429, "Too Many Requests"),
    500: (20500, "Internal Server Error"),
    503: (20503, "Service Unavailable"),
}

PAGING_FAULTS = (None, "loop", "repeat", "missing_key", "html")
_RECORDS_SLOT = "@@numsync-sandbox-records@@"  # spliced out of the envelope's JSON


@dataclass
class _Inventory:
    """One account's numbers: sids kept sorted so paging is a bisect, records by sid."""

    order: list[str] = field(default_factory=list)
    records: dict[str, dict[str, Any]] = field(default_factory=dict)
    encoded: dict[str, bytes] = field(default_factory=dict)  # sid -> json.dumps(record), kept current


class TwilioEmulator(Emulator):
    """Twilio's ``GET /2010-04-01/Accounts/{AccountSid}/IncomingPhoneNumbers.json``.

    ``accounts`` maps an account sid to its auth token; ``api_keys`` maps an ``SK...`` sid to
    ``(secret, account_sid)``. Credentials for one account do not open another (401).

    ``paging_fault`` makes paging misbehave for fault tests:

    * ``"loop"``: every page after the first links back to the first page (no PageToken);
    * ``"repeat"``: every page links to itself (the same PageToken again);
    * ``"missing_key"``: the envelope lacks ``incoming_phone_numbers``;
    * ``"html"``: a 200 answer whose body is an HTML page (a captive portal or a bad proxy).
    """

    name = "twilio"

    def __init__(
        self,
        accounts: dict[str, str] | None = None,
        api_keys: dict[str, tuple[str, str]] | None = None,
    ) -> None:
        super().__init__()
        self.accounts: dict[str, str] = dict(accounts or {})
        self.api_keys: dict[str, tuple[str, str]] = dict(api_keys or {})
        self.paging_fault: str | None = None
        self._inventories: dict[str, _Inventory] = {}
        self._by_number: dict[tuple[str, str], str] = {}  # (account, phone_number) -> sid
        self._sids = itertools.count(1)
        self.route("GET", rf"/{API_VERSION}/Accounts/([^/]+)/IncomingPhoneNumbers\.json", self._list)

    def reset(self) -> None:
        """Forget numbers, faults, hooks and the request log; credentials stay (tests reuse a server)."""
        with self.lock:
            self._inventories.clear()
            self._by_number.clear()
            self.paging_fault = None
        self.reset_traffic()

    # -- seeding --------------------------------------------------------------------------------
    def add_number(
        self,
        account_sid: str,
        phone_number: str,
        *,
        friendly_name: str | None = None,
        voice_url: str = "",
        voice_application_sid: str = "",
        trunk_sid: str | None = None,
        status: str = "in-use",
        sid: str | None = None,
    ) -> dict[str, Any]:
        """Seed a number; sids are generated in increasing order so seeding stays O(log n)."""
        with self.lock:
            if sid is None:
                sid = f"PN{next(self._sids):032x}"
            inv = self._inventories.setdefault(account_sid, _Inventory())
            if sid in inv.records:
                raise ValueError(f"sid {sid} already exists")
            record = _record(account_sid, sid, phone_number, friendly_name=friendly_name,
                             voice_url=voice_url, voice_application_sid=voice_application_sid,
                             trunk_sid=trunk_sid, status=status)
            if not inv.order or inv.order[-1] < sid:
                inv.order.append(sid)
            else:
                bisect.insort(inv.order, sid)
            inv.records[sid] = record
            inv.encoded[sid] = json.dumps(record).encode()
            self._by_number[(account_sid, phone_number)] = sid
            return dict(record)

    def remove_number(self, account_sid: str, number_or_sid: str) -> bool:
        """Release a number (by phone number or sid); False when the account did not own it."""
        with self.lock:
            inv = self._inventories.get(account_sid)
            if inv is None:
                return False
            sid = self._by_number.get((account_sid, number_or_sid), number_or_sid)
            record = inv.records.pop(sid, None)
            inv.encoded.pop(sid, None)
            if record is None:
                return False
            idx = bisect.bisect_left(inv.order, sid)
            del inv.order[idx]
            self._by_number.pop((account_sid, record["phone_number"]), None)
            return True

    def update_number(self, account_sid: str, number_or_sid: str, **fields: Any) -> dict[str, Any]:
        """Change routing fields of a seeded number (tests re-route numbers between runs)."""
        with self.lock:
            inv = self._inventories[account_sid]
            sid = self._by_number.get((account_sid, number_or_sid), number_or_sid)
            record = inv.records[sid]
            record.update(fields)
            inv.encoded[sid] = json.dumps(record).encode()
            return dict(record)

    def numbers(self, account_sid: str | None = None) -> list[dict[str, Any]]:
        with self.lock:
            accounts = [account_sid] if account_sid else sorted(self._inventories)
            out: list[dict[str, Any]] = []
            for acc in accounts:
                inv = self._inventories.get(acc)
                if inv is not None:
                    out.extend(dict(inv.records[s]) for s in inv.order)
            return out

    def dump_state(self) -> Any:
        with self.lock:
            return {
                "accounts": sorted(set(self.accounts) | set(self._inventories)),
                "api_keys": {sk: acc for sk, (_secret, acc) in self.api_keys.items()},
                "numbers": {acc: [dict(inv.records[s]) for s in inv.order]
                            for acc, inv in sorted(self._inventories.items())},
                "paging_fault": self.paging_fault,
            }

    # -- HTTP -----------------------------------------------------------------------------------
    def error_response(self, status: int, message: str) -> Response:
        code, canonical = _ERRORS.get(status, (20000 + status, message))
        text = message if status == 400 or status not in _ERRORS else canonical
        resp = json_response({"code": code, "message": text,
                              "more_info": f"https://www.twilio.com/docs/errors/{code}", "status": status},
                             status)
        if status == 401:
            resp.headers["WWW-Authenticate"] = 'Basic realm="Twilio API"'
        return resp

    def _authenticated_account(self, req: Request) -> str | None:
        header = req.headers.get("authorization", "")
        scheme, _, encoded = header.partition(" ")
        if scheme.lower() != "basic" or not encoded:
            return None
        try:
            user, sep, password = base64.b64decode(encoded, validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return None
        if not sep:
            return None
        if user in self.accounts and self.accounts[user] == password:
            return user
        key = self.api_keys.get(user)
        if key is not None and key[0] == password:
            return key[1]
        return None

    def check_auth(self, req: Request) -> Response | None:
        account = self._authenticated_account(req)
        if account is None:
            return self.error_response(401, "Authenticate")
        prefix = f"/{API_VERSION}/Accounts/"
        if req.path.startswith(prefix):
            url_account = req.path[len(prefix):].split("/", 1)[0]
            if url_account != account:
                return self.error_response(401, "Authenticate")
        return None

    def _list(self, req: Request, account_sid: str) -> Response:
        try:
            page_size = int(req.arg("PageSize") or DEFAULT_PAGE_SIZE)
            page = int(req.arg("Page") or 0)
        except ValueError:
            return self.error_response(400, "Invalid PageSize or Page")
        if page_size < 1 or page < 0:
            return self.error_response(400, "Invalid PageSize or Page")
        page_size = min(page_size, MAX_PAGE_SIZE)
        token = req.arg("PageToken") or ""
        if token and not (token.startswith(("PA", "PB")) and len(token) > 2):
            return self.error_response(400, f"Invalid PageToken {token}")
        if self.paging_fault == "html":
            return Response(status=200, content_type="text/html",
                            body=b"<html><body><h1>Welcome to the guest network</h1></body></html>")
        filters = {k: req.arg(k) for k in ("FriendlyName", "PhoneNumber", "Origin") if req.arg(k)}
        with self.lock:
            inv = self._inventories.get(account_sid, _Inventory())
            rows, more = self._slice(inv, token, page_size, filters)
            if self.empty_inventory:
                rows, more = [], False
            encoded = [_encoded(inv, row) for row in rows]
            if self.paging_fault == "missing_key":  # its rows are written whole, after the lock
                rows = [dict(row) for row in rows]
        base = f"/{API_VERSION}/Accounts/{account_sid}/IncomingPhoneNumbers.json"
        extra = {k: v for k, v in req.query.items() if k not in ("PageSize", "Page", "PageToken")}

        def uri(page_no: int, page_token: str | None) -> str:
            query: dict[str, Any] = {k: v[-1] for k, v in extra.items()}
            query.update(PageSize=page_size, Page=page_no)
            if page_token:
                query["PageToken"] = page_token
            return f"{base}?{urlencode(query)}"

        current = uri(page, token or None)
        next_uri = uri(page + 1, f"PA{rows[-1]['sid']}") if more and rows else None
        if next_uri is not None and self.paging_fault == "loop" and token:
            next_uri = uri(0, None)
        if self.paging_fault == "repeat":
            next_uri = current
        prev_uri = uri(page - 1, f"PB{rows[0]['sid']}") if page > 0 and rows else None
        start = page * page_size
        payload: dict[str, Any] = {
            "end": start + len(rows) - 1 if rows else start,
            "first_page_uri": uri(0, None),
            "incoming_phone_numbers": rows,
            "next_page_uri": next_uri,
            "page": page,
            "page_size": page_size,
            "previous_page_uri": prev_uri,
            "start": start,
            "uri": current,
        }
        if self.paging_fault == "missing_key":
            del payload["incoming_phone_numbers"]
            return json_response(payload)
        # byte for byte what json_response(payload) sends, with the records' JSON reused
        payload["incoming_phone_numbers"] = _RECORDS_SLOT
        head, tail = json.dumps(payload).split(json.dumps(_RECORDS_SLOT), 1)
        return Response(status=200, body=json_array_body(head.encode(), encoded, b", ", tail.encode()))

    @staticmethod
    def _slice(
        inv: _Inventory, token: str, page_size: int, filters: dict[str, str | None]
    ) -> tuple[list[dict[str, Any]], bool]:
        """The page after (PA) or before (PB) the token's sid, and whether records follow it.

        The stored records themselves: the caller takes their JSON under the lock, reads only their
        sids (which never change) after it, and copies them where it writes them whole."""
        picked: list[dict[str, Any]] = []
        if token.startswith("PB"):
            end = bisect.bisect_left(inv.order, token[2:])
            for idx in range(end - 1, -1, -1):
                record = inv.records[inv.order[idx]]
                if _matches(record, filters):
                    picked.append(record)
                    if len(picked) == page_size:
                        break
            picked.reverse()
            return picked, end < len(inv.order)
        start = bisect.bisect_right(inv.order, token[2:]) if token else 0
        if not filters:
            picked = [inv.records[s] for s in inv.order[start:start + page_size + 1]]
        else:
            for sid in itertools.islice(inv.order, start, None):  # a filtered listing scans, as expected
                record = inv.records[sid]
                if _matches(record, filters):
                    picked.append(record)
                    if len(picked) > page_size:
                        break
        return picked[:page_size], len(picked) > page_size


def _encoded(inv: _Inventory, row: dict[str, Any]) -> bytes:
    """The JSON of a listed row (taken under the lock the row was picked under)."""
    text = inv.encoded.get(row["sid"])
    return text if text is not None else json.dumps(row).encode()


def _matches(record: dict[str, Any], filters: dict[str, str | None]) -> bool:
    if "FriendlyName" in filters and record.get("friendly_name") != filters["FriendlyName"]:
        return False
    if "Origin" in filters and record.get("origin") != filters["Origin"]:
        return False
    pattern = filters.get("PhoneNumber")
    if pattern:
        digits = pattern.replace("*", "?")
        return fnmatch.fnmatchcase(record["phone_number"], f"*{digits}*")
    return True


def _friendly(phone_number: str) -> str:
    """Twilio's default friendly name: '(415) 555-0100' for NANP numbers, else the number."""
    digits = phone_number[2:]
    if phone_number.startswith("+1") and len(digits) == 10 and digits.isdigit():
        return f"({digits[:3]}) {digits[3:6]}-{digits[6:]}"
    return phone_number


def _record(
    account_sid: str,
    sid: str,
    phone_number: str,
    *,
    friendly_name: str | None,
    voice_url: str,
    voice_application_sid: str,
    trunk_sid: str | None,
    status: str,
) -> dict[str, Any]:
    """A record with every field twilio-python's IncomingPhoneNumberInstance reads."""
    return {
        "account_sid": account_sid,
        "address_requirements": "none",
        "address_sid": None,
        "api_version": API_VERSION,
        "beta": False,
        "bundle_sid": None,
        "capabilities": {"voice": True, "sms": True, "mms": False, "fax": False},
        "date_created": _DATE,
        "date_updated": _DATE,
        "emergency_address_sid": None,
        "emergency_address_status": "unregistered",
        "emergency_status": "Inactive",
        "friendly_name": friendly_name if friendly_name is not None else _friendly(phone_number),
        "identity_sid": None,
        "origin": "twilio",
        "phone_number": phone_number,
        "sid": sid,
        "sms_application_sid": "",
        "sms_fallback_method": "POST",
        "sms_fallback_url": "",
        "sms_method": "POST",
        "sms_url": "",
        "status": status,
        "status_callback": "",
        "status_callback_method": "POST",
        "subresource_uris": {
            "assigned_add_ons": f"/{API_VERSION}/Accounts/{account_sid}/IncomingPhoneNumbers/{sid}"
                                "/AssignedAddOns.json",
        },
        "trunk_sid": trunk_sid,
        "type": "local",
        "uri": f"/{API_VERSION}/Accounts/{account_sid}/IncomingPhoneNumbers/{sid}.json",
        "voice_application_sid": voice_application_sid,
        "voice_caller_id_lookup": False,
        "voice_fallback_method": "POST",
        "voice_fallback_url": None,
        "voice_method": "POST",
        "voice_receive_mode": "voice",
        "voice_url": voice_url,
    }

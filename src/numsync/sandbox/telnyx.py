"""An emulation of Telnyx's number inventory (``GET /v2/phone_numbers``) for tests and the sandbox.

The Telnyx SDK is pointed at it with ``base_url=<server>/v2``, so the adapter is exercised with the
real SDK, real HTTP and the real envelope, paging and error bodies instead of mocks. What matters
for reconciliation is emulated faithfully: ``page[number]`` / ``page[size]`` (1..250, a 400 with
Telnyx's error envelope above that, as the real API answers), ``meta`` with ``total_pages``, the
default ``created_at`` descending order (so a number bought mid-listing shifts later pages, as it
does at Telnyx), Bearer authentication, and error bodies ``{"errors": [{"code", "title",
"detail"}]}`` with Telnyx's codes, so injected 401/429/500 faults look like the real thing.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

import phonenumbers

from numsync.sandbox.server import Emulator, Request, Response, json_response

__all__ = ["PAGING_FAULTS", "TelnyxEmulator"]

MAX_PAGE_SIZE = 250
DEFAULT_PAGE_SIZE = 20

PAGING_FAULTS = (
    None,  # honest paging
    "no_meta",  # the envelope has no `meta`: the SDK would ask for page 2 forever
    "stuck",  # `meta.page_number` is always 1 whatever was asked: the SDK would ask for page 2 forever
    "endless",  # `total_pages` is always one more than asked; pages beyond the data repeat the last page
    "html",  # 200 with an HTML page (a captive portal or a misrouted proxy)
)

# Telnyx error codes (https://developers.telnyx.com/docs/overview/errors) by HTTP status.
_ERRORS: dict[int, tuple[str, str]] = {
    400: ("10015", "Bad Request"),
    401: ("10009", "Authentication failed"),
    403: ("10010", "Authorization failed"),
    404: ("10005", "Resource not found"),
    405: ("10006", "Method not allowed"),
    408: ("10012", "Request timeout"),
    422: ("10015", "Bad Request"),
    429: ("10011", "Too many requests"),
}
_SERVER_ERROR = ("10007", "Unexpected error")

_SORTS = {"purchased_at", "phone_number", "connection_name", "usage_payment_method"}
_FILTERS = {
    "filter[phone_number]": lambda rec, v: v.lstrip("+") in rec["phone_number"].lstrip("+"),
    "filter[tag]": lambda rec, v: v in rec["tags"],
    "filter[status]": lambda rec, v: rec["status"] in v.split(","),
    "filter[connection_id]": lambda rec, v: rec["connection_id"] == v,
    "filter[country_iso_alpha2]": lambda rec, v: rec["country_iso_alpha2"] in v.split(","),
}

_EPOCH = datetime(2024, 1, 1, tzinfo=UTC)


def _stamp(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


class TelnyxEmulator(Emulator):
    """Telnyx ``/v2/phone_numbers`` over an in-memory inventory.

    Seed it with ``add_number``; ``remove_number`` / ``update_number`` change it (also between two
    page requests, from an ``after_request`` hook). ``paging_fault`` makes paging misbehave for
    the adapter's guard tests (values in ``PAGING_FAULTS``):

    - ``"no_meta"``: the envelope has no ``meta`` (the SDK would request page 2 forever);
    - ``"stuck"``: ``meta.page_number`` is always 1, whatever page was asked for;
    - ``"endless"``: ``total_pages`` is always the asked page + 1 and pages beyond the data repeat
      the last page of data, so a client trusting ``total_pages`` never stops;
    - ``"html"``: a 200 answer that is an HTML page, not JSON.

    Listing a page is a slice of the insertion-ordered list (newest first, as Telnyx's default
    ``created_at`` descending sort), so 100,000 numbers page as fast as ten. Filters and other
    sorts build a cached view once per inventory change.
    """

    name = "telnyx"

    def __init__(self, api_key: str = "sandbox-telnyx-key") -> None:
        super().__init__()
        self.api_key = api_key
        self.paging_fault: str | None = None
        self._records: list[dict[str, Any]] = []  # insertion (created_at ascending) order
        self._by_number: dict[str, dict[str, Any]] = {}
        self._by_id: dict[str, dict[str, Any]] = {}
        self._ids = itertools.count(1293384261075731400)
        self._version = 0
        self._views: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
        self.route("GET", r"/v2/phone_numbers", self._list)
        self.route("GET", r"/v2/phone_numbers/([^/]+)", self._retrieve)

    # -- Python API -------------------------------------------------------------------------
    def add_number(
        self,
        phone_number: str,
        *,
        connection_id: str | int | None = None,
        connection_name: str | None = None,
        tags: Iterable[str] = (),
        status: str = "active",
        id: str | int | None = None,
        customer_reference: str | None = None,
    ) -> dict[str, Any]:
        """Seed one owned number; returns a copy of the record as the API would list it."""
        with self.lock:
            if phone_number in self._by_number:
                raise ValueError(f"{phone_number} is already in the inventory")
            number_id = str(id) if id is not None else str(next(self._ids))
            if number_id in self._by_id:
                raise ValueError(f"id {number_id} is already in the inventory")
            created = _EPOCH + timedelta(seconds=len(self._records))
            record = {
                "id": number_id,
                "record_type": "phone_number",
                "phone_number": phone_number,
                "status": status,
                "tags": list(tags),
                "external_pin": None,
                "connection_id": str(connection_id) if connection_id is not None else None,
                "connection_name": connection_name,
                "customer_reference": customer_reference,
                "messaging_profile_id": None,
                "messaging_profile_name": None,
                "billing_group_id": None,
                "emergency_enabled": False,
                "emergency_address_id": None,
                "emergency_status": "disabled",
                "call_forwarding_enabled": True,
                "cnam_listing_enabled": False,
                "caller_id_name_enabled": False,
                "call_recording_enabled": False,
                "t38_fax_gateway_enabled": False,
                "inbound_call_screening": "disabled",
                "phone_number_type": "local",
                "deletion_lock_enabled": False,
                "source_type": "number_order",
                "country_iso_alpha2": _country(phone_number),
                "purchased_at": _stamp(created),
                "created_at": _stamp(created),
                "updated_at": _stamp(created),
            }
            self._records.append(record)
            self._by_number[phone_number] = record
            self._by_id[number_id] = record
            self._changed()
            return _copy(record)

    def update_number(self, phone_number: str, **fields: Any) -> dict[str, Any]:
        """Change fields of an owned number (e.g. ``connection_id``); KeyError when not owned."""
        with self.lock:
            record = self._by_number[phone_number]
            refused = ({"id", "phone_number"} & set(fields)) | (set(fields) - set(record))
            if refused:
                raise ValueError(f"cannot set {', '.join(sorted(refused))}")
            if "connection_id" in fields and fields["connection_id"] is not None:
                fields["connection_id"] = str(fields["connection_id"])
            record.update(fields)
            record["updated_at"] = _stamp(datetime.now(UTC))
            self._changed()
            return _copy(record)

    def remove_number(self, phone_number: str) -> dict[str, Any]:
        """Release an owned number (it disappears from the listing); KeyError when not owned."""
        with self.lock:
            record = self._by_number.pop(phone_number)
            del self._by_id[record["id"]]
            for pos in range(len(self._records) - 1, -1, -1):
                if self._records[pos] is record:
                    del self._records[pos]
                    break
            self._changed()
            return _copy(record)

    def numbers(self) -> list[dict[str, Any]]:
        """Copies of every owned number, oldest first."""
        with self.lock:
            return [_copy(r) for r in self._records]

    def reset(self) -> None:
        """Forget numbers, faults, hooks and the request log, so one served emulator backs many tests."""
        with self.lock:
            self._records.clear()
            self._by_number.clear()
            self._by_id.clear()
            self.paging_fault = None
            self._changed()
        self.reset_traffic()

    def dump_state(self) -> dict[str, Any]:
        with self.lock:
            return {"numbers": [_copy(r) for r in self._records], "paging_fault": self.paging_fault}

    # -- HTTP -------------------------------------------------------------------------------
    def error_response(self, status: int, message: str) -> Response:
        code, title = _ERRORS.get(status, _SERVER_ERROR if status >= 500 else ("10015", "Bad Request"))
        return json_response({"errors": [{"code": code, "title": title, "detail": message}]}, status)

    def check_auth(self, req: Request) -> Response | None:
        if req.headers.get("authorization", "") == f"Bearer {self.api_key}":
            return None
        code, title = _ERRORS[401]
        body = {
            "errors": [
                {
                    "code": code,
                    "title": title,
                    "detail": "Could not understand the provided credentials.",
                    "meta": {"url": "https://developers.telnyx.com/docs/overview/errors/10009"},
                }
            ]
        }
        return json_response(body, 401)

    def _list(self, req: Request) -> Response:
        try:
            size = int(req.arg("page[size]", str(DEFAULT_PAGE_SIZE)) or "")
            number = int(req.arg("page[number]", "1") or "")
        except ValueError:
            return self.error_response(400, "page[number] and page[size] must be integers")
        if not 1 <= size <= MAX_PAGE_SIZE:
            return self.error_response(400, f"page[size] must be between 1 and {MAX_PAGE_SIZE}")
        if number < 1:
            return self.error_response(400, "page[number] must be greater than or equal to 1")
        sort = req.arg("sort")
        if sort is not None and sort.lstrip("-") not in _SORTS:
            return self.error_response(400, f"sort must be one of {', '.join(sorted(_SORTS))}")
        filters = tuple(sorted((k, v[-1]) for k, v in req.query.items() if k in _FILTERS))
        if self.paging_fault == "html":
            body = b"<html><head><title>Sign in</title></head><body><h1>Proxy login</h1></body></html>"
            return Response(status=200, body=body, content_type="text/html; charset=utf-8")
        with self.lock:
            data, total = self._page(number, size, sort, filters)
            fault = self.paging_fault
        total_pages = math.ceil(total / size)
        meta: dict[str, Any] = {
            "page_number": number,
            "page_size": size,
            "total_pages": total_pages,
            "total_results": total,
        }
        if fault == "stuck":
            meta["page_number"] = 1
        elif fault == "endless":
            meta["total_pages"] = number + 1
            if not data and total:
                with self.lock:
                    data, _ = self._page(max(total_pages, 1), size, sort, filters)
        payload: dict[str, Any] = {"data": data, "meta": meta}
        if fault == "no_meta":
            del payload["meta"]
        return json_response(payload)

    def _retrieve(self, req: Request, number_id: str) -> Response:
        with self.lock:
            record = None if self.empty_inventory else self._by_id.get(number_id)
            if record is None:
                return self.error_response(404, "The requested resource or URL could not be found.")
            return json_response({"data": _copy(record)})

    # -- internals ------------------------------------------------------------------------------
    def _changed(self) -> None:
        self._version += 1
        self._views.clear()

    def _page(
        self, number: int, size: int, sort: str | None, filters: tuple[tuple[str, str], ...]
    ) -> tuple[list[dict[str, Any]], int]:
        """One page of the listing (caller holds the lock); records are copies."""
        if self.empty_inventory:
            return [], 0
        start = (number - 1) * size
        if sort is None and not filters:
            # newest first without building the reversed list: index from the end
            total = len(self._records)
            hi = total - start
            lo = max(0, hi - size)
            chunk = self._records[lo:hi][::-1] if hi > 0 else []
            return [_copy(r) for r in chunk], total
        view = self._view(sort, filters)
        return [_copy(r) for r in view[start : start + size]], len(view)

    def _view(self, sort: str | None, filters: tuple[tuple[str, str], ...]) -> list[dict[str, Any]]:
        key = (sort, filters)
        view = self._views.get(key)
        if view is None:
            view = [r for r in reversed(self._records) if all(_FILTERS[k](r, v) for k, v in filters)]
            if sort is not None:
                field = sort.lstrip("-")
                view.sort(key=lambda r: r.get(field) or "", reverse=sort.startswith("-"))
            self._views[key] = view
        return view


def _copy(record: dict[str, Any]) -> dict[str, Any]:
    """A copy callers may change freely (the only nested value is the tags list)."""
    return {**record, "tags": list(record["tags"])}


_REGION_BY_PREFIX: dict[str, str | None] = {}


def _country(phone_number: str) -> str | None:
    """The ISO country of a number, cheaply enough to seed 100,000 numbers.

    A calling code used by one country answers at once; for shared codes (+1, +44, +7 ...) the
    full lookup runs once per code and three leading digits (the NANP area code) and is cached.
    """
    digits = phone_number[1:] if phone_number.startswith("+") else ""
    if not digits.isdigit():
        return None
    for width in (1, 2, 3):
        regions = phonenumbers.COUNTRY_CODE_TO_REGION_CODE.get(int(digits[:width]))
        if regions:
            break
    else:
        return None
    if len(regions) == 1:
        return regions[0]
    prefix = digits[: width + 3]
    if prefix not in _REGION_BY_PREFIX:
        try:
            region = phonenumbers.region_code_for_number(phonenumbers.parse(phone_number, None))
        except phonenumbers.NumberParseException:
            return None
        _REGION_BY_PREFIX[prefix] = region
    return _REGION_BY_PREFIX[prefix]

"""An emulation of Vonage's owned-number listing (``GET /account/numbers``) for tests and the sandbox.

The Vonage SDK hard-codes ``https://`` in front of its ``rest_host``, so the emulation must be
served over TLS; ``make_tls`` builds a throw-away CA and a server certificate for 127.0.0.1 and
localhost (with ``trustme``) and returns the CA file the adapter's ``ca_bundle`` must trust.

What matters for reconciliation is emulated faithfully: ``index`` (>= 1) and ``size`` (1..100,
the API default 10), the filters ``pattern`` + ``search_pattern``, ``country``,
``application_id`` and ``has_application``, the envelope ``{"count": total, "numbers": [...]}``
with no ``numbers`` key when a page is empty (the SDK then reports a count of 0), msisdns as
digits without '+', HTTP Basic ``api_key:api_secret`` (or the legacy ``api_key``/``api_secret``
query parameters) and RFC 7807 problem-details error bodies, so injected 401/429/500 faults look
like the real thing. Unfiltered pages are slices of an insertion-ordered list, so 100,000
numbers page as fast as 10.
"""

from __future__ import annotations

import base64
import binascii
import copy
import hmac
import ssl
import uuid
from pathlib import Path
from typing import Any

import trustme

from numsync.sandbox.server import Emulator, Request, Response, json_response

__all__ = ["PAGING_FAULTS", "VonageEmulator", "make_tls"]

MAX_PAGE_SIZE = 100
DEFAULT_PAGE_SIZE = 10

PAGING_FAULTS = (
    None,  # honest paging
    "count_high",  # `count` claims two pages more than exist: the pages past the data are empty
    "loop",  # every page past the first answers the first page again (an index that loops)
    "html",  # 200 with an HTML page (a captive portal or a misrouted proxy)
    "drop_numbers",  # `count` is right but the `numbers` key is missing (the SDK reads that as empty)
    "bare_past_end",  # a page past the last answers `{}`, without its count (reported of the real API)
)

_API_ERRORS = "https://developer.nexmo.com/api-errors"
# Problem-details type and title per status, as Vonage's REST APIs answer them.
_PROBLEMS: dict[int, tuple[str, str]] = {
    400: ("#bad-request", "Bad Request"),
    401: ("#unauthorized", "Invalid credentials supplied"),
    403: ("#forbidden", "Forbidden"),
    404: ("#not-found", "Not Found"),
    405: ("#method-not-allowed", "Method Not Allowed"),
    429: ("#throttled", "Throttled"),
}
_SERVER_PROBLEM = ("#internal-error", "Internal Error")


def make_tls(tmpdir: Path) -> tuple[ssl.SSLContext, Path]:
    """A server SSLContext for 127.0.0.1/localhost and the path of the CA PEM a client must trust."""
    ca = trustme.CA(organization_name="numsync sandbox")
    cert = ca.issue_cert("127.0.0.1", "localhost")
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(ctx)
    path = Path(tmpdir) / "numsync-sandbox-ca.pem"
    ca.cert_pem.write_to_path(str(path))
    return ctx, path


def _problem(status: int, detail: str, *, title: str | None = None) -> Response:
    fallback = _SERVER_PROBLEM if status >= 500 else ("#bad-request", "Error")
    suffix, default_title = _PROBLEMS.get(status, fallback)
    return json_response(
        {
            "type": _API_ERRORS + suffix,
            "title": title or default_title,
            "detail": detail,
            "instance": str(uuid.uuid4()),
        },
        status,
    )


def _matches_pattern(msisdn: str, pattern: str, how: int) -> bool:
    if how == 0:
        return msisdn.startswith(pattern)
    if how == 1:
        return pattern in msisdn
    return msisdn.endswith(pattern)


class VonageEmulator(Emulator):
    """Vonage ``/account/numbers`` over an in-memory inventory.

    Seed it with ``add_number``; ``remove_number`` changes it (also between two page requests,
    from an ``after_request`` hook). ``paging_fault`` makes paging misbehave for the adapter's
    guard tests (values in ``PAGING_FAULTS``):

    - ``"count_high"``: ``count`` is two pages larger than the inventory, so the pages it
      promises beyond the data come back empty (no ``numbers`` key);
    - ``"loop"``: any ``index`` > 1 answers the first page again, as a server ignoring ``index``
      would, so a client that trusts ``count`` receives the same numbers repeatedly;
    - ``"html"``: a 200 answer that is an HTML page, not JSON;
    - ``"drop_numbers"``: the envelope keeps ``count`` but loses ``numbers`` (the SDK alone would
      report an empty account);
    - ``"bare_past_end"``: a page past the last answers ``{}``, without even its count, as the
      real API was reported to (vonage-node-sdk issue 928); honest paging answers ``{"count": N}``.

    The fault kind ``empty`` of ``server.py`` (``empty_inventory``) answers ``{"count": 0}``.
    """

    name = "vonage"

    def __init__(
        self,
        api_key: str = "sandbox-vonage-key",
        api_secret: str = "sandbox-vonage-secret",  # noqa: S107 - the sandbox's published credential
    ) -> None:
        super().__init__()
        self.api_key = api_key
        self.api_secret = api_secret
        self.paging_fault: str | None = None
        self._numbers: dict[str, dict[str, Any]] = {}
        self._ordered: list[dict[str, Any]] | None = None  # rebuilt lazily after a change
        self.route("GET", "/account/numbers", self._list)

    # -- seeding ------------------------------------------------------------------------------
    def add_number(
        self,
        msisdn: str,
        *,
        country: str = "US",
        app_id: str | None = None,
        voice_callback_type: str | None = None,
        voice_callback_value: str | None = None,
        number_type: str = "landline",
        features: list[str] | None = None,
        mo_http_url: str | None = None,
    ) -> dict[str, Any]:
        """Own a number. A linked ``app_id`` without an explicit callback routes voice to the app,
        as Vonage shows a number linked to an application (``voiceCallbackType: app``)."""
        if voice_callback_type is None and app_id is not None:
            voice_callback_type, voice_callback_value = "app", app_id
        record: dict[str, Any] = {
            "country": country,
            "msisdn": msisdn,
            "type": number_type,
            "features": list(features) if features is not None else ["VOICE", "SMS"],
        }
        if mo_http_url is not None:
            record["moHttpUrl"] = mo_http_url
        if app_id is not None:
            record["messagesCallbackType"] = "app"
            record["messagesCallbackValue"] = app_id
        if voice_callback_type is not None:
            record["voiceCallbackType"] = voice_callback_type
        if voice_callback_value is not None:
            record["voiceCallbackValue"] = voice_callback_value
        if app_id is not None:
            record["app_id"] = app_id
        with self.lock:
            self._numbers[msisdn] = record
            self._ordered = None
        return {**record, "features": list(record["features"])}  # a copy, cheaper than deepcopy

    def remove_number(self, msisdn: str) -> bool:
        """Release a number; False when it was not owned."""
        with self.lock:
            removed = self._numbers.pop(msisdn, None) is not None
            if removed:
                self._ordered = None
            return removed

    def reset(self) -> None:
        """Forget numbers, faults, hooks and the request log: one server can serve many tests."""
        with self.lock:
            self._numbers.clear()
            self._ordered = None
            self.paging_fault = None
        self.reset_traffic()

    def numbers(self) -> list[dict[str, Any]]:
        with self.lock:
            return [copy.deepcopy(r) for r in self._numbers.values()]

    def dump_state(self) -> Any:
        with self.lock:
            numbers = [copy.deepcopy(r) for r in self._numbers.values()]
        return {"count": len(numbers), "numbers": numbers}

    # -- the API -------------------------------------------------------------------------------
    def error_response(self, status: int, message: str) -> Response:
        return _problem(status, message)

    def check_auth(self, req: Request) -> Response | None:
        key, secret = self._credentials(req)
        if (
            key is not None
            and secret is not None
            and hmac.compare_digest(key.encode(), self.api_key.encode())
            and hmac.compare_digest(secret.encode(), self.api_secret.encode())
        ):
            return None
        return _problem(401, "You did not provide correct credentials.")

    @staticmethod
    def _credentials(req: Request) -> tuple[str | None, str | None]:
        header = req.headers.get("authorization", "")
        if header[:6].lower() == "basic ":
            try:
                decoded = base64.b64decode(header[6:].strip(), validate=True).decode()
            except (binascii.Error, UnicodeDecodeError):
                return None, None
            key, sep, secret = decoded.partition(":")
            return (key, secret) if sep else (None, None)
        return req.arg("api_key"), req.arg("api_secret")

    def _ordered_numbers(self) -> list[dict[str, Any]]:
        with self.lock:
            if self._ordered is None:
                self._ordered = list(self._numbers.values())
            return self._ordered

    def _list(self, req: Request) -> Response:
        try:
            index = int(req.arg("index") or 1)
            size = int(req.arg("size") or DEFAULT_PAGE_SIZE)
        except ValueError:
            return _problem(400, "index and size must be integers")
        if index < 1:
            return _problem(400, "index must be 1 or more")
        if not 1 <= size <= MAX_PAGE_SIZE:
            return _problem(400, f"size must be between 1 and {MAX_PAGE_SIZE}")
        pattern = req.arg("pattern")
        search_pattern = req.arg("search_pattern")
        if search_pattern is not None and search_pattern not in {"0", "1", "2"}:
            return _problem(400, "search_pattern must be 0, 1 or 2")
        if self.paging_fault == "html":
            body = b"<html><head><title>Sign in</title></head><body><h1>Welcome</h1></body></html>"
            return Response(status=200, body=body, content_type="text/html")
        if self.empty_inventory:
            return json_response({"count": 0})

        items = self._filtered(req, pattern, int(search_pattern or 0))
        count = len(items)
        if self.paging_fault == "loop":
            index = 1
        elif self.paging_fault == "count_high" and count:
            count += 2 * size
        page = items[(index - 1) * size : index * size]
        if not page and index > 1 and self.paging_fault == "bare_past_end":
            return json_response({})
        payload: dict[str, Any] = {"count": count}
        if page and self.paging_fault != "drop_numbers":
            # records are never changed in place (features is their only nested value): a shallow
            # copy per page is enough, and deepcopy was most of the emulation's time per page
            payload["numbers"] = [{**r, "features": list(r["features"])} for r in page]
        return json_response(payload)

    def _filtered(self, req: Request, pattern: str | None, how: int) -> list[dict[str, Any]]:
        items = self._ordered_numbers()
        country = req.arg("country")
        application_id = req.arg("application_id")
        has_application = req.arg("has_application")
        if not (pattern or country or application_id or has_application):
            return items  # the fast path: a page is a slice
        wants_app = None if has_application is None else has_application.strip().lower() == "true"
        out = []
        for rec in items:
            if pattern and not _matches_pattern(rec["msisdn"], pattern, how):
                continue
            if country and rec.get("country") != country.upper():
                continue
            if application_id and rec.get("app_id") != application_id:
                continue
            if wants_app is not None and bool(rec.get("app_id")) != wants_app:
                continue
            out.append(rec)
        return out

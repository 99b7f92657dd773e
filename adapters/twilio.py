"""The Twilio source: one account's IncomingPhoneNumbers, read with the official twilio SDK.

This is the only module that imports ``twilio``. Why it looks the way it does:

* The SDK hard-codes ``https://api.twilio.com``; its documented extension point is the
  ``http_client`` passed to ``Client``. ``_TwilioHttp`` (a ``TwilioHttpClient``) rebases every URL
  onto ``cfg.base_url``, applies ``cfg.timeout`` (the SDK has none by default), counts requests for
  ``on_request`` and, when ``cfg.ca_bundle`` is set, verifies TLS against a bundle that *adds* that
  CA to the existing trust store (tried against that CA alone first: ``PinnedVerifyAdapter``).
  requests lets ``REQUESTS_CA_BUNDLE`` override a session's ``verify``, so the bundle is enforced
  in the transport adapter, where the environment cannot win.
* The SDK's own retries are off (``max_retries=0`` on the transport adapter); we retry one page
  at a time, so a failure on page 7 resumes at page 7, honouring ``Retry-After`` (capped).
* Listing errors arrive as ``TwilioException("Unable to fetch page", response)``, not
  ``TwilioRestException``; ``_translate`` is the one place that turns any SDK, requests or urllib3
  exception into the ``numsync.errors`` tree, building messages from status codes and Twilio's
  own ``message``/``code`` only, never from URLs, headers or credentials.
* ``next_page_uri`` is server-controlled: a PageToken seen twice, a link back to the first page
  or more than ``max_pages`` pages is a ``ProtocolError``, so a broken server cannot make us loop.
* CPU per record matters: a listing's CPU is its wall time once a core is busy with it, and where
  listings run in threads of one process (no fork, or configured off) the GIL makes each source's
  CPU everyone's. Pages are read through the SDK's own ``Page`` (status check,
  JSON, record key, ``next_page_url``) but with ``get_instance`` returning the seven fields read
  (``_Listed``): an ``IncomingPhoneNumberInstance`` per record (~12 us) parsed two dates and
  thirty fields to read seven, and a well-formed page is decoded straight into those fields.
  Twilio's records carry no country, and working it out costs ~8 us a number: the planner works
  it out for the few numbers it imports, where a name shows it (``plan.render_name``); the
  routing verdict is memoised per (voice_url, application, trunk) in a listing.
"""

from __future__ import annotations

import http.client
import json
import os
import random
import re
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import msgspec
import requests
import urllib3.exceptions
from twilio.base.exceptions import TwilioException, TwilioRestException, TwilioServiceException
from twilio.base.obsolete import ObsoleteException
from twilio.base.page import Page
from twilio.http.http_client import TwilioHttpClient
from twilio.http.response import Response as TwilioResponse
from twilio.jwt import JwtDecodeError
from twilio.rest import Client
from twilio.twiml import TwiMLException

from numsync.adapters.base import Source, SourceRecord, VapiOwner, decode_direct, to_e164
from numsync.adapters.http_util import (
    PinnedVerifyAdapter,
    combined_ca_bundle,
    loads,
    parse_retry_after,
    read_environment_once,
)
from numsync.config import TwilioSourceConfig
from numsync.errors import (
    AdapterError,
    AuthError,
    NotFoundError,
    PermanentError,
    ProtocolError,
    TransientError,
)

__all__ = ["TwilioSource", "build", "combined_ca_bundle", "routing_of"]

KIND = "twilio"
OPERATION = "list_numbers"
_TWILIO_HOST = re.compile(r"^https://api(?:\.[A-Za-z0-9-]+)*\.twilio\.com(?=[/?]|$)")
_VAPI_HOST = re.compile(r"(?:^|\.)vapi\.ai$")
_ROUTING_MEMO = 4096  # distinct (voice_url, app, trunk) triples remembered per listing
OnRequest = Callable[[str, str], None]


class _Listed(msgspec.Struct, gc=False):
    """The fields of an IncomingPhoneNumber ``_record`` reads; the thirty others are never decoded.

    Typed as Twilio sends them: a value of another type sends the page to ``Page``'s reading of
    the whole body (``loads``), whose records keep what was read, for ``_record`` to judge. (An
    integer beyond 64 bits, say, is a float to orjson and an integer to msgspec.)
    """

    sid: str | None = None
    phone_number: str | None = None
    status: str | None = None
    friendly_name: str | None = None
    voice_url: str | None = None
    voice_application_sid: str | None = None
    trunk_sid: str | None = None


_FIELDS = _Listed.__struct_fields__


class _Listing(msgspec.Struct, gc=False, forbid_unknown_fields=True):
    """A page as ``Page`` reads it when its one records key is ``incoming_phone_numbers``; any
    other key (``meta``, a second list) is left to ``Page``'s own reading of the whole body."""

    incoming_phone_numbers: list[_Listed]
    next_page_uri: Any = None
    # Page.META_KEYS, which Page never takes for the records key
    end: Any = None
    first_page_uri: Any = None
    last_page_uri: Any = None
    page: Any = None
    page_size: Any = None
    previous_page_uri: Any = None
    total: Any = None
    num_pages: Any = None
    start: Any = None
    uri: Any = None


_LISTING = msgspec.json.Decoder(_Listing)


class _RecordsPage(Page):
    """The SDK's page of IncomingPhoneNumbers, handing out each record's fields as the API sent them.

    ``Page`` still does everything that matters (non-200 -> ``TwilioException("Unable to fetch
    page", response)``, finding the records key, ``next_page_url``); only the per-record
    ``IncomingPhoneNumberInstance`` is skipped (get_instance is the documented override point).
    """

    def get_instance(self, payload: Any) -> Any:
        if type(payload) is dict:  # read by ``loads``: the same slots, unchecked (the constructor checks no type)
            return _Listed(*map(payload.get, _FIELDS))
        return payload

    @classmethod
    def process_response(cls, response: TwilioResponse) -> Any:
        """``Page.process_response``, reading a plainly well-formed page straight into ``_Listed``
        slots: orjson's dict of some forty fields per record, to read seven, was a third of this
        listing's CPU. Anything else is read whole (``loads``) for ``Page`` to judge, as before."""
        if response.status_code != 200:
            raise TwilioException("Unable to fetch page", response)
        page = decode_direct(_LISTING, response.text)
        if page is None:
            return loads(response.text)
        return {"incoming_phone_numbers": page.incoming_phone_numbers, "next_page_uri": page.next_page_uri}


class _TwilioHttp(TwilioHttpClient):
    """The SDK's http client, rebased onto ``base_url``, with a timeout and a request counter."""

    def __init__(
        self,
        *,
        base_url: str | None,
        timeout: float,
        verify: str | None,
        extra: Path | None = None,
        on_request: OnRequest | None,
    ) -> None:
        super().__init__(pool_connections=True, timeout=timeout)
        self.base_url = base_url.rstrip("/") if base_url else None
        self._on_request = on_request
        assert self.session is not None
        adapter = PinnedVerifyAdapter(verify, extra=extra)
        self.session.mount("https://", adapter)
        self.session.mount("http://", adapter)
        read_environment_once(self.session, self.base_url or "https://api.twilio.com", pinned=verify is not None)

    def request(
        self,
        method: str,
        url: str,
        params: dict[str, object] | None = None,
        data: dict[str, object] | None = None,
        headers: dict[str, str] | None = None,
        auth: tuple[str, str] | None = None,
        timeout: float | None = None,
        allow_redirects: bool = False,
    ) -> TwilioResponse:
        if self.base_url:
            url = _TWILIO_HOST.sub(lambda _m: self.base_url or "", url, count=1)
        try:
            response = super().request(method, url, params=params, data=data, headers=headers, auth=auth,
                                       timeout=timeout or self.timeout, allow_redirects=allow_redirects)
        except Exception:
            self._note("error")
            raise
        self._note(str(response.status_code))
        return response

    def _note(self, status: str) -> None:
        if self._on_request is not None:
            self._on_request(KIND, status)

    def close(self) -> None:
        if self.session is not None:
            self.session.close()


def routing_of(
    voice_url: str | None,
    voice_application_sid: str | None,
    trunk_sid: str | None,
    routes_to_vapi: list[str] | tuple[str, ...] | frozenset[str] = (),
) -> tuple[str | None, bool]:
    """Where inbound calls go, as (human text, routed elsewhere?), in Twilio's own precedence.

    A trunk overrides the application and the URLs, an application overrides the URLs. A
    trunk or application sid, or a voice_url host, listed in ``routes_to_vapi`` counts as Vapi
    (for example a Vapi SIP trunk); without that list, only a voice_url on vapi.ai (or a
    subdomain) is Vapi. No routing at all is not "elsewhere": the number is simply unused.
    """
    listed = routes_to_vapi if isinstance(routes_to_vapi, frozenset) else frozenset(routes_to_vapi)
    if trunk_sid:
        return f"trunk {trunk_sid}", trunk_sid not in listed
    if voice_application_sid:
        return f"app {voice_application_sid}", voice_application_sid not in listed
    if voice_url:
        parts = urlsplit(voice_url.strip())
        host = (parts.hostname or "").lower()
        port = _port(parts)
        # webhook URLs may carry credentials in userinfo or the query: show scheme, host and path only
        shown = f"{parts.scheme}://{host}{f':{port}' if port else ''}{parts.path}" if host else "(unreadable)"
        vapi = bool(host) and (_VAPI_HOST.search(host) is not None or host in listed)
        return f"voice_url {shown}", not vapi
    return None, False


def _port(parts: Any) -> int | None:
    try:
        return parts.port
    except ValueError:
        return None


class TwilioSource:
    """One Twilio account as a numsync source (see the module docstring for the design)."""

    kind = KIND

    def __init__(
        self,
        cfg: TwilioSourceConfig,
        *,
        on_request: OnRequest | None = None,
        page_size: int = 1000,
        max_attempts: int = 4,
        backoff_base: float = 0.5,
        max_retry_after: float = 60.0,
        max_pages: int = 100_000,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.name = cfg.name
        self._cfg = cfg
        self._page_size = max(1, min(page_size, 1000))
        self._max_attempts = max(1, max_attempts)
        self._backoff_base = backoff_base
        self._max_retry_after = max_retry_after
        self._max_pages = max_pages
        self._sleep = sleep
        self._routes = frozenset(cfg.routes_to_vapi)
        self._ca_file = str(combined_ca_bundle(cfg.ca_bundle, owner=f"source {cfg.name}")) if cfg.ca_bundle else None
        self._http = _TwilioHttp(base_url=cfg.base_url, timeout=cfg.timeout, verify=self._ca_file,
                                 extra=cfg.ca_bundle, on_request=on_request)
        token, key, secret = _secrets(cfg)
        username, password = (cfg.account_sid, token) if token is not None else (key, secret)
        self._client = Client(username, password, account_sid=cfg.account_sid, http_client=self._http)
        # The SDK imports the whole v2010 API tree (90 modules) on first use: do it here, once,
        # rather than in every listing process forked from this one (numsync.daemon.workers).
        _ = self._client.api.v2010

    def __repr__(self) -> str:
        return f"<TwilioSource {self.name} {self._cfg.account_sid}>"

    # -- the Source protocol ---------------------------------------------------------------------
    def owner(self) -> VapiOwner:
        return VapiOwner("twilio", "twilioAccountSid", self._cfg.account_sid)

    def import_body(self, e164: str) -> dict[str, Any]:
        """Vapi's create body for this account; it holds the secret, so it must never be logged."""
        body: dict[str, Any] = {"provider": "twilio", "number": e164,
                                "twilioAccountSid": self._cfg.account_sid}
        token, key, secret = _secrets(self._cfg)
        if token is not None:
            body["twilioAuthToken"] = token
        else:
            body["twilioApiKey"] = key
            body["twilioApiSecret"] = secret
        body["smsEnabled"] = self._cfg.import_.sms_enabled
        return body

    def still_owned(self, numbers: Sequence[str]) -> None:
        """Nothing to ask: the listing follows ``next_page_uri``, whose PageToken continues after the
        last record read, so a release or a purchase between pages moves no other number."""

    @property
    def numbers_per_round_trip(self) -> int:
        return self._page_size  # next_page_uri: one page after another

    def list_numbers(self, expected: int | None = None) -> Iterator[SourceRecord]:
        """Every number, one page at a time (lazily: the next page is asked for when it is needed).
        ``expected`` is of no use: each page's address comes in the page before it."""
        sid = self._cfg.account_sid
        version = self._client.api.v2010
        solution = {"account_sid": sid}
        # what IncomingPhoneNumberList.page() and .get_page() send, with the records left as dicts
        headers = {"Content-Type": "application/x-www-form-urlencoded", "Accept": "application/json"}
        page = self._fetch(lambda: _RecordsPage(version, version.page(
            method="GET", uri=f"/Accounts/{sid}/IncomingPhoneNumbers.json",
            params={"PageSize": self._page_size}, headers=headers), solution))
        seen_tokens: set[str] = set()
        routing: dict[tuple[Any, Any, Any], tuple[str | None, bool]] = {}
        pages = 1
        while True:
            next_url = self._guarded(lambda p=page: p.next_page_url)  # type: ignore[misc]
            if next_url:
                token = (parse_qs(urlsplit(next_url).query).get("PageToken") or [""])[-1]
                pages += 1
                if not token or token in seen_tokens:
                    raise self._protocol("next_page_uri leads back to a page already read (a paging loop)")
                if pages > self._max_pages:
                    raise self._protocol(f"more than {self._max_pages} pages: giving up on a runaway listing")
                seen_tokens.add(token)
            # one boundary per page, not per record: a malformed field is still a ProtocolError
            yield from self._guarded(lambda p=page: [self._record(item, routing) for item in p])  # type: ignore[misc]
            if not next_url:
                return
            page = self._fetch(lambda url=next_url: _RecordsPage(  # type: ignore[misc]
                version, version.domain.twilio.request("GET", url), solution))

    def close(self) -> None:
        self._http.close()
        if self._ca_file:
            with suppress(OSError):
                os.unlink(self._ca_file)
            self._ca_file = None

    # -- internals -------------------------------------------------------------------------------
    def _record(self, item: Any, memo: dict[tuple[Any, Any, Any], tuple[str | None, bool]]) -> SourceRecord:
        """Normalise one record's fields; runs inside the boundary, so a malformed one is a ProtocolError."""
        if type(item) is not _Listed:
            raise self._protocol("a record that is not an object")
        raw = item.phone_number
        sid = item.sid
        if not isinstance(raw, str) or not isinstance(sid, str) or not sid:
            raise self._protocol("a record without phone_number or sid")
        e164 = to_e164(raw)
        key = (item.voice_url, item.voice_application_sid, item.trunk_sid)
        verdict = memo.get(key)
        if verdict is None:
            verdict = routing_of(*key, self._routes)
            if len(memo) < _ROUTING_MEMO:
                memo[key] = verdict
        friendly = item.friendly_name
        labels = {"friendly_name": str(friendly)} if friendly else {}
        status = item.status
        return SourceRecord(number=raw, e164=e164, carrier_id=sid, status=None if status is None else str(status),
                            labels=labels, routing=verdict[0], routed_elsewhere=verdict[1])

    def _fetch(self, call: Callable[[], Any]) -> Any:
        """One page request, retried on transient failures with backoff + jitter."""
        attempt = 0
        while True:
            attempt += 1
            try:
                return self._guarded(call)
            except TransientError as err:
                if attempt >= self._max_attempts:
                    raise TransientError(f"{err.message} (gave up after {attempt} attempts)", api=err.api,
                                         operation=err.operation, status=err.status,
                                         retry_after=err.retry_after) from err
                self._sleep(self._delay(attempt, err.retry_after))

    def _delay(self, attempt: int, retry_after: float | None) -> float:
        if retry_after is not None:
            return max(0.0, min(retry_after, self._max_retry_after))
        backoff = min(self._backoff_base * 2 ** (attempt - 1), self._max_retry_after)
        return backoff * random.uniform(0.5, 1.0)

    def _guarded(self, call: Callable[[], Any]) -> Any:
        with self.translate_errors():
            return call()

    def _protocol(self, what: str) -> ProtocolError:
        return ProtocolError(f"Twilio answered something unreadable for source {self.name}: {what}",
                             api=self.name, operation=OPERATION)

    @contextmanager
    def translate_errors(self) -> Iterator[None]:
        """The translation boundary: every SDK/transport exception leaves as a numsync error."""
        try:
            yield
        except AdapterError:
            raise
        except _MAPPED as exc:
            raise _translate(exc, self.name) from exc


def _secrets(cfg: TwilioSourceConfig) -> tuple[str | None, str, str]:
    """(auth token, or None) and the API key pair: read at the last moment, never stored elsewhere."""
    token = cfg.auth_token.get_secret_value() if cfg.auth_token is not None else None
    key = cfg.api_key.get_secret_value() if cfg.api_key is not None else ""
    secret = cfg.api_secret.get_secret_value() if cfg.api_secret is not None else ""
    return token, key, secret


_MAPPED: tuple[type[BaseException], ...] = (
    TwilioException,
    requests.RequestException,
    urllib3.exceptions.HTTPError,
    http.client.HTTPException,
    ConnectionError,
    TimeoutError,
    ValueError,  # json.JSONDecodeError from Page.process_response
    TypeError,  # a payload of the wrong shape (a list or a string instead of an object)
    AttributeError,
    KeyError,
    JwtDecodeError,
    TwiMLException,
    ObsoleteException,
)


def _translate(exc: BaseException, source: str) -> AdapterError:
    """Map one exception to the error tree; messages carry status, code and Twilio's message only."""
    kw: dict[str, Any] = {"api": source, "operation": OPERATION}
    if isinstance(exc, TwilioException) and len(exc.args) > 1 and isinstance(exc.args[1], TwilioResponse):
        resp = exc.args[1]
        return _from_status(source, resp.status_code, resp.text, _retry_after(resp.headers))
    if isinstance(exc, TwilioRestException | TwilioServiceException):
        status = getattr(exc, "status", None)
        if isinstance(status, int):
            detail = getattr(exc, "msg", None) or getattr(exc, "title", None) or ""
            body = json.dumps({"message": str(detail)[:200], "code": getattr(exc, "code", None)})
            return _from_status(source, status, body, None)
        return ProtocolError(f"Twilio failed for source {source} without a status", **kw)
    resp = getattr(exc, "response", None)
    if isinstance(exc, requests.exceptions.HTTPError) and isinstance(resp, requests.Response):
        return _from_status(source, resp.status_code, resp.text, _retry_after(resp.headers))
    what = type(exc).__name__
    if isinstance(exc, requests.exceptions.SSLError):
        text = _text(exc)
        if "CERTIFICATE_VERIFY_FAILED" in text or "certificate verify failed" in text:
            return PermanentError(f"Twilio's TLS certificate is not trusted for source {source} "
                                  "(set ca_bundle for a proxy or sandbox CA)", **kw)
        return TransientError(f"TLS failure talking to Twilio for source {source} ({what})", **kw)
    if isinstance(exc, requests.exceptions.Timeout | TimeoutError | urllib3.exceptions.TimeoutError):
        return TransientError(f"Twilio timed out for source {source} ({what})", **kw)
    if isinstance(exc, requests.exceptions.InvalidJSONError | requests.exceptions.ContentDecodingError
                  | requests.exceptions.TooManyRedirects | ValueError | TypeError | AttributeError
                  | KeyError):
        return ProtocolError(f"Twilio answered something unreadable for source {source} ({what})", **kw)
    if isinstance(exc, requests.exceptions.InvalidURL | requests.exceptions.MissingSchema
                  | requests.exceptions.InvalidSchema | requests.exceptions.URLRequired
                  | requests.exceptions.InvalidHeader | requests.exceptions.StreamConsumedError
                  | requests.exceptions.UnrewindableBodyError):
        return PermanentError(f"the request to Twilio for source {source} could not be built ({what})", **kw)
    if isinstance(exc, requests.RequestException | urllib3.exceptions.HTTPError | http.client.HTTPException
                  | ConnectionError):
        return TransientError(f"the connection to Twilio failed for source {source} ({what})", **kw)
    if isinstance(exc, TwilioException):
        return ProtocolError(f"Twilio answered something unreadable for source {source} ({what})", **kw)
    return PermanentError(f"unexpected Twilio SDK error for source {source} ({what})", **kw)


def _text(exc: BaseException) -> str:
    """str(exc) for classification only (never for messages); odd instances must not raise."""
    try:
        return str(exc)
    except Exception:
        return ""


def _from_status(source: str, status: int, text: str, retry_after: float | None) -> AdapterError:
    kw: dict[str, Any] = {"api": source, "operation": OPERATION, "status": status}
    if status in (401, 403):
        return AuthError(f"Twilio rejected the credentials for source {source}", **kw)
    detail, is_json = _detail(text)
    if status == 404:
        return NotFoundError(f"Twilio answered 404 for source {source}{detail}", **kw)
    if status in (408, 429) or status >= 500:
        return TransientError(f"Twilio answered {status} for source {source}{detail}",
                              retry_after=retry_after, **kw)
    if not is_json:
        return ProtocolError(f"Twilio answered {status} with a body that is not JSON for source {source}",
                             **kw)
    return PermanentError(f"Twilio answered {status} for source {source}{detail}", **kw)


def _detail(text: str) -> tuple[str, bool]:
    """Twilio's own ``message`` and ``code`` from an error body, and whether it was JSON at all."""
    try:
        body = json.loads(text or "")
    except ValueError:
        return "", False
    if not isinstance(body, dict):
        return "", True
    message = str(body.get("message") or "")[:200]
    code = body.get("code")
    parts = [p for p in (message, f"code {code}" if code else "") if p]
    return (f" ({', '.join(parts)})" if parts else ""), True


def _retry_after(headers: Any) -> float | None:
    """Retry-After as seconds (a number or an HTTP date), or None when absent or unreadable."""
    return parse_retry_after(headers.get("Retry-After") if headers is not None else None)


def build(cfg: TwilioSourceConfig, *, on_request: OnRequest | None = None, **kwargs: Any) -> Source:
    """The registry's factory: a TwilioSource for one configured account."""
    return TwilioSource(cfg, on_request=on_request, **kwargs)

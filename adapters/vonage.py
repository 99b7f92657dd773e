"""Vonage source: the numbers one Vonage account owns, read with the official SDK (vonage 4.x).

The only module that imports the Vonage SDK. Why it is shaped the way it is:

- The SDK hard-codes ``https://`` + ``rest_host``; ``cfg.base_url`` (https only, config enforces
  it) becomes ``rest_host``/``api_host`` through ``HttpClientOptions``, the SDK's own option.
- Hidden retries are switched off so our own policy (below) is the only one: ``max_retries=0``
  disables the urllib3 ``Retry`` the SDK mounts, and ``pool_maxsize=1`` caps the separate loop in
  ``HttpClient.make_request`` that re-sends a request up to ``pool_maxsize`` times after a
  ``RemoteDisconnected``. One client per worker thread needs one connection anyway.
- ``cfg.ca_bundle`` ADDS a CA. requests lets ``REQUESTS_CA_BUNDLE`` (set machine-wide on many
  hosts) override a session's ``verify`` whenever ``trust_env`` is on, and the SDK offers no
  ``verify`` option and no public session. So the SDK's session (``HttpClient._session``, its
  only handle) gets, through requests' public ``Session.mount``, an ``HTTPAdapter`` that pins
  ``verify`` to a combined bundle (the file ``REQUESTS_CA_BUNDLE``/``CURL_CA_BUNDLE`` names, or
  certifi's, plus the extra CA) written to a temp file, and verifies against the extra CA alone
  first (``http_util.PinnedVerifyAdapter``). No process-wide environment is touched and proxies
  from the environment still apply. ``_session_of`` is the one place that reaches in.
- ``HttpClientOptions.timeout`` is an int: ``cfg.timeout`` is rounded up to whole seconds.
- The SDK's paging trusts ``count`` blindly and hides a missing ``numbers`` key as "count 0", so
  the page indices are computed here from the first page's count and every page is checked
  against it (its length, the count it reports, numbers seen before): a server that disagrees
  ends in ``ProtocolError`` instead of silent misses, duplicates or an endless loop. After the
  first page the rest are fetched by a small thread pool, one SDK client per thread (the SDK
  mutates a shared headers dict per request), and yielded in page order with a bounded look-ahead.
- The SDK logs the ``Authorization`` header at DEBUG and every error body at WARNING on the
  ``vonage`` logger; a filter on that logger masks credentials before any handler sees them.
- The SDK is a family of packages; this module uses its HTTP/auth layer (``vonage_http_client``)
  and its Numbers API (``vonage_numbers``) exactly as the ``vonage.Vonage`` facade wires them,
  without importing the facade: that imports fourteen other APIs (voice, video, verify ...) for
  about 0.15 s of CPU per process, in a process whose listings share the GIL.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.metadata
import logging
import math
import queue
import random
import re
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pydantic
import requests
import requests.exceptions as rex
import vonage_http_client.errors as vhe
import vonage_numbers.errors as vne
import vonage_utils.errors as vue
from urllib3.util.retry import Retry
from vonage_http_client import Auth, HttpClient, HttpClientOptions
from vonage_numbers import Numbers

from numsync.adapters.base import Source, SourceRecord, VapiOwner, to_e164
from numsync.adapters.http_util import (
    PinnedVerifyAdapter,
    combined_ca_bundle,
    parse_retry_after,
    read_environment_once,
    warm_requests_trust_store,
)
from numsync.config import VonageSourceConfig
from numsync.errors import (
    AdapterError,
    AuthError,
    NotFoundError,
    PermanentError,
    ProtocolError,
    TransientError,
)

MAX_PLAUSIBLE_COUNT = 10**8  # more numbers than any account holds: a broken answer, not an inventory

__all__ = ["EXCEPTION_MAP", "VonageSource", "build", "translate_exception"]

OnRequest = Callable[[str, str], None]
DEFAULT_REST_HOST = "rest.nexmo.com"
DEFAULT_API_HOST = "api.nexmo.com"
MAX_PAGE_SIZE = 100
LIST_PATH = "/account/numbers"  # what Numbers.list_owned_numbers asks for
# the OwnedNumber fields read (by their wire names, the model's aliases), in the order _record unpacks them
_RECORD_FIELDS = ("msisdn", "voiceCallbackType", "voiceCallbackValue", "app_id", "country", "type")

# Every exception the SDK call path can raise, by exact class, and what it means to us. Exact
# classes (not a catch-all base) so that a test can walk the SDK's error modules and fail when an
# upgrade adds a class nobody has decided about.
EXCEPTION_MAP: dict[type[BaseException], str] = {
    **dict.fromkeys((vhe.AuthenticationError, vhe.ForbiddenError), "auth"),
    vhe.NotFoundError: "not_found",
    # 429, 500 and the base class (3xx, 400, 502, 503 ...): decided by the status code
    **dict.fromkeys((vhe.RateLimitedError, vhe.ServerError, vhe.HttpRequestError, rex.HTTPError), "status"),
    **dict.fromkeys((
        vhe.InvalidHttpClientOptionsError, vhe.InvalidAuthError, vhe.JWTGenerationError, vhe.FileStreamingError,
        vne.NumbersError, vue.VonageError, vue.InvalidPhoneNumberError, vue.InvalidPhoneNumberTypeError,
    ), "permanent"),
    # requests' exceptions reach us untouched through the SDK
    **dict.fromkeys((
        rex.RequestException, rex.ConnectionError, rex.ProxyError, rex.Timeout, rex.ConnectTimeout,
        rex.ReadTimeout, rex.ChunkedEncodingError, rex.RetryError,
    ), "transient"),
    rex.SSLError: "tls",  # permanent when the certificate is not trusted, else transient
    **dict.fromkeys((
        rex.ContentDecodingError, rex.InvalidJSONError, rex.JSONDecodeError, rex.TooManyRedirects,
    ), "protocol"),
    **dict.fromkeys((
        rex.URLRequired, rex.MissingSchema, rex.InvalidSchema, rex.InvalidURL, rex.InvalidHeader,
        rex.InvalidProxyURL, rex.StreamConsumedError, rex.UnrewindableBodyError,
    ), "permanent"),
    # the SDK reads bodies with pydantic and plain indexing: an unexpected shape raises these
    **dict.fromkeys((pydantic.ValidationError, TypeError, KeyError, AttributeError, ValueError), "protocol"),
}

_TRANSIENT_STATUS = {408, 425, 429}


def _category(exc: BaseException) -> str | None:
    for cls in type(exc).__mro__:
        if cls in EXCEPTION_MAP:
            return EXCEPTION_MAP[cls]
    return None


def _response_of(exc: BaseException) -> requests.Response | None:
    resp = getattr(exc, "response", None)
    return resp if isinstance(resp, requests.Response) else None


def _retry_after(resp: requests.Response | None, cap: float) -> float | None:
    seconds = parse_retry_after(resp.headers.get("Retry-After") if resp is not None else None)
    return None if seconds is None else min(seconds, cap)


def _title(resp: requests.Response) -> str | None:
    """The problem-details title (or detail) Vonage put in an error body, if it is readable JSON."""
    try:
        body = resp.json()
    except ValueError:
        return None
    if not isinstance(body, dict):
        return None
    text = body.get("title") or body.get("detail") or body.get("error_title")
    return str(text)[:200] if text else None


def _is_cert_failure(exc: BaseException) -> bool:
    seen: set[int] = set()
    todo: list[Any] = [exc]
    while todo:
        item = todo.pop()
        if id(item) in seen or not isinstance(item, BaseException):
            continue
        seen.add(id(item))
        if "CERTIFICATE_VERIFY_FAILED" in str(item) or type(item).__name__ == "SSLCertVerificationError":
            return True
        todo.extend([item.__cause__, item.__context__, *item.args, getattr(item, "reason", None)])
    return False


def translate_exception(
    exc: BaseException, *, source: str, operation: str, max_retry_after: float = 60.0
) -> AdapterError:
    """The numsync error an SDK/requests exception means. Messages carry no secrets: they are built
    from the status code, the API's own title and exception class names, never from the request."""
    kw: dict[str, Any] = {"api": source, "operation": operation}
    category = _category(exc)
    resp = _response_of(exc)
    status = resp.status_code if resp is not None else None
    if category == "status":
        category = _status_category(status)
    if category == "auth":
        return AuthError(f"Vonage rejected the credentials for source {source}", status=status, **kw)
    if category == "tls":
        if _is_cert_failure(exc):
            return PermanentError(
                f"TLS certificate of the Vonage API not trusted for source {source} (set ca_bundle?)", **kw
            )
        category = "transient"
    title = _title(resp) if resp is not None else None
    answered = f"Vonage answered {status}{f' ({title})' if title else ''} to {operation} for source {source}"
    name = type(exc).__name__
    if category == "not_found":
        return NotFoundError(answered, status=status, **kw)
    if category == "transient_status":
        return TransientError(answered, status=status, retry_after=_retry_after(resp, max_retry_after), **kw)
    if category == "permanent_status":
        return PermanentError(answered, status=status, **kw)
    if category == "transient":
        return TransientError(f"Vonage could not be reached for {operation} of source {source}: {name}", **kw)
    if category == "protocol":
        return ProtocolError(
            f"Vonage sent an answer that cannot be read to {operation} for source {source} ({name})",
            status=status, **kw,
        )
    # "permanent", or a class missing from EXCEPTION_MAP (the completeness test prevents that)
    return PermanentError(f"the Vonage SDK failed {operation} for source {source}: {name}", status=status, **kw)


def _status_category(status: int | None) -> str:
    if status in (401, 403):
        return "auth"
    if status == 404:
        return "not_found"
    if status is not None and (status >= 500 or status in _TRANSIENT_STATUS):
        return "transient_status"
    if status is not None and 300 <= status < 400:
        return "protocol"
    return "permanent_status"


# -- TLS: adding a CA without touching the environment -----------------------------------------
def _unlink(path: Path) -> None:
    with contextlib.suppress(OSError):
        path.unlink()


@dataclass(frozen=True)
class _Client:
    """One worker's SDK client: the HTTP/auth layer and the Numbers API on it (what ``Vonage`` holds)."""

    http_client: HttpClient
    numbers: Numbers


@functools.cache
def _sdk_version() -> str | None:
    """The ``vonage`` package version, which the facade puts in the User-Agent; kept the same here."""
    try:
        return importlib.metadata.version("vonage")
    except importlib.metadata.PackageNotFoundError:
        return None


def _session_of(client: _Client) -> requests.Session:
    session = getattr(client.http_client, "_session", None)
    if not isinstance(session, requests.Session):
        raise RuntimeError("this vonage-http-client version has no requests session to configure")
    return session


class _RedactCredentials(logging.Filter):
    """Masks Authorization headers and api_secret values in the SDK's own log lines."""

    _PATTERNS = (
        (re.compile(r"('Authorization':\s*')[^']*'"), r"\1[redacted]'"),  # the SDK's headers dict
        (re.compile(r"(Authorization:\s*)(?:(?:Basic|Bearer)\s+)?\S+", re.I), r"\1[redacted]"),
        (re.compile(r"(api_secret['\"]?\s*[:=]\s*['\"]?)[^'\"&,\s}]+"), r"\1[redacted]"),
    )

    def filter(self, record: logging.LogRecord) -> bool:
        text = masked = record.getMessage()
        for pattern, replacement in self._PATTERNS:
            masked = pattern.sub(replacement, masked)
        if masked != text:
            record.msg, record.args = masked, None
        return True


def _install_log_filter() -> None:
    sdk_logger = logging.getLogger("vonage")
    if not any(isinstance(f, _RedactCredentials) for f in sdk_logger.filters):
        sdk_logger.addFilter(_RedactCredentials())


# -- the source ---------------------------------------------------------------------------------
class VonageSource:
    """One Vonage account as a numsync ``Source``. Thread-safe for one listing at a time."""

    kind = "vonage"

    def __init__(
        self,
        cfg: VonageSourceConfig,
        *,
        on_request: OnRequest | None = None,
        page_size: int = MAX_PAGE_SIZE,
        concurrency: int = 4,
        max_attempts: int = 4,
        backoff_base: float = 0.5,
        max_retry_after: float = 60.0,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if not 1 <= page_size <= MAX_PAGE_SIZE:
            raise ValueError(f"page_size must be between 1 and {MAX_PAGE_SIZE}")
        if concurrency < 1 or max_attempts < 1:
            raise ValueError("concurrency and max_attempts must be at least 1")
        self.name = cfg.name
        self._cfg = cfg
        self._on_request = on_request
        self._page_size = page_size
        self._concurrency = concurrency
        self._max_attempts = max_attempts
        self._backoff_base = backoff_base
        self._max_retry_after = max_retry_after
        self._sleep = sleep
        host = DEFAULT_REST_HOST
        api_host = DEFAULT_API_HOST
        if cfg.base_url:
            parts = urlsplit(cfg.base_url)
            host = api_host = parts.netloc + parts.path.rstrip("/")
        self._options = HttpClientOptions(
            rest_host=host,
            api_host=api_host,
            timeout=max(1, math.ceil(cfg.timeout)),
            max_retries=0,
            pool_connections=1,
            pool_maxsize=1,
        )
        self._bundle = combined_ca_bundle(cfg.ca_bundle, owner=f"source {cfg.name}") if cfg.ca_bundle else None
        # the temp bundle lives as long as the source (a closed source may list again), and goes
        # when it is collected or at exit
        self._drop_bundle = weakref.finalize(self, _unlink, self._bundle) if self._bundle else None
        if self._bundle is None:
            warm_requests_trust_store()  # the clients are made in the listing (``_checkout``)
        self._idle: queue.SimpleQueue[_Client] = queue.SimpleQueue()
        self._clients: list[_Client] = []
        self._routes = frozenset(cfg.routes_to_vapi)
        self._lock = threading.Lock()
        _install_log_filter()

    # -- Source protocol --------------------------------------------------------------------
    def owner(self) -> VapiOwner:
        return VapiOwner("vonage", "credentialId", self._cfg.vapi_credential_id)

    def import_body(self, e164: str) -> dict[str, Any]:
        number = e164 if e164.startswith("+") else "+" + e164
        return {"provider": "vonage", "number": number, "credentialId": self._cfg.vapi_credential_id}

    @property
    def numbers_per_round_trip(self) -> int:
        return self._page_size * self._concurrency

    def list_numbers(self, expected: int | None = None) -> Iterator[SourceRecord]:
        """Every page, yielded in page order, ``concurrency`` at a time.

        Only a page tells the count. Without ``expected`` (no run has listed the source), page 1 is
        asked for alone, so an account of one page, or one whose credentials or server fail, costs
        one request. With it, the first round asks for as many pages as that many numbers fill: a
        round trip less for a listing of more than one page, and empty pages past the last where
        the account has shrunk since (at most ``concurrency - 1``).
        """
        seen: set[str] = set()
        first = 1 if expected is None else min(self._concurrency, math.ceil(max(expected, 1) / self._page_size))
        pool = ThreadPoolExecutor(max_workers=self._concurrency, thread_name_prefix=f"numsync-{self.name}")
        stop = threading.Event()  # set when the listing ends early: the other pages then stop retrying
        pending: deque[tuple[int, Future[tuple[list[Any], int | None]]]] = deque(
            (index, pool.submit(self._fetch_page, index, stop=stop)) for index in range(2, first + 1))
        try:
            numbers, count = self._fetch_page(1)
            count = count or 0
            yield from self._checked(1, numbers, count, count, seen)
            pages = math.ceil(count / self._page_size)
            next_index = first + 1
            while pending or next_index <= pages:
                while next_index <= pages and len(pending) < 2 * self._concurrency:
                    pending.append((next_index, pool.submit(self._fetch_page, next_index, stop=stop)))
                    next_index += 1
                index, future = pending.popleft()
                page_numbers, page_count = future.result()
                yield from self._checked(index, page_numbers, page_count, count, seen)
        finally:
            stop.set()
            pool.shutdown(wait=True, cancel_futures=True)

    def still_owned(self, numbers: Sequence[str]) -> set[str]:
        """Each number looked up by its digits (``pattern``, starting with them): the listing pages by
        offset, and a release before a page with a purchase after it loses a number unseen."""
        owned: set[str] = set()
        for e164 in numbers:
            msisdn = e164.lstrip("+")
            found, _count = self._fetch_page(1, pattern=msisdn)
            if any(isinstance(n, dict) and n.get("msisdn") == msisdn for n in found):
                owned.add(e164)
        return owned

    def close(self) -> None:
        """Release connections; the source stays usable (a later listing opens new ones)."""
        with self._lock:
            clients, self._clients = self._clients, []
        with contextlib.suppress(queue.Empty):
            while True:  # a later listing builds fresh clients instead of reusing closed ones
                self._idle.get_nowait()
        for client in clients:
            with contextlib.suppress(RuntimeError):
                _session_of(client).close()

    # -- paging --------------------------------------------------------------------------------
    def _checked(
        self, index: int, numbers: list[Any], page_count: int | None, count: int, seen: set[str]
    ) -> Iterator[SourceRecord]:
        """Page ``index``'s records, once it is shown to hold what page 1's ``count`` promised.

        A page past the last (the first round's guess was high) holds nothing, and may say
        nothing either: Vonage was reported to answer ``{}`` there (vonage-node-sdk issue 928)."""
        operation = f"list numbers page {index}"
        if not 0 <= count <= MAX_PLAUSIBLE_COUNT:
            raise ProtocolError(f"Vonage reported an implausible count of {count} numbers for source {self.name}",
                                api=self.name, operation=operation)
        promised = max(0, min(self._page_size, count - (index - 1) * self._page_size))
        if len(numbers) != promised:
            raise ProtocolError(
                f"Vonage page {index} of source {self.name} held {len(numbers)} numbers where its count "
                f"of {count} promised {promised}",
                api=self.name, operation=operation,
            )
        if page_count is None and not promised:
            return
        if (page_count or 0) != count:
            raise ProtocolError(
                f"Vonage's count for source {self.name} changed from {count} to {page_count or 0} while listing",
                api=self.name, operation=operation,
            )
        records = [self._record(n) for n in numbers]
        for rec in records:
            if rec.carrier_id in seen:
                raise ProtocolError(
                    f"Vonage page {index} of source {self.name} repeated {rec.carrier_id}: paging is broken",
                    api=self.name, operation=operation,
                )
            seen.add(rec.carrier_id)
        yield from records

    def _fetch_page(self, index: int, pattern: str | None = None, *,
                    stop: threading.Event | None = None) -> tuple[list[Any], int | None]:
        """One page with our retry policy; a retry asks for the same page again."""
        attempt = 0
        while True:
            attempt += 1
            try:
                return self._request_page(index, pattern)
            except TransientError as err:
                if attempt >= self._max_attempts or (stop is not None and stop.is_set()):
                    raise
                self._sleep(self._delay(attempt, err.retry_after))

    def _delay(self, attempt: int, retry_after: float | None) -> float:
        if retry_after is not None:
            return min(retry_after, self._max_retry_after)
        return min(self._backoff_base * 2 ** (attempt - 1), 30.0) * random.uniform(0.5, 1.0)

    def _request_page(self, index: int, pattern: str | None = None) -> tuple[list[Any], int | None]:
        """One page as the SDK's own HTTP client reads it (auth, host, errors), records left as dicts.

        ``Numbers.list_owned_numbers`` sends exactly this request, then builds a pydantic
        ``OwnedNumber`` per record: 60% of this source's CPU for the six fields read here, in a
        process whose listings share the GIL. The shape checks it did are done in ``_record``.
        """
        client = self._checkout()
        http = client.http_client
        params: dict[str, Any] = {"size": self._page_size, "index": index}
        if pattern is not None:  # the numbers starting with these digits
            params.update(pattern=pattern, search_pattern=0)
        operation = f"list numbers page {index}" if pattern is None else "look up a number"
        try:
            with self._boundary(operation, client):
                body = http.get(http.rest_host, LIST_PATH, params, "basic")
                if not isinstance(body, dict):
                    raise TypeError("the page is not a JSON object")
                numbers = body.get("numbers")
                # as the SDK reads it: a body without 'numbers' is an empty page (its count, if it
                # has one, is still checked against the first page's), one with numbers must say
                # how many
                count = body.get("count") if numbers is None else body["count"]
                if numbers is None:
                    numbers = []
                if not isinstance(numbers, list):
                    raise TypeError("'numbers' is not a list")
                if count is not None and (not isinstance(count, int) or isinstance(count, bool) or count < 0):
                    raise TypeError("count is not a non-negative integer")
            return numbers, count
        finally:
            self._idle.put(client)

    @contextlib.contextmanager
    def _boundary(self, operation: str, client: _Client) -> Iterator[None]:
        """THE translation boundary: every SDK call runs inside it; it also reports the request."""
        try:
            yield
        except AdapterError:
            raise
        except Exception as exc:
            resp = _response_of(exc)
            if resp is None and EXCEPTION_MAP.get(type(exc)) == "protocol":
                resp = client.http_client.last_response  # a 2xx whose body the SDK could not read
            self._report(str(resp.status_code) if resp is not None else "error")
            raise translate_exception(
                exc, source=self.name, operation=operation, max_retry_after=self._max_retry_after
            ) from exc
        else:
            resp = client.http_client.last_response
            self._report(str(resp.status_code) if resp is not None else "200")

    def _report(self, status: str) -> None:
        if self._on_request is not None:
            self._on_request(self.kind, status)

    def _checkout(self) -> _Client:
        try:
            return self._idle.get_nowait()
        except queue.Empty:
            pass
        cfg = self._cfg
        auth = Auth(api_key=cfg.api_key.get_secret_value(), api_secret=cfg.api_secret.get_secret_value())
        http_client = HttpClient(auth, self._options, _sdk_version())
        client = _Client(http_client, Numbers(http_client))
        try:
            session = _session_of(client)
        except RuntimeError:  # an SDK without a requests session reads the environment its own way
            if self._bundle is not None:
                raise PermanentError(
                    f"ca_bundle of source {self.name} cannot be applied to this Vonage SDK version",
                    api=self.name, operation="configure TLS",
                ) from None
        else:
            read_environment_once(session, f"https://{http_client.rest_host}/", pinned=self._bundle is not None)
            if self._bundle is not None:
                session.verify = str(self._bundle)
            # with or without a bundle of ours: each new connection would read the trust store again
            # (~13-45 ms of CPU), four or five of them at the start of every listing
            session.mount("https://", PinnedVerifyAdapter(
                self._bundle, extra=cfg.ca_bundle, pool_connections=1, pool_maxsize=1, max_retries=Retry(total=0)))
        with self._lock:
            self._clients.append(client)
        return client

    # -- normalisation ---------------------------------------------------------------------------
    def _record(self, num: Any) -> SourceRecord:
        """One owned number from its dict, held to what the SDK's ``OwnedNumber`` model required:
        an object whose fields are text (a two-letter country), else the page is a ProtocolError."""
        if not isinstance(num, dict):
            raise self._malformed("a record that is not an object")
        fields = [num.get(k) for k in _RECORD_FIELDS]
        for key, value in zip(_RECORD_FIELDS, fields, strict=True):
            if value is not None and type(value) is not str:
                raise self._malformed(f"a record whose {key} is not text")
        msisdn, voice_type, voice_value, app_id, country, kind = fields
        if country is not None and len(country) != 2:
            raise self._malformed("a record whose country is not a two-letter code")
        msisdn = msisdn or ""
        voice_type = (voice_type or "").strip() or None
        voice_value = (voice_value or "").strip() or None
        app = app_id or (voice_value if voice_type == "app" else None)
        routes = self._routes
        routing: str | None
        if voice_type and voice_type != "app":
            routing = f"{voice_type} {voice_value or ''}".strip()
            if app:
                routing = f"{routing}, app {app}"
        else:
            routing = f"app {app}" if app else None
        elsewhere = bool(routes) and (
            (voice_type is not None and voice_type != "app") or (app is not None and app not in routes)
        )
        labels: dict[str, str] = {}
        if country:
            labels["country"] = country
        if kind:
            labels["type"] = kind
        return SourceRecord(
            number=msisdn,
            e164=to_e164(msisdn, assume_plus=True),
            carrier_id=msisdn,
            status=None,
            labels=labels,
            routing=routing,
            routed_elsewhere=elsewhere,
        )

    def _malformed(self, what: str) -> ProtocolError:
        return ProtocolError(f"Vonage listed {what} for source {self.name}", api=self.name,
                             operation="list numbers")


def build(cfg: VonageSourceConfig, *, on_request: OnRequest | None = None) -> Source:
    """The registry's factory for ``kind: vonage``."""
    return VonageSource(cfg, on_request=on_request)


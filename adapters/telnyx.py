"""The Telnyx source: the numbers a Telnyx account owns, read with the official ``telnyx`` SDK.

This is the only module that imports ``telnyx``, so an SDK upgrade is contained here. Choices and
why:

- The SDK's own retries are off (``max_retries=0``) and retrying is done here, page by page: a
  failed page is fetched again without restarting the listing, Retry-After is honoured up to a cap,
  and the attempt budget is ours to configure (and to make fast in tests).
- Pages are requested explicitly (``page_number=n``) and read from the raw response rather than
  through the SDK's auto-paging: the SDK trusts ``meta`` blindly (without it, it asks for page 2
  forever) and, for a 200 that is not JSON, hands back a bare string that crashes its own page
  parser. Reading the JSON here lets every malformed answer become a ``ProtocolError``, and the
  paging guards below make a misbehaving server unable to keep us looping.
- ``cfg.ca_bundle`` is added to the trust store (an ``ssl.SSLContext`` on the httpx client), never
  substituted for it, so a corporate proxy's CA does not break every public host. The client follows
  no redirect (the SDK's own client does): it talks to one host, and a client of an http:// URL
  then needs no trust store at all (``http_util.httpx_tls_verify``).
- ``on_request`` is fed from an httpx response event hook (one call per HTTP answer) and from the
  error boundary for requests that got no answer at all.
- Pages are asked for with the client's documented generic ``get`` ("making custom/undocumented
  requests": the same auth, headers, timeout, retries setting and error classes as the typed
  methods), not ``client.phone_numbers``: the first touch of that resource imports every resource
  module of the SDK, about half a second of CPU per process for one endpoint, in a process whose
  other listings share the GIL.
- Page 1 tells ``meta.total_pages``; the rest are fetched by a small pool (``concurrency``, one
  httpx client shared: it is thread-safe) with a bounded read-ahead and checked and yielded in page
  order, so every guard below sees the pages exactly as a sequential listing would. A later page
  that reports more pages extends the listing; one that reports fewer ends it where a sequential
  listing would have ended (pages already in flight beyond it are dropped unread).
"""

from __future__ import annotations

import contextlib
import logging
import math
import random
import ssl
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import httpx
import msgspec
import telnyx

from numsync.adapters.base import Source, SourceRecord, VapiOwner, decode_direct, to_e164
from numsync.adapters.http_util import httpx_tls_verify, loads, parse_retry_after, ssl_context_with_extra_ca
from numsync.config import TelnyxSourceConfig
from numsync.errors import (
    AdapterError,
    AuthError,
    NotFoundError,
    PermanentError,
    ProtocolError,
    TransientError,
)

__all__ = ["DEFAULT_BASE_URL", "PAGE_SIZE", "TelnyxSource", "build", "ssl_context_with_extra_ca"]

log = logging.getLogger(__name__)

DEFAULT_BASE_URL = "https://api.telnyx.com"
PAGE_SIZE = 250  # the API's maximum; larger sizes are answered with a 400
LIST_PATH = "/phone_numbers"
KIND = "telnyx"
_TRANSIENT_STATUSES = {408, 409, 425, 429}

OnRequest = Callable[[str, str], None]


def _api_base(base_url: str | None) -> str:
    root = (base_url or DEFAULT_BASE_URL).rstrip("/")
    return root if root.endswith("/v2") else root + "/v2"


def _retry_after(headers: httpx.Headers) -> float | None:
    """Seconds the server asked us to wait (retry-after-ms, retry-after seconds or HTTP date)."""
    with contextlib.suppress(ValueError):
        millis = headers.get("retry-after-ms")
        if millis is not None and math.isfinite(float(millis)):
            return max(0.0, float(millis) / 1000)
    return parse_retry_after(headers.get("retry-after"))


def _cert_rejected(exc: BaseException) -> bool:
    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        if isinstance(cur, ssl.SSLCertVerificationError):
            return True
        seen.add(id(cur))
        cur = cur.__cause__ or cur.__context__
    return False


class _Listed(msgspec.Struct, gc=False):
    """The fields of a number ``_record`` reads; the record's other fields are never decoded.

    Typed as Telnyx sends them: a value of another type sends the page to the general reader,
    which keeps what it read as it was (``_listed``), for ``_record`` to read leniently. (An
    integer beyond 64 bits, say, is a float to orjson and an integer to msgspec.)
    """

    id: str | None = None
    phone_number: str | None = None
    status: str | None = None
    connection_id: str | None = None
    connection_name: str | None = None
    tags: list[str] | None = None
    country_iso_alpha2: str | None = None
    customer_reference: str | None = None


_FIELDS = _Listed.__struct_fields__


def _listed(item: dict[str, Any]) -> _Listed:
    """A record the general reader read, in the same slots (unchecked: the constructor checks no type)."""
    return _Listed(*map(item.get, _FIELDS))


class _Meta(msgspec.Struct, gc=False):
    page_number: int
    total_pages: int
    total_results: int


class _Page(msgspec.Struct, gc=False):
    data: list[_Listed]
    meta: _Meta


_PAGE = msgspec.json.Decoder(_Page)


class TelnyxSource:
    """One Telnyx account as a numsync ``Source``.

    ``max_attempts`` / ``backoff_base`` / ``max_backoff`` / ``max_retry_after`` shape the per-page
    retries; ``sleep`` is how the wait happens (tests pass a recorder to check the delays).
    ``concurrency`` pages are fetched at once after the first (1: strictly one after another);
    ``page_size`` exists for tests that need many pages (the API's maximum is the default).
    """

    kind = KIND

    def __init__(
        self,
        cfg: TelnyxSourceConfig,
        *,
        on_request: OnRequest | None = None,
        max_attempts: int = 4,
        backoff_base: float = 0.5,
        max_backoff: float = 30.0,
        max_retry_after: float = 60.0,
        concurrency: int = 4,
        page_size: int = PAGE_SIZE,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if max_attempts < 1 or concurrency < 1:
            raise ValueError("max_attempts and concurrency must be at least 1")
        if not 1 <= page_size <= PAGE_SIZE:
            raise ValueError(f"page_size must be between 1 and {PAGE_SIZE}")
        self.name = cfg.name
        self._cfg = cfg
        self._on_request = on_request
        self.max_attempts = max_attempts
        self.backoff_base = backoff_base
        self.max_backoff = max_backoff
        self.max_retry_after = max_retry_after
        self.concurrency = concurrency
        self.page_size = page_size
        self._sleep = sleep
        self._routes = frozenset(cfg.routes_to_vapi)
        base_url = _api_base(cfg.base_url)
        http_client = telnyx.DefaultHttpxClient(
            verify=httpx_tls_verify(base_url, cfg.ca_bundle, owner=f"source {cfg.name}"),
            follow_redirects=False,  # one host, as numsync's other clients (the SDK's default follows)
            timeout=cfg.timeout,
            event_hooks={"response": [self._count_response]},
        )
        self._client = telnyx.Telnyx(
            api_key=cfg.api_key.get_secret_value(),
            base_url=base_url,
            max_retries=0,
            timeout=cfg.timeout,
            http_client=http_client,
        )

    # -- Source protocol ----------------------------------------------------------------------
    def owner(self) -> VapiOwner:
        return VapiOwner("telnyx", "credentialId", self._cfg.vapi_credential_id)

    def import_body(self, e164: str) -> dict[str, Any]:
        return {"provider": "telnyx", "number": e164, "credentialId": self._cfg.vapi_credential_id}

    def close(self) -> None:
        self._client.close()

    def still_owned(self, numbers: Sequence[str]) -> set[str]:
        """Each number looked up with ``filter[phone_number]`` (digits only, as Telnyx asks): the
        listing pages by offset, and a release before a page with a purchase after it loses a
        number unseen."""
        owned: set[str] = set()
        for e164 in numbers:
            data, _meta = self._fetch_page(1, filters={"filter[phone_number]": e164.lstrip("+")})
            if any(item.phone_number == e164 for item in data):
                owned.add(e164)
        return owned

    @property
    def numbers_per_round_trip(self) -> int:
        return self.page_size * self.concurrency

    def list_numbers(self, expected: int | None = None) -> Iterator[SourceRecord]:
        """Every owned number: page 1, then the rest ``concurrency`` at a time, each retried alone.

        ``expected`` is not used: asking for pages past the last, which a count that has fallen
        since would, gets an answer Telnyx does not document, and its 250-number pages make its
        listing shorter than Vonage's (100) for the same inventory."""
        paging = _Paging(self)
        data, meta = self._fetch_page(1)
        yield from paging.check(1, data, meta)
        if paging.done:
            return
        pool = ThreadPoolExecutor(max_workers=self.concurrency, thread_name_prefix=f"numsync-{self.name}")
        pending: deque[tuple[int, Future[tuple[list[_Listed], dict[str, int]]]]] = deque()
        stop = threading.Event()  # set when the listing ends early: workers then stop retrying
        next_page = 2
        try:
            while True:
                # ask up to the page count the latest page reported, never more than 2x the pool ahead
                while next_page <= paging.total_pages and len(pending) < 2 * self.concurrency:
                    pending.append((next_page, pool.submit(self._fetch_page, next_page, stop)))
                    next_page += 1
                page_number, future = pending.popleft()  # never empty: the last page read was not the last
                data, meta = future.result()
                yield from paging.check(page_number, data, meta)
                if paging.done:
                    return
        finally:
            stop.set()
            pool.shutdown(wait=True, cancel_futures=True)

    # -- one page, with retries ------------------------------------------------------------------
    def _fetch_page(
        self, page_number: int, stop: threading.Event | None = None, filters: dict[str, str] | None = None
    ) -> tuple[list[_Listed], dict[str, int]]:
        attempt = 1
        params: dict[str, Any] = {"page[number]": page_number, "page[size]": self.page_size, **(filters or {})}
        while True:
            try:
                with self._translate("list_numbers" if filters is None else "look up a number"):
                    response = self._client.get(LIST_PATH, cast_to=httpx.Response, options={"params": params})
                    return self._parse_page(response.content, response.headers, page_number)
            except TransientError as exc:
                if attempt >= self.max_attempts or (stop is not None and stop.is_set()):
                    raise
                delay = self._delay(attempt, exc.retry_after)
                log.info(
                    "telnyx source %s: page %d failed (%s), retry %d/%d in %.2fs",
                    self.name, page_number, exc.message, attempt, self.max_attempts - 1, delay,
                )
                self._sleep(delay)
                attempt += 1

    def _delay(self, attempt: int, retry_after: float | None) -> float:
        if retry_after is not None and retry_after > 0:
            return min(retry_after, self.max_retry_after)
        backoff = min(self.backoff_base * 2 ** (attempt - 1), self.max_backoff)
        return backoff * random.uniform(0.5, 1.0)

    def _parse_page(
        self, body: bytes, headers: httpx.Headers, page_number: int
    ) -> tuple[list[_Listed], dict[str, int]]:
        """A page's records (the fields read of each) and its paging numbers, or a ProtocolError.

        Read straight from the JSON into ``_Listed`` slots when the page is plainly well formed:
        decoding a dict of some 30 fields per record was a fifth of this listing's CPU. Anything else
        goes to ``_parse_page_general``, which also names what is wrong; a property test holds
        the two together.
        """
        page = decode_direct(_PAGE, body)
        if page is None:
            return self._parse_page_general(body, headers, page_number)
        meta = page.meta
        numbers = {"page_number": meta.page_number, "total_pages": meta.total_pages,
                   "total_results": meta.total_results}
        if not all(0 <= value <= 10**8 for value in numbers.values()) or meta.page_number != page_number:
            return self._parse_page_general(body, headers, page_number)
        return page.data, numbers

    def _parse_page_general(
        self, body: bytes, headers: httpx.Headers, page_number: int
    ) -> tuple[list[_Listed], dict[str, int]]:
        try:
            payload = loads(body)
        except ValueError:
            ctype = headers.get("content-type", "no content type").split(";")[0]
            raise self._protocol(f"page {page_number} is not JSON ({ctype})") from None
        if not isinstance(payload, dict) or not isinstance(payload.get("data"), list):
            raise self._protocol(f"page {page_number} has no 'data' list")
        data = payload["data"]
        if not all(isinstance(item, dict) for item in data):
            raise self._protocol(f"page {page_number} holds records that are not objects")
        meta = payload.get("meta")
        if not isinstance(meta, dict):
            raise self._protocol(f"page {page_number} has no paging 'meta'")
        numbers: dict[str, int] = {}
        for key in ("page_number", "total_pages", "total_results"):
            value = meta.get(key)
            if (isinstance(value, bool) or not isinstance(value, int | float)
                    or (isinstance(value, float) and not math.isfinite(value)) or not 0 <= value <= 10**8):
                raise self._protocol(f"page {page_number} has no usable meta.{key}")
            numbers[key] = int(value)
        if numbers["page_number"] != page_number:
            raise self._protocol(f"asked for page {page_number}, got page {numbers['page_number']}")
        return [_listed(item) for item in data], numbers

    # -- records -------------------------------------------------------------------------------
    def _record(self, item: _Listed) -> SourceRecord:
        raw_number = item.phone_number
        number = raw_number if isinstance(raw_number, str) else ""
        connection_id = item.connection_id
        connection = str(connection_id) if connection_id not in (None, "") else None
        connection_name = item.connection_name
        if connection is None:
            routing = "no connection"
        elif connection_name:
            routing = f"connection {connection} ({connection_name})"
        else:
            routing = f"connection {connection}"
        labels: dict[str, str] = {}
        tags = item.tags
        if isinstance(tags, list) and tags:
            labels["tags"] = ",".join(str(t) for t in tags)
        country = item.country_iso_alpha2
        if country:
            labels["country"] = str(country)
        reference = item.customer_reference
        if reference:
            labels["customer_reference"] = str(reference)
        status = item.status
        return SourceRecord(
            number=number,
            e164=to_e164(number),
            carrier_id=str(item.id or ""),
            status=str(status) if status is not None else None,
            labels=labels,
            routing=routing,
            routed_elsewhere=bool(self._routes) and connection is not None and connection not in self._routes,
        )

    # -- errors and metrics ---------------------------------------------------------------------
    def _protocol(self, what: str) -> ProtocolError:
        return ProtocolError(
            f"Telnyx answered something unreadable for source {self.name}: {what}",
            api=self.name, operation="list_numbers",
        )

    def _count_response(self, response: httpx.Response) -> None:
        self._report(str(response.status_code))

    def _report(self, status: str) -> None:
        if self._on_request is None:
            return
        try:
            self._on_request(KIND, status)
        except Exception:  # a metrics bug must not turn into a failed (and retried) request
            log.exception("on_request callback failed")

    @contextlib.contextmanager
    def _translate(self, operation: str) -> Iterator[None]:
        """The one place where Telnyx SDK exceptions become numsync errors (messages carry no secret)."""
        try:
            yield
        except AdapterError:
            raise
        except telnyx.APIStatusError as exc:
            raise self._status_error(exc, operation) from exc
        except telnyx.APIConnectionError as exc:  # includes APITimeoutError; no HTTP answer came back
            self._report("error")
            if _cert_rejected(exc):
                raise PermanentError(
                    f"Telnyx's TLS certificate is not trusted for source {self.name} (see ca_bundle)",
                    api=self.name, operation=operation,
                ) from exc
            what = "timed out" if isinstance(exc, telnyx.APITimeoutError) else "could not be reached"
            raise TransientError(
                f"Telnyx {what} for source {self.name}", api=self.name, operation=operation
            ) from exc
        except telnyx.APIResponseValidationError as exc:
            raise ProtocolError(
                f"Telnyx answered something unreadable for source {self.name}",
                api=self.name, operation=operation, status=exc.status_code,
            ) from exc
        except telnyx.TelnyxError as exc:  # any other SDK failure (webhook/websocket/stream misuse)
            raise PermanentError(
                f"the Telnyx client failed for source {self.name}: {type(exc).__name__}",
                api=self.name, operation=operation,
            ) from exc
        except ValueError as exc:  # JSON or model parsing inside the SDK
            raise ProtocolError(
                f"Telnyx answered something unreadable for source {self.name}",
                api=self.name, operation=operation,
            ) from exc

    def _status_error(self, exc: telnyx.APIStatusError, operation: str) -> AdapterError:
        status = exc.status_code
        detail = _error_detail(exc.body)
        kw: dict[str, Any] = {"api": self.name, "operation": operation, "status": status}
        if status in (401, 403):
            return AuthError(f"Telnyx rejected the credentials for source {self.name}", **kw)
        if status == 404:
            return NotFoundError(f"Telnyx answered 404 for source {self.name}{detail}", **kw)
        if status in _TRANSIENT_STATUSES or status >= 500:
            return TransientError(
                f"Telnyx answered {status} for source {self.name}{detail}",
                retry_after=_retry_after(exc.response.headers), **kw,
            )
        return PermanentError(f"Telnyx answered {status} for source {self.name}{detail}", **kw)


class _Paging:
    """The loop guards of one listing, applied to pages in page order (whoever fetched them).

    ``check`` validates a page and returns its records; ``done`` says the listing is complete and
    ``total_pages`` how far the latest page says it goes. A server that repeats a page, lists more
    numbers than it counts or keeps promising one more page ends in a ``ProtocolError``.
    """

    def __init__(self, source: TelnyxSource) -> None:
        self._source = source
        self.seen = 0
        self.max_total_results = 0
        self.total_pages = 1
        self.done = False
        self._previous_ids: tuple[str, ...] | None = None
        self._first_total: int | None = None

    def check(self, page_number: int, data: list[_Listed], meta: dict[str, int]) -> list[SourceRecord]:
        source = self._source
        total_pages, total_results = meta["total_pages"], meta["total_results"]
        if page_number > max(total_pages, 1) and data:
            raise source._protocol(f"page {page_number} has numbers beyond total_pages {total_pages}")
        ids = tuple(str(item.id) for item in data)
        if data and ids == self._previous_ids:
            raise source._protocol(f"page {page_number} repeats the previous page")
        self._previous_ids = ids
        self.seen += len(data)
        # Offset paging: a number bought or released between two page requests shifts the pages,
        # hiding or repeating a number. A total that moves means the listing cannot be trusted.
        if self._first_total is None:
            self._first_total = total_results
        elif total_results != self._first_total:
            raise source._protocol(
                f"the inventory changed while it was listed (total_results {self._first_total}, then "
                f"{total_results} on page {page_number}); it is listed afresh next run"
            )
        self.max_total_results = max(self.max_total_results, total_results)
        if self.seen > self.max_total_results:
            raise source._protocol(f"listed {self.seen} numbers, more than total_results {self.max_total_results}")
        self.total_pages = total_pages
        self.done = not data or page_number >= total_pages
        return [source._record(item) for item in data]


def _error_detail(body: object) -> str:
    """': <title>: <detail>' from Telnyx's error envelope, when it has one (never request data)."""
    if isinstance(body, dict):
        errors = body.get("errors")
        if isinstance(errors, list) and errors and isinstance(errors[0], dict):
            first = errors[0]
            parts = [str(first[k]) for k in ("title", "detail") if first.get(k)]
            if parts:
                return ": " + ": ".join(parts)[:200]
    return ""


def build(cfg: TelnyxSourceConfig, *, on_request: OnRequest | None = None) -> Source:
    """The registry's factory for ``kind: telnyx``."""
    return TelnyxSource(cfg, on_request=on_request)

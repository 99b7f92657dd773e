"""The Vapi client: numsync's only way to read and write Vapi phone numbers (hand-written on httpx).

Why not the vapi SDK: numsync needs three things the SDK does not give. (1) A listing that returns
every record exactly once while numbers are created or deleted during paging; Vapi pages by
offset, and offsets shift. (2) Writes that are never retried blindly; Vapi has no idempotency
key, so a create that timed out is reported as *in doubt* (``InDoubtError``) for the engine to
resolve by looking the number up. (3) Secrets that never leave the client; Vapi echoes
``twilioAuthToken`` / ``twilioApiSecret`` in its responses, so every record passes through
``redact_record``'s scrub before anyone else sees it (the snapshot's listing, ``iter_numbers``,
decodes only the fields it reads, so there a secret never becomes a Python object at all).

Layering, as in httpx: public methods -> the paginator (``_iter``, ``_page``) -> the retry layer
(``_call``) -> ``_request``, the one function that touches ``httpx.Client``; the rate limiter
(``_RateLimiter``) and the concurrency limit (a semaphore) wrap that one call.

The listing (``iter_records``):
  1. Probe ``limit=1&sortOrder=DESC``: T0 = the newest ``createdAt``, N = ``totalItems``.
  2. Fetch pages 1..ceil(N/L) concurrently, each bounded by ``createdAtLt`` = T0 + 1 ms (the same
     set as ``createdAtLe=T0`` at Vapi's millisecond precision, and still right if Vapi keeps
     microseconds). Records created later fall outside the bound, so they cannot shift pages.
  3. Under the bound the set can only shrink, so its size identifies it: pages reporting the same
     ``totalItems`` are slices of one and the same set. With M = the smallest total seen, every
     page that reported another total is fetched again, until all pages 1..ceil(M/L) agree; their
     union is then that whole set. After ``MAX_ROUNDS`` rounds without agreement (deletions that
     never stop), a sequential ``createdAtGe`` keyset scan in ASC order finishes the job.
  4. Records are yielded as pages arrive, de-duplicated by id, so memory stays at a few pages plus
     the set of ids seen. Records deleted during the listing may or may not appear; every record
     that existed throughout appears exactly once.
"""

from __future__ import annotations

import copy
import math
import random
import re
import ssl
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar
from urllib.parse import quote

import httpx
import structlog

import numsync
from numsync.config import VapiConfig
from numsync.errors import (
    AdapterError,
    AuthError,
    InDoubtError,
    NotFoundError,
    PermanentError,
    ProtocolError,
    TransientError,
)
from numsync.redaction import is_secret_key

from .base import VapiNumber
from .http_util import httpx_tls_verify, loads, parse_retry_after
from .vapi_model import read_listing_page, to_vapi_number

__all__ = ["MAX_ROUNDS", "SECRET_FIELDS", "VapiClient", "VapiStats", "redact_record"]

T = TypeVar("T")
Progress = Callable[[int, int], None]
Transform = Callable[[dict[str, Any]], Any]
E = TypeVar("E", bound=AdapterError)
log = structlog.get_logger(__name__)

SECRET_FIELDS = frozenset({"twilioAuthToken", "twilioApiSecret", "twilioApiKey"})
MAX_ROUNDS = 10
_MAX_BACKOFF = 30.0
_LIST_PATH = "/v2/phone-number"
_LIST_OP, _READ_OP = "list phone numbers", "read phone number"
_REQUIRED_FIELDS = ("id", "provider", "createdAt")


# -- secrets --------------------------------------------------------------------------------------
_SECRET_KEYS: dict[str, bool] = {}  # key -> is it secret? (memo: records repeat the same few keys)


def _is_secret_key(key: str) -> bool:
    secret = _SECRET_KEYS.get(key)
    if secret is None:
        secret = key in SECRET_FIELDS or is_secret_key(key)  # the project-wide rule (numsync.redaction)
        if len(_SECRET_KEYS) < 10_000:
            _SECRET_KEYS[key] = secret
            if not secret:
                _SAFE_KEYS.add(key)
    return secret


_SAFE_KEYS: set[str] = set()  # keys seen and judged not secret (bounded like _SECRET_KEYS)
_NESTED = frozenset((dict, list))


def _scrub(value: Any, parent: str | None) -> Any:
    """Remove secrets in place. The listing's hot path (a million records): memo lookups, no copies.

    A record whose keys were all judged safe before and that holds nothing nested (the common
    case) is passed by two C-level checks, without a Python loop over its fields.
    """
    if (type(value) is dict and parent != "server" and value.keys() <= _SAFE_KEYS
            and _NESTED.isdisjoint(map(type, value.values()))):
        return value
    if type(value) is dict:
        doomed: list[Any] = []
        memo = _SECRET_KEYS.get
        for key, item in value.items():
            secret = memo(key)
            if secret is None:
                secret = type(key) is str and _is_secret_key(key)
            if secret or (key == "headers" and parent == "server"):
                doomed.append(key)
            elif type(item) is dict or type(item) is list:
                _scrub(item, key)
        for key in doomed:
            del value[key]
    elif type(value) is list:
        for item in value:
            if type(item) is dict or type(item) is list:
                _scrub(item, parent)
    return value


def redact_record(record: dict[str, Any]) -> dict[str, Any]:
    """A copy of a Vapi record with every secret field removed, at any depth.

    Drops the Twilio credentials Vapi echoes, any key that names a secret
    (secret/token/password/authorization/api key), and ``server.headers`` (webhook credentials).
    """
    return _scrub(copy.deepcopy(record), None)  # type: ignore[no-any-return]


# -- small layers ---------------------------------------------------------------------------------
@dataclass
class VapiStats:
    """What a client did, for logs and the benchmark; updated from worker threads."""

    requests: int = 0
    retries: int = 0
    pages: int = 0
    refetched_pages: int = 0
    rounds: int = 0
    keyset_fallbacks: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def add(self, **counts: int) -> None:
        with self._lock:
            for name, count in counts.items():
                setattr(self, name, getattr(self, name) + count)


class _RateLimiter:
    """A token bucket of capacity one: callers reserve evenly spaced start times, thread-safely."""

    def __init__(self, per_second: float) -> None:
        self._interval = 1.0 / per_second if per_second > 0 else 0.0
        self._next = 0.0
        self._lock = threading.Lock()

    def acquire(self) -> None:
        if not self._interval:
            return
        with self._lock:
            now = time.monotonic()
            start = max(now, self._next)
            self._next = start + self._interval
        if start > now:
            time.sleep(start - now)


def _backoff(attempt: int, base: float, retry_after: float | None, cap: float) -> float:
    """Full-jitter exponential backoff, unless the server said how long to wait (capped)."""
    if retry_after is not None:
        return min(retry_after, cap)
    return random.uniform(0.0, min(_MAX_BACKOFF, base * 2 ** (attempt - 1)))


def _message_of(payload: Any) -> str:
    """Vapi's own error text (``message`` is a string or a list of strings)."""
    if not isinstance(payload, dict):
        return ""
    message = payload.get("message")
    if isinstance(message, list):
        return "; ".join(str(m) for m in message)
    return str(message) if message is not None else ""


def _tls_verify(cfg: VapiConfig) -> ssl.SSLContext:
    return httpx_tls_verify(cfg.base_url, cfg.ca_bundle, owner="vapi")


def _normalise_number(number: Any) -> str | None:
    """A Vapi record's number as E.164 when it is digits (Vonage numbers come without '+')."""
    if not isinstance(number, str):
        return None
    if number[:1] == "+" and number[1:].isdigit():
        return number  # already E.164, as nearly all are
    text = re.sub(r"[\s().-]", "", number)
    if text.startswith("00") and text[2:].isdigit():
        text = "+" + text[2:]
    elif text.isdigit():
        text = "+" + text
    return text


def _created_at(record: dict[str, Any]) -> datetime:
    """A checked record's createdAt, aware (UTC when Vapi gives no offset)."""
    moment = datetime.fromisoformat(record["createdAt"])
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _short(record_id: Any) -> str:
    return f"{str(record_id)[:8]}..." if record_id else "none"


def _err(cls: type[E], message: str, operation: str, status: int | None = None,
         retry_after: float | None = None) -> E:
    return cls(message, api="vapi", operation=operation, status=status, retry_after=retry_after)


class VapiClient:
    """Vapi's phone numbers: the sink for imports and the source for the Vapi side of the diff.

    Every record returned by any method has been scrubbed as ``redact_record`` does. Thread-safe:
    the listing itself fetches pages on ``cfg.max_concurrency`` threads.
    """

    def __init__(self, cfg: VapiConfig, *, on_request: Callable[[str, str], None] | None = None,
                 transport: httpx.BaseTransport | None = None) -> None:
        self._cfg = cfg
        self._on_request = on_request
        self._limiter = _RateLimiter(cfg.requests_per_second)
        self._slots = threading.BoundedSemaphore(cfg.max_concurrency)
        self.stats = VapiStats()
        # The createdAt bound of the last listing: records created from then on were not in it.
        # None before any listing, and after one of an empty Vapi (then every record is new).
        self.listing_bound: datetime | None = None
        self._transport = transport
        self._verify = _tls_verify(cfg)
        self._http = self._new_http()

    def _new_http(self) -> httpx.Client:
        cfg = self._cfg
        client = httpx.Client(
            base_url=cfg.base_url,
            headers={"Authorization": f"Bearer {cfg.api_key.get_secret_value()}", "Accept": "application/json",
                     "User-Agent": f"numsync/{numsync.__version__}"},
            timeout=httpx.Timeout(cfg.timeout),
            limits=httpx.Limits(max_connections=cfg.max_concurrency,
                                max_keepalive_connections=cfg.max_concurrency),
            verify=self._verify,
            transport=self._transport,
            follow_redirects=False,
        )
        # The two paths every run requests thousands of times, as absolute URLs: httpx parses a
        # relative one and joins it to base_url on each request, 5% of an import's CPU.
        base = client.base_url
        self._urls = {path: base.copy_with(raw_path=base.raw_path + path.lstrip("/").encode())
                      for path in ("/phone-number", _LIST_PATH)}
        return client

    # -- public API -------------------------------------------------------------------------------
    def iter_records(self, *, sort_order: str = "ASC", progress: Progress | None = None,
                     transform: Callable[[dict[str, Any]], T] | None = None) -> Iterator[T | dict[str, Any]]:
        """Every Vapi phone number exactly once, even while numbers come and go (module docstring).

        ``transform`` is applied to each (redacted) record in the caller's thread as pages
        arrive; ``progress(done, total)`` is called after each page.
        """
        if sort_order not in ("ASC", "DESC"):
            raise ValueError("sort_order must be 'ASC' or 'DESC'")
        return self._iter(sort_order, progress, transform)

    def iter_numbers(self, *, progress: Progress | None = None) -> Iterator[VapiNumber]:
        """Every Vapi phone number exactly once, as ``iter_records(transform=to_vapi_number)``
        gives it, read from each page's JSON without building the record first (the snapshot's
        listing: ``vapi_model.read_listing_page``)."""
        return self._iter("ASC", progress, to_vapi_number, numbers=True)

    def get(self, id: str) -> dict[str, Any]:
        payload = self._call("GET", f"/phone-number/{quote(id, safe='')}", operation="get phone number")
        return self._checked(payload, "returned by get")

    def search(self, text: str) -> list[dict[str, Any]]:
        """Every record whose name, number or SIP URI contains ``text`` (all pages)."""
        found: dict[str, dict[str, Any]] = {}
        size = self._cfg.page_size
        page = 1
        while True:
            params = {"search": text, "limit": size, "page": page, "sortOrder": "ASC"}
            records, total = self._page(params, page)
            for record in records:
                found.setdefault(record["id"], record)
            if len(records) < size or page * size >= total:
                return list(found.values())
            page += 1

    def created_since(self, moment: datetime | None) -> Iterator[tuple[str, str | None, datetime]]:
        """(id, number as E.164, createdAt) of every record created at or after ``moment``, oldest first.

        How the engine learns, in a page or two, which numbers arrived in Vapi after its listing
        (instead of searching for each number it imports). The walk is a ``createdAtGe`` keyset
        scan, so records created meanwhile extend it rather than shift its pages.
        """
        since = self._iso_ms(moment) if moment is not None else None
        for record in self._keyset_scan(None, set(), None, None, since=since):
            yield str(record["id"]), _normalise_number(record.get("number")), _created_at(record)

    def find_by_number(self, e164: str) -> list[dict[str, Any]]:
        """The records holding ``e164``, whatever form Vapi stores it in ('+'-less Vonage ones too)."""
        digits = e164.lstrip("+")
        if not digits.isdigit():
            raise ValueError(f"not an E.164 number: {e164!r}")
        return [r for r in self.search(digits) if _normalise_number(r.get("number")) == "+" + digits]

    def create(self, body: dict[str, Any]) -> dict[str, Any]:
        """Import a number. Never retried: a lost answer raises InDoubtError (look the number up)."""
        try:
            payload = self._call("POST", "/phone-number", operation="create phone number", body=body,
                                 retry=False)
        except InDoubtError:
            raise
        except TransientError as exc:
            if exc.status is not None and exc.status not in (429, 503):
                raise _err(InDoubtError, f"{exc.message}; the number may have been created",
                           exc.operation, exc.status) from exc
            raise
        return self._checked(payload, "returned by create")

    def update(self, id: str, body: dict[str, Any]) -> dict[str, Any]:
        payload = self._call("PATCH", f"/phone-number/{quote(id, safe='')}", operation="update phone number",
                             body=body)
        return self._checked(payload, "returned by update")

    def delete(self, id: str) -> dict[str, Any]:
        payload = self._call("DELETE", f"/phone-number/{quote(id, safe='')}", operation="delete phone number")
        return self._checked(payload, "returned by delete")

    def close(self) -> None:
        self._http.close()

    def reset_connections(self) -> None:
        """Drop every pooled connection: after a listing in a forked process, one of them may
        have been left by the child in the middle of an exchange (numsync.daemon.workers)."""
        self._http.close()
        self._http = self._new_http()

    def __enter__(self) -> VapiClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the paginator ----------------------------------------------------------------------------
    def _iter(self, sort_order: str, progress: Progress | None, transform: Transform | None, *,
              numbers: bool = False) -> Iterator[Any]:
        size = self._cfg.page_size
        newest, total = self._page({"limit": 1, "sortOrder": "DESC"}, 0)
        if not newest:
            if total:
                raise _err(ProtocolError, f"Vapi reported {total} phone numbers but listed none", _LIST_OP)
            self.listing_bound = None
            if progress:
                progress(0, 0)
            return
        self.listing_bound = self._bound_after(newest[0])
        bound = self._iso_ms(self.listing_bound)
        params = {"sortOrder": sort_order, "limit": size, "createdAtLt": bound}
        seen: set[str] = set()
        smallest = total
        reported: dict[int, int] = {}  # page -> the total it reported when last fetched
        wanted = list(range(1, math.ceil(total / size) + 1))
        pool = ThreadPoolExecutor(max_workers=self._cfg.max_concurrency, thread_name_prefix="vapi-page")
        try:
            for round_no in range(1, MAX_ROUNDS + 1):
                self.stats.add(rounds=1, refetched_pages=len(wanted) if round_no > 1 else 0)
                for page, page_total, records in self._fetch_pages(pool, wanted, params, numbers):
                    reported[page] = page_total
                    smallest = min(smallest, page_total)
                    for record in records:
                        rid = record.id if numbers else record["id"]
                        if rid not in seen:
                            seen.add(rid)
                            yield record if numbers or not transform else transform(record)
                    if progress:
                        progress(len(seen), max(smallest, len(seen)))
                wanted = [p for p in range(1, math.ceil(smallest / size) + 1) if reported.get(p) != smallest]
                if not wanted:
                    return
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
        log.warning("vapi_listing_unsettled", rounds=MAX_ROUNDS, fallback="keyset scan")
        self.stats.add(keyset_fallbacks=1)
        yield from self._keyset_scan(bound, seen, progress, transform)

    def _fetch_pages(
        self, pool: ThreadPoolExecutor, pages: Iterable[int], params: dict[str, Any], numbers: bool
    ) -> Iterator[tuple[int, int, list[Any]]]:
        """Pages in order, fetched concurrently, with at most a small window held in memory.

        Worker threads only do HTTP; the JSON is decoded and checked here, in the caller's
        thread: with the GIL, one thread doing all the CPU work beats eight contending for it.
        """
        todo = iter(pages)
        window: deque[tuple[int, Future[httpx.Response]]] = deque()

        def submit() -> None:
            page = next(todo, None)
            if page is not None:
                window.append((page, pool.submit(self._fetch_page, {**params, "page": page})))

        for _ in range(2 * self._cfg.max_concurrency):
            submit()
        while window:
            page, future = window.popleft()
            response = future.result()
            submit()
            records, total = self._read_numbers(response, page) if numbers else self._read_page(response, page)
            yield page, total, records

    def _keyset_scan(self, bound: str | None, seen: set[str], progress: Progress | None,
                     transform: Transform | None, *, since: str | None = None) -> Iterator[Any]:
        """Always correct, never concurrent: walk createdAt upwards from the last one seen.

        From ``since`` (else the oldest) up to ``bound`` (else to whatever is newest by then).
        """
        size = self._cfg.page_size
        cursor = since
        page = 1
        while True:
            params: dict[str, Any] = {"sortOrder": "ASC", "limit": size, "page": page}
            if bound is not None:
                params["createdAtLt"] = bound
            if cursor is not None:
                params["createdAtGe"] = cursor
            records, total = self._page(params, page)
            for record in records:
                if record["id"] not in seen:
                    seen.add(record["id"])
                    yield transform(record) if transform else record
            if progress:  # total counts what is left from the cursor on
                progress(len(seen), len(seen) + max(0, total - (page - 1) * size - len(records)))
            if len(records) < size:
                return
            last = records[-1]["createdAt"]
            # A full page of one timestamp cannot move the cursor: step through it by offset.
            cursor, page = (cursor, page + 1) if last == cursor else (last, 1)

    def _page(self, params: dict[str, Any], page: int) -> tuple[list[dict[str, Any]], int]:
        """One listing page, checked and redacted: (records, metadata.totalItems)."""
        return self._read_page(self._fetch_page(params), page)

    def _fetch_page(self, params: dict[str, Any]) -> httpx.Response:
        response: httpx.Response = self._call("GET", _LIST_PATH, operation=_LIST_OP, params=params, parse=False)
        self.stats.add(pages=1)
        return response

    def _read_numbers(self, response: httpx.Response, page: int) -> tuple[list[VapiNumber], int]:
        """A listing page as numbers: the direct reader when it vouches for the page, else the
        general one, which also names what is wrong."""
        if "json" in response.headers.get("content-type", "").lower():
            read = read_listing_page(response.content)
            if read is not None:
                return read
        records, total = self._read_page(response, page)
        return [to_vapi_number(record) for record in records], total

    def _read_page(self, response: httpx.Response, page: int) -> tuple[list[dict[str, Any]], int]:
        payload = self._json(response, "GET", _LIST_PATH, _LIST_OP)
        where = "probe page" if page == 0 else f"page {page}"
        if not isinstance(payload, dict):
            raise _err(ProtocolError, f"Vapi's {where} of phone numbers is not a JSON object", _LIST_OP)
        results, metadata = payload.get("results"), payload.get("metadata")
        if not isinstance(results, list):
            raise _err(ProtocolError, f"Vapi's {where} of phone numbers has no 'results'", _LIST_OP)
        if not isinstance(metadata, dict):
            raise _err(ProtocolError, f"Vapi's {where} of phone numbers has no 'metadata'", _LIST_OP)
        total = metadata.get("totalItems")
        if (isinstance(total, bool) or not isinstance(total, int | float) or not 0 <= total <= 10**8
                or total != int(total)):
            raise _err(ProtocolError, f"Vapi's {where} of phone numbers has no valid 'totalItems'", _LIST_OP)
        label = "on the probe page" if page == 0 else f"on page {page}"
        records = [self._checked(r, label, index) for index, r in enumerate(results, 1)]
        return records, int(total)

    @staticmethod
    def _checked(record: Any, where: str, index: int | None = None) -> dict[str, Any]:
        """A freshly parsed record with the fields numsync relies on, redacted in place.

        Anything else is a ProtocolError naming the record.
        """
        for key in _REQUIRED_FIELDS:
            value = record.get(key) if type(record) is dict else None
            if type(value) is not str or not value:
                break
        else:
            try:
                datetime.fromisoformat(record["createdAt"])
                return _scrub(record, None)  # type: ignore[no-any-return]  # freshly parsed: ours to edit
            except ValueError:
                key = ""
        name = f"Vapi record {index} {where}" if index is not None else f"The Vapi record {where}"
        if not isinstance(record, dict):
            raise _err(ProtocolError, f"{name} is not a JSON object", _READ_OP)
        problem = f"has no '{key}'" if key else "has an unreadable 'createdAt'"
        raise _err(ProtocolError, f"{name} (id {_short(record.get('id'))}) {problem}", _READ_OP)

    @staticmethod
    def _bound_after(newest: dict[str, Any]) -> datetime:
        """The exclusive upper createdAt bound: one millisecond after the newest record."""
        moment = _created_at(newest).astimezone(UTC)
        return moment.replace(microsecond=moment.microsecond // 1000 * 1000) + timedelta(milliseconds=1)

    @staticmethod
    def _iso_ms(moment: datetime) -> str:
        """A moment as Vapi writes times: UTC, milliseconds, 'Z'."""
        moment = moment.astimezone(UTC)
        return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"

    # -- the retry layer --------------------------------------------------------------------------
    def _call(self, method: str, path: str, *, operation: str, params: dict[str, Any] | None = None,
              body: dict[str, Any] | None = None, retry: bool = True, parse: bool = True) -> Any:
        """``_request`` with retries on transient failures (never for writes that are not safe)."""
        attempt = 0
        while True:
            attempt += 1
            try:
                return self._request(method, path, operation=operation, params=params, body=body, parse=parse)
            except InDoubtError:
                raise
            except TransientError as exc:
                if not retry or attempt >= self._cfg.max_attempts:
                    if attempt > 1:
                        exc.message = f"{exc.message} (gave up after {attempt} attempts)"
                        exc.args = (exc.message,)
                    raise
                delay = _backoff(attempt, self._cfg.backoff_base, exc.retry_after, self._cfg.max_retry_after)
                log.info("vapi_retry", operation=operation, attempt=attempt, status=exc.status,
                         delay=round(delay, 3))
                self.stats.add(retries=1)
                time.sleep(delay)

    # -- the one place that touches httpx ---------------------------------------------------------
    def _request(self, method: str, path: str, *, operation: str, params: dict[str, Any] | None = None,
                 body: dict[str, Any] | None = None, parse: bool = True) -> Any:
        """One HTTP exchange, rate-limited and concurrency-limited, translated into numsync's errors.

        Returns the decoded JSON, or with ``parse=False`` the successful response itself.
        """
        self._limiter.acquire()
        with self._slots:
            self.stats.add(requests=1)
            try:
                response = self._http.request(method, self._urls.get(path, path), params=params, json=body)
            except httpx.RequestError as exc:
                self._report("error")
                raise self._transport_error(method, path, operation, exc) from exc
        self._report(str(response.status_code))
        self._check_status(response, method, path, operation)
        return self._json(response, method, path, operation) if parse else response

    def _report(self, status: str) -> None:
        if self._on_request is not None:
            self._on_request("vapi", status)

    @staticmethod
    def _transport_error(method: str, path: str, operation: str, exc: httpx.RequestError) -> Exception:
        what = f"{method} {path}"
        cause: BaseException | None = exc
        while cause is not None:
            if isinstance(cause, ssl.SSLCertVerificationError):
                return _err(PermanentError, f"Vapi's TLS certificate is not trusted ({what}); set "
                            "vapi.ca_bundle if a proxy intercepts TLS", operation)
            cause = cause.__cause__ or cause.__context__
        kind = exc.__class__.__name__
        not_sent = isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout | httpx.PoolTimeout)
        if method == "POST" and not not_sent:
            return _err(InDoubtError, f"no answer from Vapi to {what} ({kind}); the write may have happened",
                        operation)
        return _err(TransientError, f"could not {operation} at Vapi: {kind} on {what}", operation)

    @staticmethod
    def _json(response: httpx.Response, method: str, path: str, operation: str) -> Any:
        """The body of a successful answer, which must be JSON."""
        content_type = response.headers.get("content-type", "")
        if "json" in content_type.lower():
            try:
                return loads(response.content)
            except ValueError:
                described = "invalid JSON"
        else:
            described = content_type.split(";")[0] or "an untyped body"
        raise _err(ProtocolError, f"Vapi answered {method} {path} with {described} instead of JSON", operation,
                   response.status_code)

    @staticmethod
    def _check_status(response: httpx.Response, method: str, path: str, operation: str) -> None:
        """Raise the error an unsuccessful answer means, with Vapi's own message."""
        status = response.status_code
        if 200 <= status < 300:
            return
        what = f"{method} {path}"
        content_type = response.headers.get("content-type", "")
        try:
            payload = response.json() if "json" in content_type.lower() else None
            message = _message_of(payload) if payload is not None else f"not JSON: {content_type or 'untyped'}"
        except ValueError:
            payload, message = None, "invalid JSON"
        if status in (401, 403):
            raise _err(AuthError, "Vapi rejected the API key", operation, status)
        if status == 404:
            raise _err(NotFoundError, f"Vapi has no such phone number ({what}): {message}", operation, status)
        if status == 429 or status >= 500:
            retry_after = parse_retry_after(response.headers.get("retry-after"))
            raise _err(TransientError, f"Vapi answered {status} to {what}: {message}", operation, status,
                       retry_after)
        if payload is None:
            raise _err(ProtocolError, f"Vapi answered {status} to {what} with {message}, not its JSON error",
                       operation, status)
        raise _err(PermanentError, f"Vapi refused to {operation} ({status}): {message}", operation, status)

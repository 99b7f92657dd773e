"""A tiny HTTP(S) server for API emulations, with a request log and fault switches.

Each emulated API (Vapi, Twilio, Telnyx, Vonage) is an ``Emulator``: a route table over
in-memory state. ``EmulatorServer`` serves one emulator on a real socket (threads, HTTP/1.1
keep-alive, optional TLS), so the real SDKs talk to it exactly as they would to the carrier.

Faults are injected per request, before the handler runs (or, for ``timeout_after``/
``reset_after``, after it ran, which is how "a create that succeeded but timed out" happens).
They can be set from Python (``emulator.faults.add(...)``) or over HTTP
(``POST /_sandbox/faults``) when the sandbox runs in another process.
"""

from __future__ import annotations

import contextlib
import functools
import json
import re
import socket
import ssl
import struct
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import orjson

__all__ = [
    "Emulator",
    "EmulatorServer",
    "Fault",
    "FaultPlan",
    "Request",
    "Response",
    "json_array_body",
    "json_response",
]

FAULT_KINDS = (
    "latency",  # sleep `delay` seconds, then handle normally
    "status",  # answer `status` (with Retry-After when `retry_after` is set) and the API's error body
    "reset",  # close the connection with a TCP RST before answering
    "timeout_after",  # run the handler (the write happens), then sleep `delay` before answering
    "reset_after",  # run the handler (the write happens), then reset the connection
    "hang",  # sleep `delay` seconds and then reset: a read timeout for any client with a shorter one
    "malformed_json",  # 200 with a body that is not JSON
    "truncated_json",  # 200 with the real body cut in half
    "html",  # `status` (default 502) with an HTML error page, as a proxy would send
    "wrong_content_type",  # the real body labelled text/plain
    "empty",  # the handler's state is bypassed: list endpoints answer an empty inventory
)


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes

    def arg(self, name: str, default: str | None = None) -> str | None:
        values = self.query.get(name)
        return values[-1] if values else default

    def json(self) -> Any:
        return json.loads(self.body or b"null")


@dataclass
class Response:
    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    content_type: str = "application/json; charset=utf-8"


def json_array_body(head: bytes, items: list[bytes], sep: bytes, tail: bytes) -> bytes:
    """``head`` + the items' JSON as an array + ``tail``, with the page copied once: each ``+`` of a
    page-sized bytes (or a join then a concatenation) copied it whole, most of an emulation's CPU per
    listing page (Vapi: 1.6-1.7 ms of a 1,000-record page, then 0.6), on the cores numsync's
    benchmark shares with it."""
    parts = [sep] * (2 * len(items) - 1) if items else []
    parts[::2] = items
    return b"".join([head, b"[", *parts, b"]", tail])


def json_response(payload: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    """A JSON answer. orjson, because the emulations share the benchmark's cores with the client
    they serve: a listing page cost them 12-16 us a number in ``json``, a third of numsync's own."""
    try:
        body = orjson.dumps(payload)
    except TypeError:  # what orjson refuses (integers beyond 64 bits, non-text keys): as json writes it
        body = json.dumps(payload).encode()
    return Response(status=status, body=body, headers=dict(headers or {}))


@dataclass
class Fault:
    """One fault rule. ``times`` = how many matching requests it hits (None: until cleared)."""

    kind: str
    method: str | None = None  # None: any method
    path: str | None = None  # a regular expression searched in the path; None: any path
    times: int | None = 1
    after: int = 0  # let this many matching requests through first
    status: int = 500
    retry_after: str | None = None
    location: str | None = None  # a status fault's Location header (a redirect)
    delay: float = 0.0

    def __post_init__(self) -> None:
        if self.kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault kind {self.kind!r}; one of {', '.join(FAULT_KINDS)}")

    def matches(self, req: Request) -> bool:
        if self.method and self.method.upper() != req.method:
            return False
        return not (self.path and not re.search(self.path, req.path))


class FaultPlan:
    """The fault rules of one emulator, consumed thread-safely as requests arrive."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._faults: list[Fault] = []
        self.latency = 0.0  # added to every request (the benchmark's 20 ms)

    def add(self, kind: str, **kw: Any) -> Fault:
        fault = Fault(kind=kind, **kw)
        with self._lock:
            self._faults.append(fault)
        return fault

    def clear(self) -> None:
        with self._lock:
            self._faults.clear()

    def take(self, req: Request) -> Fault | None:
        with self._lock:
            for fault in self._faults:
                if not fault.matches(req):
                    continue
                if fault.after > 0:
                    fault.after -= 1
                    continue
                if fault.times is not None:
                    fault.times -= 1
                    if fault.times <= 0:
                        self._faults.remove(fault)
                return fault
        return None

    def snapshot(self) -> list[dict[str, Any]]:
        with self._lock:
            return [asdict(f) for f in self._faults]


Route = tuple[str, re.Pattern[str], Callable[..., Response]]


class Emulator:
    """Base of an API emulation: routes, state lock, request log, faults, hooks.

    Subclasses register routes with ``self.route(method, regex, handler)``; the handler gets
    the ``Request`` and the regex groups. ``error_response`` renders the API's own error
    envelope, so injected 429s and 500s look like the real thing.
    """

    name = "emulator"

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.faults = FaultPlan()
        self.requests: list[tuple[str, str, dict[str, list[str]], int]] = []
        self._routes: list[Route] = []
        # Called after each handled request with (request, response); tests use it to change
        # state "between two page requests".
        self.after_request: list[Callable[[Request, Response], None]] = []
        # Called with each request before it is handled; tests use it to hold requests (to prove
        # that two are in flight at once, say).
        self.before_request: list[Callable[[Request], None]] = []
        self.empty_inventory = False

    def reset_traffic(self) -> None:
        """Forget faults, hooks, latency and the request log (subclasses also drop their records)."""
        with self.lock:
            self.requests.clear()
            self.after_request.clear()
            self.before_request.clear()
            self.empty_inventory = False
        self.faults.clear()
        self.faults.latency = 0.0

    def route(self, method: str, pattern: str, handler: Callable[..., Response]) -> None:
        self._routes.append((method, re.compile(f"^{pattern}$"), handler))

    def error_response(self, status: int, message: str) -> Response:
        return json_response({"statusCode": status, "message": message, "error": "Error"}, status)

    def check_auth(self, req: Request) -> Response | None:
        """Return an error response when the request's credentials are wrong."""
        return None

    def dispatch(self, req: Request) -> Response:
        denied = self.check_auth(req)
        if denied is not None:
            return denied
        allowed = False
        for method, pattern, handler in self._routes:
            match = pattern.match(req.path)
            if not match:
                continue
            allowed = True
            if method == req.method:
                return handler(req, *match.groups())
        if allowed:
            return self.error_response(405, f"Cannot {req.method} {req.path}")
        return self.error_response(404, f"Cannot {req.method} {req.path}")

    def log(self, req: Request, status: int) -> None:
        with self.lock:
            self.requests.append((req.method, req.path, req.query, status))

    def requests_to(self, method: str, path_regex: str) -> list[tuple[str, str, dict[str, list[str]], int]]:
        with self.lock:
            return [r for r in self.requests if r[0] == method and re.search(path_regex, r[1])]

    # -- control API (/_sandbox/...) so another process can steer the emulation ----------------
    def control(self, req: Request) -> Response:
        if req.path == "/_sandbox/faults" and req.method == "POST":
            spec = req.json() or {}
            items = spec if isinstance(spec, list) else [spec]
            try:
                for item in items:
                    self.faults.add(**item)
            except (TypeError, ValueError) as exc:
                return json_response({"error": str(exc)}, 400)
            return json_response({"faults": self.faults.snapshot()})
        if req.path == "/_sandbox/faults" and req.method == "DELETE":
            self.faults.clear()
            return json_response({"faults": []})
        if req.path == "/_sandbox/faults" and req.method == "GET":
            return json_response({"faults": self.faults.snapshot()})
        if req.path == "/_sandbox/latency" and req.method == "POST":
            self.faults.latency = float((req.json() or {}).get("seconds", 0))
            return json_response({"latency": self.faults.latency})
        if req.path == "/_sandbox/requests" and req.method == "GET":
            with self.lock:
                rows = [{"method": m, "path": p, "query": q, "status": s} for m, p, q, s in self.requests]
            return json_response({"requests": rows})
        if req.path == "/_sandbox/state" and req.method == "GET":
            return json_response(self.dump_state())
        return json_response({"error": "unknown control path"}, 404)

    def dump_state(self) -> Any:
        return {}


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:  # quiet: the emulator keeps its own log
        return

    def _read_request(self) -> Request:
        parts = urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        return Request(
            method=self.command,
            path=parts.path,
            query=parse_qs(parts.query, keep_blank_values=True),
            headers={k.lower(): v for k, v in self.headers.items()},
            body=body,
        )

    def _reset(self) -> None:
        with contextlib.suppress(OSError):
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.close_connection = True
        with contextlib.suppress(OSError):
            self.connection.close()

    def _send(self, resp: Response) -> None:
        self.send_response(resp.status)
        self.send_header("Content-Type", resp.content_type)
        self.send_header("Content-Length", str(len(resp.body)))
        for key, value in resp.headers.items():
            self.send_header(key, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(resp.body)

    def _handle(self) -> None:
        emu = self.server.emulator
        req = self._read_request()
        if req.path.startswith("/_sandbox/"):
            self._send(emu.control(req))
            return
        for before in list(emu.before_request):
            before(req)
        if emu.faults.latency:
            time.sleep(emu.faults.latency)
        fault = emu.faults.take(req)
        resp: Response | None = None
        if fault is not None:
            resp = self._before(emu, req, fault)
            if resp is None and fault.kind in {"reset", "hang"}:
                emu.log(req, 0)
                return
        if resp is None:
            try:
                if fault is not None and fault.kind == "empty":
                    emu.empty_inventory = True
                    try:
                        resp = emu.dispatch(req)
                    finally:
                        emu.empty_inventory = False
                else:
                    resp = emu.dispatch(req)
            except Exception as exc:  # an emulator bug must not hang the client
                resp = emu.error_response(500, f"emulator error: {exc.__class__.__name__}")
            if fault is not None:
                resp = self._after(req, resp, fault)
                if resp is None:
                    emu.log(req, 0)
                    return
        emu.log(req, resp.status)
        self._send(resp)
        for hook in list(emu.after_request):
            hook(req, resp)

    def _before(self, emu: Emulator, req: Request, fault: Fault) -> Response | None:
        if fault.kind == "latency":
            time.sleep(fault.delay)
            return None
        if fault.kind == "status":
            resp = emu.error_response(fault.status, f"injected {fault.status}")
            if fault.retry_after is not None:
                resp.headers["Retry-After"] = fault.retry_after
            if fault.location is not None:
                resp.headers["Location"] = fault.location
            return resp
        if fault.kind == "reset":
            self._reset()
            return None
        if fault.kind == "hang":
            time.sleep(fault.delay)
            self._reset()
            return None
        if fault.kind == "html":
            status = fault.status if fault.status >= 400 else 502
            body = b"<html><head><title>502 Bad Gateway</title></head><body><h1>Bad Gateway</h1></body></html>"
            return Response(status=status, body=body, content_type="text/html")
        return None

    def _after(self, req: Request, resp: Response, fault: Fault) -> Response | None:
        if fault.kind == "timeout_after":
            time.sleep(fault.delay)
            return resp
        if fault.kind == "reset_after":
            self._reset()
            return None
        if fault.kind == "malformed_json":
            return Response(status=200, body=b'{"results": [{"id": oops', headers=resp.headers)
        if fault.kind == "truncated_json":
            return Response(status=resp.status, body=resp.body[: max(1, len(resp.body) // 2)], headers=resp.headers)
        if fault.kind == "wrong_content_type":
            return Response(status=resp.status, body=resp.body, headers=resp.headers, content_type="text/plain")
        return resp

    def do_GET(self) -> None:
        self._handle()

    do_POST = do_PATCH = do_DELETE = do_PUT = do_GET


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self, addr: tuple[str, int], emulator: Emulator, ssl_context: ssl.SSLContext | None) -> None:
        super().__init__(addr, _Handler)
        self.emulator = emulator
        self.ssl_context = ssl_context

    def get_request(self) -> tuple[socket.socket, Any]:
        sock, addr = super().get_request()
        # Headers and body go out in two writes; with Nagle on, the body waits for the client's
        # delayed ACK (~40 ms) on every keep-alive response, which made paging crawl.
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if self.ssl_context is not None:
            sock = self.ssl_context.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
        return sock, addr

    def handle_error(self, request: Any, client_address: Any) -> None:
        return  # resets and aborted TLS handshakes are expected under fault injection


class EmulatorServer:
    """Serves one emulator on 127.0.0.1 in a background thread; a context manager."""

    def __init__(
        self,
        emulator: Emulator,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.emulator = emulator
        self._server = _Server((host, port), emulator, ssl_context)
        serve = functools.partial(self._server.serve_forever, poll_interval=0.05)
        self._thread = threading.Thread(target=serve, name=f"sandbox-{emulator.name}", daemon=True)
        self.scheme = "https" if ssl_context else "http"

    @property
    def host(self) -> str:
        return str(self._server.server_address[0])

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        return f"{self.scheme}://{self.host}:{self.port}"

    def start(self) -> EmulatorServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> EmulatorServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def serve_all(servers: Iterable[EmulatorServer]) -> list[EmulatorServer]:
    return [s.start() for s in servers]

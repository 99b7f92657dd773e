"""The daemon's HTTP endpoints: /healthz (liveness), /readyz (readiness), /metrics (Prometheus).

Liveness looks at the process only, never at the database: a database outage must make pods
unready, not restart them in a loop (which would also drop the leader lock for nothing).
Readiness checks that the database answers and is at the code's migration; the answer is
cached for a couple of seconds so a burst of probes and scrapes costs one query. A standby is
ready: it is scraped (``numsync_leader 0``) and can take over at any moment.

The standard library's threading server is enough for three tiny GET endpoints, and keeps
the process free of a web framework.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError

from numsync.daemon.db import HEAD_REVISION, current_revision, make_engine, safe_url
from numsync.errors import ConfigError, DatabaseError

__all__ = ["METRICS_CONTENT_TYPE", "ProbeServer", "Readiness"]

# prometheus_client's generate_latest writes the classic text format (0.0.4); its
# CONTENT_TYPE_LATEST now names a newer version, which would misdescribe the body.
METRICS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class Readiness:
    """Is the database reachable and at the code's migration? Cached for ``ttl`` seconds."""

    def __init__(self, url: str, *, ttl: float = 2.0) -> None:
        self.url = url
        self.ttl = ttl
        self._engine: Engine | None = None
        self._lock = threading.Lock()
        self._answer: tuple[bool, str] = (False, "not checked yet")
        self._at = float("-inf")

    def check(self) -> tuple[bool, str]:
        with self._lock:
            if time.monotonic() - self._at < self.ttl:
                return self._answer
            self._answer = self._probe()
            self._at = time.monotonic()
            return self._answer

    def _probe(self) -> tuple[bool, str]:
        try:
            if self._engine is None:
                self._engine = make_engine(self.url)
            current = current_revision(self._engine)
        except (SQLAlchemyError, DatabaseError) as exc:
            self._drop_engine()
            reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()
            return False, f"database {safe_url(self.url)} unreachable: {reason[0] if reason else type(exc).__name__}"
        if current != HEAD_REVISION:
            where = "empty" if current is None else f"at migration {current}"
            return False, f"database is {where}, not at {HEAD_REVISION}: run `numsync db upgrade`"
        return True, "database reachable and at the latest migration"

    def _drop_engine(self) -> None:
        if self._engine is not None:
            self._engine.dispose()
            self._engine = None

    def close(self) -> None:
        with self._lock:
            self._drop_engine()


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        return  # a probe every few seconds is not news

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        srv = self.server
        if path == "/metrics":
            self._send(200, srv.metrics(), METRICS_CONTENT_TYPE)
        elif path in ("/healthz", "/livez"):
            ok, detail = srv.health()
            self._json(200 if ok else 503, {"status": "ok" if ok else "failing", "detail": detail})
        elif path == "/readyz":
            ok, detail = srv.readiness()
            self._json(200 if ok else 503, {"status": "ready" if ok else "not ready", "detail": detail})
        else:
            self._json(404, {"status": "not found", "detail": "try /healthz, /readyz or /metrics"})

    def _json(self, status: int, payload: dict[str, Any]) -> None:
        self._send(status, json.dumps(payload).encode() + b"\n", "application/json")

    def _send(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(body)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, addr: tuple[str, int], health: Callable[[], tuple[bool, str]],
                 readiness: Callable[[], tuple[bool, str]], metrics: Callable[[], bytes]) -> None:
        self.health, self.readiness, self.metrics = health, readiness, metrics
        super().__init__(addr, _Handler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        return  # a scraper hanging up mid-answer is not an error of ours


class ProbeServer:
    """Serves the three endpoints in a background thread; ``port`` is the bound port."""

    def __init__(self, host: str, port: int, *, health: Callable[[], tuple[bool, str]],
                 readiness: Callable[[], tuple[bool, str]], metrics: Callable[[], bytes]) -> None:
        try:
            self._server = _Server((host, port), health, readiness, metrics)
        except OSError as exc:
            raise ConfigError(f"server: cannot listen on {host}:{port}: {exc.strerror or exc}") from None
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.2},
                                        name="numsync-http", daemon=True)

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def start(self) -> ProbeServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._thread.is_alive():
            self._server.shutdown()
            self._thread.join(timeout=5)
        self._server.server_close()

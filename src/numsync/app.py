"""Wiring: build the Vapi client and the sources from config, run the engine, write the reports.

The CLI and the daemon's scheduler both call ``run_once``; it is the only place that knows
concrete adapters and the engine at the same time.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

from numsync.adapters.base import Source, SourceRecord, VapiOwner
from numsync.adapters.registry import build_source, load_adapter
from numsync.adapters.vapi import VapiClient
from numsync.config import Config, SourceConfig
from numsync.daemon.db import open_database
from numsync.daemon.locks import RUN_LOCK, DatabaseLock
from numsync.daemon.report_data import build_report, report_context, resolve_run_id
from numsync.daemon.run import RunResult, execute
from numsync.daemon.workers import freeze_heap_for_good, relayed
from numsync.errors import ConfigError, NumsyncError, PermanentError
from numsync.metrics import Metrics
from numsync.redaction import SECRETS
from numsync.reporting import ReportContext, uses_context, write_reports

__all__ = ["RunOutput", "register_secrets", "render_stored", "run_once", "settle_for_one_run", "utcnow"]


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass
class RunOutput:
    result: RunResult
    report: dict[str, Any]
    paths: list[Path] = field(default_factory=list)
    context: ReportContext | None = None


def register_secrets(config: Config) -> None:
    """Tell the log redactor every secret value of the config."""
    values: list[str | None] = [config.vapi.api_key.get_secret_value()]
    for src in config.sources:
        for name in ("auth_token", "api_key", "api_secret"):
            secret = getattr(src, name, None)
            if secret is not None:
                values.append(secret.get_secret_value())
    if config.reports.webhook_url:
        values.append(config.reports.webhook_url)
    SECRETS.add(values)


class _BrokenSource:
    """Stands in for a source whose adapter could not even be built, so it fails like any other."""

    numbers_per_round_trip = sys.maxsize  # it fails at once

    def __init__(self, cfg: SourceConfig, error: NumsyncError) -> None:
        self.name, self.kind, self._error = cfg.name, cfg.kind, error

    def owner(self) -> VapiOwner:
        raise self._error

    def list_numbers(self, expected: int | None = None) -> Iterator[SourceRecord]:
        raise self._error

    def import_body(self, e164: str) -> dict[str, Any]:
        raise self._error

    def still_owned(self, numbers: Sequence[str]) -> set[str] | None:
        raise self._error

    def close(self) -> None:
        return None


def _selected(config: Config, names: Sequence[str] | None) -> list[SourceConfig]:
    if not names:
        return list(config.sources)
    known = [s.name for s in config.sources]
    for name in names:
        if name not in known:
            raise ConfigError(f"--source {name}: no source has that name (configured: {', '.join(known) or 'none'})")
    return [s for s in config.sources if s.name in set(names)]


def settle_for_one_run(config: Config) -> None:
    """For a process that runs once and exits (the CLI): import the adapters ``config`` names,
    then hand everything alive to the garbage collector's permanent generation.

    Those objects (modules, the SDKs' API trees, the config) live until the process exits; left
    in the collector's care, every full collection walks all of them again, and one such pause
    was a third of a 10,000-number plan (0.17 of 0.5 s). A long-running host (the daemon) must
    not call this: cyclic garbage among frozen objects is never collected.
    """
    for kind in sorted({s.kind for s in config.sources}):
        try:
            load_adapter(kind)
        except Exception:  # noqa: S112 - a broken SDK install is reported by its source's build
            continue
    freeze_heap_for_good()


def _build_source(cfg: SourceConfig, on_request: Callable[[str, str], None]) -> Source:
    """A source's adapter; one that cannot be built fails like a listing would (``_BrokenSource``)
    instead of stopping the others."""
    try:
        return build_source(cfg, on_request=on_request)
    except NumsyncError as exc:
        return _BrokenSource(cfg, exc)
    except Exception as exc:  # an SDK refusing its arguments must not stop the other sources
        return _BrokenSource(cfg, PermanentError(
            f"source {cfg.name}: cannot set up the {cfg.kind} client ({exc.__class__.__name__})",
            api=cfg.name, operation="setup"))


class _Clients:
    """The run's Vapi client and sources, built in a thread while the database is opened and
    locked and the run is recorded (``execute`` waits for them in that transaction).

    Why: building them is mostly reading trust stores (certifi's bundle for httpx's clients of
    https URLs, alone or with a ca_bundle; only its ca_bundle for a requests-based source that
    names one, see ``http_util.PinnedVerifyAdapter``), about 22 ms of OpenSSL's CPU for certifi's
    here, and it held up every listing. OpenSSL reads them without the GIL,
    beside the database work. One thread: two of them reading a bundle each took 39-48 ms against
    36 ms one after the other, for 77-93 ms of CPU (OpenSSL 3.0's locks); in a 10,000-number plan
    that read two, the listings were forked after a median of 61 ms with one thread, 64 with two,
    65 with four.

    ``get`` waits for every build and for the thread to end: the listings are forked after it,
    and a thread alive at a fork could leave a lock held in the child. ``close`` closes whatever
    was built, used or not (another run may have held the lock, or the Vapi client failed).
    """

    def __init__(self, config: Config, chosen: Sequence[SourceConfig], on_request: Callable[[str, str], None]) -> None:
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="numsync-build")
        self._vapi = self._pool.submit(VapiClient, config.vapi, on_request=on_request)
        self._sources = [self._pool.submit(_build_source, cfg, on_request) for cfg in chosen]

    def get(self) -> tuple[VapiClient, list[Source]]:
        """The clients (a Vapi client that cannot be built raises here, as it did when built in line)."""
        self._pool.shutdown(wait=True)
        return self._vapi.result(), [f.result() for f in self._sources]

    def close(self) -> None:
        self._pool.shutdown(wait=True)
        built: list[Any] = [f.result() for f in self._sources]
        if self._vapi.exception() is None:
            built.insert(0, self._vapi.result())
        for client in built:
            client.close()


def run_once(
    config: Config,
    *,
    mode: str,
    source_names: Sequence[str] | None = None,
    report_dir: Path | None = None,
    formats: Sequence[str] | None = None,
    metrics: Metrics | None = None,
    engine: Engine | None = None,
    progress: Callable[[str, int, int | None], None] | None = None,
    stop: threading.Event | None = None,
    guard: Callable[[], None] | None = None,
    clock: Callable[[], datetime] = utcnow,
    write: bool = True,
    trigger: str = "command",
) -> RunOutput:
    """One plan or reconcile under the run lock; raises LockHeld when another run holds it.

    ``trigger`` records what started the run (``numsync.daemon.models.TRIGGERS``).

    ``write=False`` returns the report and its context unrendered, for a caller that writes them
    somewhere of its own (the daemon's nightly report folders).
    """
    metrics = metrics or Metrics()
    chosen = _selected(config, source_names)
    register_secrets(config)
    # listings may run in forked processes: their request counts come back through the relay
    on_request = relayed(metrics.on_request)
    clients = _Clients(config, chosen, on_request)
    own_engine = engine is None
    try:
        engine = engine or open_database(config.database_url)
        sessions = sessionmaker(engine, expire_on_commit=False)
        with DatabaseLock(config.database_url, RUN_LOCK):
            result = execute(
                sessions, config, mode=mode, clients=clients.get,
                selected=[s.name for s in chosen] if source_names else None,
                clock=clock, progress=progress, stop=stop, guard=guard, trigger=trigger,
            )
        metrics.observe_run(mode=mode, outcome=result.outcome, seconds=result.seconds,
                            findings=result.findings_by_source, source_numbers=result.source_numbers)
        report, ctx, paths = _write(sessions, result.run_id, config, report_dir, formats, write=write)
        return RunOutput(result=result, report=report, paths=paths, context=ctx)
    finally:
        clients.close()
        if own_engine and engine is not None:
            engine.dispose()


def _write(sessions: sessionmaker[Session], run_id: str, config: Config, report_dir: Path | None,
           formats: Sequence[str] | None, *, write: bool = True
           ) -> tuple[dict[str, Any], ReportContext | None, list[Path]]:
    """The run's report, and its comparison with earlier runs where it is shown (``write=False``:
    the caller renders it, so it gets both); then the report files, unless ``write`` is False."""
    chosen = list(formats or config.reports.formats)
    with sessions() as session:
        report = build_report(session, run_id)
        ctx = ReportContext(**report_context(session, run_id)) if not write or uses_context(chosen) else None
    if not write:
        return report, ctx, []
    directory = report_dir or config.reports.dir
    paths = write_reports(report, ctx or ReportContext(), directory, chosen)
    return report, ctx, paths


def render_stored(config: Config, run_id: str | None, report_dir: Path | None,
                  formats: Sequence[str] | None) -> tuple[dict[str, Any], list[Path]]:
    """Re-render a stored run (``numsync report``)."""
    engine = open_database(config.database_url)
    try:
        sessions = sessionmaker(engine, expire_on_commit=False)
        with sessions() as session:
            rid = resolve_run_id(session, run_id)
        report, _ctx, paths = _write(sessions, rid, config, report_dir, formats)
        return report, paths
    finally:
        engine.dispose()

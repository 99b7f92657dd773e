"""``numsync daemon``: leader election, the schedule, the runs it starts, and orderly shutdown.

The main thread runs the leader loop: as a standby it retries the leader lock every few
seconds (and, while the database is down, backs off up to 30 s instead of crash-looping); as
the leader it starts APScheduler and checks the lock every couple of seconds. Runs execute on
the scheduler's single worker thread under a process-level lock, and inside ``run_once`` under
the database's per-run lock, which a manual ``numsync plan`` shares: a scheduled run that finds
it taken is skipped with a log line.

Stopping (SIGTERM/SIGINT) means: no new runs, the current run stops between two imports (the
journal and search-before-create let the next run finish the rest exactly once), the locks are
released, exit 0. Losing the leader lock means the same stop, then exit 1, so the pod restarts as
a clean standby; the same happens when the database vanishes mid-run, since the lock's session
vanishes with it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa
import structlog
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.base import BaseTrigger
from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from numsync.app import RunOutput, register_secrets, run_once
from numsync.config import Config
from numsync.daemon.db import open_database, safe_url
from numsync.daemon.models import Finding, Run, RunSource
from numsync.daemon.report_data import build_report, resolve_run_id
from numsync.errors import ConfigError, DatabaseError, LockHeld, NumsyncError
from numsync.metrics import Metrics
from numsync.reporting import build_context, slack_summary

from .http import ProbeServer, Readiness
from .leader import Backoff, LeaderLease
from .nightly import folder_name, post_webhook, previous_run_prefix, write_nightly
from .schedule import build_scheduler, cron_trigger, missed_fire

__all__ = ["EXIT_LEADERSHIP_LOST", "Daemon"]

log = structlog.get_logger("numsync.service")

EXIT_LEADERSHIP_LOST = 1


class Daemon:
    """One ``numsync daemon`` process. ``run()`` blocks until stopped and returns the exit status.

    The keyword timings exist for tests and embedding; the defaults are the production ones.
    ``report_trigger`` replaces the ``schedule.report_cron`` trigger (a test cannot wait for 02:00).
    """

    def __init__(
        self,
        config: Config,
        *,
        report_dir: Path | None = None,
        formats: Sequence[str] | None = None,
        source_names: Sequence[str] | None = None,
        metrics: Metrics | None = None,
        report_trigger: BaseTrigger | None = None,
        leader_poll: float = 2.0,
        heartbeat: float = 2.0,
        shutdown_grace: float = 25.0,
        backoff_cap: float = 30.0,
        stale_after: float = 60.0,
    ) -> None:
        known = [s.name for s in config.sources]
        for name in source_names or ():
            if name not in known:
                raise ConfigError(
                    f"--source {name}: no source has that name (configured: {', '.join(known) or 'none'})")
        self.config = config
        self.url = config.database_url
        self.report_dir = report_dir
        self.formats = list(formats) if formats else None
        self.source_names = list(source_names) if source_names else None
        self.metrics = metrics or Metrics()
        self.report_trigger = report_trigger or cron_trigger(config.schedule.report_cron)
        self.leader_poll, self.heartbeat, self.shutdown_grace = leader_poll, heartbeat, shutdown_grace
        self.backoff_cap, self.stale_after = backoff_cap, stale_after
        self.stop = threading.Event()
        self.abandoned = False  # a run did not stop within the grace period; the caller must not wait for it
        self._stop_requested: int | None = None
        self._run_lock = threading.Lock()
        self._lease: LeaderLease | None = None
        self._engine: Engine | None = None
        self._scheduler: BackgroundScheduler | None = None
        self._beat = time.monotonic()
        self._leader_since = 0.0
        self._scheduler_beat: float | None = None
        register_secrets(config)
        self.readiness = Readiness(self.url)
        self.http = ProbeServer(config.server.host, config.server.port, health=self.health,
                                readiness=self.readiness.check, metrics=self.metrics.render)

    # ---- control -------------------------------------------------------------------------
    def request_stop(self, signum: int = 0) -> None:
        """Safe from a signal handler: only sets an attribute; the main loop does the rest."""
        self._stop_requested = signum

    @property
    def stopping(self) -> bool:
        """A stop was asked for, even if the main loop has not passed it on to the runs yet."""
        return self.stop.is_set() or self._stop_requested is not None

    @property
    def leader(self) -> bool:
        return self._scheduler is not None

    def health(self) -> tuple[bool, str]:
        """Liveness: the main loop and, on the leader, the scheduler thread are ticking."""
        now = time.monotonic()
        if now - self._beat > self.stale_after:
            return False, f"leader loop silent for {now - self._beat:.0f} s"
        if self.leader:
            beat = self._scheduler_beat or self._leader_since
            if now - beat > self.stale_after:
                return False, f"scheduler heartbeat silent for {now - beat:.0f} s"
            return True, "leader"
        return True, "standby"

    def _pause(self, seconds: float) -> bool:
        """Sleep up to ``seconds``, waking for a stop request; True when stopping."""
        deadline = time.monotonic() + seconds
        while True:
            self._beat = time.monotonic()
            if self._stop_requested is not None and not self.stop.is_set():
                log.info("stop requested; finishing the current import, then exiting", signal=self._stop_requested)
                self.stop.set()
            if self.stop.is_set():
                return True
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            time.sleep(min(left, 0.2))

    # ---- the leader loop -------------------------------------------------------------------
    def run(self) -> int:
        self.http.start()
        sched = self.config.schedule
        log.info("daemon started", port=self.http.port, database=safe_url(self.url),
                 reconcile_every=str(sched.reconcile_every), apply=sched.apply, report_cron=sched.report_cron)
        try:
            code = self._loop()
        finally:
            self.metrics.leader.set(0)
            self.http.stop()
            self.readiness.close()
        log.info("daemon stopped", exit_status=code)
        return code

    def _loop(self) -> int:
        backoff = Backoff(1.0, self.backoff_cap)
        standby_said = False
        while not self._pause(0):
            lease = LeaderLease(self.url)
            try:
                lease.acquire()
                engine = self._open(lease)
            except LockHeld:
                if not standby_said:
                    log.info("standby: another numsync daemon holds the leader lock")
                    standby_said = True
                backoff.reset()
                self._pause(self.leader_poll)
                continue
            except DatabaseError as exc:
                delay = backoff.next()
                log.warning("database unavailable; retrying", error=str(exc), retry_in_seconds=delay)
                self._pause(delay)
                continue
            try:
                return self._lead(lease, engine)
            finally:
                lease.release()
                engine.dispose()
        return 0

    @staticmethod
    def _open(lease: LeaderLease) -> Engine:
        """The database at the code's migration (SQLite created on first use), or release and raise."""
        try:
            return open_database(lease.lock.url)
        except DatabaseError:
            lease.release()
            raise

    def _lead(self, lease: LeaderLease, engine: Engine) -> int:
        self._lease, self._engine = lease, engine
        self._leader_since, self._scheduler_beat = time.monotonic(), None
        self.metrics.leader.set(1)
        log.info("became leader; scheduling runs")
        self._seed_metrics(engine)
        scheduler = build_scheduler(
            reconcile=self._reconcile_job, report=self._report_job, heartbeat=self._tick,
            every=self.config.schedule.reconcile_every, report_trigger=self.report_trigger,
            heartbeat_every=self.heartbeat, make_up_report=self._report_owed(engine),
        )
        scheduler.start()
        self._scheduler = scheduler
        lost = False
        try:
            while not self._pause(self.heartbeat):
                if not lease.check():
                    lost = True
                    log.error("leadership lost: the leader lock's database session is gone; "
                              "exiting so that this replica restarts as a standby")
                    self.stop.set()
                    break
        finally:
            self._scheduler = None
            self.metrics.leader.set(0)
            scheduler.shutdown(wait=False)
            if self._run_lock.acquire(timeout=self.shutdown_grace):
                self._run_lock.release()
            else:
                self.abandoned = True
                log.error("the current run did not stop in time; leaving it (the next run marks it interrupted)",
                          grace_seconds=self.shutdown_grace)
            self._lease = self._engine = None
        return EXIT_LEADERSHIP_LOST if lost else 0

    def _report_owed(self, engine: Engine) -> bool:
        """Whether a nightly report fell due, and was not made, while no replica led (``missed_fire``)."""
        try:
            with Session(engine) as session:
                last = session.execute(sa.select(Run.started_at).where(*_MADE_NIGHTLY)
                                       .order_by(Run.seq.desc()).limit(1)).scalar()
        except SQLAlchemyError as exc:
            log.warning("could not read when the last nightly report was made", error=exc.__class__.__name__)
            return False
        if last is None:  # no nightly report yet (or none since 0007 recorded them): nothing owed
            return False
        due = missed_fire(self.report_trigger, last, datetime.now(UTC))
        if due is not None:
            log.info("a nightly report fell due while no replica led; making it now",
                     due_at=due.isoformat(), last_made_at=last.isoformat())
        return due is not None

    def _tick(self) -> None:
        self._scheduler_beat = time.monotonic()

    def _seed_metrics(self, engine: Engine) -> None:
        """Carry the last success and findings over a failover, so alerts do not fire or clear falsely."""
        try:
            with Session(engine) as session:
                last_ok = session.execute(
                    sa.select(sa.func.max(Run.finished_at)).where(Run.outcome.in_(("in_sync", "drift")))
                ).scalar()
                last = session.execute(
                    sa.select(Run.id).where(Run.status.in_(("finished", "interrupted")), Run.outcome.is_not(None))
                    .order_by(Run.seq.desc()).limit(1)
                ).scalar()
                findings = session.execute(
                    sa.select(Finding.kind, Finding.source, sa.func.count()).where(Finding.run_id == last)
                    .group_by(Finding.kind, Finding.source)
                ).all() if last else []
                numbers = session.execute(
                    sa.select(RunSource.source, RunSource.numbers).where(RunSource.run_id == last)
                ).all() if last else []
        except SQLAlchemyError as exc:
            log.warning("could not read the last runs for the metrics", error=exc.__class__.__name__)
            return
        if last_ok is not None:
            self.metrics.last_success.set(last_ok.timestamp())
        for kind, source, count in findings:
            self.metrics.findings.labels(kind=kind, source=source or "").set(count)
        for source, count in numbers:
            self.metrics.source_numbers.labels(source=source).set(count)

    # ---- jobs ------------------------------------------------------------------------------
    def _reconcile_job(self) -> None:
        self._run("reconcile" if self.config.schedule.apply else "plan", nightly=False)

    def _report_job(self) -> None:
        self._run("plan", nightly=True)

    def _run(self, mode: str, *, nightly: bool) -> None:
        what = "nightly report" if nightly else f"scheduled {mode}"
        with self._run_lock:
            lease, engine = self._lease, self._engine
            if self.stopping or lease is None or engine is None or not lease.check():
                return
            try:
                out = run_once(self.config, mode=mode, source_names=self.source_names, report_dir=self.report_dir,
                               formats=self.formats, metrics=self.metrics, engine=engine, stop=self.stop,
                               guard=lease.guard, write=not nightly,
                               trigger="nightly" if nightly else "schedule")
            except LockHeld:
                log.info(f"{what} skipped: another numsync run holds the run lock")
                return
            except (NumsyncError, SQLAlchemyError) as exc:
                self.metrics.runs.labels(mode=mode, outcome="error").inc()
                detail = str(exc) if isinstance(exc, NumsyncError) else _database_error(exc)
                log.error(f"{what} failed", error=detail)
                return
            except Exception:
                self.metrics.runs.labels(mode=mode, outcome="error").inc()
                log.exception(f"{what} failed unexpectedly")
                return
            log.info(f"{what} finished", run_id=out.result.run_id, outcome=out.result.outcome,
                     error=out.result.error)
            if nightly:
                self._publish(out, engine)

    def _publish(self, out: RunOutput, engine: Engine) -> None:
        report = out.report
        base = self.report_dir or self.config.reports.dir
        formats = self.formats or list(self.config.reports.formats)
        previous = self._previous_nightly(engine, report["run_id"]) or previous_run_prefix(
            base, before=folder_name(report))
        ctx = build_context(report, self._stored_report(engine, previous) if previous else None,
                            out.context.history if out.context else ())
        try:
            paths = write_nightly(report, ctx, base, formats, self.config.reports.keep_runs)
        except OSError as exc:
            log.error("nightly report could not be written", error=f"{exc.__class__.__name__}: {exc.strerror}")
        else:
            log.info("nightly report written", folder=str(paths[0].parent) if paths else str(base))
        if self.config.reports.webhook_url:
            post_webhook(self.config.reports.webhook_url, slack_summary(report, ctx), stop=self.stop)

    @staticmethod
    def _previous_nightly(engine: Engine, run_id: str) -> str | None:
        """The nightly report before ``run_id`` as the database records it: its folder may have
        gone with an earlier pod. None: the database knows of none (the caller looks for folders)."""
        try:
            with Session(engine) as session:
                seq = sa.select(Run.seq).where(Run.id == run_id).scalar_subquery()
                return session.execute(
                    sa.select(Run.id).where(Run.trigger == "nightly", Run.status == "finished", Run.seq < seq)
                    .order_by(Run.seq.desc()).limit(1)).scalar()
        except SQLAlchemyError:
            return None

    @staticmethod
    def _stored_report(engine: Engine, prefix: str) -> dict[str, Any] | None:
        try:
            with Session(engine) as session:
                return build_report(session, resolve_run_id(session, prefix))
        except (NumsyncError, SQLAlchemyError):
            return None  # pruned from the database, or ambiguous: compare with nothing


# A nightly report that ran to its end (its outcome may still be "error": a source failed). One
# whose process died (running, interrupted) was not made; one that failed on its own (failed) is
# not made up on a restart, where it would most likely fail again.
_MADE_NIGHTLY = (Run.trigger == "nightly", Run.status.in_(("finished", "failed")))


def _database_error(exc: SQLAlchemyError) -> str:
    """The driver's first line (it names host and database, never the password), not SQLAlchemy's SQL dump."""
    lines = str(getattr(exc, "orig", None) or exc.__class__.__name__).strip().splitlines()
    return f"database error: {lines[0] if lines else exc.__class__.__name__}"

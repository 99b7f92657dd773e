"""The daemon's APScheduler setup: triggers, job options and the scheduler itself.

Jobs live in an in-memory job store and are defined in code with stable ids: a persistent
store shared by two processes runs every tick twice (APScheduler's FAQ; seen here), and the
schedule is already in the config file. ``max_instances=1`` and ``coalesce=True`` act within
this process only; the leader lock makes this process the only scheduler.

APScheduler 3.x reads a crontab's day of week counting from Monday (0 = Monday), unlike cron
(0 = Sunday). The config's ``parse_crontab`` reads the expression with cron's meaning and
this module hands APScheduler explicit value lists, so ``0 2 * * 0`` fires on Sundays.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.base import BaseTrigger
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.date import DateTrigger
from apscheduler.triggers.interval import IntervalTrigger

from numsync.config.schema import parse_crontab
from numsync.errors import ConfigError

__all__ = [
    "HEARTBEAT_JOB",
    "MADE_UP_REPORT_JOB",
    "RECONCILE_JOB",
    "REPORT_JOB",
    "REPORT_MISFIRE_GRACE",
    "build_scheduler",
    "cron_trigger",
    "interval_trigger",
    "misfire_grace",
    "missed_fire",
]

RECONCILE_JOB = "numsync-reconcile"
REPORT_JOB = "numsync-nightly-report"
MADE_UP_REPORT_JOB = "numsync-nightly-report-made-up"
HEARTBEAT_JOB = "numsync-scheduler-heartbeat"

# A nightly report that could not start on time (the process was busy or paused) is still worth
# running within the hour; later than that, the next night's is closer.
REPORT_MISFIRE_GRACE = 3600
_MAX_RECONCILE_GRACE = 3600

_FIELDS = ("minute", "hour", "day", "month", "day_of_week")
_FULL = (range(0, 60), range(0, 24), range(1, 32), range(1, 13), range(0, 7))


def cron_trigger(expr: str) -> CronTrigger:
    """A UTC trigger that fires when cron would for ``expr`` (standard crontab meaning)."""
    try:
        fields = parse_crontab(expr)
        kwargs: dict[str, str] = {}
        for name, values, full in zip(_FIELDS, fields, _FULL, strict=True):
            if set(values) == set(full):
                kwargs[name] = "*"
                continue
            if name == "day_of_week":
                values = frozenset((v - 1) % 7 for v in values)  # cron: 0 = Sunday; APScheduler: 0 = Monday
            kwargs[name] = ",".join(str(v) for v in sorted(values))
        return CronTrigger(timezone=UTC, **kwargs)
    except ValueError as exc:
        raise ConfigError(f"schedule.report_cron: {exc}") from None


def interval_trigger(every: timedelta) -> IntervalTrigger:
    return IntervalTrigger(seconds=every.total_seconds(), timezone=UTC)


def misfire_grace(every: timedelta) -> int:
    """How late a reconcile may still start: one interval, at least 1 s and at most an hour.

    APScheduler's default (1 s) drops a run after any pause longer than a second; a whole
    interval means a late run still happens, once (coalesced), instead of being skipped.
    """
    return int(min(max(every.total_seconds(), 1), _MAX_RECONCILE_GRACE))


def missed_fire(trigger: BaseTrigger, since: datetime, now: datetime,
                grace: float = REPORT_MISFIRE_GRACE) -> datetime | None:
    """When ``trigger`` fell due after ``since`` and at most ``grace`` seconds before ``now``; else None.

    Why: jobs live in memory, so a scheduler started now counts from now, and a nightly report
    that fell due while no replica led (a pod restarted around 02:00, a failover) was never made.
    A restart is a pause like any other: what ``misfire_grace_time`` would still run in a process
    that was paused for it, a new leader makes up for, once.
    """
    fire = trigger.get_next_fire_time(None, max(since + timedelta(microseconds=1), now - timedelta(seconds=grace)))
    return fire if fire is not None and fire <= now else None


def build_scheduler(
    *,
    reconcile: Callable[[], None],
    report: Callable[[], None],
    heartbeat: Callable[[], None],
    every: timedelta,
    report_trigger: BaseTrigger,
    heartbeat_every: float,
    first_run: datetime | None = None,
    make_up_report: bool = False,
) -> BackgroundScheduler:
    """A scheduler (not started) with the reconcile, report and heartbeat jobs, and with
    ``make_up_report`` a report at once besides (``missed_fire`` says when one is owed).

    Runs share one worker thread, so a report due while a reconcile runs waits for it instead
    of running beside it; the heartbeat has its own thread so a long run does not look like a
    dead scheduler to the liveness probe.
    """
    scheduler = BackgroundScheduler(
        timezone=UTC,
        executors={"default": ThreadPoolExecutor(max_workers=1), "heartbeat": ThreadPoolExecutor(max_workers=1)},
        job_defaults={"coalesce": True, "max_instances": 1},
    )
    common: dict[str, Any] = {"replace_existing": True, "max_instances": 1, "coalesce": True}
    scheduler.add_job(
        reconcile, interval_trigger(every), id=RECONCILE_JOB, name="reconcile",
        misfire_grace_time=misfire_grace(every), next_run_time=first_run or datetime.now(UTC), **common,
    )
    scheduler.add_job(
        report, report_trigger, id=REPORT_JOB, name="nightly report",
        misfire_grace_time=REPORT_MISFIRE_GRACE, **common,
    )
    if make_up_report:
        scheduler.add_job(
            report, DateTrigger(datetime.now(UTC), timezone=UTC), id=MADE_UP_REPORT_JOB,
            name="nightly report made up", misfire_grace_time=REPORT_MISFIRE_GRACE, **common,
        )
    scheduler.add_job(
        heartbeat, IntervalTrigger(seconds=heartbeat_every, timezone=UTC), id=HEARTBEAT_JOB,
        name="scheduler heartbeat", executor="heartbeat", misfire_grace_time=None,
        next_run_time=datetime.now(UTC), **common,
    )
    return scheduler

"""The long-running service behind ``numsync daemon``.

``run_daemon`` is what the CLI calls; it owns the process-wide parts (signal handlers, the
final exit) and leaves everything else to ``Daemon``, which tests and embedders can run in a
thread. Modules: ``daemon`` (leader loop, jobs, shutdown), ``schedule`` (APScheduler),
``leader`` (the lock and its heartbeat), ``http`` (probes and metrics), ``nightly`` (report
folders and the webhook).

Exit statuses: 0 after SIGTERM/SIGINT; 1 for a configuration error (bad ``schedule.report_cron``,
a port that cannot be bound) or when leadership was lost (the pod restarts as a standby).
"""

from __future__ import annotations

import logging
import os
import signal
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from numsync.config import Config

from .daemon import EXIT_LEADERSHIP_LOST, Daemon

__all__ = ["EXIT_LEADERSHIP_LOST", "Daemon", "run_daemon"]


def run_daemon(
    config: Config,
    *,
    report_dir: Path | None = None,
    formats: Sequence[str] | None = None,
    source_names: Sequence[str] | None = None,
) -> int:
    """Run until SIGTERM/SIGINT (exit status 0) or until leadership is lost (1)."""
    daemon = Daemon(config, report_dir=report_dir, formats=formats, source_names=source_names)

    def on_signal(signum: int, _frame: Any) -> None:
        # Python as PID 1 ignores SIGTERM without a handler. Only an attribute is set here:
        # taking a lock inside a signal handler can deadlock the thread it interrupted.
        daemon.request_stop(signum)

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        code = daemon.run()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if daemon.abandoned:
        # A run stuck in a slow listing would keep the interpreter alive past the pod's grace
        # period (its worker thread is joined at exit). It has written nothing yet that the
        # journal cannot recover, so leave without it.
        logging.shutdown()
        os._exit(code)
    return code

"""The nightly drift report: dated folders, a ``latest/`` copy, pruning, and the webhook.

Scheduled reconciles write their reports where the CLI would (``reports.dir``), overwriting
the previous run's. The nightly report is the one people keep and compare: each goes into
its own folder ``<UTC start>-<run id prefix>/`` (names sort by time), ``latest/`` holds a copy
of the newest for links that must not change, and only the last ``reports.keep_runs`` dated
folders are kept. Its "new" and "resolved" are measured against the previous nightly report,
not against the reconcile of a few minutes before, which would make both nearly always empty.

The webhook URL is a secret (a Slack incoming-webhook URL is its own credential): it is never
logged, and a webhook that fails is a warning, never a failed run.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import shutil
import threading
import time
from collections.abc import Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import structlog

from numsync.reporting import ReportContext, write_reports

__all__ = ["LATEST", "folder_name", "post_webhook", "previous_run_prefix", "prune", "write_nightly"]

log = structlog.get_logger("numsync.service")

LATEST = "latest"
_FOLDER = re.compile(r"\d{8}T\d{6}Z-[0-9a-f-]{8}")


def folder_name(report: Mapping[str, Any]) -> str:
    """``20250101T020000Z-1a2b3c4d``: the run's start in UTC and the first 8 characters of its id."""
    started = str(report.get("started_at") or "")
    try:
        moment = datetime.fromisoformat(started.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"report has no readable started_at: {started!r}") from None
    return f"{moment.strftime('%Y%m%dT%H%M%SZ')}-{str(report['run_id'])[:8]}"


def _dated(base: Path) -> list[Path]:
    if not base.is_dir():
        return []
    return sorted(p for p in base.iterdir() if p.is_dir() and _FOLDER.fullmatch(p.name))


def previous_run_prefix(base: Path, *, before: str | None = None) -> str | None:
    """The run id prefix of the newest nightly folder (older than ``before``, if given)."""
    folders = [p for p in _dated(base) if before is None or p.name < before]
    return folders[-1].name.rsplit("-", 1)[-1] if folders else None


def _copy_atomic(src: Path, dst: Path) -> None:
    tmp = dst.with_name(f".{dst.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    try:
        shutil.copyfile(src, tmp)
        os.replace(tmp, dst)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise


def write_nightly(report: Mapping[str, Any], ctx: ReportContext, base: Path, formats: Sequence[str],
                  keep: int) -> list[Path]:
    """Write the dated folder, refresh ``latest/``, prune; returns the dated folder's files."""
    folder = base / folder_name(report)
    paths = write_reports(report, ctx, folder, formats)
    latest = base / LATEST
    latest.mkdir(parents=True, exist_ok=True)
    for path in paths:  # each file replaced atomically: a reader never sees half a report
        _copy_atomic(path, latest / path.name)
    written = {p.name for p in paths}
    for old in latest.glob("report.*"):
        if old.name not in written:  # a format dropped from reports.formats
            old.unlink()
    prune(base, keep)
    return paths


def prune(base: Path, keep: int) -> list[Path]:
    """Remove all but the newest ``keep`` dated folders; nothing else in ``base`` is touched."""
    folders = _dated(base)
    doomed = folders[: max(len(folders) - keep, 0)]
    for folder in doomed:
        shutil.rmtree(folder, ignore_errors=True)
    return doomed


def post_webhook(
    url: str,
    payload: Mapping[str, Any],
    *,
    stop: threading.Event | None = None,
    attempts: int = 3,
    timeout: float = 10.0,
    backoff: float = 2.0,
) -> bool:
    """POST ``payload`` as JSON; retries timeouts, resets, 429 and 5xx. Returns whether it arrived.

    Errors are reported by class and status only: httpx's exception text can quote the URL.
    """
    problem = "not attempted"
    attempt = 0
    with httpx.Client(timeout=timeout, follow_redirects=False) as client:
        for attempt in range(1, attempts + 1):
            try:
                resp = client.post(url, json=dict(payload))
            except httpx.HTTPError as exc:
                problem = exc.__class__.__name__
            else:
                if resp.is_success:
                    log.info("report webhook delivered", attempts=attempt, status=resp.status_code)
                    return True
                problem = f"HTTP {resp.status_code}"
                if resp.status_code < 500 and resp.status_code != 429:
                    break  # the receiver refused this message; sending it again will not help
            if attempt < attempts:
                delay = backoff * 2 ** (attempt - 1)
                if stop is None:
                    time.sleep(delay)
                elif stop.wait(delay):
                    problem += " (stopped retrying: shutting down)"
                    break
    log.warning("report webhook failed; the report itself is written", problem=problem, attempts=attempt)
    return False

"""Stage 6: read a finished run back out of the database as the contract's report.json.

Reports are rebuilt from the database (never from in-memory state of the run), so
``numsync report --run ID`` renders exactly what the run wrote, today or next month.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from numsync.errors import NumsyncError

from .models import Finding, Run, RunSource

__all__ = ["HISTORY_RUNS", "build_report", "report_context", "resolve_run_id", "zulu"]

HISTORY_RUNS = 30
_FINDINGS: sa.Table = Finding.__table__  # type: ignore[assignment]


def zulu(ts: datetime | None) -> str | None:
    if ts is None:
        return None
    return ts.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ts.microsecond // 1000:03d}Z"


class NoRunError(NumsyncError):
    """There is no stored run to report on."""


def resolve_run_id(session: Session, run_id: str | None) -> str:
    if run_id is None:
        found = session.execute(
            sa.select(Run.id).where(Run.status != "running").order_by(Run.seq.desc()).limit(1)
        ).scalar_one_or_none()
        if found is None:
            raise NoRunError("no run is stored yet: run `numsync plan` first")
        return str(found)
    matches = session.execute(sa.select(Run.id).where(Run.id.startswith(run_id))).scalars().all()
    if not matches:
        raise NoRunError(f"no run with id {run_id}")
    if len(matches) > 1:
        raise NoRunError(f"run id prefix {run_id} is ambiguous ({len(matches)} runs)")
    return str(matches[0])


def _finding_dict(f: sa.Row[Any]) -> dict[str, Any]:
    return {
        "kind": f.kind,
        "number": f.number,
        "source": f.source,
        "vapi_ids": list(f.vapi_ids or []),
        "carrier_id": f.carrier_id,
        "first_seen_at": zulu(f.first_seen_at),
        "action": f.action,
        "action_status": f.action_status,
        "detail": f.detail,
    }


def build_report(session: Session, run_id: str) -> dict[str, Any]:
    run = session.get(Run, run_id)
    if run is None:
        raise NoRunError(f"no run with id {run_id}")
    sources = session.execute(
        sa.select(RunSource).where(RunSource.run_id == run_id).order_by(RunSource.source)
    ).scalars().all()
    findings = session.execute(  # rows, not ORM objects: a run may have tens of thousands, each read once
        sa.select(_FINDINGS).where(Finding.run_id == run_id).order_by(Finding.kind, Finding.source, Finding.number)
    ).all()
    return {
        "schema_version": 1,
        "run_id": run.id,
        "mode": run.mode,
        "started_at": zulu(run.started_at),
        "finished_at": zulu(run.finished_at) or zulu(run.started_at),
        "outcome": run.outcome or "error",
        "vapi": {"numbers": run.vapi_numbers or 0},
        "sources": [
            {"name": s.source, "kind": s.kind, "status": s.status, "numbers": s.numbers, "error": s.error}
            for s in sources
        ],
        "summary": dict(run.summary or {}),
        "findings": [_finding_dict(f) for f in findings],
    }


def report_context(session: Session, run_id: str) -> dict[str, Any]:
    """What changed since the previous finished run, and the last runs' counts for the chart."""
    run = session.get(Run, run_id)
    assert run is not None
    prev_id = session.execute(
        sa.select(Run.id).where(Run.seq < run.seq, Run.status == "finished").order_by(Run.seq.desc()).limit(1)
    ).scalar_one_or_none()
    current = {
        k: (kind, number, source)
        for k, kind, number, source in session.execute(
            sa.select(Finding.key, Finding.kind, Finding.number, Finding.source).where(Finding.run_id == run_id)
        )
    }
    new_keys: set[tuple[str, str | None, str | None]] = set(current.values())
    resolved: list[dict[str, Any]] = []
    if prev_id is not None:
        prev = {f.key: f for f in session.execute(sa.select(_FINDINGS).where(Finding.run_id == prev_id))}
        new_keys = {v for k, v in current.items() if k not in prev}
        resolved = [_finding_dict(f) for k, f in prev.items() if k not in current]
    history = [
        {"run_id": r.id, "started_at": zulu(r.started_at), "outcome": r.outcome or "error",
         "counts": dict(r.summary or {})}
        for r in reversed(session.execute(
            sa.select(Run).where(Run.seq <= run.seq, Run.status == "finished")
            .order_by(Run.seq.desc()).limit(HISTORY_RUNS)
        ).scalars().all())
    ]
    return {"new_keys": frozenset(new_keys), "resolved": resolved, "previous_run_id": prev_id,
            "history": history}

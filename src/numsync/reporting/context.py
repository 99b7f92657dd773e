"""What a report says about earlier runs: new findings, resolved ones, and the recent history.

A report alone tells what is wrong now; an operator reading the nightly report wants to know
what changed since the last one. The engine owns the runs, so it hands that comparison in as a
``ReportContext``; ``build_context`` derives one from the previous run's report dict, so the
engine and ``numsync report --run`` compute "new" and "resolved" the same way.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from numsync.reporting.kinds import finding_key, kind_counts, parse_time

__all__ = ["HISTORY_RUNS", "ReportContext", "build_context", "history_entry", "history_with"]

HISTORY_RUNS = 30

FindingKey = tuple[str, str | None, str | None]


@dataclass(frozen=True)
class ReportContext:
    """The previous run as seen from this one; the defaults mean "there was no previous run".

    ``new_keys`` are ``(kind, number, source)`` of findings that are new since the previous run;
    ``resolved`` the previous run's finding dicts that are gone now; ``history`` up to 30 runs,
    oldest first, each ``{"run_id", "started_at", "outcome", "counts": {kind: n}}``.
    """

    new_keys: frozenset[FindingKey] = frozenset()
    resolved: list[dict[str, Any]] = field(default_factory=list)
    previous_run_id: str | None = None
    history: list[dict[str, Any]] = field(default_factory=list)


def history_entry(report: Mapping[str, Any]) -> dict[str, Any]:
    """The chart's view of one run's report."""
    return {
        "run_id": report.get("run_id"),
        "started_at": report.get("started_at"),
        "outcome": report.get("outcome"),
        "counts": kind_counts(report),
    }


def history_with(report: Mapping[str, Any], history: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """``history`` ending with this run (appended unless already last), cut to the last 30 runs.

    Callers may or may not have stored the current run before rendering; the chart must show it
    exactly once either way.
    """
    runs = [dict(h) for h in history]
    if not runs or runs[-1].get("run_id") != report.get("run_id"):
        runs = [r for r in runs if r.get("run_id") != report.get("run_id")]
        runs.append(history_entry(report))
    return runs[-HISTORY_RUNS:]


def _judged_sources(report: Mapping[str, Any]) -> set[str]:
    """Sources whose findings this run could confirm or clear.

    A failed or suspect source was not judged, and a source left out with ``--source`` (absent
    from ``sources``) was not looked at: a finding of theirs that is absent now is not resolved,
    only unknown.
    """
    return {s.get("name") for s in report.get("sources") or () if s.get("status") == "ok"}


def build_context(
    report: Mapping[str, Any],
    previous: Mapping[str, Any] | None,
    history: Iterable[Mapping[str, Any]] = (),
) -> ReportContext:
    """Compare ``report`` with the previous run's report dict.

    A finding is new when its key was not in the previous run and it was first seen after that
    run started (a finding that only hid while its source was unavailable keeps its
    ``first_seen_at`` and is not new). A previous finding is resolved when its key is gone and
    its source (if any) was judged in this run: reported ``ok`` and not left out by ``--source``.
    With no previous run nothing is new or resolved: everything would be, which tells nothing.
    """
    runs = [dict(h) for h in history][-HISTORY_RUNS:]
    if previous is None:
        return ReportContext(history=runs)
    before = {finding_key(f) for f in previous.get("findings") or ()}
    now = {finding_key(f) for f in report.get("findings") or ()}
    prev_start = parse_time(previous.get("started_at"))
    new: set[FindingKey] = set()
    for finding in report.get("findings") or ():
        key = finding_key(finding)
        if key in before:
            continue
        first = parse_time(finding.get("first_seen_at"))
        if first is None or prev_start is None or first >= prev_start:
            new.add(key)
    judged = _judged_sources(report)
    resolved = []
    for finding in previous.get("findings") or ():
        if finding_key(finding) in now:
            continue
        source = finding.get("source")
        if source is not None and source not in judged:
            continue
        resolved.append(dict(finding))
    return ReportContext(
        new_keys=frozenset(new),
        resolved=resolved,
        previous_run_id=previous.get("run_id"),
        history=runs,
    )

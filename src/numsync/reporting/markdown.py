"""``report.md``: the report for a terminal, a pull request, a wiki page or a ticket.

Markdown is read in two ways, raw and rendered, so the text must work in both: tables, not
HTML; every value from the report is backslash-escaped so that a carrier's text cannot break a
table (``|``), start a link, or turn into markup (``<script>``) when rendered. Groups are cut
at ``MAX_ROWS`` rows with a note: the full list is in the CSV, JSON and HTML.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from numsync.reporting.context import ReportContext
from numsync.reporting.kinds import finding_key, fmt_int, fmt_time, kind_counts, kind_info, ordered_kinds

__all__ = ["MAX_ROWS", "render_markdown"]

MAX_ROWS = 200

_OUTCOME = {"in_sync": "in sync", "drift": "drift", "error": "error"}
# Only what can start markup inside a line: a table cell never starts a line, so list and
# heading markers (+ - #) stay readable as they are.
_SPECIAL = re.compile(r"([\\`*_\[\]<>|&~])")
_SPACE = re.compile(r"\s+")


def _md(value: object) -> str:
    """Text safe in a table cell and in running text, raw or rendered."""
    if value is None:
        return ""
    text = _SPACE.sub(" ", str(value)).strip()
    return _SPECIAL.sub(r"\\\1", text)


def _code(value: object) -> str:
    """An identifier (kind, run id) as a code span; only ever given our own simple tokens."""
    text = _SPACE.sub(" ", str(value)).replace("`", "'").replace("|", "/")
    return f"`{text}`"


def _row(cells: list[str]) -> str:
    return "| " + " | ".join(c if c else " " for c in cells) + " |"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    return [_row(header), "|" + "|".join(" --- " for _ in header) + "|", *(_row(r) for r in rows)]


def _action(f: Mapping[str, Any]) -> str:
    action, status = f.get("action"), f.get("action_status")
    if action in (None, "none") and status in (None, "none"):
        return ""
    return _md(f"{action} ({status})" if status not in (None, "none") else action)


def _finding_row(f: Mapping[str, Any], new: bool) -> list[str]:
    return [
        "**new**" if new else "",
        _md(f.get("number")) or "_none_",
        _md(f.get("source")) or "_none_",
        _md(", ".join(str(v) for v in f.get("vapi_ids") or ())),
        _md(f.get("carrier_id")),
        _md(fmt_time(f.get("first_seen_at"))),
        _action(f),
        _md(f.get("detail")),
    ]


_FINDING_HEADER = ["", "number", "source", "Vapi ids", "carrier id", "first seen", "action", "detail"]


def _header(report: Mapping[str, Any], ctx: ReportContext) -> list[str]:
    outcome = str(report.get("outcome"))
    title = f"# numsync report: {_OUTCOME.get(outcome, _md(outcome))}"
    run = [
        f"Run {_code(report.get('run_id'))} ({_md(report.get('mode'))}), "
        f"started {_md(fmt_time(report.get('started_at'), seconds=True))}, "
        f"finished {_md(fmt_time(report.get('finished_at'), seconds=True))}."
    ]
    vapi = report.get("vapi") or {}
    run.append(f"Vapi numbers: {fmt_int(vapi.get('numbers'))}.")
    if ctx.previous_run_id:
        run.append(f"Compared with the previous run {_code(ctx.previous_run_id)}.")
    lines = [title, "", " ".join(run), ""]
    if outcome == "in_sync":
        lines += ["**In sync**: Vapi and every source agree (unmanaged numbers aside).", ""]
    elif outcome == "error":
        lines += ["**Error**: at least one source could not be reconciled; see the sources below.", ""]
    return lines


def _sources(report: Mapping[str, Any]) -> list[str]:
    sources = report.get("sources") or []
    lines = ["## Sources", ""]
    if not sources:
        return [*lines, "No sources in this run.", ""]
    rows = [
        [
            _md(s.get("name")),
            _md(s.get("kind")),
            f"**{_md(s.get('status'))}**" if s.get("status") != "ok" else _md(s.get("status")),
            fmt_int(s.get("numbers")),
            _md(s.get("error")),
        ]
        for s in sources
    ]
    return [*lines, *_table(["source", "kind", "status", "numbers", "error"], rows), ""]


def _summary(report: Mapping[str, Any], ctx: ReportContext, by_kind: dict[str, list[Any]]) -> list[str]:
    counts = kind_counts(report)
    resolved_by_kind: dict[str, int] = {}
    for f in ctx.resolved:
        resolved_by_kind[str(f.get("kind"))] = resolved_by_kind.get(str(f.get("kind")), 0) + 1
    lines = ["## Summary", ""]
    kinds = ordered_kinds([*counts, *resolved_by_kind])
    if not kinds:
        return [*lines, "No findings.", ""]
    rows = []
    for kind in kinds:
        new = sum(1 for f in by_kind.get(kind, ()) if finding_key(f) in ctx.new_keys)
        rows.append(
            [
                _code(kind),
                fmt_int(counts.get(kind, 0)),
                fmt_int(new) if new else "",
                fmt_int(resolved_by_kind.get(kind, 0)) if kind in resolved_by_kind else "",
                _md(kind_info(kind).meaning),
            ]
        )
    total = sum(counts.values())
    rows.append(["**total**", f"**{fmt_int(total)}**", "", "", ""])
    return [*lines, *_table(["kind", "count", "new", "resolved", "meaning"], rows), ""]


def _findings(by_kind: dict[str, list[Any]], ctx: ReportContext) -> list[str]:
    if not by_kind:
        return []
    lines = ["## Findings", ""]
    for kind in ordered_kinds(by_kind):
        group = by_kind[kind]
        new = sum(1 for f in group if finding_key(f) in ctx.new_keys)
        note = f", {fmt_int(new)} new" if new else ""
        lines += [f"### {_md(kind_info(kind).label)} ({_code(kind)}): {fmt_int(len(group))}{note}", ""]
        # New findings first: when a group is cut, the cut must not hide what changed.
        shown = sorted(group, key=lambda f: finding_key(f) not in ctx.new_keys)[:MAX_ROWS]
        rows = [_finding_row(f, finding_key(f) in ctx.new_keys) for f in shown]
        lines += _table(_FINDING_HEADER, rows)
        if len(group) > MAX_ROWS:
            lines += [
                "",
                f"_... and {fmt_int(len(group) - MAX_ROWS)} more; the full list is in report.csv, "
                "report.json and report.html._",
            ]
        lines.append("")
    return lines


def _resolved(ctx: ReportContext) -> list[str]:
    if not ctx.resolved:
        return []
    lines = [f"## Resolved since the previous run: {fmt_int(len(ctx.resolved))}", ""]
    rows = [
        [
            _code(f.get("kind")),
            _md(f.get("number")) or "_none_",
            _md(f.get("source")) or "_none_",
            _md(fmt_time(f.get("first_seen_at"))),
            _md(f.get("detail")),
        ]
        for f in ctx.resolved[:MAX_ROWS]
    ]
    lines += _table(["kind", "number", "source", "first seen", "detail"], rows)
    if len(ctx.resolved) > MAX_ROWS:
        lines += ["", f"_... and {fmt_int(len(ctx.resolved) - MAX_ROWS)} more._"]
    return [*lines, ""]


def render_markdown(report: Mapping[str, Any], ctx: ReportContext) -> str:
    """``report.md``: title with the outcome, sources, summary, findings by kind, resolved ones."""
    by_kind: dict[str, list[Any]] = {}
    for f in report.get("findings") or ():
        by_kind.setdefault(str(f.get("kind")), []).append(f)
    lines = [
        *_header(report, ctx),
        *_sources(report),
        *_summary(report, ctx, by_kind),
        *_findings(by_kind, ctx),
        *_resolved(ctx),
    ]
    while lines and not lines[-1]:
        lines.pop()
    return "\n".join(lines) + "\n"

"""``report.html``: the report a person opens, one self-contained file.

It answers, top to bottom: is everything fine (banner and cards), what is wrong by kind and
what changed since the last run (summary, trend chart), and then the detail, grouped by kind
and then source, with new findings badged and resolved ones listed. Every value from the
report goes through ``html.escape``; the page links nothing, and its Content-Security-Policy
blocks anything but its own inline script, which is only a filter (the page works without it).
Big groups start collapsed in ``<details>`` so that a 10,000-finding report stays usable; the
page is built by joining strings, because a template engine would be a dependency for nothing.
"""

from __future__ import annotations

from collections.abc import Mapping
from html import escape
from typing import Any

from numsync.reporting.assets import CSP, CSS, SCRIPT
from numsync.reporting.chart import render_chart
from numsync.reporting.context import ReportContext, history_with
from numsync.reporting.kinds import (
    finding_key,
    fmt_int,
    fmt_time,
    kind_counts,
    kind_info,
    ordered_kinds,
    parse_time,
)

__all__ = ["OPEN_GROUP_ROWS", "render_html"]

OPEN_GROUP_ROWS = 100  # groups with more rows start collapsed
_OUTCOME = {"in_sync": "In sync", "drift": "Drift", "error": "Error"}


def _e(value: object) -> str:
    return "" if value is None else escape(str(value), quote=True)


def _time(value: object) -> str:
    if value is None:
        return ""
    return f'<time datetime="{_e(value)}" title="{_e(value)}">{_e(fmt_time(value))}</time>'


def _duration(report: Mapping[str, Any]) -> str:
    start, end = parse_time(report.get("started_at")), parse_time(report.get("finished_at"))
    if start is None or end is None or end < start:
        return ""
    secs = int((end - start).total_seconds())
    if secs < 60:
        return f"{secs} s"
    if secs < 3600:
        return f"{secs // 60} min {secs % 60} s"
    return f"{secs // 3600} h {secs % 3600 // 60} min"


def _swatch(kind: str) -> str:
    return f'<span class="sw" style="background:{_e(kind_info(kind).colour)}"></span>'


def _header(report: Mapping[str, Any], ctx: ReportContext) -> str:
    outcome = str(report.get("outcome"))
    bits = [
        f"Run <code>{_e(report.get('run_id'))}</code>",
        _e(report.get("mode")),
        f"started {_time(report.get('started_at'))}",
    ]
    took = _duration(report)
    bits.append(f"took {took}" if took else f"finished {_time(report.get('finished_at'))}")
    if ctx.previous_run_id:
        bits.append(f"compared with run <code>{_e(ctx.previous_run_id)}</code>")
    return (
        '<header class="top"><h1>numsync report '
        f'<span class="pill o-{_e(outcome)}">{_e(_OUTCOME.get(outcome, outcome))}</span></h1>'
        f'<p class="meta">{" · ".join(bits)}</p></header>'
    )


def _banner(report: Mapping[str, Any], counts: dict[str, int]) -> str:
    outcome = str(report.get("outcome"))
    sources = report.get("sources") or []
    vapi = fmt_int((report.get("vapi") or {}).get("numbers"))
    actionable = sum(n for k, n in counts.items() if k != "unmanaged")
    if outcome == "in_sync":
        if len(sources) == 1:
            whom = f"its source {_e(sources[0].get('name'))}"
        elif sources:
            whom = f"all {len(sources)} sources"
        else:
            whom = "(no source was checked)"
        text = f"<b>In sync.</b> <span>Vapi ({vapi} numbers) and {whom} agree.</span>"
        if counts.get("unmanaged"):
            unmanaged = fmt_int(counts["unmanaged"])
            text += f" <span>{unmanaged} unmanaged numbers are listed for information.</span>"
    elif outcome == "error":
        bad = [s for s in sources if s.get("status") != "ok"]
        names = ", ".join(f"{_e(s.get('name'))} ({_e(s.get('status'))})" for s in bad)
        text = "<b>Error.</b> <span>" + (
            f"Not every source could be reconciled: {names}." if bad else "The run did not complete."
        )
        text += f" {fmt_int(actionable)} finding{'s' if actionable != 1 else ''} need attention.</span>"
    else:
        text = (
            f"<b>Drift.</b> <span>{fmt_int(actionable)} finding{'s' if actionable != 1 else ''} need attention.</span>"
        )
    return f'<div class="banner o-{_e(outcome)}" role="status">{text}</div>'


def _cards(report: Mapping[str, Any], ctx: ReportContext, counts: dict[str, int], new: int) -> str:
    outcome = str(report.get("outcome"))
    total = sum(counts.values())
    change = []
    if new:
        change.append(f"{fmt_int(new)} new")
    if ctx.resolved:
        change.append(f"{fmt_int(len(ctx.resolved))} resolved")
    if not change:
        change.append("no change since the previous run" if ctx.previous_run_id else "first run")
    cards = [
        f'<div class="card"><div class="label">Outcome</div><div class="value o-{_e(outcome)}">'
        f"{_e(_OUTCOME.get(outcome, outcome))}</div>"
        f'<div class="sub">{_e(report.get("mode"))} run</div></div>',
        '<div class="card"><div class="label">Vapi numbers</div>'
        f'<div class="value">{fmt_int((report.get("vapi") or {}).get("numbers"))}</div>'
        '<div class="sub">records seen in Vapi</div></div>',
        f'<div class="card"><div class="label">Findings</div><div class="value">{fmt_int(total)}</div>'
        f'<div class="sub">{", ".join(change)}</div></div>',
    ]
    for s in report.get("sources") or []:
        status = str(s.get("status"))
        err = f'<div class="err">{_e(s.get("error"))}</div>' if s.get("error") else ""
        count = s.get("numbers")
        numbers = fmt_int(count) if count is not None else '<span class="muted">not read</span>'
        cards.append(
            f'<div class="card src s-{_e(status)}"><div class="label">{_e(s.get("kind"))} source</div>'
            f'<div class="name">{_e(s.get("name"))}</div>'
            f'<div class="value">{numbers} <span class="pill s-{_e(status)}">'
            f"{_e(status)}</span></div>{err}</div>"
        )
    return f'<section class="cards" aria-label="Overview">{"".join(cards)}</section>'


def _summary(counts: dict[str, int], new_by_kind: dict[str, int], ctx: ReportContext) -> str:
    resolved: dict[str, int] = {}
    for f in ctx.resolved:
        resolved[str(f.get("kind"))] = resolved.get(str(f.get("kind")), 0) + 1
    kinds = ordered_kinds([*counts, *resolved])
    if not kinds:
        return ""  # the findings panel says so; one "no findings" is enough
    rows = []
    for kind in kinds:
        info = kind_info(kind)
        name = _e(info.label)
        label = f'<a href="#kind-{_e(kind)}">{name}</a>' if kind in counts else name
        rows.append(
            f"<tr><td>{_swatch(kind)} {label}</td>"
            f'<td class="n">{fmt_int(counts.get(kind, 0))}</td>'
            f'<td class="n">{fmt_int(new_by_kind[kind]) if kind in new_by_kind else ""}</td>'
            f'<td class="n">{fmt_int(resolved[kind]) if kind in resolved else ""}</td>'
            f'<td class="muted">{_e(info.meaning)}</td></tr>'
        )
    rows.append(
        f'<tr class="total"><td>Total</td><td class="n">{fmt_int(sum(counts.values()))}</td>'
        f'<td class="n">{fmt_int(sum(new_by_kind.values())) if new_by_kind else ""}</td>'
        f'<td class="n">{fmt_int(len(ctx.resolved)) if ctx.resolved else ""}</td><td></td></tr>'
    )
    return (
        '<section class="panel"><h2>Findings by kind</h2><table class="summary"><thead><tr><th>kind</th>'
        '<th class="n">count</th><th class="n">new</th><th class="n">resolved</th><th>meaning</th></tr>'
        f"</thead><tbody>{''.join(rows)}</tbody></table></section>"
    )


def _action(f: Mapping[str, Any]) -> str:
    action, status = f.get("action"), f.get("action_status")
    if action in (None, "none") and status in (None, "none"):
        return '<span class="muted">-</span>'
    st = f' <span class="st-{_e(status)}">{_e(status)}</span>' if status not in (None, "none") else ""
    return f"{_e(action)}{st}"


_ROW_HEAD = (
    '<colgroup><col class="c-num"><col class="c-src"><col class="c-ids"><col class="c-cid">'
    '<col class="c-seen"><col class="c-act"><col class="c-detail"></colgroup>'
    "<thead><tr><th>number</th><th>source</th><th>Vapi ids</th><th>carrier id</th><th>first seen</th>"
    "<th>action</th><th>detail</th></tr></thead>"
)


def _row(f: Mapping[str, Any], new: bool) -> str:
    number = _e(f.get("number")) if f.get("number") is not None else '<span class="muted">none</span>'
    ids = "".join(f"<code>{_e(v)}</code>" for v in f.get("vapi_ids") or ())
    badge = '<span class="badge new">new</span>' if new else ""
    source = _e(f.get("source")) if f.get("source") is not None else '<span class="muted">none</span>'
    return (
        f'<tr class="f{" new" if new else ""}"><td class="mono">{number}{badge}</td><td>{source}</td>'
        f'<td class="ids">{ids}</td><td class="mono">{_e(f.get("carrier_id"))}</td>'
        f'<td>{_time(f.get("first_seen_at"))}</td><td class="act">{_action(f)}</td>'
        f'<td class="detail">{_e(f.get("detail"))}</td></tr>'
    )


def _source_order(report: Mapping[str, Any]) -> dict[str | None, int]:
    order: dict[str | None, int] = {s.get("name"): i for i, s in enumerate(report.get("sources") or [])}
    order.setdefault(None, len(order) + 1)
    return order


def _findings(report: Mapping[str, Any], ctx: ReportContext, by_kind: dict[str, list[Any]]) -> str:
    if not by_kind:
        return (
            '<section class="panel" id="findings"><h2>Findings</h2>'
            '<p class="insync">No findings: nothing to do.</p></section>'
        )
    order = _source_order(report)
    parts = [
        '<section class="panel" id="findings"><h2>Findings</h2>',
        '<div id="filter" hidden><input type="search" id="q" placeholder="Filter: number, source, id, detail"'
        ' aria-label="Filter findings"><label><input type="checkbox" id="only-new"> only new</label>'
        '<span id="shown" class="muted" aria-live="polite"></span></div>',
    ]
    for kind in ordered_kinds(by_kind):
        info = kind_info(kind)
        group = by_kind[kind]
        by_source: dict[str | None, list[Any]] = {}
        for f in group:
            by_source.setdefault(f.get("source"), []).append(f)
        parts.append(
            f'<section class="kind" id="kind-{_e(kind)}"><h3>{_swatch(kind)} {_e(info.label)} '
            f'<code class="muted">{_e(kind)}</code> <span class="muted">{fmt_int(len(group))}</span></h3>'
            f"<p>{_e(info.meaning)}</p>"
        )
        sources = sorted(by_source, key=lambda s: (order.get(s, len(order)), s or ""))
        for source in sources:
            # New findings first: in a long group they are what the reader came for.
            rows = sorted(by_source[source], key=lambda f: finding_key(f) not in ctx.new_keys)
            flags = [finding_key(f) in ctx.new_keys for f in rows]
            new = sum(flags)
            name = _e(source) if source is not None else "no source"
            extra = f", {fmt_int(new)} new" if new else ""
            is_open = " open" if len(rows) <= OPEN_GROUP_ROWS else ""
            body = "".join(_row(f, flag) for f, flag in zip(rows, flags, strict=True))
            parts.append(
                f'<details class="group"{is_open}><summary>{name} <span class="muted">'
                f"{fmt_int(len(rows))} finding{'s' if len(rows) != 1 else ''}{extra}</span></summary>"
                f'<div class="tablewrap"><table class="findings">{_ROW_HEAD}<tbody>{body}</tbody></table>'
                "</div></details>"
            )
        parts.append("</section>")
    parts.append("</section>")
    return "".join(parts)


def _resolved(ctx: ReportContext) -> str:
    if not ctx.resolved:
        return ""
    rows = "".join(
        f"<tr><td>{_swatch(str(f.get('kind')))} {_e(kind_info(str(f.get('kind'))).label)}</td>"
        f'<td class="mono">{_e(f.get("number"))}</td><td>{_e(f.get("source"))}</td>'
        f'<td>{_time(f.get("first_seen_at"))}</td><td class="detail">{_e(f.get("detail"))}</td></tr>'
        for f in ctx.resolved
    )
    n = len(ctx.resolved)
    is_open = " open" if n <= OPEN_GROUP_ROWS else ""
    return (
        '<section class="panel" id="resolved"><h2>Resolved since the previous run</h2>'
        f'<details class="resolved"{is_open}><summary>{fmt_int(n)} finding{"s" if n != 1 else ""} '
        f"of run <code>{_e(ctx.previous_run_id)}</code> {'are' if n != 1 else 'is'} gone</summary>"
        '<div class="tablewrap"><table><thead><tr><th>kind</th><th>number</th><th>source</th>'
        f"<th>first seen</th><th>detail</th></tr></thead><tbody>{rows}</tbody></table></div>"
        "</details></section>"
    )


def render_html(report: Mapping[str, Any], ctx: ReportContext) -> str:
    """``report.html``: one self-contained page (inline CSS and SVG, optional inline filter script)."""
    counts = kind_counts(report)
    by_kind: dict[str, list[Any]] = {}
    new_by_kind: dict[str, int] = {}
    for f in report.get("findings") or ():
        kind = str(f.get("kind"))
        by_kind.setdefault(kind, []).append(f)
        if finding_key(f) in ctx.new_keys:
            new_by_kind[kind] = new_by_kind.get(kind, 0) + 1
    runs = history_with(report, ctx.history)
    outcome = str(report.get("outcome"))
    title = f"numsync report: {_OUTCOME.get(outcome, outcome)} · run {report.get('run_id')}"
    heading = f"Last {len(runs)} runs" if len(runs) > 1 else "This run (no earlier run yet)"
    chart = f'<section class="panel chart"><h2>{heading}</h2>{render_chart(runs)}</section>'
    return "".join(
        [
            '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">',
            f'<meta http-equiv="Content-Security-Policy" content="{_e(CSP)}">',
            '<meta name="viewport" content="width=device-width, initial-scale=1">',
            '<meta name="color-scheme" content="light dark">',
            f"<title>{_e(title)}</title><style>{CSS}</style></head><body>",
            _header(report, ctx),
            "<main>",
            _banner(report, counts),
            _cards(report, ctx, counts, sum(new_by_kind.values())),
            _summary(counts, new_by_kind, ctx),
            chart,
            _findings(report, ctx, by_kind),
            _resolved(ctx),
            "</main>",
            f"<footer>Generated by numsync · report schema {_e(report.get('schema_version'))} · "
            f"run <code>{_e(report.get('run_id'))}</code></footer>",
            f"<script>{SCRIPT}</script></body></html>\n",
        ]
    )

"""A small inline SVG: findings per kind over the last runs, as stacked bars.

A single report says how bad things are; the trend says whether they are getting better, and
whether a spike is new. One stacked bar per run, one colour per kind (one ``<g class="series">``
each, so tests and people can find a kind's bars), a strip under the bars with each run's
outcome, and a legend with the latest counts. Every bar carries a ``<title>`` (a tooltip, and
what a screen reader announces); the SVG has a ``<title>`` and ``<desc>`` of its own. Text and
axes take their colours from the page's CSS so the chart follows the light/dark theme.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from html import escape
from typing import Any

from numsync.reporting.kinds import fmt_int, kind_info, ordered_kinds, parse_time

__all__ = ["render_chart"]

_W = 1160
_LEFT, _RIGHT, _TOP = 46, 14, 22
_PLOT_H = 190
_STRIP_GAP, _STRIP_H = 6, 6
_LEGEND_COL, _LEGEND_ROW = 220, 20


def _nice_step(top: int) -> int:
    """A 1/2/5 x 10^k step giving at most five gridlines up to ``top``."""
    if top <= 5:
        return 1
    raw = top / 5
    base = 10 ** math.floor(math.log10(raw))
    for mult in (1, 2, 5, 10):
        if base * mult >= raw:
            return int(base * mult)
    return int(base * 10)  # pragma: no cover - the loop always returns


def _labels(runs: Sequence[Mapping[str, Any]]) -> list[str]:
    """Short x labels: times of day when all runs share a date, dates otherwise."""
    times = [parse_time(r.get("started_at")) for r in runs]
    dates = {t.date() for t in times if t is not None}
    fmt = "%H:%M" if len(dates) <= 1 else "%m-%d"
    return [t.strftime(fmt) if t is not None else "?" for t in times]


def render_chart(runs: Sequence[Mapping[str, Any]]) -> str:
    """The SVG for ``runs`` (oldest first, the current run last); empty string for no runs."""
    if not runs:
        return ""
    n = len(runs)
    counts = [{k: v for k, v in (r.get("counts") or {}).items() if isinstance(v, int) and v > 0} for r in runs]
    kinds = ordered_kinds({k for c in counts for k in c})
    totals = [sum(c.values()) for c in counts]
    step = _nice_step(max(totals, default=0))
    top = max(step * math.ceil(max(totals, default=0) / step), step)

    plot_w = _W - _LEFT - _RIGHT
    slot = plot_w / n
    bar_w = min(34.0, slot * 0.72)
    base_y = _TOP + _PLOT_H
    strip_y = base_y + _STRIP_GAP
    label_y = strip_y + _STRIP_H + 14
    legend_y = label_y + 16
    legend_cols = max(1, plot_w // _LEGEND_COL)
    legend_rows = math.ceil(len(kinds) / legend_cols) if kinds else 0
    outcome_y = legend_y + legend_rows * _LEGEND_ROW
    height = outcome_y + _LEGEND_ROW + 4

    def y(v: float) -> float:
        return base_y - v / top * _PLOT_H

    def x(i: int) -> float:
        return _LEFT + slot * i + (slot - bar_w) / 2

    def run_name(i: int) -> str:
        r = runs[i]
        when = parse_time(r.get("started_at"))
        stamp = when.strftime("%Y-%m-%d %H:%M UTC") if when else str(r.get("started_at"))
        this = " (this run)" if i == n - 1 else ""
        return f"{stamp}{this}, run {r.get('run_id')}"

    latest = counts[-1]
    summary = ", ".join(f"{kind_info(k).label} {latest.get(k, 0)}" for k in kinds) or "no findings"
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {_W} {height}" role="img" '
        'aria-labelledby="chart-title chart-desc">',
        f'<title id="chart-title">Findings per kind over the last {n} run{"s" if n != 1 else ""}</title>',
        f'<desc id="chart-desc">Stacked bars, oldest run first. This run: {escape(summary)}.</desc>',
    ]
    for v in range(0, top + 1, step):
        yy = round(y(v), 1)
        out.append(f'<line class="axis" x1="{_LEFT}" x2="{_W - _RIGHT}" y1="{yy}" y2="{yy}"/>')
        out.append(f'<text x="{_LEFT - 6}" y="{yy + 4}" text-anchor="end">{fmt_int(v)}</text>')
    if not kinds:
        out.append(
            f'<text class="empty" x="{_LEFT + plot_w / 2}" y="{_TOP + _PLOT_H / 2}" text-anchor="middle">'
            f"{f'No findings in the last {n} runs' if n > 1 else 'No findings in this run'}</text>"
        )

    bases = [0] * n
    for kind in kinds:
        info = kind_info(kind)
        out.append(
            f'<g class="series" data-kind="{escape(kind)}" fill="{escape(info.colour)}">'
            f"<title>{escape(info.label)}</title>"
        )
        for i, c in enumerate(counts):
            v = c.get(kind, 0)
            if not v:
                continue
            y0, y1 = y(bases[i]), y(bases[i] + v)
            bases[i] += v
            out.append(
                f'<rect x="{x(i):.1f}" y="{y1:.1f}" width="{bar_w:.1f}" height="{max(y0 - y1, 0.5):.1f}">'
                f"<title>{escape(run_name(i))}: {escape(info.label)} {fmt_int(v)}</title></rect>"
            )
        out.append("</g>")

    out.append('<g class="outcomes">')
    for i, r in enumerate(runs):
        outcome = str(r.get("outcome"))
        out.append(
            f'<rect class="o-{escape(outcome)}" x="{x(i):.1f}" y="{strip_y}" width="{bar_w:.1f}" '
            f'height="{_STRIP_H}" rx="1.5"><title>{escape(run_name(i))}: outcome {escape(outcome)}'
            "</title></rect>"
        )
    out.append("</g>")
    if totals[-1]:
        out.append(
            f'<text class="total" x="{x(n - 1) + bar_w / 2:.1f}" y="{y(totals[-1]) - 5:.1f}" '
            f'text-anchor="middle">{fmt_int(totals[-1])}</text>'
        )
    labels = _labels(runs)
    every = max(1, math.ceil(n / 10))
    for i in range(n):
        if i == n - 1:
            text = "this run"
        elif (n - 1 - i) % every or n - 1 - i < every:
            continue
        else:
            text = labels[i]
        out.append(f'<text x="{x(i) + bar_w / 2:.1f}" y="{label_y}" text-anchor="middle">{escape(text)}</text>')

    out.append('<g class="legend">')
    for j, kind in enumerate(kinds):
        info = kind_info(kind)
        lx = _LEFT + (j % legend_cols) * _LEGEND_COL
        ly = legend_y + (j // legend_cols) * _LEGEND_ROW
        out.append(
            f'<rect x="{lx}" y="{ly}" width="12" height="12" rx="2" fill="{escape(info.colour)}"/>'
            f'<text x="{lx + 18}" y="{ly + 10.5}">{escape(info.label)}: {fmt_int(latest.get(kind, 0))}</text>'
        )
    out.append(
        '</g><g class="legend-outcomes"><text x="' + str(_LEFT) + f'" y="{outcome_y + 10.5}">'
        "Strip under the bars: the run's outcome</text>"
    )
    for j, (cls, word) in enumerate((("in_sync", "in sync"), ("drift", "drift"), ("error", "error"))):
        lx = _LEFT + 250 + j * 90
        out.append(
            f'<rect class="o-{cls}" x="{lx}" y="{outcome_y + 3}" width="12" height="6" rx="1.5"/>'
            f'<text x="{lx + 18}" y="{outcome_y + 10.5}">{word}</text>'
        )
    out.append("</g></svg>")
    return "".join(out)

"""Report rendering: ``report.json``, ``.md``, ``.html``, ``.csv`` and the Slack summary.

The engine produces one report dict per run (the ``report.json`` of INTERFACE.md) and a
``ReportContext`` (what changed since the previous run); everything here is a pure function of
those two, so ``numsync report --run ID`` re-renders a stored run exactly, and no renderer can
reach a credential: none of them sees the configuration.
"""

from __future__ import annotations

from numsync.reporting.context import ReportContext, build_context, history_entry
from numsync.reporting.csvfmt import CSV_COLUMNS, render_csv
from numsync.reporting.htmlfmt import render_html
from numsync.reporting.jsonfmt import render_json
from numsync.reporting.markdown import render_markdown
from numsync.reporting.render import FORMATS, render, uses_context, write_reports
from numsync.reporting.slack import slack_summary

__all__ = [
    "CSV_COLUMNS",
    "FORMATS",
    "ReportContext",
    "build_context",
    "history_entry",
    "render",
    "render_csv",
    "render_html",
    "render_json",
    "render_markdown",
    "slack_summary",
    "uses_context",
    "write_reports",
]

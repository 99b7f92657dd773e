"""The summary posted to ``reports.webhook_url``: Slack's Block Kit, readable in a channel.

A channel needs the verdict and what changed, not the whole report: outcome, counts by kind,
what is new and what was resolved since the previous report, and each source's status, with
a link to the full report when one is known. Everything comes from the report dict and the
context, never from configuration, so no credential can reach the message. Slack rejects a
message over its limits (50 blocks, 3000 characters per section, 150 per header), so long
lists are cut with a count of what was left out, and report text is escaped as Slack's
``mrkdwn`` requires (``&``, ``<``, ``>``) so that it cannot forge a link or a mention.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from numsync.reporting.context import ReportContext
from numsync.reporting.kinds import finding_key, fmt_int, fmt_time, kind_counts, kind_info

__all__ = ["slack_summary"]

MAX_LISTED = 10
_SECTION_LIMIT = 3000
_HEADER_LIMIT = 150

_OUTCOME = {
    "in_sync": (":white_check_mark:", "in sync"),
    "drift": (":warning:", "drift"),
    "error": (":x:", "error"),
}
_STATUS = {"ok": ":white_check_mark:", "failed": ":x:", "suspect": ":warning:"}


def _esc(value: object) -> str:
    text = "" if value is None else " ".join(str(value).split())
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 3].rstrip() + "..."


def _section(text: str) -> dict[str, Any]:
    return {"type": "section", "text": {"type": "mrkdwn", "text": _cut(text, _SECTION_LIMIT)}}


def _listing(title: str, findings: Sequence[Mapping[str, Any]]) -> str:
    lines = [title]
    for f in findings[:MAX_LISTED]:
        where = f" ({_esc(f.get('source'))})" if f.get("source") else ""
        lines.append(f"• `{_esc(f.get('kind'))}` {_esc(f.get('number')) or '-'}{where}")
    if len(findings) > MAX_LISTED:
        lines.append(f"_... and {fmt_int(len(findings) - MAX_LISTED)} more_")
    return "\n".join(lines)


def _safe_url(url: str | None) -> str | None:
    """An http(s) link without user:password, or None: a button must not carry credentials."""
    if not url:
        return None
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return None
    host = parts.hostname if ":" not in parts.hostname else f"[{parts.hostname}]"
    netloc = host if parts.port is None else f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def slack_summary(report: Mapping[str, Any], ctx: ReportContext, *, report_url: str | None = None) -> dict[str, Any]:
    """``{"text": fallback, "blocks": [...]}`` for a Slack incoming webhook (or a compatible one)."""
    outcome = str(report.get("outcome"))
    emoji, word = _OUTCOME.get(outcome, (":grey_question:", outcome))
    counts = kind_counts(report)
    total = sum(counts.values())
    findings = list(report.get("findings") or ())
    new = [f for f in findings if finding_key(f) in ctx.new_keys]
    mode = _esc(report.get("mode"))

    change = []
    if new:
        change.append(f"{fmt_int(len(new))} new")
    if ctx.resolved:
        change.append(f"{fmt_int(len(ctx.resolved))} resolved")
    change_text = f" ({', '.join(change)})" if change else ""
    text = (
        f"numsync {mode}: {word}, {fmt_int(total)} finding{'s' if total != 1 else ''}{change_text}, "
        f"run {_esc(report.get('run_id'))}"
    )

    vapi = report.get("vapi") or {}
    blocks: list[dict[str, Any]] = [
        {
            "type": "header",
            "text": {"type": "plain_text", "text": _cut(f"numsync {mode}: {word}", _HEADER_LIMIT)},
        },
        {
            "type": "section",
            "fields": [
                {"type": "mrkdwn", "text": f"*Outcome*\n{emoji} {_esc(word)}"},
                {"type": "mrkdwn", "text": f"*Vapi numbers*\n{fmt_int(vapi.get('numbers'))}"},
                {"type": "mrkdwn", "text": f"*Findings*\n{fmt_int(total)}{change_text}"},
                {"type": "mrkdwn", "text": f"*Mode*\n{mode}"},
            ],
        },
    ]
    if counts:
        new_by_kind: dict[str, int] = {}
        for f in new:
            new_by_kind[str(f.get("kind"))] = new_by_kind.get(str(f.get("kind")), 0) + 1
        lines = ["*Findings by kind*"]
        for kind, n in counts.items():
            extra = f" ({fmt_int(new_by_kind[kind])} new)" if kind in new_by_kind else ""
            lines.append(f"• {_esc(kind_info(kind).label)} `{_esc(kind)}`: *{fmt_int(n)}*{extra}")
        blocks.append(_section("\n".join(lines)))
    else:
        blocks.append(_section("*No findings*: Vapi and every source agree."))
    if new:
        blocks.append(_section(_listing("*New since the previous report*", new)))
    if ctx.resolved:
        blocks.append(_section(_listing("*Resolved since the previous report*", ctx.resolved)))

    sources = report.get("sources") or []
    if sources:
        lines = ["*Sources*"]
        for s in sources[:40]:
            status = str(s.get("status"))
            line = (
                f"{_STATUS.get(status, ':grey_question:')} *{_esc(s.get('name'))}* ({_esc(s.get('kind'))}): "
                f"{_esc(status)}, {fmt_int(s.get('numbers'))} numbers"
            )
            if s.get("error"):
                line += f": {_esc(_cut(str(s.get('error')), 300))}"
            lines.append(line)
        if len(sources) > 40:
            lines.append(f"_... and {fmt_int(len(sources) - 40)} more sources_")
        blocks.append(_section("\n".join(lines)))

    url = _safe_url(report_url)
    if url:
        blocks.append(
            {
                "type": "actions",
                "elements": [{"type": "button", "text": {"type": "plain_text", "text": "Open the report"}, "url": url}],
            }
        )
    context = (
        f"run `{_esc(report.get('run_id'))}` · started {_esc(fmt_time(report.get('started_at')))}"
        f" · finished {_esc(fmt_time(report.get('finished_at')))}"
    )
    if ctx.previous_run_id:
        context += f" · previous run `{_esc(ctx.previous_run_id)}`"
    blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": _cut(context, 2000)}]})
    return {"text": _cut(text, _SECTION_LIMIT), "blocks": blocks}

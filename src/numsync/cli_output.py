"""The short human summary printed after a run: outcome, sources, findings by kind."""

from __future__ import annotations

from typing import Any

__all__ = ["summary_table"]


def _table(headers: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]
    line = "  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True))
    out = [line, "  ".join("-" * w for w in widths)]
    out += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    return "\n".join(out)


def summary_table(report: dict[str, Any]) -> str:
    parts = [
        f"run {report['run_id']} ({report['mode']}): {report['outcome'].upper()}",
        f"vapi: {report['vapi']['numbers']:,} numbers",
        "",
    ]
    if report["sources"]:
        parts.append(_table(
            ["source", "kind", "status", "numbers", "error"],
            [[s["name"], s["kind"], s["status"], f"{s['numbers']:,}", s.get("error") or ""]
             for s in report["sources"]],
        ))
        parts.append("")
    actions: dict[str, dict[str, int]] = {}
    for f in report["findings"]:
        if f["action"] != "none":
            actions.setdefault(f["kind"], {}).setdefault(f["action_status"], 0)
            actions[f["kind"]][f["action_status"]] += 1
    if report["summary"]:
        parts.append(_table(
            ["finding", "count", "actions"],
            [[kind, str(n), ", ".join(f"{v} {k}" for k, v in sorted(actions.get(kind, {}).items()))]
             for kind, n in report["summary"].items()],
        ))
    else:
        parts.append("no findings: Vapi and the sources agree")
    return "\n".join(parts)

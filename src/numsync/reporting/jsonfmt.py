"""``report.json``: the machine-readable report, with the contract's key order.

Scripts read this file, and people diff it between runs: the keys come in the order the
contract lists them, so two reports of the same state are byte-identical whatever order the
engine built its dicts in. Keys the contract does not (yet) name are kept, after the known
ones, because the contract only ever grows.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

from numsync.reporting.kinds import ordered_kinds

__all__ = ["FINDING_KEYS", "REPORT_KEYS", "SOURCE_KEYS", "ordered_report", "render_json"]

REPORT_KEYS = (
    "schema_version",
    "run_id",
    "mode",
    "started_at",
    "finished_at",
    "outcome",
    "vapi",
    "sources",
    "summary",
    "findings",
)
SOURCE_KEYS = ("name", "kind", "status", "numbers", "error")
FINDING_KEYS = (
    "kind",
    "number",
    "source",
    "vapi_ids",
    "carrier_id",
    "first_seen_at",
    "action",
    "action_status",
    "detail",
)


def _ordered(obj: Mapping[str, Any], keys: Iterable[str]) -> dict[str, Any]:
    out = {k: obj[k] for k in keys if k in obj}
    out.update((k, v) for k, v in obj.items() if k not in out)
    return out


def ordered_report(report: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of ``report`` with every level's keys in contract order (list orders are kept)."""
    out = _ordered(report, REPORT_KEYS)
    if isinstance(out.get("vapi"), Mapping):
        out["vapi"] = _ordered(out["vapi"], ("numbers",))
    if isinstance(out.get("sources"), list):
        out["sources"] = [_ordered(s, SOURCE_KEYS) if isinstance(s, Mapping) else s for s in out["sources"]]
    if isinstance(out.get("summary"), Mapping):
        summary = out["summary"]
        out["summary"] = {k: summary[k] for k in ordered_kinds(summary)}
    if isinstance(out.get("findings"), list):
        out["findings"] = [_ordered(f, FINDING_KEYS) if isinstance(f, Mapping) else f for f in out["findings"]]
    return out


def render_json(report: Mapping[str, Any]) -> str:
    """``report.json``: contract key order, indent 2, UTF-8 text as is, trailing newline."""
    return json.dumps(ordered_report(report), indent=2, ensure_ascii=False, allow_nan=False) + "\n"

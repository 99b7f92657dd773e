"""What every renderer needs to agree on: the order, names and colours of finding kinds.

The four formats and the Slack summary must list kinds in the same order and count them the
same way, or a reader comparing the HTML with the Slack message sees two different stories.
The order is the contract's table (most actionable first); kinds the contract adds later still
render, after the known ones, with a neutral colour, because a renderer must never be the
reason a new finding kind goes unreported.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any, NamedTuple

__all__ = [
    "KINDS",
    "KIND_INFO",
    "KindInfo",
    "finding_key",
    "fmt_int",
    "fmt_time",
    "kind_counts",
    "kind_info",
    "ordered_kinds",
    "parse_time",
]


class KindInfo(NamedTuple):
    label: str
    meaning: str
    colour: str


# Colours are mid-tones chosen to stay readable on both the light and the dark page background,
# and distinct from each other for the stacked chart.
KIND_INFO: dict[str, KindInfo] = {
    "missing_in_vapi": KindInfo("Missing in Vapi", "Owned at a source but not registered in Vapi.", "#e8710a"),
    "routed_elsewhere": KindInfo(
        "Routed elsewhere",
        "Owned at a source, not in Vapi, and its voice routing points somewhere else.",
        "#d4a106",
    ),
    "orphaned": KindInfo("Orphaned", "A Vapi record belongs to a source that does not own the number.", "#d93025"),
    "moved": KindInfo("Moved", "A Vapi record belongs to one source, but another source owns the number.", "#9334e6"),
    "blocked": KindInfo("Blocked", "Vapi reports the number as blocked.", "#8d5a3c"),
    "stuck_activating": KindInfo(
        "Stuck activating", "Vapi has shown the number as activating for too long.", "#1a73e8"
    ),
    "unrouted": KindInfo(
        "Unrouted", "No assistant, squad, workflow or server URL: inbound calls go nowhere.", "#12a4b8"
    ),
    "duplicate_in_vapi": KindInfo(
        "Duplicate in Vapi", "The same number is registered on two or more Vapi records.", "#e52592"
    ),
    "unmanaged": KindInfo("Unmanaged", "A Vapi record of a carrier account no configured source covers.", "#9aa0a6"),
    "invalid_number": KindInfo("Invalid number", "A source returned a number that cannot be read as E.164.", "#6f9a2c"),
    "source_unavailable": KindInfo(
        "Source unavailable",
        "A source failed or looked suspect; its Vapi records were not judged orphaned.",
        "#5c6bc0",
    ),
}
KINDS: tuple[str, ...] = tuple(KIND_INFO)

_UNKNOWN_COLOUR = "#5f6b7a"


def kind_info(kind: str) -> KindInfo:
    """Metadata for a kind, inventing a plain one for kinds this version does not know."""
    info = KIND_INFO.get(kind)
    if info is not None:
        return info
    return KindInfo(kind.replace("_", " ").capitalize(), "", _UNKNOWN_COLOUR)


def ordered_kinds(kinds: Iterable[str]) -> list[str]:
    """The given kinds, each once, in contract order; unknown kinds last, alphabetically."""
    seen = set(kinds)
    known = [k for k in KINDS if k in seen]
    return known + sorted(seen.difference(KINDS))


def kind_counts(report: Mapping[str, Any]) -> dict[str, int]:
    """Counts per kind, in kind order, zero counts dropped.

    ``summary`` is the engine's word on the counts; a kind present in ``findings`` but missing
    from ``summary`` is still counted, so a renderer never hides a finding behind a stale summary.
    """
    counts: dict[str, int] = {}
    for kind, n in (report.get("summary") or {}).items():
        if isinstance(n, int) and n > 0:
            counts[kind] = n
    found: dict[str, int] = {}
    for finding in report.get("findings") or ():
        kind = str(finding.get("kind"))
        found[kind] = found.get(kind, 0) + 1
    for kind, n in found.items():
        counts.setdefault(kind, n)
    return {k: counts[k] for k in ordered_kinds(counts)}


def finding_key(finding: Mapping[str, Any]) -> tuple[str, str | None, str | None]:
    """The identity of a finding across runs, as the contract defines it: kind, number, source."""
    return (str(finding.get("kind")), finding.get("number"), finding.get("source"))


def parse_time(value: object) -> datetime | None:
    """Parse an ISO-8601 timestamp (the reports' ``...Z`` form); None when absent or unreadable."""
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)


def fmt_time(value: object, *, seconds: bool = False) -> str:
    """A timestamp as people read it (``2025-03-01 14:05 UTC``); unreadable text is shown as is."""
    parsed = parse_time(value)
    if parsed is None:
        return "" if value is None else str(value)
    return parsed.strftime("%Y-%m-%d %H:%M:%S UTC" if seconds else "%Y-%m-%d %H:%M UTC")


def fmt_int(value: object) -> str:
    """An integer with thousands separators; anything else as text (``-`` for None)."""
    if isinstance(value, bool) or value is None:
        return "-" if value is None else str(value)
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)

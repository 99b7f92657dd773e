"""Stage 3: turn findings into a plan: which numbers to import, and why the others are not.

The plan is data (journal rows in state 'planned' or 'skipped'), written before anything is
sent, so `numsync plan` shows exactly what `numsync reconcile` would do and a crashed apply can
be finished from the journal.
"""

from __future__ import annotations

import fnmatch
import functools
import string
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from numsync.adapters.base import country_of
from numsync.config import ImportSettings

from .diff import FindingDraft

__all__ = ["PlannedImport", "make_plan", "render_name"]

IMPORTABLE = ("missing_in_vapi", "routed_elsewhere")


@dataclass
class PlannedImport:
    source: str
    number: str
    state: str  # planned | skipped
    request: dict[str, Any]  # the public part of the create body: no secrets
    detail: str | None = None


def render_name(template: str, *, source: str, number: str, kind: str, carrier_id: str | None,
                labels: Mapping[str, Any] | None) -> str:
    """The name an import gives its number in Vapi. ``{label}``: the record's friendly_name or
    name, else its first label, else (a record with no labels: a CSV with only a number column)
    the number's country.

    The country is worked out only for a template that shows it: it took the first plan of a
    process 7-10 ms to load the metadata of the regions that share a calling code, and the default
    template has no ``{label}``.
    """
    label = ""
    if "label" in _fields(template):
        if labels:
            label = str(labels.get("friendly_name") or labels.get("name") or next(iter(labels.values()), ""))
        else:
            label = country_of(number) or ""
    name = template.format(source=source, number=number, kind=kind, carrier_id=carrier_id or "", label=label)
    return name[:40]


@functools.lru_cache(maxsize=64)
def _fields(template: str) -> frozenset[str]:
    return frozenset(field for _, field, _, _ in string.Formatter().parse(template) if field is not None)


def _filters_pass(number: str, settings: ImportSettings) -> bool:
    if settings.include and not any(fnmatch.fnmatchcase(number, g) for g in settings.include):
        return False
    return not any(fnmatch.fnmatchcase(number, g) for g in settings.exclude)


def make_plan(
    drafts: Sequence[FindingDraft],
    *,
    settings: Mapping[str, ImportSettings],
    kinds: Mapping[str, str],
    source_order: Sequence[str],
    max_imports: int,
) -> list[PlannedImport]:
    """Decide each importable finding's action in place and return the journal rows to write.

    Sources are taken in config order and numbers in sorted order, so which imports fall beyond
    ``max_imports`` is stable from run to run. A number owned by two sources is imported once,
    from the first.
    """
    order = {name: i for i, name in enumerate(source_order)}
    candidates = sorted(
        (d for d in drafts if d.kind in IMPORTABLE and d.source is not None and d.number is not None),
        key=lambda d: (order.get(d.source or "", 1 << 30), d.number or ""),
    )
    planned: list[PlannedImport] = []
    taken: dict[str, str] = {}
    n_planned = 0
    for d in candidates:
        src, number = d.source or "", d.number or ""
        s = settings[src]
        reason = None
        if not s.enabled:
            reason = "import is disabled for this source"
        elif d.kind == "routed_elsewhere" and not s.take_over:
            reason = "routed elsewhere at the carrier; set import.take_over to import it"
        elif not _filters_pass(number, s):
            reason = "excluded by import.include / import.exclude"
        elif number in taken:
            reason = f"also owned by source {taken[number]}, which imports it"
        if reason is not None:
            d.action, d.action_status, d.detail = "none", "none", _join(d.detail, reason)
            continue
        taken[number] = src
        request: dict[str, Any] = {
            "name": render_name(s.name, source=src, number=number, kind=kinds[src],
                                carrier_id=d.carrier_id, labels=d.labels),
        }
        for field, key in (("assistant_id", "assistantId"), ("squad_id", "squadId"),
                           ("workflow_id", "workflowId")):
            if getattr(s, field):
                request[key] = getattr(s, field)
        d.action = "import"
        if n_planned >= max_imports:
            detail = f"over policy.max_imports_per_run ({max_imports}); left for a later run"
            d.action_status, d.detail = "skipped", _join(d.detail, detail)
            planned.append(PlannedImport(src, number, "skipped", request, detail))
        else:
            d.action_status = "planned"
            n_planned += 1
            planned.append(PlannedImport(src, number, "planned", request))
    return planned


def _join(a: str | None, b: str) -> str:
    return f"{a}; {b}" if a else b

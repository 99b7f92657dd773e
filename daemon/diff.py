"""Stage 2: the diff, as set-based SQL over one run's two snapshot tables.

Each query returns only the rows that are findings, so the work grows with the drift, not with
the inventory: 100,000 numbers in sync cost a few index scans and return nothing. The rules
are the contract's (INTERFACE.md, "Finding kinds"); the comments below say which rule each
query implements.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from numsync.adapters.vapi_model import CARRIER_PROVIDERS

from .models import CarrierRecord as C
from .models import VapiRecord as V

__all__ = ["FindingDraft", "SourceJudgement", "compute_findings", "judge_sources"]


@dataclass
class FindingDraft:
    kind: str
    number: str | None
    source: str | None
    vapi_ids: list[str] = field(default_factory=list)
    carrier_id: str | None = None
    detail: str | None = None
    action: str = "none"
    action_status: str = "none"
    # Not in the report: what the planner needs.
    labels: dict[str, Any] | None = None
    anchor: str | None = None  # keeps keys unique for records with neither number nor sipUri

    @property
    def key(self) -> str:
        return finding_key(self.kind, self.number if self.number is not None else self.anchor, self.source)


def finding_key(kind: str, number: str | None, source: str | None) -> str:
    return f"{kind}|{number or ''}|{source or ''}"


@dataclass
class SourceJudgement:
    name: str
    status: str  # ok | failed | suspect
    numbers: int
    error: str | None


def judge_sources(
    session: Session,
    run_id: str,
    listed: dict[str, tuple[int, str | None]],
    kinds: dict[str, str],
    max_orphan_fraction: float,
) -> dict[str, SourceJudgement]:
    """Decide ok / failed / suspect per source (contract: 'A source is suspect when ...')."""
    ok_listed = [name for name, (_, err) in listed.items() if err is None]
    vapi_counts: dict[str, int] = {}
    orphan_counts: dict[str, int] = {}
    if ok_listed:
        owned_here = sa.exists().where(C.run_id == run_id, C.source == V.source, C.match_key == V.match_key)
        owned_anywhere = sa.exists().where(
            C.run_id == run_id, C.match_key == V.match_key, C.source.in_(ok_listed)
        )
        stmt = (
            sa.select(
                V.source,
                sa.func.count(),
                sa.func.sum(sa.case((sa.and_(~owned_here, ~owned_anywhere), 1), else_=0)),
            )
            .where(V.run_id == run_id, V.source.in_(ok_listed))
            .group_by(V.source)
        )
        for name, count, orphans in session.execute(stmt):
            vapi_counts[name] = int(count)
            orphan_counts[name] = int(orphans or 0)
    out: dict[str, SourceJudgement] = {}
    for name, (numbers, err) in listed.items():
        if err is not None:
            out[name] = SourceJudgement(name, "failed", numbers, err)
            continue
        held = vapi_counts.get(name, 0)
        orphans = orphan_counts.get(name, 0)
        if numbers == 0 and held > 0:
            out[name] = SourceJudgement(
                name, "suspect", numbers,
                f"the {kinds[name]} inventory is empty while Vapi holds {held} of its numbers",
            )
        elif held >= 5 and orphans / held > max_orphan_fraction:
            out[name] = SourceJudgement(
                name, "suspect", numbers,
                f"it would orphan {orphans} of its {held} Vapi numbers "
                f"(more than policy.max_orphan_fraction {max_orphan_fraction:g})",
            )
        else:
            out[name] = SourceJudgement(name, "ok", numbers, None)
    return out


def compute_findings(
    session: Session,
    run_id: str,
    *,
    judgements: dict[str, SourceJudgement],
    selected: frozenset[str],
    filtered: bool,
    now: datetime,
    stuck_after: timedelta,
) -> list[FindingDraft]:
    """Every finding of the run, merged by key (kind, number, source)."""
    ok = sorted(n for n, j in judgements.items() if j.status == "ok")
    # A suspect source's inventory is not trusted enough to orphan its records, but a number it
    # lists is still a number it owns: another source's record of it is 'moved', not 'orphaned'.
    listed = sorted(n for n, j in judgements.items() if j.status != "failed")
    drafts: dict[str, FindingDraft] = {}

    def add(d: FindingDraft) -> None:
        existing = drafts.get(d.key)
        if existing is None:
            drafts[d.key] = d
        else:
            existing.vapi_ids = sorted(set(existing.vapi_ids) | set(d.vapi_ids))

    for d in _source_unavailable(judgements):
        add(d)
    for d in _invalid_numbers(session, run_id, ok):
        add(d)
    for d in _missing(session, run_id, ok):
        add(d)
    for d in _moved_and_orphaned(session, run_id, ok, listed):
        add(d)
    if not filtered:
        for d in _unmanaged(session, run_id):
            add(d)
    in_scope = V.source.in_(sorted(selected)) if filtered else sa.true()
    for d in _vapi_side(session, run_id, in_scope, now - stuck_after):
        add(d)
    for d in _duplicates(session, run_id, in_scope):
        add(d)
    return sorted(drafts.values(), key=lambda d: (d.kind, d.source or "", d.number or "", d.anchor or ""))


def _source_unavailable(judgements: dict[str, SourceJudgement]) -> Iterable[FindingDraft]:
    for j in judgements.values():
        if j.status != "ok":
            yield FindingDraft(
                "source_unavailable", None, j.name,
                detail=f"source {j.status}: {j.error}; its Vapi numbers were not judged orphaned "
                "and nothing was imported from it",
            )


def _invalid_numbers(session: Session, run_id: str, ok: list[str]) -> Iterable[FindingDraft]:
    # invalid_number: a source returned a number that cannot be read as E.164.
    stmt = sa.select(C.source, C.number, C.carrier_id).where(
        C.run_id == run_id, C.source.in_(ok), C.match_key.is_(None)
    )
    for source, number, carrier_id in session.execute(stmt):
        yield FindingDraft("invalid_number", number, source, carrier_id=carrier_id,
                           detail=f"not a valid E.164 number ({carrier_id}); never imported")


def _missing(session: Session, run_id: str, ok: list[str]) -> Iterable[FindingDraft]:
    # missing_in_vapi / routed_elsewhere: owned at an ok source, and no Vapi record at all holds
    # the number (a number held under another source is 'moved' or 'unmanaged', not missing).
    in_vapi = sa.exists().where(V.run_id == run_id, V.match_key == C.match_key)
    stmt = (
        sa.select(C.source, C.match_key, C.carrier_id, C.routed_elsewhere, C.routing, C.labels)
        .where(C.run_id == run_id, C.source.in_(ok), C.match_key.is_not(None), ~in_vapi)
        .order_by(C.source, C.match_key, C.carrier_id)
    )
    # One query, folded here: a source that lists a number twice (a CSV) gives one finding, with
    # the first record's id and labels, judged routed elsewhere if any of its records is.
    merged: dict[tuple[str, str], list[Any]] = {}
    for source, key, carrier_id, elsewhere, routing, labels in session.execute(stmt):
        seen = merged.get((source, key))
        if seen is None:
            merged[(source, key)] = [carrier_id, bool(elsewhere), routing, labels]
        else:
            seen[1] = seen[1] or bool(elsewhere)
            seen[2] = min(filter(None, (seen[2], routing)), default=None)
    for (source, key), (carrier_id, elsewhere, routing, labels) in merged.items():
        if elsewhere:
            yield FindingDraft("routed_elsewhere", key, source, carrier_id=carrier_id,
                               detail=f"voice routing points elsewhere: {routing}", labels=labels)
        else:
            yield FindingDraft("missing_in_vapi", key, source, carrier_id=carrier_id, labels=labels)


def _moved_and_orphaned(session: Session, run_id: str, ok: list[str], listed: list[str]) -> Iterable[FindingDraft]:
    # orphaned: a Vapi record of an ok source whose number that source does not own.
    # moved: the same, but another listed source owns the number (its name goes in detail).
    owned_here = sa.exists().where(C.run_id == run_id, C.source == V.source, C.match_key == V.match_key)
    c2 = sa.orm.aliased(C)
    owner = (
        sa.select(sa.func.min(c2.source))
        .where(c2.run_id == run_id, c2.match_key == V.match_key, c2.source.in_(listed))
        .scalar_subquery()
    )
    stmt = sa.select(V.vapi_id, V.source, V.match_key, owner).where(
        V.run_id == run_id, V.source.in_(ok), V.match_key.is_not(None), ~owned_here
    )
    for vapi_id, source, key, owner_name in session.execute(stmt):
        if owner_name:
            yield FindingDraft("moved", key, source, vapi_ids=[vapi_id],
                               detail=f"held in Vapi under {source}, but owned by source {owner_name}")
        else:
            yield FindingDraft("orphaned", key, source, vapi_ids=[vapi_id],
                               detail=f"source {source} does not own this number")


def _unmanaged(session: Session, run_id: str) -> Iterable[FindingDraft]:
    # unmanaged: a carrier-account record that no configured source covers (informational).
    stmt = sa.select(V.vapi_id, V.provider, V.account, V.match_key, V.sip_uri).where(
        V.run_id == run_id, V.provider.in_(CARRIER_PROVIDERS), V.source.is_(None)
    )
    for vapi_id, provider, account, key, sip in session.execute(stmt):
        yield FindingDraft("unmanaged", key or sip, None, vapi_ids=[vapi_id], anchor=vapi_id,
                           detail=f"{provider} account {account or '(none)'} is not covered by any source")


def _vapi_side(session: Session, run_id: str, in_scope: Any, stuck_before: datetime) -> Iterable[FindingDraft]:
    # blocked / stuck_activating / unrouted: facts about Vapi records, judged whatever the carriers say.
    stmt = sa.select(
        V.vapi_id, V.source, V.match_key, V.sip_uri, V.status, V.routed, V.updated_at
    ).where(
        V.run_id == run_id,
        in_scope,
        sa.or_(
            V.status == "blocked",
            sa.and_(V.status == "activating", V.updated_at < stuck_before),
            V.routed.is_(False),
        ),
    )
    for vapi_id, source, key, sip, status, routed, updated_at in session.execute(stmt):
        number = key or sip
        anchor = None if number else vapi_id
        if status == "blocked":
            yield FindingDraft("blocked", number, source, vapi_ids=[vapi_id], anchor=anchor,
                               detail="Vapi status is blocked")
        if status == "activating" and updated_at is not None and updated_at < stuck_before:
            yield FindingDraft("stuck_activating", number, source, vapi_ids=[vapi_id], anchor=anchor,
                               detail=f"activating since {updated_at.strftime('%Y-%m-%dT%H:%M:%SZ')}")
        if not routed:
            yield FindingDraft("unrouted", number, source, vapi_ids=[vapi_id], anchor=anchor,
                               detail="no assistantId, squadId, workflowId or server.url")


def _duplicates(session: Session, run_id: str, in_scope: Any) -> Iterable[FindingDraft]:
    # duplicate_in_vapi: one E.164 number (or sipUri) on two or more Vapi records.
    k = sa.func.coalesce(V.match_key, V.sip_uri)
    stmt = (
        sa.select(
            k,
            sa.func.count(),
            sa.func.aggregate_strings(V.vapi_id, ","),
            sa.func.min(V.source),
            sa.func.max(V.source),
            sa.func.count(V.source),
        )
        .where(V.run_id == run_id, k.is_not(None))
        .group_by(k)
        .having(sa.and_(sa.func.count() > 1, sa.func.sum(sa.case((in_scope, 1), else_=0)) > 0))
    )
    for key, count, ids, lo, hi, with_source in session.execute(stmt):
        same = lo is not None and lo == hi and with_source == count
        yield FindingDraft("duplicate_in_vapi", key, lo if same else None, vapi_ids=sorted(ids.split(",")),
                           detail=f"{count} Vapi records hold this number")

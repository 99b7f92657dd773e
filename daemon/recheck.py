"""Between the judgement of the sources and the findings: ask a source about the numbers its
listing seems to have lost, before they are called orphaned.

A listing paged by offset loses a number when the inventory changes between two
of its pages and the count comes out the same: a number released before a page shifts the later
pages back by one, and one bought after it keeps the count. The number lost is one the source
still owns, and when Vapi holds it, it looks orphaned. Saying so would send someone to delete a
number that works. So each ok source is asked, one lookup a number, about up to ``MAX_RECHECKS``
numbers that look orphaned; a number it still owns is not orphaned. Numbers that were not orphaned
in the last run come first: a lost number is lost by the run that lists it, while a true orphan
stays one run after run, and taken by number alone, twenty true orphans that sort before it would
use up the lookups every run. The lookups are few, and only where orphans are: none in a run
without any, and none for a source whose listing cannot lose a number (``Source.still_owned``
says so with None). A lookup that fails leaves the findings as the listing made them.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping

import structlog

from numsync.adapters.base import Source
from numsync.errors import NumsyncError

from .diff import SourceJudgement, finding_key

__all__ = ["MAX_RECHECKS", "recheck_orphans"]

log = structlog.get_logger(__name__)

MAX_RECHECKS = 20  # lookups per source and run: a listing that lost more is rare, a real flood is 'suspect'


def recheck_orphans(judgements: dict[str, SourceJudgement], sources: Mapping[str, Source],
                    open_findings: Collection[str] = ()) -> dict[str, list[str]]:
    """Take the numbers each ok source turns out to own out of its unowned records; returns them
    by source (the numbers its listing lost). ``open_findings``: the keys of the findings still
    open after the last run (``FindingState``), whose ``orphaned`` ones are asked about last."""
    lost: dict[str, list[str]] = {}
    for name, judgement in judgements.items():
        source = sources.get(name)
        if judgement.status != "ok" or not judgement.unowned or source is None:
            continue
        numbers = {key for _, key, owner in judgement.unowned if owner is None}
        candidates = sorted(numbers, key=lambda n: (finding_key("orphaned", n, name) in open_findings, n))
        candidates = candidates[:MAX_RECHECKS]
        if not candidates:
            continue
        try:
            owned = source.still_owned(candidates)
        except NumsyncError as exc:
            log.warning("orphans_not_rechecked", source=name, numbers=len(candidates), error=str(exc))
            continue
        if not owned:
            continue
        judgement.unowned = [u for u in judgement.unowned if u[2] is not None or u[1] not in owned]
        lost[name] = sorted(owned)
        log.warning("listing_lost_numbers", source=name, numbers=lost[name],
                    why="the inventory changed while it was listed; they are not orphaned")
    return lost

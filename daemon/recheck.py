"""Between the judgement of the sources and the findings: ask a source about the numbers its
listing seems to have lost, before they are called orphaned.

A listing paged by offset loses a number when the inventory changes between two
of its pages and the count comes out the same: a number released before a page shifts the later
pages back by one, and one bought after it keeps the count. The number lost is one the source
still owns, and when Vapi holds it, it looks orphaned. Saying so would send someone to delete a
number that works. So each ok source is asked, one lookup a number, about the first
``MAX_RECHECKS`` numbers that look orphaned (by number, so the same ones each run); a number it
still owns is not orphaned. The lookups are few, and only where orphans are: none in a run
without any, and none for a source whose listing cannot lose a number (``Source.still_owned``
says so with None). A lookup that fails leaves the findings as the listing made them.
"""

from __future__ import annotations

from collections.abc import Mapping

import structlog

from numsync.adapters.base import Source
from numsync.errors import NumsyncError

from .diff import SourceJudgement

__all__ = ["MAX_RECHECKS", "recheck_orphans"]

log = structlog.get_logger(__name__)

MAX_RECHECKS = 20  # lookups per source and run: a listing that lost more is rare, a real flood is 'suspect'


def recheck_orphans(judgements: dict[str, SourceJudgement], sources: Mapping[str, Source]) -> dict[str, list[str]]:
    """Take the numbers each ok source turns out to own out of its unowned records; returns them
    by source (the numbers its listing lost)."""
    lost: dict[str, list[str]] = {}
    for name, judgement in judgements.items():
        source = sources.get(name)
        if judgement.status != "ok" or not judgement.unowned or source is None:
            continue
        candidates = sorted({key for _, key, owner in judgement.unowned if owner is None})[:MAX_RECHECKS]
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

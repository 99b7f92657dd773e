"""Small HTTP facts every adapter needs and no SDK exposes consistently: reading Retry-After.

Shared by the Vapi client and the carrier adapters (which otherwise know nothing of each other),
so a server's "wait N seconds" is read the same way everywhere.
"""

from __future__ import annotations

import email.utils
import math
from datetime import UTC, datetime

__all__ = ["parse_retry_after"]


def parse_retry_after(value: str | None) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or an HTTP date), or None if unreadable."""
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = (when - datetime.now(UTC)).total_seconds()
    if not math.isfinite(seconds):
        return None
    return max(0.0, seconds)

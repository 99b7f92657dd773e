"""E.164 reading: the fast path must answer exactly what phonenumbers answers."""

from __future__ import annotations

import phonenumbers
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from numsync.adapters.base import _parse_e164, to_e164

CODES = sorted(phonenumbers.COUNTRY_CODE_TO_REGION_CODE)


@pytest.mark.parametrize(("raw", "kw", "expected"), [
    ("+14155550100", {}, "+14155550100"),
    ("14155550100", {"assume_plus": True}, "+14155550100"),
    ("14155550100", {}, None),
    ("+1 (415) 555-0100", {}, "+14155550100"),
    ("(415) 555-0100", {"default_region": "US"}, "+14155550100"),
    ("447700900000", {"assume_plus": True}, "+447700900000"),
    ("+1415555", {}, None),
    ("12345", {"assume_plus": True}, None),
    ("not-a-number", {}, None),
    ("", {}, None),
    ("   ", {}, None),
])
def test_to_e164(raw: str, kw: dict[str, object], expected: str | None) -> None:
    assert to_e164(raw, **kw) == expected  # type: ignore[arg-type]


@settings(max_examples=3000, deadline=None, derandomize=True, database=None)
@given(code=st.sampled_from(CODES), national=st.text("0123456789", min_size=0, max_size=16),
       plus=st.booleans())
def test_fast_path_agrees_with_phonenumbers(code: int, national: str, plus: bool) -> None:
    raw = f"+{code}{national}" if plus else f"{code}{national}"
    assert to_e164(raw, assume_plus=not plus) == _parse_e164(raw, default_region=None, assume_plus=not plus)

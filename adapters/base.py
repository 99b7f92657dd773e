"""The seam between the engine and the outside world: what a source gives, what Vapi needs.

A source adapter turns one carrier account (or a CSV of SIP-trunk numbers) into a stream of
``SourceRecord`` and knows how a number of it is imported into Vapi. The engine never learns
which SDK is behind it; adding a carrier is one module implementing ``Source`` plus a line in
``numsync.adapters.registry``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import phonenumbers
from phonenumbers import PhoneMetadata

__all__ = [
    "Source",
    "SourceRecord",
    "VapiApi",
    "VapiNumber",
    "VapiOwner",
    "to_e164",
]


@dataclass(frozen=True, slots=True)
class SourceRecord:
    """One number as a source owns it, normalised so the engine can compare it with Vapi.

    ``e164`` is the number the engine compares and imports: E.164, or the number as written for a
    source that does not require E.164 (a trunk with ``e164_check: false``). It is None when the
    number cannot be read (the engine reports ``invalid_number`` and never imports it).
    ``routed_elsewhere`` is the adapter's judgement of the carrier's voice routing against the
    source's ``routes_to_vapi``; ``routing`` says why.
    """

    number: str
    e164: str | None
    carrier_id: str
    status: str | None = None
    labels: Mapping[str, str] = field(default_factory=dict)
    routing: str | None = None
    routed_elsewhere: bool = False


@dataclass(frozen=True, slots=True)
class VapiOwner:
    """How a Vapi record is recognised as this source's: its provider and account field."""

    provider: str  # 'twilio' | 'telnyx' | 'vonage' | 'byo-phone-number'
    account_field: str  # 'twilioAccountSid' | 'credentialId'
    account_value: str


@runtime_checkable
class Source(Protocol):
    """A configured source of numbers: a carrier account or a trunk's CSV."""

    name: str
    kind: str

    def owner(self) -> VapiOwner:
        """Which Vapi records belong to this source (the contract's ownership rule)."""
        ...

    def list_numbers(self) -> Iterator[SourceRecord]:
        """Every number the source owns, page by page; raises an AdapterError on failure."""
        ...

    def import_body(self, e164: str) -> dict[str, Any]:
        """The provider-specific part of a Vapi create body (may hold secrets: never log it)."""
        ...

    def close(self) -> None:
        """Release connections."""
        ...


def to_e164(raw: str, *, default_region: str | None = None, assume_plus: bool = False) -> str | None:
    """Read a carrier's number as E.164 ('+' and digits), or None when it is not a valid number.

    ``assume_plus`` is for carriers (Vonage) that return international digits without the '+'.
    Plain '+digits' input takes a fast path that gives exactly what phonenumbers would (a test
    compares the two on random input): a listing of 100,000 numbers spends 1.5 s in parse otherwise.
    """
    text = (raw or "").strip()
    if not text:
        return None
    digits = text[1:] if text[:1] == "+" else (text if assume_plus else "")
    if digits:
        fast = _fast_e164(digits)
        if fast is not None:
            return fast
    return _parse_e164(text, default_region=default_region, assume_plus=assume_plus)


def _parse_e164(text: str, *, default_region: str | None, assume_plus: bool) -> str | None:
    if assume_plus and text.isdigit():
        text = "+" + text
    try:
        parsed = phonenumbers.parse(text, default_region)
    except phonenumbers.NumberParseException:
        return None
    if not phonenumbers.is_possible_number(parsed):
        return None
    return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)


_CALLING_CODES = phonenumbers.COUNTRY_CODE_TO_REGION_CODE
_CODE_INFO: dict[int, tuple[re.Pattern[str] | None, frozenset[int]] | None] = {}


def _code_info(code: int) -> tuple[re.Pattern[str] | None, frozenset[int]] | None:
    """The national prefix pattern and the possible lengths of a calling code's main region."""
    if code not in _CODE_INFO:
        md = PhoneMetadata.metadata_for_region_or_calling_code(code, phonenumbers.region_code_for_country_code(code))
        if md is None:
            _CODE_INFO[code] = None
        else:
            prefix = md.national_prefix_for_parsing
            desc = md.general_desc
            lengths: set[int] = set()
            if desc is not None:
                lengths = set(desc.possible_length or ()) | set(desc.possible_length_local_only or ())
            _CODE_INFO[code] = (re.compile(prefix) if prefix else None, frozenset(lengths))
    return _CODE_INFO[code]


def _fast_e164(digits: str) -> str | None:
    """'+' + digits when phonenumbers would surely answer that; None means 'ask phonenumbers'."""
    if not digits.isdigit() or digits[0] == "0" or len(digits) > 17:
        return None
    for width in (1, 2, 3):
        code = int(digits[:width])
        if code in _CALLING_CODES:
            national = digits[width:]
            info = _code_info(code)
            if info is not None and 2 <= len(national) <= 17:
                prefix, lengths = info
                if (prefix is None or not prefix.match(national)) and len(national) in lengths:
                    return "+" + digits
            return None
    return None


@dataclass(frozen=True, slots=True)
class VapiNumber:
    """The fields of a Vapi phone-number record that reconciling needs, read once at the edge."""

    id: str
    provider: str
    number: str | None
    sip_uri: str | None
    status: str | None
    name: str | None
    account: str | None  # twilioAccountSid or credentialId: what ties the record to a source
    routed: bool  # an assistant, squad, workflow or server.url receives its calls
    e164_check: bool  # False only for byo records imported with numberE164CheckEnabled=false
    created_at: str | None
    updated_at: str | None
    raw: Mapping[str, Any]  # the record, secrets already removed


class VapiApi(Protocol):
    """What the engine needs from Vapi: list everything, look a number up, create one."""

    def iter_records(
        self,
        *,
        sort_order: str = "ASC",
        progress: Callable[[int, int], None] | None = None,
        transform: Callable[[dict[str, Any]], Any] | None = None,
    ) -> Iterator[Any]: ...

    def find_by_number(self, e164: str) -> list[dict[str, Any]]: ...

    def create(self, body: dict[str, Any]) -> dict[str, Any]: ...

"""The seam between the engine and the outside world: what a source gives, what Vapi needs.

A source adapter turns one carrier account (or a CSV of SIP-trunk numbers) into a stream of
``SourceRecord`` and knows how a number of it is imported into Vapi. The engine never learns
which SDK is behind it; adding a carrier is one module implementing ``Source`` plus a line in
``numsync.adapters.registry``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from types import MappingProxyType
from typing import Any, Protocol, TypeVar, runtime_checkable

import msgspec
import phonenumbers
from phonenumbers import PhoneMetadata

__all__ = [
    "Source",
    "SourceRecord",
    "VapiApi",
    "VapiNumber",
    "VapiOwner",
    "country_of",
    "decode_direct",
    "is_storable",
    "spells_nul",
    "storable",
    "to_e164",
]


class SourceRecord(msgspec.Struct, frozen=True, gc=False):
    """One number as a source owns it, normalised so the engine can compare it with Vapi.

    A frozen msgspec Struct the cycle collector does not track, like ``VapiNumber`` (its labels,
    a mapping of text to text, cannot lead back to it): a listing makes one per number and holds
    a page of them. Not a frozen dataclass: building one (``object.__setattr__`` per field) cost
    three times as much as a NamedTuple, which this replaced for the collector's sake.

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
    labels: Mapping[str, str] = MappingProxyType({})
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

    # Read-only members (a plain attribute serves as well as a property): the engine never sets them.
    @property
    def name(self) -> str: ...

    @property
    def kind(self) -> str: ...

    @property
    def numbers_per_round_trip(self) -> int:
        """At most how many numbers one round trip of its listing brings (a page's size times the
        pages it asks for at once; a large number for a source read without round trips). For
        inventories of a like size, the fewer it brings, the longer its listing: the engine starts
        those first."""
        ...

    def owner(self) -> VapiOwner:
        """Which Vapi records belong to this source (the contract's ownership rule)."""
        ...

    def list_numbers(self, expected: int | None = None) -> Iterator[SourceRecord]:
        """Every number the source owns, page by page; raises an AdapterError on failure.

        ``expected``: how many numbers the source's last whole listing found, or None when no run
        has listed it. Only a hint, for a listing whose first round would otherwise wait for page
        1's count before asking for more; a listing may ignore it.
        """
        ...

    def import_body(self, e164: str) -> dict[str, Any]:
        """The provider-specific part of a Vapi create body (may hold secrets: never log it)."""
        ...

    def still_owned(self, numbers: Sequence[str]) -> set[str] | None:
        """Which of ``numbers`` (E.164) the source owns now, asked one by one; None when its listing
        cannot lose a number it owns, so there is nothing to ask. Raises an AdapterError.

        Why: a listing paged by offset loses a number when the inventory changes between two of
        its pages and the count comes out the same (one number released before the page, one
        bought after it). The engine asks about the numbers that look orphaned before it says so.
        """
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


class VapiNumber(msgspec.Struct, frozen=True, gc=False):
    """The fields of a Vapi phone-number record that reconciling needs, read once at the edge.

    A frozen msgspec Struct the cycle collector does not track (it holds text and bools only, so it
    can be in no cycle): a listing holds a page of them, a thousand, and as NamedTuples every
    young-generation collection walked them again while the page was read, some three per page
    (three listings of 300,000 records: 1,085 collections, and 305 since). Built positionally, in
    the fields' order.
    """

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


class VapiApi(Protocol):
    """What the engine needs from Vapi: list everything, look a number up, create one."""

    def iter_numbers(self, *, progress: Callable[[int, int], None] | None = None) -> Iterator[VapiNumber]:
        """Every record exactly once, though pages are refetched, read as a ``VapiNumber``."""
        ...

    # The last listing's createdAt bound: records created from then on were not in it (None: Vapi
    # was empty, so every record is newer).
    listing_bound: datetime | None

    def created_since(self, moment: datetime | None) -> Iterator[tuple[str, str | None, datetime]]:
        """(id, E.164 number, createdAt) of each record created at or after ``moment``, oldest first."""
        ...

    def find_by_number(self, e164: str) -> list[dict[str, Any]]: ...

    def create(self, body: dict[str, Any]) -> dict[str, Any]: ...

    def reset_connections(self) -> None:
        """Forget pooled connections (a listing process forked from this one may have used them)."""
        ...


_REGIONS_BY_CODE: dict[int, tuple[str, ...]] = phonenumbers.COUNTRY_CODE_TO_REGION_CODE
_LEADING_DIGITS: dict[str, re.Pattern[str]] = {}  # region -> its metadata's leading_digits, compiled
_NATIONAL_PREFIX: dict[int, re.Pattern[str] | None] = {}  # calling code -> national_prefix_for_parsing


def country_of(e164: str) -> str | None:
    """The ISO country of an E.164 number as ``to_e164`` writes it ('+', calling code, national
    significant number), exactly as ``region_code_for_number(parse(e164))`` would say.

    Parsing the text again cost as much as the lookup itself, so the number is read here the way
    ``parse`` reads '+' and digits: the calling code first (codes are prefix-free, one to three
    digits, never starting with 0), the rest as the national number with its leading zeros. Where
    ``parse`` could do more (strip a national prefix, for a code shared by several regions), it
    is left to ``parse``. Only letters count as a country ('001' is non-geographic, 'ZZ' unknown).
    """
    digits = e164[1:]
    if e164[:1] != "+" or not digits.isdigit() or digits[0] == "0":
        return _country_by_parsing(e164)
    for width in (1, 2, 3):
        code = int(digits[:width])
        regions = _REGIONS_BY_CODE.get(code)
        if regions:
            break
    else:
        return None
    national = digits[width:]
    if not 2 <= len(national) <= 17:  # parse refuses these lengths
        return _country_by_parsing(e164)
    if len(regions) == 1:
        return _letters(regions[0])
    prefix = _national_prefix(code)
    if prefix is not None and prefix.match(national):
        return _country_by_parsing(e164)
    number = phonenumbers.PhoneNumber(country_code=code, national_number=int(national))
    if national[0] == "0":  # as parse keeps Italian leading zeros
        zeros = 1
        while zeros < len(national) - 1 and national[zeros] == "0":
            zeros += 1
        number.italian_leading_zero = True
        if zeros != 1:
            number.number_of_leading_zeros = zeros
    # region_code_for_number's own walk over the regions sharing the code (leading digits where a
    # region has them, else full validation), with each leading-digits pattern compiled once: the
    # library looks every one up in re's cache again per number, half the cost of a number that
    # no region accepts (25 regions share +1). The tests pin the answers to the library's.
    for region in regions:
        metadata = PhoneMetadata.metadata_for_region(region, None)
        if metadata is None:
            continue
        if metadata.leading_digits is not None:
            pattern = _LEADING_DIGITS.get(region)
            if pattern is None:
                pattern = _LEADING_DIGITS[region] = re.compile(metadata.leading_digits)
            if pattern.match(national):
                return _letters(region)
        elif phonenumbers.is_valid_number_for_region(number, region):
            return _letters(region)
    return None


def _national_prefix(code: int) -> re.Pattern[str] | None:
    """The national prefix ``parse`` may strip after this calling code (RU '8', NANP '1' ...)."""
    if code not in _NATIONAL_PREFIX:
        metadata = PhoneMetadata.metadata_for_region_or_calling_code(
            code, phonenumbers.region_code_for_country_code(code))
        text = metadata.national_prefix_for_parsing if metadata is not None else None
        _NATIONAL_PREFIX[code] = re.compile(text) if text else None
    return _NATIONAL_PREFIX[code]


def _country_by_parsing(e164: str) -> str | None:
    try:
        return _letters(phonenumbers.region_code_for_number(phonenumbers.parse(e164)))
    except phonenumbers.NumberParseException:
        return None


def _letters(region: str | None) -> str | None:
    return region if region and region.isalpha() and region != "ZZ" else None


# What no database's text can hold: U+0000 (PostgreSQL) and a lone surrogate, which JSON's
# escapes can spell ("\\ud800") and no UTF-8 encoder takes (PostgreSQL and SQLite alike).
_UNSTORABLE = re.compile("[\\x00\\ud800-\\udfff]")


def storable(value: Any) -> Any:
    """``value`` with every character no database text can hold, in its strings and keys, replaced
    by U+FFFD, the replacement character: marked, not dropped. One such character in one
    record failed a whole snapshot."""
    if isinstance(value, str):
        return _UNSTORABLE.sub("\ufffd", value)
    if isinstance(value, Mapping):
        return {storable(k): storable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [storable(v) for v in value]
    return value


def is_storable(text: str) -> bool:
    """Whether ``text`` holds none of those characters; a C-level search each, for once per record."""
    return "\0" not in text and (text.isascii() or _UNSTORABLE.search(text) is None)


def spells_nul(body: bytes | str) -> bool:
    """Whether a JSON body spells U+0000 (``\\u0000``): the one unstorable character a decoder
    reads without complaint, so the only one a byte search must find."""
    return (b"\\u0000" in body) if isinstance(body, bytes) else ("\\u0000" in body)


_Decoded = TypeVar("_Decoded")


def decode_direct(decoder: msgspec.json.Decoder[_Decoded], body: bytes | str) -> _Decoded | None:
    """``body`` read by ``decoder`` (a listing's typed reading of only the fields it uses), or
    None where the general reading (``http_util.loads``) must take the body whole: it spells
    U+0000, which that reading marks, or msgspec refuses it (not JSON or not UTF-8, a lone
    surrogate, a field of another type)."""
    if spells_nul(body):
        return None
    try:
        return decoder.decode(body)
    except (msgspec.MsgspecError, ValueError):  # ValueError: not UTF-8
        return None

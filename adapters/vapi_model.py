"""Reading Vapi phone-number records: the one place that knows Vapi's record field names.

The engine compares ``VapiNumber`` values, never raw records, so a change in Vapi's schema is
fixed here and nowhere else.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any, NoReturn

import msgspec

from numsync.errors import ProtocolError

if TYPE_CHECKING:
    from numsync.config import SourceConfig

from .base import VapiNumber, VapiOwner, decode_direct

__all__ = ["CARRIER_PROVIDERS", "owner_account", "owner_for", "read_listing_page", "to_vapi_number", "unchecked_forms"]

# Fields the engine reads as text; anything else in them means the record cannot be trusted.
_TEXT_FIELDS = ("number", "sipUri", "status", "name", "twilioAccountSid", "credentialId", "createdAt", "updatedAt")

_TEXT_TYPES = frozenset((str, type(None)))

# Providers whose records belong to a carrier account (the others, 'vapi', belong to no source).
CARRIER_PROVIDERS = ("twilio", "telnyx", "vonage", "byo-phone-number")


def owner_account(record: dict[str, Any]) -> str | None:
    """The account a record is tied to: twilioAccountSid for twilio, credentialId otherwise."""
    return _account_of(record.get("provider"), record.get("twilioAccountSid"), record.get("credentialId"))


def _account_of(provider: Any, sid: Any, credential: Any) -> Any:
    """The one ownership rule, on fields already read (``to_vapi_number`` has them in hand)."""
    if provider == "twilio":
        return sid
    return credential if provider in CARRIER_PROVIDERS else None


def to_vapi_number(record: dict[str, Any]) -> VapiNumber:
    """Read one (already redacted) record; raises ProtocolError naming the record when unusable.

    Runs once per record of a listing (a million at scale), so the fields are fetched once and
    checked with one pass over their types; the slow path only names what is wrong.
    """
    get = record.get
    rid = get("id")
    provider = get("provider")
    texts = list(map(get, _TEXT_FIELDS))
    if (type(rid) is not str or not rid or len(rid) > 64 or type(provider) is not str or not provider
            or not _TEXT_TYPES.issuperset(map(type, texts))):
        _refuse(record)
    number, sip_uri, status, name, sid, credential, created, updated = texts
    given = get("server")
    routed = bool(
        get("assistantId") or get("squadId") or get("workflowId")
        or (given.get("url") if type(given) is dict else None)
    )
    if number:
        number = number.strip() or None
    return VapiNumber(  # positional, in the fields' order
        rid,
        provider,
        number or None,
        sip_uri or None,
        status,
        name,
        _account_of(provider, sid, credential),
        routed,
        not (provider == "byo-phone-number" and get("numberE164CheckEnabled") is False),  # e164_check
        created,
        updated,
    )


class _Server(msgspec.Struct, gc=False):
    url: Any = None  # its headers may hold webhook credentials: not decoded


class _Listed(msgspec.Struct, gc=False):
    """What ``to_vapi_number`` reads of a listed record, typed as it checks it; nothing else is
    decoded, so a record's secrets never become Python objects on this path."""

    id: str
    provider: str
    createdAt: str
    number: str | None = None
    sipUri: str | None = None
    status: str | None = None
    name: str | None = None
    twilioAccountSid: str | None = None
    credentialId: str | None = None
    updatedAt: str | None = None
    assistantId: Any = None  # read for its truth, as to_vapi_number does
    squadId: Any = None
    workflowId: Any = None
    server: _Server | None = None  # anything but an object or null: the general reader's case
    numberE164CheckEnabled: Any = None


class _Metadata(msgspec.Struct, gc=False):
    totalItems: int


class _ListingPage(msgspec.Struct, gc=False):
    results: list[_Listed]
    metadata: _Metadata


_LISTING_PAGE = msgspec.json.Decoder(_ListingPage)


def read_listing_page(body: bytes) -> tuple[list[VapiNumber], int] | None:
    """A listing page's numbers and its ``totalItems``, read straight from the JSON; None when this
    reader cannot vouch for the page, and the general one (parse, check, redact, ``to_vapi_number``)
    must read it and name what is wrong.

    Why a second reader: the general one builds a dict per record, checks and redacts it and reads
    it again, about 9 us a record, and the Vapi listing is a run's critical path; this one decodes
    only the fields read into typed slots in C, about 3 us. It returns exactly what the general reader
    would (a property test holds the two together); whatever it is unsure of (a wrong type, a
    value out of range, U+0000 or a lone surrogate, which the general reader marks, a body that
    is not UTF-8) it hands over whole.
    """
    page = decode_direct(_LISTING_PAGE, body)
    if page is None:
        return None
    total = page.metadata.totalItems
    if not 0 <= total <= 10**8:
        return None
    numbers = []
    for rec in page.results:
        rid, provider, created, number, server = rec.id, rec.provider, rec.createdAt, rec.number, rec.server
        if not rid or len(rid) > 64 or not provider or not created:
            return None
        try:
            datetime.fromisoformat(created)
        except ValueError:
            return None
        if number:
            number = number.strip()
        numbers.append(VapiNumber(
            rid,
            provider,
            number or None,
            rec.sipUri or None,
            rec.status,
            rec.name,
            _account_of(provider, rec.twilioAccountSid, rec.credentialId),
            bool(rec.assistantId or rec.squadId or rec.workflowId or (server and server.url)),
            not (provider == "byo-phone-number" and rec.numberE164CheckEnabled is False),
            created,
            rec.updatedAt,
        ))
    return numbers, total


def unchecked_forms(e164: str) -> tuple[str, ...]:
    """How a record without Vapi's E.164 check may hold ``e164`` without a '+' (such a record
    keeps its number as written, so the diff compares it as text): '14155550100', '0014155550100'.
    The number lookup Vapi's search answers normalises these forms the same way."""
    digits = e164.lstrip("+")
    return digits, "00" + digits


def _refuse(record: dict[str, Any]) -> NoReturn:
    """The ProtocolError for a record ``to_vapi_number`` cannot read, naming the record and the field."""
    rid = record.get("id")
    if not isinstance(rid, str) or not rid or len(rid) > 64:
        raise ProtocolError("a Vapi record has no usable 'id'", api="vapi", operation="list")
    provider = record.get("provider")
    if not isinstance(provider, str) or not provider:
        raise ProtocolError(f"Vapi record {rid} has no 'provider'", api="vapi", operation="list")
    for key in _TEXT_FIELDS:
        value = record.get(key)
        if value is not None and not isinstance(value, str):
            raise ProtocolError(
                f"Vapi record {rid} has a {type(value).__name__} for '{key}' where text belongs",
                api="vapi", operation="list",
            )
    raise ProtocolError(f"Vapi record {rid} cannot be read", api="vapi", operation="list")


def owner_for(cfg: SourceConfig) -> VapiOwner:
    """The contract's ownership rule for a configured source (needs no SDK, so the engine may call it)."""
    if cfg.kind == "twilio":
        return VapiOwner("twilio", "twilioAccountSid", cfg.account_sid)
    provider = "byo-phone-number" if cfg.kind == "byo" else cfg.kind
    return VapiOwner(provider, "credentialId", cfg.vapi_credential_id)

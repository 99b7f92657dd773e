"""Reading Vapi phone-number records: the one place that knows Vapi's record field names.

The engine compares ``VapiNumber`` values, never raw records, so a change in Vapi's schema is
fixed here and nowhere else.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from numsync.errors import ProtocolError

if TYPE_CHECKING:
    from numsync.config import SourceConfig

from .base import VapiNumber, VapiOwner

__all__ = ["CARRIER_PROVIDERS", "owner_account", "owner_for", "to_vapi_number"]

# Fields the engine reads as text; anything else in them means the record cannot be trusted.
_TEXT_FIELDS = ("number", "sipUri", "status", "name", "twilioAccountSid", "credentialId", "createdAt", "updatedAt")

# Providers whose records belong to a carrier account (the others, 'vapi', belong to no source).
CARRIER_PROVIDERS = ("twilio", "telnyx", "vonage", "byo-phone-number")


def owner_account(record: dict[str, Any]) -> str | None:
    """The account a record is tied to: twilioAccountSid for twilio, credentialId otherwise."""
    provider = record.get("provider")
    if provider == "twilio":
        return record.get("twilioAccountSid")
    if provider in CARRIER_PROVIDERS:
        return record.get("credentialId")
    return None


def to_vapi_number(record: dict[str, Any]) -> VapiNumber:
    """Read one (already redacted) record; raises ProtocolError naming the record when unusable."""
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
    given = record.get("server")
    server: dict[str, Any] = given if isinstance(given, dict) else {}
    routed = bool(
        record.get("assistantId") or record.get("squadId") or record.get("workflowId") or server.get("url")
    )
    number = (record.get("number") or "").strip()
    return VapiNumber(
        id=rid,
        provider=provider,
        number=number or None,
        sip_uri=record.get("sipUri") or None,
        status=record.get("status"),
        name=record.get("name"),
        account=owner_account(record),
        routed=routed,
        e164_check=not (provider == "byo-phone-number" and record.get("numberE164CheckEnabled") is False),
        created_at=record.get("createdAt"),
        updated_at=record.get("updatedAt"),
        raw=record,
    )


def owner_for(cfg: SourceConfig) -> VapiOwner:
    """The contract's ownership rule for a configured source (needs no SDK, so the engine may call it)."""
    if cfg.kind == "twilio":
        return VapiOwner("twilio", "twilioAccountSid", cfg.account_sid)
    provider = "byo-phone-number" if cfg.kind == "byo" else cfg.kind
    return VapiOwner(provider, "credentialId", cfg.vapi_credential_id)

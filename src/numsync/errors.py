"""One error tree for all of numsync, so callers can catch by meaning rather than by library.

    NumsyncError
    ├── ConfigError                 misuse: the config file is wrong; never retried
    ├── DatabaseError               the database is unreachable or at the wrong migration
    ├── LockHeld                    another run holds the per-run lock (exit 75)
    ├── EngineError                 the reconcile engine refused to go on
    │   └── StalePlanError          apply was asked to act on a plan whose basis moved
    └── AdapterError                a remote API (Vapi or a carrier) failed; carries api/operation/status
        ├── TransientError          worth retrying: timeouts, resets, 429, 5xx (retry_after when known)
        │   └── InDoubtError        a write was sent but its outcome is unknown (timeout after send)
        └── PermanentError          not worth retrying: 400/401/403/404/422, garbage payloads
            ├── AuthError           the API rejected our credentials
            ├── NotFoundError       404
            └── ProtocolError       the API answered something we cannot read (bad JSON, broken paging)

Messages never contain secrets: adapters build them from status codes and the API's own
``message`` field, never from request headers or bodies.
"""

from __future__ import annotations

__all__ = [
    "AdapterError",
    "AuthError",
    "ConfigError",
    "DatabaseError",
    "EngineError",
    "InDoubtError",
    "LockHeld",
    "NotFoundError",
    "NumsyncError",
    "PermanentError",
    "ProtocolError",
    "StalePlanError",
    "TransientError",
]


class NumsyncError(Exception):
    """Root of every error numsync raises on purpose."""


class ConfigError(NumsyncError):
    """The configuration is wrong; the message names the file and the key."""


class DatabaseError(NumsyncError):
    """The database cannot be used (unreachable, or at another migration than the code)."""


class LockHeld(NumsyncError):
    """Another run holds the per-run lock; callers exit with EX_TEMPFAIL (75)."""


class EngineError(NumsyncError):
    """The engine refused to continue (for example, a journal in an impossible state)."""


class StalePlanError(EngineError):
    """Apply was asked to act on a plan computed from snapshots that are no longer current."""


class AdapterError(NumsyncError):
    """A remote API failed. ``api`` is 'vapi' or the source name; ``operation`` what we were doing."""

    def __init__(
        self,
        message: str,
        *,
        api: str,
        operation: str,
        status: int | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.api = api
        self.operation = operation
        self.status = status
        self.retry_after = retry_after


class TransientError(AdapterError):
    """Worth retrying later: the same request may well succeed."""


class InDoubtError(TransientError):
    """A write left us and no answer came back: it may or may not have happened."""


class PermanentError(AdapterError):
    """Retrying the same request will fail the same way."""


class AuthError(PermanentError):
    """The API rejected the credentials (401/403)."""


class NotFoundError(PermanentError):
    """The resource does not exist (404)."""


class ProtocolError(PermanentError):
    """The API answered with something we cannot read: bad JSON, a missing field, broken paging."""

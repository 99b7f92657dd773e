"""Removing secrets from data before it is stored, logged or reported.

Two mechanisms, deliberately redundant: secret *fields* are dropped by name wherever a mapping
is about to leave the process (Vapi records, journal bodies), and known secret *values* are
masked in any text (the log backstop), in case a value ever travels under an innocent key.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterable, Mapping
from typing import Any

__all__ = [
    "REDACTED",
    "SecretValues",
    "is_secret_key",
    "redact_mapping",
]

REDACTED = "[redacted]"
_SECRET_KEY = re.compile(r"(secret|token|password|passwd|authorization|api[-_]?key|credential(?!id))", re.I)
# Keys that look secret by name but are identifiers the reconciler needs.
_ALLOWED = {"credentialId", "credential_id", "vapi_credential_id"}


def is_secret_key(key: str) -> bool:
    return key not in _ALLOWED and bool(_SECRET_KEY.search(key))


def redact_mapping(value: Any) -> Any:
    """A deep copy with every secret-named key removed and ``server.headers`` dropped."""
    if isinstance(value, Mapping):
        out: dict[str, Any] = {}
        for key, item in value.items():
            if isinstance(key, str) and (is_secret_key(key) or key == "headers"):
                continue
            out[key] = redact_mapping(item)
        return out
    if isinstance(value, list | tuple):
        return [redact_mapping(v) for v in value]
    return value


class SecretValues:
    """The secret values of the loaded config, masked in any text handed to ``mask``."""

    _MIN_LEN = 6  # shorter values would mask ordinary words

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._values: list[str] = []
        self._pattern: re.Pattern[str] | None = None

    def add(self, values: Iterable[str | None]) -> None:
        with self._lock:
            for v in values:
                if v and len(v) >= self._MIN_LEN and v not in self._values:
                    self._values.append(v)
            self._values.sort(key=len, reverse=True)
            self._pattern = (
                re.compile("|".join(re.escape(v) for v in self._values)) if self._values else None
            )

    def clear(self) -> None:
        with self._lock:
            self._values.clear()
            self._pattern = None

    def mask(self, text: str) -> str:
        pattern = self._pattern
        return pattern.sub(REDACTED, text) if pattern is not None else text


SECRETS = SecretValues()
